"""The strategy API: callbacks in, order intents out, through one order path.

A strategy never learns which mode it runs in. It declares what it wants to be woken for
(:meth:`Strategy.subscribe`), reacts in ``on_*`` callbacks, and acts only through
:meth:`submit_limit` / :meth:`submit_market` / :meth:`cancel` / :meth:`modify`, which hand every
order to the context's :class:`OrderPath`. That path is the single seam where the safety gateway
(kill switch, circuit breaker, limits, reservations, write-ahead log) plugs in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.engine.clock import Clock
from bastion.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument
from bastion.model.orders import Fill, Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.model.position import Position

SUB_TOP_OF_BOOK = "top_of_book"
SUB_BOOK_MESSAGES = "book_messages"
SUB_TRADES = "trades"
SUB_FUNDING = "funding"


class OrderPath(Protocol):
    """Where order intents go: the venue directly in a bare backtest, the gateway otherwise."""

    def submit(self, order: Order) -> None: ...

    def cancel(self, order: Order) -> None: ...


class BookView(Protocol):
    """A light, read-only view of one book, valid during the callback that received it."""

    @property
    def bid_raw(self) -> int: ...  # best bid, raw price; 0 when the side is empty

    @property
    def ask_raw(self) -> int: ...

    @property
    def bid_size_raw(self) -> int: ...

    @property
    def ask_size_raw(self) -> int: ...

    def is_valid(self) -> bool: ...  # both sides present and not crossed

    def size_at_raw(self, is_bid: bool, price_raw: int) -> int: ...


class BarView(Protocol):
    """The current bar (closed) and the declared indicators' values after it."""

    @property
    def index(self) -> int: ...

    @property
    def ts_ns(self) -> int: ...  # bar open time

    @property
    def open_raw(self) -> int: ...

    @property
    def high_raw(self) -> int: ...

    @property
    def low_raw(self) -> int: ...

    @property
    def close_raw(self) -> int: ...

    def indicator(self, name: str) -> float: ...


@dataclass(frozen=True, slots=True)
class BarSubscription:
    """What a bar strategy wants computed for it, and when it wants to be called.

    ``indicators`` maps a name to ``("ema", period)``; they are computed in the compiled loop.
    ``cross=(a, b)`` calls ``on_bar`` only when ``a - b`` changes sign (and once on the first
    bar after ``warmup``); without it, ``on_bar`` runs on every bar after ``warmup``.
    """

    indicators: dict[str, tuple[str, int]] = field(default_factory=dict)
    cross: tuple[str, str] | None = None
    warmup: int = 0


@dataclass(frozen=True, slots=True)
class TradeView:
    ts_event: int
    price_raw: int
    size_raw: int
    aggressor: Side | None


@dataclass(slots=True)
class Context:
    """What the engine lends a strategy: the clock, its instrument, book, position, order path."""

    clock: Clock
    instrument: Instrument
    book: BookView
    position: Position
    order_path: OrderPath
    timers: Any  # engine timer service: schedule(name, ts_ns, interval_ns)
    # durable sequence per strategy (paper/live: the store's ``next_sequence``); None: in memory
    order_sequence: Callable[[str], int] | None = None


@dataclass(slots=True)
class StrategyStats:
    submitted: int = 0
    canceled_requests: int = 0
    denied: int = 0
    rejected: int = 0
    fills: int = 0


class Strategy:
    """Base class: subclass it, override the callbacks you need; keep state on ``self``."""

    name = "strategy"

    def __init__(self, strategy_id: str | None = None, config: dict[str, Any] | None = None) -> None:
        self.id = strategy_id or self.name
        self.config: dict[str, Any] = dict(config or {})
        self.subscriptions: set[str] = set()
        self.bar_subscription: BarSubscription | None = None
        self.open_orders: dict[str, Order] = {}
        self.stats = StrategyStats()
        self._ctx: Context | None = None
        self._next_id = 0

    # --- wiring (engine side) ------------------------------------------------------------------
    def bind(self, ctx: Context) -> None:
        self._ctx = ctx

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            raise RuntimeError(f"strategy {self.id} is not bound to an engine")
        return self._ctx

    def subscribe(self, *what: str) -> None:
        self.subscriptions.update(what)

    def subscribe_bars(
        self,
        indicators: dict[str, tuple[str, int]] | None = None,
        cross: tuple[str, str] | None = None,
        warmup: int = 0,
    ) -> None:
        ind = dict(indicators or {})
        for name, (kind, period) in ind.items():
            if kind != "ema" or period < 1:
                raise ValueError(
                    f"indicator {name}: only ('ema', period >= 1) is supported, got {(kind, period)}"
                )
        if cross is not None and any(c not in ind for c in cross):
            raise ValueError(f"cross {cross} names an undeclared indicator; declared: {sorted(ind)}")
        self.bar_subscription = BarSubscription(ind, cross, warmup)

    # --- callbacks (override) ----------------------------------------------------------------
    def on_start(self) -> None:
        """Declare subscriptions and initialize state."""

    def on_book(self, book: BookView) -> None:
        pass

    def on_trade(self, trade: TradeView) -> None:
        pass

    def on_bar(self, bar: BarView) -> None:
        pass

    def on_timer(self, name: str, ts_ns: int) -> None:
        pass

    def on_funding(self, rate: str, ts_ns: int) -> None:
        pass

    def on_order(self, event: OrderEvent) -> None:
        pass

    def on_fill(self, fill: Fill) -> None:
        pass

    def on_stop(self) -> None:
        pass

    # --- read access ---------------------------------------------------------------------------
    @property
    def now(self) -> int:
        return self.ctx.clock.now_ns()

    @property
    def instrument(self) -> Instrument:
        return self.ctx.instrument

    @property
    def position(self) -> Position:
        return self.ctx.position

    # --- actions ---------------------------------------------------------------------------------
    def next_client_order_id(self) -> str:
        """Deterministic ids: strategy id + sequence, so a replayed run makes the same ids and a
        restarted process (whose sequence is persisted before use) never reuses one."""
        seq = self.ctx.order_sequence
        if seq is not None:
            return f"{self.id}-{seq(f'client_order_id.{self.id}')}"
        self._next_id += 1
        return f"{self.id}-{self._next_id}"

    def submit(self, order: Order) -> Order:
        order.strategy_id = self.id
        order.ts_init = self.now
        self.open_orders[order.client_order_id] = order
        self.stats.submitted += 1
        order.status = OrderStatus.SUBMITTED
        self.ctx.order_path.submit(order)
        return order

    def submit_limit(
        self,
        side: Side,
        price: Price,
        quantity: Quantity,
        tif: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
    ) -> Order:
        order = Order(
            self.next_client_order_id(),
            self.ctx.instrument.id,
            side,
            OrderType.LIMIT,
            quantity,
            price,
            tif,
            reduce_only,
        )
        return self.submit(order)

    def submit_market(self, side: Side, quantity: Quantity, reduce_only: bool = False) -> Order:
        order = Order(
            self.next_client_order_id(),
            self.ctx.instrument.id,
            side,
            OrderType.MARKET,
            quantity,
            None,
            TimeInForce.IOC,
            reduce_only,
        )
        return self.submit(order)

    def cancel(self, order: Order) -> None:
        if order.cancel_pending or not order.status.is_open:
            return
        order.cancel_pending = True
        self.stats.canceled_requests += 1
        self.ctx.order_path.cancel(order)

    def cancel_all(self) -> None:
        for order in list(self.open_orders.values()):
            self.cancel(order)

    def modify(self, order: Order, price: Price | None = None, quantity: Quantity | None = None) -> Order:
        """Cancel and replace: the new order joins the back of its level's queue."""
        self.cancel(order)
        return self.submit_limit(
            order.side,
            price if price is not None else (order.price or Price(0, self.instrument.price_precision)),
            quantity if quantity is not None else order.remaining,
            order.time_in_force,
            order.reduce_only,
        )

    def set_timer(self, name: str, at_ns: int, interval_ns: int = 0) -> None:
        self.ctx.timers.schedule(name, at_ns, interval_ns)

    # --- event intake (engine side) --------------------------------------------------------
    def handle_order_event(self, event: OrderEvent) -> None:
        """Update the order's state from a venue event, then tell the strategy."""
        order = self.open_orders.get(event.client_order_id)
        if order is None:
            return
        t = type(event)
        if t is OrderFilled:
            assert isinstance(event, OrderFilled)
            order.apply_fill(event.fill.quantity, event.ts_event)
            self.stats.fills += 1
            if order.status is OrderStatus.FILLED:
                self._close(order)
            self.on_fill(event.fill)
            return
        if t is OrderAccepted:
            if order.status is OrderStatus.SUBMITTED:
                order.status = OrderStatus.ACCEPTED
        elif t is OrderCanceled:
            order.status = OrderStatus.CANCELED
        elif t is OrderExpired:
            order.status = OrderStatus.EXPIRED
        elif t is OrderRejected:
            order.status = OrderStatus.REJECTED
            self.stats.rejected += 1
        elif t is OrderDenied:
            order.status = OrderStatus.REJECTED
            self.stats.denied += 1
        elif t is OrderCancelRejected:
            order.cancel_pending = False
        if order.status.is_terminal:
            self._close(order)
        self.on_order(event)

    def _close(self, order: Order) -> None:
        del self.open_orders[order.client_order_id]
        order.cancel_pending = False


class TimerService:
    """Named timers on the engine's clock; the replay loop asks for the next due time.

    The next due time is cached: the loop asks for it on every turn, timers change rarely.
    """

    __slots__ = ("_next", "due")

    def __init__(self) -> None:
        self.due: dict[str, tuple[int, int]] = {}  # name -> (at, interval)
        self._next: int | None = None

    def _recompute(self) -> None:
        self._next = min((t for t, _ in self.due.values()), default=None)

    def schedule(self, name: str, at_ns: int, interval_ns: int = 0) -> None:
        self.due[name] = (at_ns, interval_ns)
        self._recompute()

    def cancel(self, name: str) -> None:
        self.due.pop(name, None)
        self._recompute()

    def next_time(self) -> int | None:
        return self._next

    def pop_due(self, now_ns: int) -> list[tuple[str, int]]:
        """Timers due at or before ``now_ns`` in time order (name order on ties)."""
        fired = sorted((t, name) for name, (t, _) in self.due.items() if t <= now_ns)
        for _t, name in fired:
            at, interval = self.due[name]
            if interval > 0:
                self.due[name] = (at + interval * max(1, (now_ns - at) // interval + 1), interval)
            else:
                del self.due[name]
        self._recompute()
        return [(name, t) for t, name in fired]

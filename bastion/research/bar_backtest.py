"""Backtest a strategy on candles (bar mode) through the same strategy API and ledger.

The compiled loop (``venues.sim.bars``) computes declared indicators and wakes the strategy
only when it asked to be; orders still go through an order path and come back as the same
``Order*`` events as in the L2 simulator, so the ledger, hash and reports are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from typing import Literal

import numpy as np

from bastion.engine.clock import SimClock
from bastion.engine.strategy import SUB_FUNDING, Context, Strategy, TimerService
from bastion.model.events import OrderAccepted, OrderCanceled, OrderEvent, OrderFilled, OrderRejected
from bastion.model.fixed import Money, Price, Quantity
from bastion.model.instruments import Instrument
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, TimeInForce
from bastion.research.backtest import Deferred, SafetySetup, build_gateway, fund
from bastion.research.ledger import RunLedger
from bastion.research.result import BacktestResult
from bastion.venues.base import OrderStatusReport
from bastion.venues.sim import bars as B

MAX_RESTING = 256


class _BarBook:
    """The best 'book' a candle offers: the close as both bid and ask (for marks and views)."""

    __slots__ = ("close",)

    def __init__(self) -> None:
        self.close = 0

    @property
    def bid_raw(self) -> int:
        return self.close

    @property
    def ask_raw(self) -> int:
        return self.close

    @property
    def bid_size_raw(self) -> int:
        return 0

    @property
    def ask_size_raw(self) -> int:
        return 0

    def is_valid(self) -> bool:
        return self.close > 0

    def size_at_raw(self, is_bid: bool, price_raw: int) -> int:
        return 0


class _BarViewImpl:
    __slots__ = ("_bars", "_names", "_vals", "index")

    def __init__(self, bars: B.BarArrays, names: dict[str, int], vals: np.ndarray) -> None:  # type: ignore[type-arg]
        self._bars = bars
        self._names = names
        self._vals = vals
        self.index = 0

    @property
    def ts_ns(self) -> int:
        return int(self._bars.ts[self.index])

    @property
    def open_raw(self) -> int:
        return int(self._bars.open[self.index])

    @property
    def high_raw(self) -> int:
        return int(self._bars.high[self.index])

    @property
    def low_raw(self) -> int:
        return int(self._bars.low[self.index])

    @property
    def close_raw(self) -> int:
        return int(self._bars.close[self.index])

    def indicator(self, name: str) -> float:
        return float(self._vals[self._names[name]])


class BarBacktestRun:
    def __init__(
        self,
        bars: B.BarArrays,
        instrument: Instrument,
        strategy: Strategy,
        *,
        fill_at: Literal["close", "next_open"] = "close",
        limit_rule: Literal["through", "touch"] = "through",
        samples: int = 4000,
        source: str = "",
        funding: list[tuple[int, Fraction]] | None = None,
        progress: Callable[[int, int], None] | None = None,
        safety: SafetySetup | None = None,
    ) -> None:
        if len(bars) == 0:
            raise ValueError("no bars to replay")
        if fill_at not in ("close", "next_open") or limit_rule not in ("through", "touch"):
            raise ValueError(
                f"fill_at must be close|next_open and limit_rule through|touch, got {fill_at}, {limit_rule}"
            )
        self.bars = bars
        self.instrument = instrument
        self.strategy = strategy
        self.fill_at = fill_at
        self.source = source
        self.ledger = RunLedger(instrument, strategy, int(bars.ts[0]), int(bars.close_ts[-1]), samples)
        self.clock = SimClock(int(bars.ts[0]))
        self.timers = TimerService()
        self.book = _BarBook()
        self.s = np.zeros(B.B_FIELDS, dtype=np.int64)
        self.s[B.B_N] = len(bars)
        self.s[B.B_SIGN] = B.NO_SIGN
        self.s[B.B_TOUCH] = 1 if limit_rule == "touch" else 0
        self.s[B.B_SAMPLE_EVERY] = max(1, len(bars) // samples)
        self.s[B.B_PRICE_SCALE] = 10**instrument.price_precision
        self.bord = np.zeros((MAX_RESTING, B.BO_FIELDS), dtype=np.int64)
        self.fills = np.zeros((MAX_RESTING, B.BF_FIELDS), dtype=np.int64)
        self._orders: dict[int, Order] = {}
        self._next_oid = 1
        self._pending: list[OrderEvent] = []
        self.orders_submitted = 0
        self.cancels_submitted = 0
        self._progress = progress
        self._cur = -1
        # funding events keyed by the bar at whose close they apply (the bar holding their time)
        self._funding: dict[int, list[tuple[int, Fraction]]] = {}
        if funding:
            idx = np.searchsorted(
                bars.close_ts, np.array([t for t, _ in funding], dtype=np.int64), side="left"
            )
            for (t, rate), k in zip(funding, idx.tolist(), strict=True):
                if 0 <= k < len(bars) and t >= int(bars.ts[0]):
                    self._funding.setdefault(k, []).append((t, rate))
        self._funding_bars = sorted(self._funding)
        self._fi = 0
        self.s[B.B_EVENT_BAR] = self._funding_bars[0] if self._funding_bars else -1
        self.funding_events = 0
        # the same order gateway as every other run; this object is its venue
        self.name = "sim"
        self.safety = safety or SafetySetup()
        self.deliver = Deferred(self.ledger.on_order_event)
        fund(self.ledger, self.safety.balances or {instrument.settle: self.safety.capital})
        self.gateway, self.breaker = build_gateway(
            self, instrument, self.safety, clock=self.clock, ledger=self.ledger, deliver=self.deliver,
            reference_price=lambda side: self.book.close, mark_raw=lambda: self.book.close,
        )  # fmt: skip

    # --- order entry ---------------------------------------------------------------------------
    def _reject(self, order: Order, reason: str) -> None:
        self._pending.append(
            OrderRejected(order.client_order_id, order.instrument_id, self.clock.now_ns(), reason)
        )

    def submit(self, order: Order) -> None:  # type: ignore[override]
        self.orders_submitted += 1
        inst = self.instrument
        if order.quantity.precision != inst.size_precision or order.quantity.raw % inst.lot_raw:
            self._reject(order, f"quantity {order.quantity} off the lot grid")
            return
        now = self.clock.now_ns()
        cid, iid = order.client_order_id, order.instrument_id
        market = order.order_type is OrderType.MARKET
        if market and self.fill_at == "close":
            if self._cur < 0:
                self._reject(order, "no bar has closed yet")
                return
            self._pending.append(OrderAccepted(cid, iid, now))
            self._pending.append(
                self._fill_event(
                    order, int(self.bars.close[self._cur]), order.quantity.raw, maker=False, ts=now
                )
            )
            return
        if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK) and not market:
            self._reject(order, "IOC/FOK limit orders are not supported in bar mode")
            return
        k = int(self.s[B.B_N_ORD])
        if k >= MAX_RESTING:
            self._reject(order, "too many open orders")
            return
        if not market:
            assert order.price is not None
            if order.price.precision != inst.price_precision or order.price.raw % inst.tick_raw:
                self._reject(order, f"price {order.price} off the tick grid")
                return
        oid = self._next_oid
        self._next_oid += 1
        price_raw = 0 if order.price is None or market else order.price.raw
        self.bord[k] = (oid, int(order.side), price_raw, order.quantity.raw, 1 if market else 0)
        self.s[B.B_N_ORD] = k + 1
        self._orders[oid] = order
        order.venue_order_id = str(oid)
        self._pending.append(OrderAccepted(cid, iid, now))

    def cancel(self, order: Order) -> None:
        self.cancels_submitted += 1
        oid = int(order.venue_order_id or 0)
        n = int(self.s[B.B_N_ORD])
        for j in range(n):
            if self.bord[j, B.BO_OID] == oid:
                self.bord[j] = self.bord[n - 1]
                self.s[B.B_N_ORD] = n - 1
                self._orders.pop(oid, None)
                self._pending.append(
                    OrderCanceled(order.client_order_id, order.instrument_id, self.clock.now_ns())
                )
                return

    def _fill_event(self, order: Order, price_raw: int, qty_raw: int, *, maker: bool, ts: int) -> OrderFilled:
        inst = self.instrument
        rate = inst.maker_rate if maker else inst.taker_rate
        fee = inst.fee_raw(price_raw, qty_raw, rate)
        fill = Fill(
            order.client_order_id,
            order.instrument_id,
            order.side,
            Price(price_raw, inst.price_precision),
            Quantity(qty_raw, inst.size_precision),
            Money(fee, inst.money_precision, inst.settle),
            Liquidity.MAKER if maker else Liquidity.TAKER,
            ts,
            f"{order.venue_order_id or 'mkt'}-{ts}",
        )
        return OrderFilled(order.client_order_id, order.instrument_id, ts, fill)

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            for ev in batch:
                self.gateway.on_venue_event(ev)

    def query(self, client_order_id: str) -> OrderStatusReport | None:
        """The venue's view by client id: resting orders are known, everything else is done."""
        for order in self._orders.values():
            if order.client_order_id == client_order_id:
                return OrderStatusReport(client_order_id, OrderStatus.ACCEPTED, 0, order.venue_order_id)
        return None

    def _apply_funding(self, bar: int) -> None:
        """Funding due within this bar is paid on the position held at its close, marked at the close."""
        for _t, rate in self._funding.pop(bar, []):
            self.ledger.apply_funding(rate, int(self.bars.close[bar]), _t)
            self.funding_events += 1
            if SUB_FUNDING in self.strategy.subscriptions:
                self.strategy.on_funding(str(float(rate)), _t)
        self._fi += 1
        self.s[B.B_EVENT_BAR] = self._funding_bars[self._fi] if self._fi < len(self._funding_bars) else -1

    # --- the loop --------------------------------------------------------------------------------
    def run(self) -> BacktestResult:
        t0 = time.perf_counter()
        st = self.strategy
        st.bind(
            Context(self.clock, self.instrument, self.book, self.ledger.position, self.gateway, self.timers)
        )
        st.on_start()
        sub = st.bar_subscription
        names: dict[str, int] = {}
        kinds, params = [], []
        if sub is not None:
            for k, (name, (_kind, period)) in enumerate(sub.indicators.items()):
                names[name] = k
                kinds.append(B.IND_EMA)
                params.append(float(period))
            self.s[B.B_WARMUP] = sub.warmup
            self.s[B.B_EVERY_BAR] = 0 if sub.cross else 1
            watch = np.array([names[sub.cross[0]], names[sub.cross[1]]] if sub.cross else [], dtype=np.int64)
        else:
            self.s[B.B_WARMUP] = len(self.bars)  # no subscription: never woken
            watch = np.zeros(0, dtype=np.int64)
        ind_kind = np.array(kinds, dtype=np.int64)
        ind_param = np.array(params, dtype=np.float64)
        ind_val = np.zeros(len(kinds), dtype=np.float64)
        view = _BarViewImpl(self.bars, names, ind_val)
        b = self.bars
        s = self.s
        n = len(b)
        next_progress = 0
        on_bar = st.on_bar
        while True:
            r = B.advance_bars(
                b.open, b.high, b.low, b.close, ind_kind, ind_param, ind_val, watch, self.bord, self.fills, s
            )
            cur = int(s[B.B_IDX]) - 1
            self._cur = cur
            close_ts = int(b.close_ts[cur])
            self.clock.set(close_ts)
            self.book.close = int(b.close[cur])
            if r & B.BR_FILLS:
                for oid, px, qty, maker, bar in self.fills[: int(s[B.B_N_FILLS])].tolist():
                    order = self._orders.pop(oid)
                    self._pending.append(
                        self._fill_event(order, px, qty, maker=bool(maker), ts=int(b.ts[bar]))
                    )
                s[B.B_N_FILLS] = 0
                self._flush()
            if r & B.BR_WAKE:
                view.index = cur
                self.deliver.busy = True
                on_bar(view)
                self.deliver.busy = False
                self._flush()
                if self.deliver.queue:
                    self.deliver.flush()
            if r & B.BR_EVENT:
                self._apply_funding(cur)
            if r & B.BR_SAMPLE or r == B.BR_END:
                self.ledger.sample(close_ts, self.book.close, force=True)
            if self._progress is not None and cur >= next_progress:
                self._progress(cur + 1, n)
                next_progress = cur + max(1, n // 100)
            if r == B.BR_END:
                break
        st.on_stop()
        self._flush()
        return self.ledger.result(
            mark_raw=int(b.close[-1]),
            data_source=self.source,
            start_ns=int(b.ts[0]),
            end_ns=int(b.close_ts[-1]),
            events=n,
            orders=self.orders_submitted,
            cancels=self.cancels_submitted,
            seconds=time.perf_counter() - t0,
            notes=[
                f"bar mode: market orders fill at the {self.fill_at.replace('_', ' ')}, "
                f"limits fill when price trades {'through' if not s[B.B_TOUCH] else 'to'} them"
            ],
        )

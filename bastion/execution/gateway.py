"""The order gateway: the only path from a strategy to a venue.

Every order passes, in this order: kill switch → circuit breaker → compliance and limits →
symbol lock → balance reservation → idempotency (client order id) → write-ahead journal →
venue submission → status tracking → ledger. The order is deliberate: cheap refusals first, and
nothing that changes state (a reservation, a used id, a journal line) happens for an order a
check refuses, so a denial leaves no trace but its audit line.

Failure rules:
- refused by a check: an ``OrderDenied`` event naming the rule; no state changed;
- rejected by the venue: the reservation is released exactly once and the rejection journaled;
- timeout or lost connection: the order may exist, so the reservation is kept and the order is
  ``PENDING_VERIFICATION`` until the venue answers a query by client order id.

The gateway knows risk checks and journals only through small protocols, so the same object runs
in a backtest (in-memory journal, simulated venue) and live (write-ahead log, real adapter).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Literal, Protocol

from bastion.engine.clock import Clock
from bastion.execution.journal import Journal
from bastion.execution.reservations import InsufficientFunds, Reservations
from bastion.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from bastion.model.fixed import Quantity
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side
from bastion.venues.base import VenueClient, VenueError, VenueRejected, VenueTimeout, VenueUnavailable


class Verdict(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def rule(self) -> str: ...

    @property
    def detail(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Allowed:
    ok: bool = True
    rule: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the checks need to know about an order beyond the order itself."""

    venue: str
    instrument: Instrument
    notional_num: int  # settlement-currency value at the limit (or reference) price, as num/den
    notional_den: int
    reducing: bool  # only reduces an existing position (a limit must never block getting out)

    @property
    def notional(self) -> Fraction:
        return Fraction(self.notional_num, self.notional_den)


class PreTradeCheck(Protocol):
    """One gate of the pipeline (compliance, limits, ...); returns a verdict naming its rule."""

    name: str

    def check(self, order: Order, facts: OrderFacts) -> Verdict: ...


class BreakerGate(Protocol):
    """The circuit breaker as the gateway sees it."""

    def allow(
        self, order_kind: Literal["new", "cancel"], *, reduce_only: bool, notional: Fraction | None
    ) -> Verdict: ...

    def set_in_flight(self, n: int) -> None: ...

    def on_venue_result(self, venue: str, ok: bool) -> None: ...

    def on_order_done(self, ok: bool) -> None: ...


@dataclass(slots=True)
class GatewayStats:
    submitted: int = 0
    denied: int = 0
    rejected: int = 0
    pending_verification: int = 0
    verified: int = 0
    kill_cancels: int = 0


_TERMINAL = (OrderCanceled, OrderRejected, OrderExpired)
_STATUS_AFTER: dict[type, OrderStatus] = {
    OrderAccepted: OrderStatus.ACCEPTED,
    OrderCanceled: OrderStatus.CANCELED,
    OrderRejected: OrderStatus.REJECTED,
    OrderExpired: OrderStatus.EXPIRED,
}

# the step boundaries ``fault_point`` is called with, in the order an order meets them
FAULT_POINTS = (
    "after_checks",
    "after_reservation",
    "after_claim",
    "after_intent",
    "before_venue",
    "after_venue",
    "after_submitted",
    "before_event",
    "after_event_journal",
)


class OrderGateway:
    def __init__(
        self,
        venue: VenueClient,
        instrument: Instrument,
        *,
        clock: Clock,
        journal: Journal,
        reservations: Reservations,
        on_event: Callable[[OrderEvent], None],
        position_of: Callable[[], int],
        reference_price: Callable[[Side], int],
        kill_switch: Callable[[], bool] | None = None,
        breaker: BreakerGate | None = None,
        checks: list[PreTradeCheck] | None = None,
        margin_rate: Fraction = Fraction(1, 2),
        market_buffer: Fraction = Fraction(1, 100),
        fault_point: Callable[[str], None] | None = None,
    ) -> None:
        self.venue = venue
        self.instrument = instrument
        self.clock = clock
        self.journal = journal
        self.reservations = reservations
        self._on_event = on_event
        self._position_of = position_of
        self._reference_price = reference_price
        self._kill_switch = kill_switch
        self._breaker = breaker
        self._checks = list(checks or [])
        self._margin_rate = margin_rate
        self._market_buffer = market_buffer
        # chaos testing: called with the name of each step boundary (None in production: one
        # attribute test per boundary), so a harness can kill the process between any two steps
        self._fault = fault_point
        self._lock = threading.RLock()  # the symbol lock: one order decision at a time per instrument
        self._open: dict[str, Order] = {}  # sent, not yet known to be done
        self._filled: dict[str, int] = {}
        self.pending_verification: dict[str, Order] = {}
        self.stats = GatewayStats()
        self._kill_seen = False
        self._detailed = journal.detailed
        cs = Fraction(instrument.contract_size)
        self._linear_cs = int(cs) if cs.denominator == 1 and not instrument.is_inverse else None
        self._value_scale = 10 ** (instrument.price_precision + instrument.size_precision)
        self._res_scale = 10**reservations.precision
        self._f_buy = 1 + instrument.taker_rate
        self._f_market_buy = (1 + instrument.taker_rate) * (1 + market_buffer)
        self._f_margin = margin_rate + instrument.taker_rate

    # --- helpers -----------------------------------------------------------------------------
    def _facts(self, order: Order) -> OrderFacts:
        inst = self.instrument
        if order.order_type is OrderType.LIMIT and order.price is not None:
            price_raw = order.price.raw
        else:
            price_raw = self._reference_price(order.side)
        qty = order.quantity.raw
        if price_raw <= 0:
            num, den = 0, 1
        elif self._linear_cs is not None:  # integer arithmetic on the hot path
            num, den = price_raw * qty * self._linear_cs, self._value_scale
        else:
            v = inst.notional_value(price_raw, qty)
            num, den = v.numerator, v.denominator
        pos = self._position_of()
        side = order.side
        reducing = (pos > 0 and side is Side.SELL and qty <= pos) or (
            pos < 0 and side is Side.BUY and qty <= -pos
        )
        return OrderFacts(self.venue.name, inst, num, den, reducing)

    def _reservation(self, order: Order, facts: OrderFacts) -> tuple[str, int]:
        """What to set aside, in raw units rounded up: spot buys their quote cost (plus taker
        fee), spot sells the base, derivatives their initial margin (plus taker fee); orders that
        only reduce a derivative position free margin instead of using it."""
        inst = self.instrument
        scale = self._res_scale
        if inst.kind is InstrumentKind.SPOT:
            if order.side is Side.SELL:
                return inst.base, _ceil(order.quantity.raw * scale, 10**inst.size_precision)
            f = self._f_market_buy if order.order_type is OrderType.MARKET else self._f_buy
            currency = inst.quote
        else:
            if facts.reducing:
                return inst.settle, 0
            f = self._f_margin
            currency = inst.settle
        return currency, _ceil(facts.notional_num * f.numerator * scale, facts.notional_den * f.denominator)

    def _deny(self, order: Order, rule: str, detail: str) -> None:
        ts = self.clock.now_ns()
        reason = f"{rule}: {detail}" if detail else rule
        self.stats.denied += 1
        self.journal.write("denied", order.client_order_id, ts, {"rule": rule, "detail": detail})
        self._on_event(OrderDenied(order.client_order_id, order.instrument_id, ts, reason))

    def _in_flight_changed(self) -> None:
        if self._breaker is not None:
            self._breaker.set_in_flight(len(self._open))

    # --- the path -------------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        if self._kill_switch is not None and self._kill_switch():
            self._deny(order, "kill_switch", "engaged: no new orders")
            self.enforce_kill_switch()
            return
        facts = self._facts(order)
        if order.reduce_only and not facts.reducing:
            self._deny(
                order, "reduce_only", f"position {self._position_of()} raw: the order would not reduce it"
            )
            return
        if self._breaker is not None:
            v = self._breaker.allow("new", reduce_only=facts.reducing, notional=facts.notional)
            if not v.ok:
                self._deny(order, v.rule or "circuit_breaker", v.detail)
                return
        for check in self._checks:
            v = check.check(order, facts)
            if not v.ok:
                self._deny(order, v.rule or check.name, v.detail)
                return
        fault = self._fault
        if fault is not None:
            fault("after_checks")
        cid = order.client_order_id
        with self._lock:
            currency, amount = self._reservation(order, facts)
            try:
                self.reservations.reserve(cid, currency, amount, order.quantity.raw)
            except InsufficientFunds as exc:
                self._deny(order, "balance_reservation", str(exc))
                return
            except ValueError as exc:  # a reservation already exists under this id
                self._deny(order, "idempotency", str(exc))
                return
            if fault is not None:
                fault("after_reservation")
            if not self.journal.claim_client_id(cid):
                self.reservations.release(cid)
                self._deny(order, "idempotency", f"client order id {cid} was used before")
                return
            if fault is not None:
                fault("after_claim")
            now = self.clock.now_ns()
            detailed = self._detailed
            if detailed:
                self.journal.write("intent", cid, now, _order_detail(order, currency, amount))
            if fault is not None:
                fault("after_intent")
            self._open[cid] = order
            self._filled[cid] = 0
            self._in_flight_changed()
            self.stats.submitted += 1
            if fault is not None:
                fault("before_venue")
            try:
                immediate = self.venue.submit(order)
            except VenueRejected as exc:
                if fault is not None:
                    fault("after_venue")
                immediate = OrderRejected(cid, order.instrument_id, now, str(exc))
            except (VenueTimeout, VenueUnavailable) as exc:
                if fault is not None:
                    fault("after_venue")
                self._pending(order, exc)
                return
            else:
                if fault is not None:
                    fault("after_venue")
            if detailed:
                self.journal.write("submitted", cid, now, {"venue_order_id": order.venue_order_id})
                self.journal.save_order(order)
            if fault is not None:
                fault("after_submitted")
        if immediate is not None:
            self.on_venue_event(immediate)

    def _pending(self, order: Order, exc: VenueError) -> None:
        """The venue may have the order: keep everything reserved until it says so."""
        order.status = OrderStatus.PENDING_VERIFICATION
        self.pending_verification[order.client_order_id] = order
        self.stats.pending_verification += 1
        self.journal.write(
            "pending_verification", order.client_order_id, self.clock.now_ns(), {"error": repr(exc)}
        )
        self.journal.save_order(order)
        if self._breaker is not None:
            self._breaker.on_venue_result(self.venue.name, False)

    def cancel(self, order: Order) -> None:
        """Cancels always pass the kill switch and the breaker: reducing risk is never blocked."""
        cid = order.client_order_id
        self.journal.write("cancel_intent", cid, self.clock.now_ns(), {})
        try:
            self.venue.cancel(order)
        except (VenueTimeout, VenueUnavailable) as exc:
            self.journal.write("cancel_unconfirmed", cid, self.clock.now_ns(), {"error": repr(exc)})
            if self._breaker is not None:
                self._breaker.on_venue_result(self.venue.name, False)

    # --- what the venue says ---------------------------------------------------------------
    def on_venue_event(self, event: OrderEvent) -> None:
        """Track status, release reservations exactly once, journal, then hand on to the ledger."""
        fault = self._fault
        if fault is not None:
            fault("before_event")
        cid = event.client_order_id
        t = type(event)
        order = self._open.get(cid)
        done = False
        if t is OrderFilled:
            assert isinstance(event, OrderFilled)
            q = event.fill.quantity.raw
            self.reservations.on_fill(cid, q)
            filled = self._filled.get(cid, 0) + q
            self._filled[cid] = filled
            if self._detailed:
                f = event.fill
                detail = {"price": str(f.price), "qty": str(f.quantity), "fee": str(f.fee)}
                self.journal.write("fill", cid, event.ts_event, detail)
            done = order is not None and filled >= order.quantity.raw
        elif t is OrderAccepted:
            if self._detailed:
                self.journal.write("ack", cid, event.ts_event, {})
            if self._breaker is not None:
                self._breaker.on_venue_result(self.venue.name, True)
        elif t in _TERMINAL:
            if self._detailed:
                self.journal.write(t.__name__, cid, event.ts_event, {"reason": getattr(event, "reason", "")})
            done = True
            if t is OrderRejected:
                self.stats.rejected += 1
        if fault is not None:
            fault("after_event_journal")
        if order is not None and self._detailed:
            self._save_state(order, t, self._filled.get(cid, 0))
        if done:
            self.reservations.release(cid)
            self._open.pop(cid, None)
            self._filled.pop(cid, None)
            self.pending_verification.pop(cid, None)
            self._in_flight_changed()
            if self._breaker is not None:
                self._breaker.on_order_done(t is not OrderRejected)
        self._on_event(event)

    def _save_state(self, order: Order, t: type, filled_raw: int) -> None:
        """Persist what the venue just told us (the strategy updates its own copy later)."""
        status = _STATUS_AFTER.get(t)
        if t is OrderFilled:
            status = OrderStatus.FILLED if filled_raw >= order.quantity.raw else OrderStatus.PARTIALLY_FILLED
        if status is None:
            return
        if status is OrderStatus.ACCEPTED and filled_raw:
            status = OrderStatus.PARTIALLY_FILLED
        snapshot = replace(order, status=status, filled=Quantity(filled_raw, order.quantity.precision))
        self.journal.save_order(snapshot)

    def adopt(self, order: Order, currency: str, reserved_raw: int) -> None:
        """Take back an order found working (or unverified) after a restart, with its reservation."""
        cid = order.client_order_id
        with self._lock:
            self._open[cid] = order
            self._filled[cid] = order.filled_raw
            if not self.reservations.holds(cid):
                self.reservations.reserve(cid, currency, reserved_raw, order.quantity.raw, force=True)
                if order.filled_raw:
                    self.reservations.on_fill(cid, order.filled_raw)
            if order.status is OrderStatus.PENDING_VERIFICATION:
                self.pending_verification[cid] = order
            self._in_flight_changed()

    def verify_pending(self) -> int:
        """Ask the venue about every order whose fate is unknown; returns how many were settled."""
        settled = 0
        for cid, order in list(self.pending_verification.items()):
            try:
                report = self.venue.query(cid)
            except (VenueTimeout, VenueUnavailable):
                continue  # still unknown: keep the reservation
            now = self.clock.now_ns()
            if report is None:  # the venue never received it
                self.journal.write("verified_absent", cid, now, {})
                self.pending_verification.pop(cid, None)
                self.on_venue_event(OrderRejected(cid, order.instrument_id, now, "not found at the venue"))
                settled += 1
                continue
            self.journal.write(
                "verified", cid, now, {"status": report.status.name, "filled": report.filled_raw}
            )
            self.pending_verification.pop(cid, None)
            order.status = OrderStatus.ACCEPTED if not report.status.is_terminal else report.status
            if report.venue_order_id:
                order.venue_order_id = report.venue_order_id
            self.stats.verified += 1
            settled += 1
            if report.status.is_terminal and report.filled_raw == 0:
                self.on_venue_event(_terminal_event(report.status, cid, order.instrument_id, now))
        return settled

    def enforce_kill_switch(self) -> int:
        """While the kill switch is engaged, cancel every order still working (once per order)."""
        if self._kill_switch is None or not self._kill_switch():
            self._kill_seen = False
            return 0
        n = 0
        for order in list(self._open.values()):
            if not order.cancel_pending and order.status is not OrderStatus.PENDING_VERIFICATION:
                order.cancel_pending = True
                self.cancel(order)
                n += 1
        if n and not self._kill_seen:
            self.journal.write("kill_switch_cancel_all", "*", self.clock.now_ns(), {"orders": n})
        self._kill_seen = True
        self.stats.kill_cancels += n
        return n

    @property
    def open_orders(self) -> dict[str, Order]:
        return dict(self._open)


def _ceil(num: int, den: int) -> int:
    return -((-num) // den)


def _terminal_event(status: OrderStatus, cid: str, iid: str, ts: int) -> OrderEvent:
    if status is OrderStatus.CANCELED:
        return OrderCanceled(cid, iid, ts)
    if status is OrderStatus.EXPIRED:
        return OrderExpired(cid, iid, ts)
    return OrderRejected(cid, iid, ts, f"venue reports {status.name}")


def _order_detail(order: Order, currency: str, amount: int) -> dict[str, object]:
    return {
        "instrument_id": order.instrument_id,
        "side": order.side.name,
        "type": order.order_type.name,
        "tif": order.time_in_force.name,
        "price": str(order.price) if order.price is not None else None,
        "qty": str(order.quantity),
        "reduce_only": order.reduce_only,
        "strategy_id": order.strategy_id,
        # some venues sign the creation time into the order (Polymarket V2): recovery must
        # rebuild the same order, so the time travels with the intent
        "ts_init": order.ts_init,
        "reserved": {"currency": currency, "amount_raw": amount},
    }

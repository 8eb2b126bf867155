"""The order gateway: step order, denials without side effects, rejects, timeouts, idempotency."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from simkit import INST, Scripted, Tape, run

from bastion.engine.clock import SimClock
from bastion.execution.gateway import Allowed, OrderFacts, OrderGateway
from bastion.execution.journal import MemoryJournal
from bastion.execution.reservations import InsufficientFunds, Reservations
from bastion.model.events import OrderAccepted, OrderDenied, OrderEvent, OrderFilled, OrderRejected
from bastion.model.fixed import Money
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.research.backtest import SafetySetup
from bastion.venues.base import OrderStatusReport, VenueRejected, VenueTimeout

USDT = 10**8  # reservation units: 8 decimals


@dataclass
class FakeVenue:
    """A venue double whose answers each test scripts (the real venue is tested via the simulator)."""

    name: str = "sim"
    mode: str = "ok"  # ok | reject | timeout | reject_exc
    sent: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    known: dict[str, OrderStatusReport] = field(default_factory=dict)

    def submit(self, order: Order) -> OrderEvent | None:
        self.sent.append(order.client_order_id)
        if self.mode == "timeout":
            raise VenueTimeout("no answer in 5 s")
        if self.mode == "reject_exc":
            raise VenueRejected("EOrder:Insufficient funds")
        if self.mode == "reject":
            return OrderRejected(order.client_order_id, order.instrument_id, 0, "post-only would cross")
        return None

    def cancel(self, order: Order) -> None:
        self.canceled.append(order.client_order_id)

    def query(self, client_order_id: str) -> OrderStatusReport | None:
        return self.known.get(client_order_id)


@dataclass
class Recorder:
    name: str
    calls: list[str]
    ok: bool = True

    def check(self, order: Order, facts: OrderFacts) -> Any:
        self.calls.append(self.name)
        return Allowed() if self.ok else Allowed(False, self.name, "refused by test")


def make(
    venue: FakeVenue, balance: int = 10_000 * USDT, **kw: Any
) -> tuple[OrderGateway, list[OrderEvent], MemoryJournal]:
    events: list[OrderEvent] = []
    journal = MemoryJournal()
    gw = OrderGateway(
        venue, INST, clock=SimClock(1), journal=journal,
        reservations=Reservations(lambda c: balance if c == "USDT" else 0),
        on_event=events.append, position_of=kw.pop("position_of", lambda: 0),
        reference_price=lambda side: 10001, **kw,
    )  # fmt: skip
    return gw, events, journal


def order(cid: str = "s-1", qty: str = "1.000", side: Side = Side.BUY, **kw: Any) -> Order:
    return Order(
        cid, INST.id, side, OrderType.LIMIT, INST.qty(qty), INST.price("1000.0"), TimeInForce.GTC, **kw
    )


def test_checks_run_in_order_and_stop_at_the_first_refusal() -> None:
    calls: list[str] = []
    v = FakeVenue()
    gw, events, journal = make(v, checks=[Recorder("compliance", calls), Recorder("limits", calls, ok=False),
                                          Recorder("never", calls)])  # fmt: skip
    gw.submit(order())
    assert calls == ["compliance", "limits"]
    assert isinstance(events[-1], OrderDenied) and events[-1].reason.startswith("limits")
    # a denial changes nothing: no reservation, no used id, nothing sent, only the audit line
    assert not gw.reservations.active() and v.sent == [] and journal.used_ids == set()
    assert journal.trail("s-1") == ["denied"]


def test_kill_switch_comes_first_and_cancels_what_is_working() -> None:
    engaged = [False]
    calls: list[str] = []
    v = FakeVenue()
    gw, events, _ = make(v, kill_switch=lambda: engaged[0], checks=[Recorder("compliance", calls)])
    gw.submit(order("s-1"))
    assert v.sent == ["s-1"]
    engaged[0] = True
    gw.submit(order("s-2"))
    assert calls == ["compliance"]  # the second order never reached the other checks
    assert isinstance(events[-1], OrderDenied) and "kill_switch" in events[-1].reason
    assert v.canceled == ["s-1"]  # the resting order was cancelled
    assert gw.enforce_kill_switch() == 0  # once per order


def test_write_ahead_then_submit_then_status() -> None:
    v = FakeVenue()
    gw, _, journal = make(v)
    o = order()
    gw.submit(o)
    assert journal.trail("s-1") == ["intent", "submitted"]
    assert gw.reservations.holds("s-1")
    # 1 BTC at 1000.0: margin 1/2 + taker 5 bp = 500.5 USDT reserved (rounded up)
    assert gw.reservations.reserved("USDT") == 5005 * USDT // 10
    gw.on_venue_event(OrderAccepted("s-1", INST.id, 2))
    fill = Fill("s-1", INST.id, Side.BUY, INST.price("1000.0"), INST.qty("0.400"), Money(0, 8, "USDT"),
                Liquidity.MAKER, 3)  # fmt: skip
    gw.on_venue_event(OrderFilled("s-1", INST.id, 3, fill))
    assert gw.reservations.reserved("USDT") == 3003 * USDT // 10  # 60 % still open
    fill2 = Fill("s-1", INST.id, Side.BUY, INST.price("1000.0"), INST.qty("0.600"), Money(0, 8, "USDT"),
                 Liquidity.MAKER, 4)  # fmt: skip
    gw.on_venue_event(OrderFilled("s-1", INST.id, 4, fill2))
    assert not gw.reservations.holds("s-1") and gw.reservations.reserved("USDT") == 0
    assert journal.trail("s-1") == ["intent", "submitted", "ack", "fill", "fill"]


def test_venue_reject_releases_exactly_once() -> None:
    for mode in ("reject", "reject_exc"):
        v = FakeVenue(mode=mode)
        gw, events, journal = make(v)
        gw.submit(order())
        assert isinstance(events[-1], OrderRejected)
        assert not gw.reservations.holds("s-1") and gw.reservations.released_count == 1
        assert gw.reservations.release("s-1") is False
        gw.on_venue_event(OrderRejected("s-1", INST.id, 5, "duplicate report"))  # a second report
        assert gw.reservations.released_count == 1
        assert journal.trail("s-1")[-1] == "OrderRejected"


def test_timeout_keeps_the_reservation_until_verified() -> None:
    v = FakeVenue(mode="timeout")
    gw, events, journal = make(v)
    o = order()
    gw.submit(o)
    assert o.status is OrderStatus.PENDING_VERIFICATION
    assert gw.reservations.holds("s-1") and "s-1" in gw.pending_verification
    assert journal.trail("s-1") == ["intent", "pending_verification"]
    v.mode = "ok"
    v.known["s-1"] = OrderStatusReport("s-1", OrderStatus.ACCEPTED, 0, "77")
    assert gw.verify_pending() == 1
    assert gw.reservations.holds("s-1") and o.venue_order_id == "77"  # working at the venue
    # a second one the venue never saw is settled as absent and its funds come back
    v.mode = "timeout"
    gw.submit(order("s-2"))
    v.mode = "ok"
    gw.verify_pending()
    assert not gw.reservations.holds("s-2")
    assert isinstance(events[-1], OrderRejected) and "not found" in events[-1].reason


def test_same_client_id_is_never_sent_twice() -> None:
    v = FakeVenue()
    gw, events, _ = make(v)
    gw.submit(order("s-1"))
    gw.on_venue_event(OrderRejected("s-1", INST.id, 2, "x"))
    gw.submit(order("s-1"))  # a retry with the same id after the first one ended
    assert v.sent == ["s-1"]
    assert isinstance(events[-1], OrderDenied) and "idempotency" in events[-1].reason
    assert not gw.reservations.active()


def test_insufficient_balance_names_the_numbers() -> None:
    v = FakeVenue()
    gw, events, _ = make(v, balance=100 * USDT)
    gw.submit(order())
    assert isinstance(events[-1], OrderDenied)
    assert (
        "balance_reservation" in events[-1].reason
        and "500.5" in events[-1].reason
        and "100.0" in events[-1].reason
    )
    assert v.sent == []


def test_reduce_only_that_would_add_is_denied_and_reducing_needs_no_margin() -> None:
    v = FakeVenue()
    gw, events, _ = make(v, position_of=lambda: 2000)  # long 2 BTC
    gw.submit(order("s-1", side=Side.BUY, reduce_only=True))
    assert isinstance(events[-1], OrderDenied) and "reduce_only" in events[-1].reason
    gw.submit(order("s-2", side=Side.SELL, reduce_only=True))
    assert v.sent == ["s-2"] and gw.reservations.reserved("USDT") == 0


def test_backtest_denials_reach_the_strategy_and_the_report() -> None:
    calls: list[str] = []
    tape = (
        Tape()
        .snapshot(0, bids=[("1000.0", "5.000")], asks=[("1000.1", "5.000")])
        .level(9, "bid", "999.9", "1")
    )
    s = Scripted({0: lambda st: st.submit_limit(Side.BUY, INST.price("999.0"), INST.qty("1.000"))})
    r = run(tape, s, safety=SafetySetup(checks=[Recorder("max_order_rate", calls, ok=False)]))
    assert calls == ["max_order_rate"]
    assert any(isinstance(e, OrderDenied) for e in s.events)
    assert any("denied by the gateway: max_order_rate: 1" in n for n in r.notes)
    assert r.orders == 0  # nothing reached the venue


ops = st.lists(st.tuples(st.sampled_from(["reserve", "fill", "release"]), st.integers(0, 5),
                         st.integers(1, 10**6), st.integers(1, 100)), max_size=60)  # fmt: skip


@settings(max_examples=200)
@given(ops)
def test_reservations_never_overspend_and_release_once(seq: list[tuple[str, int, int, int]]) -> None:
    balance = 3 * 10**6
    r = Reservations(lambda c: balance)
    qty: dict[str, int] = {}
    released: set[str] = set()
    for op, k, amount, q in seq:
        cid = f"o{k}"
        if op == "reserve":
            try:
                r.reserve(cid, "USDT", amount, q)
                qty[cid] = q
                released.discard(cid)
            except (InsufficientFunds, ValueError):
                pass
        elif op == "fill":
            r.on_fill(cid, q)
        elif op == "release":
            first = r.release(cid)
            assert first == (cid in qty and cid not in released)
            if first:
                released.add(cid)
        assert 0 <= r.reserved("USDT") <= balance
        assert r.reserved("USDT") == sum(x.amount for x in r.active())
        assert all(0 <= x.amount <= x.original for x in r.active())
    assert Fraction(r.available("USDT")) >= 0


def test_backtest_with_risk_config_trips_the_breaker_and_enforces_limits(shared_data: Any) -> None:
    from decimal import Decimal

    from bastion.data.binance_ws import load_binance_ws
    from bastion.model import KNOWN_INSTRUMENTS
    from bastion.research.backtest import BacktestRun
    from bastion.research.streams import build_stream
    from bastion.risk.breaker import BreakerConfig, BreakerState
    from bastion.risk.config import RiskConfig
    from bastion.risk.policy import LimitsConfig
    from bastion.strategies import load_strategy

    tables = load_binance_ws([shared_data / "ticks_l2/binance_ws_hftbacktest/usdm/btcusdt_20240808.gz"])
    stream = build_stream(tables, KNOWN_INSTRUMENTS["BTCUSDT-PERP.BINANCE"])
    # a loss limit of 0.2 % of 10,000 USDT (20 USDT): the market maker loses more than that here
    risk = RiskConfig(breaker=BreakerConfig(max_loss_pct=Decimal("0.2"), max_daily_loss=Decimal("1000")))
    run_ = BacktestRun(stream, load_strategy("fixed_spread_mm", {}), safety=SafetySetup(risk=risk))
    r = run_.run()
    assert run_.breaker is not None and run_.breaker.state in (BreakerState.OPEN, BreakerState.DRAINING)
    assert any("denied by the gateway" in n and "breaker" in n for n in r.notes), r.notes
    unlimited = BacktestRun(
        stream, load_strategy("fixed_spread_mm", {}), safety=SafetySetup(risk=RiskConfig())
    ).run()
    assert len(unlimited.fills) > len(r.fills)
    # a per-strategy leverage cap of 0.05x of 10,000 USDT = 500 USDT:
    # one 0.01 BTC quote (~618 USDT) is too much
    tight = RiskConfig(limits=LimitsConfig(max_strategy_leverage=Decimal("0.05")))
    t = BacktestRun(stream, load_strategy("fixed_spread_mm", {}), safety=SafetySetup(risk=tight)).run()
    assert not t.fills and any("leverage" in n for n in t.notes), t.notes

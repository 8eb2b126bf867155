"""The strategy API and the run's bookkeeping: timers, modify, bus, balances, instruments."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from simkit import INST, MS, T0, Scripted, Tape, run

from bastion.engine.bus import MessageBus
from bastion.engine.lifecycle import ComponentState, InvalidTransition, Lifecycle
from bastion.engine.strategy import SUB_TOP_OF_BOOK, Strategy
from bastion.model import KNOWN_INSTRUMENTS, Instrument, InstrumentKind, OptionRight, Side
from bastion.model.events import OrderCanceled
from bastion.research.backtest import BacktestRun
from bastion.research.streams import build_stream


def tape() -> Tape:
    t = Tape().snapshot(0, bids=[("1000.0", "5.000")], asks=[("1000.1", "5.000"), ("1000.2", "1.000")])
    t.level(100, "ask", "1000.1", "0").level(200, "ask", "1000.1", "1.000")  # two top-of-book changes
    return t.trade(300, "999.0", "10.000", "sell").level(400, "bid", "998.0", "1.000")


class TimerStrategy(Strategy):
    name = "timer"

    def __init__(self) -> None:
        super().__init__("t")
        self.fired: list[tuple[str, int, int]] = []

    def on_start(self) -> None:
        self.subscribe(SUB_TOP_OF_BOOK)
        self.set_timer("once", T0 + 150 * MS)
        self.set_timer("every", T0 + 50 * MS, interval_ns=100 * MS)

    def on_timer(self, name: str, ts_ns: int) -> None:
        self.fired.append((name, ts_ns, self.now))


def test_timers_fire_at_their_time_in_order() -> None:
    s = TimerStrategy()
    run(tape(), s)
    assert [(n, (ts - T0) // MS) for n, ts, _ in s.fired] == [
        ("every", 50), ("every", 150), ("once", 150), ("every", 250), ("every", 350),
    ]  # fmt: skip
    assert all(now == ts for _, ts, now in s.fired)  # the clock reads the timer's time


def test_modify_is_cancel_and_replace() -> None:
    def place(st: Any) -> None:
        st.first = st.submit_limit(Side.BUY, INST.price("999.5"), INST.qty("1.000"))

    def move(st: Any) -> None:
        st.second = st.modify(st.first, price=INST.price("1000.0"))

    s = Scripted({0: place, 1: move})
    run(tape(), s)
    assert any(
        isinstance(e, OrderCanceled) and e.client_order_id == s.first.client_order_id for e in s.events
    )
    assert [f.client_order_id for f in s.fills] == [s.second.client_order_id]
    assert s.fills[0].price == INST.price("1000.0")


def test_bus_carries_order_events_and_balances_match_the_fills() -> None:
    s = Scripted({0: lambda st: st.submit_limit(Side.BUY, INST.price("1000.0"), INST.qty("2.000"))})
    r = BacktestRun(build_stream(tape().tables(), INST), s)
    seen: dict[str, int] = {}
    r.ledger.bus.subscribe(
        "order.*", lambda ev: seen.__setitem__(type(ev).__name__, seen.get(type(ev).__name__, 0) + 1)
    )
    res = r.run()
    assert seen == {"OrderAccepted": 1, "OrderFilled": 1}
    # a perpetual changes no balance but the settlement currency: realized PnL − fees
    assert res.balances == {"USDT": str(Decimal(res.realized_pnl) - Decimal(res.fees))}


def test_spot_balances_swap_base_and_quote(shared_data: Any) -> None:
    from bastion.data.binance_ws import load_binance_ws
    from bastion.strategies import load_strategy

    tables = load_binance_ws([shared_data / "ticks_l2/binance_ws_hftbacktest/spot/btcusdt_20240808.gz"])
    r = BacktestRun(
        build_stream(tables, KNOWN_INSTRUMENTS["BTCUSDT.BINANCE"]),
        load_strategy("fixed_spread_mm", {"order_qty": "0.01", "max_position": "0.05"}),
    ).run()
    assert r.fills
    btc = sum((Decimal(f.qty) * (1 if f.side == "buy" else -1) for f in r.fills), Decimal(0))
    usdt = sum(
        (Decimal(f.qty) * Decimal(f.price) * (-1 if f.side == "buy" else 1) for f in r.fills), Decimal(0)
    )
    assert Decimal(r.balances["BTC"]) == btc
    assert Decimal(r.balances["USDT"]) == usdt - Decimal(r.fees)


def test_message_bus_prefix_and_order() -> None:
    bus = MessageBus()
    got: list[str] = []
    bus.subscribe("risk.breaker", lambda m: got.append(f"exact:{m}"))
    bus.subscribe("risk.*", lambda m: got.append(f"prefix:{m}"))
    bus.publish("risk.breaker", "open")
    bus.publish("order.filled", "x")
    assert got == ["exact:open", "prefix:open"]


def test_lifecycle_transitions() -> None:
    lc = Lifecycle("s")
    lc.move(ComponentState.RUNNING)
    lc.move(ComponentState.STOPPED)
    with pytest.raises(InvalidTransition):
        lc.move(ComponentState.RUNNING)


def test_instrument_kinds_validate() -> None:
    opt = Instrument(
        "BTC-27DEC24-60000-C",
        "DERIBIT",
        InstrumentKind.OPTION,
        "BTC",
        "USD",
        Decimal("0.0005"),
        Decimal("0.1"),
        settle="BTC",
        strike=Decimal(60000),
        expiry_ns=1735286400 * 10**9,
        right=OptionRight.CALL,
    )
    assert opt.price_precision == 4 and opt.size_precision == 1
    with pytest.raises(ValueError, match="strike"):
        Instrument("X", "DERIBIT", InstrumentKind.OPTION, "BTC", "USD", Decimal("0.0005"), Decimal("0.1"))
    yes = Instrument(
        "WILL-X-YES",
        "POLYMARKET",
        InstrumentKind.BINARY_OUTCOME,
        "YES",
        "USDC",
        Decimal("0.01"),
        Decimal("1"),
        outcome="YES",
    )
    assert yes.notional_value(yes.price("0.37").raw, yes.qty("100").raw) == 37
    with pytest.raises(ValueError, match="binary"):
        Instrument("B", "P", InstrumentKind.BINARY_OUTCOME, "Y", "USDC", Decimal("2"), Decimal("1"))
    with pytest.raises(ValueError, match="more than 1 decimals"):
        INST.price("1000.05")
    half = Instrument("H", "X", InstrumentKind.SPOT, "A", "B", Decimal("0.5"), Decimal("0.002"))
    with pytest.raises(ValueError, match="not a multiple of tick"):
        half.price("10.2")
    with pytest.raises(ValueError, match="not a multiple of lot"):
        half.qty("0.003")
    assert Instrument.from_dict(opt.to_dict()) == opt

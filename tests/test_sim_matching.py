"""The simulated venue's matching: queue position, trade-through, crossing, order types, latency."""

from __future__ import annotations

from decimal import Decimal

from simkit import INST, Scripted, Tape, run

from bastion.model.events import OrderAccepted, OrderCanceled, OrderExpired, OrderRejected
from bastion.model.orders import Liquidity, Side, TimeInForce


def bid(price: str, qty: str, tif: TimeInForce = TimeInForce.GTC):  # type: ignore[no-untyped-def]
    return lambda s: s.submit_limit(Side.BUY, INST.price(price), INST.qty(qty), tif)


def base() -> Tape:
    return Tape().snapshot(
        0, bids=[("1000.0", "5.000"), ("999.9", "3.000")], asks=[("1000.1", "5.000"), ("1000.2", "2.000")]
    )


def test_queue_position_partial_fill() -> None:
    tape = base().trade(20, "1000.0", "4.500", "sell").trade(30, "1000.0", "1.000", "sell")
    s = Scripted({0: bid("1000.0", "1.000", TimeInForce.POST_ONLY)})
    r = run(tape, s)
    # 5.0 was ahead of us: 4.5 + 1.0 traded → 0.5 reached us
    assert [(str(f.quantity), f.liquidity) for f in s.fills] == [("0.500", Liquidity.MAKER)]
    assert r.final_position == "0.500"
    # maker fee 2 bp of 0.5 × 1000 = 0.1 USDT
    assert Decimal(r.fees) == Decimal("0.1")


def test_no_partial_fill_mode_fills_whole_order() -> None:
    tape = base().trade(20, "1000.0", "5.200", "sell")
    s = Scripted({0: bid("1000.0", "1.000")})
    run(tape, s, partial=False)
    assert [str(f.quantity) for f in s.fills] == ["1.000"]


def test_queue_shrinks_only_to_level_size_on_cancels() -> None:
    # level 5.0 ahead; it shrinks to 2.0 (cancels) → 2.0 ahead; a 2.5 trade fills 0.5 of ours
    tape = base().level(10, "bid", "1000.0", "2.000").trade(20, "1000.0", "2.500", "sell")
    s = Scripted({0: bid("1000.0", "1.000")})
    run(tape, s)
    assert [str(f.quantity) for f in s.fills] == ["0.500"]


def test_level_growth_does_not_put_us_behind() -> None:
    # orders added after ours join behind us: the queue ahead stays 5.0
    tape = base().level(10, "bid", "1000.0", "9.000").trade(20, "1000.0", "5.500", "sell")
    s = Scripted({0: bid("1000.0", "1.000")})
    run(tape, s)
    assert [str(f.quantity) for f in s.fills] == ["0.500"]


def test_trade_through_fills() -> None:
    tape = base().trade(20, "999.9", "0.100", "sell")
    s = Scripted({0: bid("1000.0", "1.000")})
    run(tape, s, partial=False)
    assert [str(f.quantity) for f in s.fills] == ["1.000"]
    assert s.fills[0].price == INST.price("1000.0")


def test_opposite_best_crossing_our_price_fills_as_maker() -> None:
    # asks drop to 1000.0 (our bid's price): we would have been hit
    tape = base().level(10, "ask", "1000.0", "1.000")
    s = Scripted({0: bid("1000.0", "0.300")})
    run(tape, s)
    assert [(str(f.quantity), f.liquidity) for f in s.fills] == [("0.300", Liquidity.MAKER)]


def test_post_only_crossing_is_rejected() -> None:
    s = Scripted({0: bid("1000.1", "1.000", TimeInForce.POST_ONLY)})
    run(base().level(50, "bid", "999.8", "1.000"), s)
    assert any(isinstance(e, OrderRejected) and "post-only" in e.reason for e in s.events)
    assert not s.fills


def test_market_order_walks_the_book_as_taker() -> None:
    s = Scripted({0: lambda st: st.submit_market(Side.BUY, INST.qty("6.000"))})
    r = run(base().level(50, "bid", "999.8", "1.000"), s)
    assert [(str(f.price), str(f.quantity), f.liquidity) for f in s.fills] == [
        ("1000.1", "5.000", Liquidity.TAKER),
        ("1000.2", "1.000", Liquidity.TAKER),
    ]
    # taker fee 5 bp on 5 × 1000.1 + 1 × 1000.2
    assert Decimal(r.fees) == (Decimal("5000.5") + Decimal("1000.2")) * Decimal("0.0005")


def test_fok_without_enough_liquidity_expires_unfilled() -> None:
    s = Scripted({0: bid("1000.1", "6.000", TimeInForce.FOK)})
    run(base().level(50, "bid", "999.8", "1.000"), s)
    assert not s.fills
    assert any(isinstance(e, OrderExpired) for e in s.events)


def test_ioc_fills_what_it_can_then_expires() -> None:
    s = Scripted({0: bid("1000.1", "6.000", TimeInForce.IOC)})
    run(base().level(50, "bid", "999.8", "1.000"), s)
    assert [str(f.quantity) for f in s.fills] == ["5.000"]
    assert isinstance(s.events[-1], OrderExpired)


def test_order_latency_hides_trades_before_arrival() -> None:
    # the order is sent at t=0 with 5 ms latency; a trade-through at t=2 ms happens before it arrives
    tape = base().trade(2, "999.9", "1.000", "sell").trade(10, "999.9", "1.000", "sell")
    s = Scripted({0: bid("1000.0", "1.000")})
    run(tape, s, latency_ms=5, partial=False)
    assert len(s.fills) == 1
    assert s.fills[0].ts_event == tape.trades[1][0]
    acc = [e for e in s.events if isinstance(e, OrderAccepted)]
    assert acc and acc[0].ts_event == tape.book[0][0] + 5_000_000


def test_cancel_before_trade_prevents_fill() -> None:
    def cancel_all(st: Scripted) -> None:
        st.cancel_all()

    # two top-of-book changes (ask 1000.1 leaves, comes back); we cancel on the second
    tape = base().level(5, "ask", "1000.1", "0").level(7, "ask", "1000.1", "1.000")
    tape = tape.trade(20, "999.0", "9.000", "sell")
    s = Scripted({0: bid("1000.0", "1.000"), 2: cancel_all})
    run(tape, s, latency_ms=1)
    assert not s.fills
    assert any(isinstance(e, OrderCanceled) for e in s.events)


def test_rejects_off_grid_price() -> None:
    from bastion.model.fixed import Price

    s = Scripted({0: lambda st: st.submit_limit(Side.BUY, Price(100005, 2), INST.qty("1.000"))})
    run(base().level(50, "bid", "999.8", "1.000"), s)
    assert any(isinstance(e, OrderRejected) and "tick grid" in e.reason for e in s.events)


def test_determinism_same_hash() -> None:
    tape = base().trade(20, "1000.0", "4.500", "sell").trade(30, "1000.0", "1.000", "sell")
    h1 = run(tape, Scripted({0: bid("1000.0", "1.000")})).result_hash
    h2 = run(tape, Scripted({0: bid("1000.0", "1.000")})).result_hash
    h3 = run(tape, Scripted({0: bid("1000.0", "1.000")}), latency_ms=50).result_hash
    assert h1 == h2 != h3


def test_funding_in_l2_replay_charges_the_position() -> None:
    import numpy as np
    from simkit import MS, T0

    from bastion.data.schema import DataType, Table
    from bastion.research.backtest import BacktestRun
    from bastion.research.streams import build_stream

    tape = base().trade(20, "999.9", "2.000", "sell").level(50, "bid", "999.8", "1.000")
    funding = Table(
        DataType.FUNDING,
        INST.id,
        12,
        0,
        {
            "ts_event": np.array([T0 + 40 * MS], dtype=np.int64),
            "ts_local": np.array([T0 + 40 * MS], dtype=np.int64),
            "seq": np.array([10**9], dtype=np.int64),
            "rate": np.array([10**8], dtype=np.int64),
        },
        source="f",
    )  # 1 bp
    s = Scripted({0: bid("1000.0", "2.000")})
    r = BacktestRun(build_stream([*tape.tables(), funding], INST), s).run()
    assert [str(f.quantity) for f in s.fills] == ["2.000"]
    # long 2 BTC, mark = mid (1000.0 + 1000.1) / 2 floored to the tick = 1000.0: pays 1 bp of 2000
    assert Decimal(r.funding) == Decimal("-0.2")


def test_gap_marker_empties_the_book_and_the_market_maker_pulls_quotes() -> None:
    from simkit import run as run_tape

    from bastion.data.schema import FLAG_CLEAR, FLAG_LAST
    from bastion.strategies import load_strategy

    tape = base().level(10, "ask", "1000.1", "4.000")
    tape._book(20, 1, "1000.0", "0", FLAG_CLEAR | FLAG_LAST)  # the loader's gap marker
    tape.trade(40, "990.0", "50.000", "sell").trade(41, "1010.0", "50.000", "buy")
    mm = load_strategy("fixed_spread_mm", {"ticks": 1})
    r = run_tape(tape, mm)
    assert r.orders >= 2 and r.cancels >= 2
    assert not r.fills  # both quotes were pulled before the trades that would have hit them

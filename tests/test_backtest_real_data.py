"""End to end on the real captures in shared/data: the engine, the venue and the strategies."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from bastion.data.binance_ws import load_binance_ws
from bastion.data.freqtrade import load_freqtrade
from bastion.model import KNOWN_INSTRUMENTS
from bastion.research.backtest import BacktestRun, SafetySetup
from bastion.research.bar_backtest import BarBacktestRun
from bastion.research.result import BacktestResult
from bastion.research.streams import build_stream
from bastion.strategies import load_strategy
from bastion.venues.sim.bars import BarArrays
from bastion.venues.sim.replay import EventStream
from bastion.venues.sim.venue import LatencyModel, SimVenueConfig

USDM = "ticks_l2/binance_ws_hftbacktest/usdm/btcusdt_20240808.gz"
SPOT = [
    "ticks_l2/binance_ws_hftbacktest/spot/btcusdt_20240808.gz",
    "ticks_l2/binance_ws_hftbacktest/spot/btcusdt_20240809.gz",
]


@pytest.fixture(scope="module")
def usdm_stream(shared_data: Path) -> EventStream:
    tables = load_binance_ws([shared_data / USDM])
    return build_stream(tables, KNOWN_INSTRUMENTS["BTCUSDT-PERP.BINANCE"])


def _check_ledger(r: BacktestResult, max_abs_position: Decimal) -> None:
    fees = sum((Decimal(f.fee) for f in r.fills), Decimal(0))
    assert fees == Decimal(r.fees)
    pos = sum((Decimal(f.qty) * (1 if f.side == "buy" else -1) for f in r.fills), Decimal(0))
    assert pos == Decimal(r.final_position)
    running = np.cumsum([float(f.qty) * (1 if f.side == "buy" else -1) for f in r.fills])
    assert np.abs(running).max() <= float(max_abs_position) + 1e-12


def test_avellaneda_stoikov_usdm_end_to_end(usdm_stream: EventStream) -> None:
    strat = load_strategy("avellaneda_stoikov", {})
    r = BacktestRun(usdm_stream, strat).run()
    assert r.events == len(usdm_stream)
    assert r.orders > 0 and len(r.fills) > 0
    assert all(f.liquidity == "maker" for f in r.fills)  # post-only quotes never take
    _check_ledger(r, Decimal("0.100"))
    assert strat.kappa_fits > 0 and strat.sigma > 0  # type: ignore[attr-defined]
    # every fill is on the tick and lot grid of the instrument
    inst = usdm_stream.instrument
    for f in r.fills[:50]:
        inst.price(f.price)
        inst.qty(f.qty)


def test_same_data_same_hash(usdm_stream: EventStream) -> None:
    a = BacktestRun(usdm_stream, load_strategy("avellaneda_stoikov", {})).run()
    b = BacktestRun(usdm_stream, load_strategy("avellaneda_stoikov", {})).run()
    assert a.result_hash == b.result_hash
    assert [(f.ts, f.price, f.qty) for f in a.fills] == [(f.ts, f.price, f.qty) for f in b.fills]
    c = BacktestRun(usdm_stream, load_strategy("avellaneda_stoikov", {"model": "glft"})).run()
    assert c.result_hash != a.result_hash


def test_latency_from_data_changes_fills(usdm_stream: EventStream) -> None:
    const = BacktestRun(usdm_stream, load_strategy("fixed_spread_mm", {})).run()
    cfg = SimVenueConfig(latency=LatencyModel(feed_from_data=True))
    recorded = BacktestRun(usdm_stream, load_strategy("fixed_spread_mm", {}), cfg).run()
    assert recorded.events == const.events
    assert recorded.result_hash != const.result_hash


def test_fixed_spread_mm_respects_inventory_limit(usdm_stream: EventStream) -> None:
    cfg = SimVenueConfig(partial_fills=False)
    r = BacktestRun(usdm_stream, load_strategy("fixed_spread_mm", {"max_position": "0.030"}), cfg).run()
    assert len(r.fills) > 100
    _check_ledger(r, Decimal("0.030"))


def test_avellaneda_stoikov_spot_two_files(shared_data: Path) -> None:
    tables = load_binance_ws([shared_data / p for p in SPOT])
    stream = build_stream(tables, KNOWN_INSTRUMENTS["BTCUSDT.BINANCE"])
    r = BacktestRun(
        stream, load_strategy("avellaneda_stoikov", {"order_qty": "0.01", "max_position": "0.1"})
    ).run()
    assert r.events == len(stream)
    assert r.end_ns - r.start_ns > 600 * 10**9  # both files: ~11 minutes
    _check_ledger(r, Decimal("0.1"))


def _reference_ema_cross(close: np.ndarray, fast: int, slow: int, fee: float) -> tuple[float, int]:
    """An independent float implementation of the W1 rules, written from the definition."""
    af, aslow = 2.0 / (fast + 1), 2.0 / (slow + 1)
    ef = es = close[0]
    cash, pos, trades = 0.0, 0.0, 0
    for i, c in enumerate(close):
        if i:
            ef += af * (c - ef)
            es += aslow * (c - es)
        if i < slow - 1:
            continue
        if pos == 0 and ef > es:
            cash -= c * (1 + fee)
            pos = 1.0
            trades += 1
        elif pos > 0 and ef < es:
            cash += c * (1 - fee)
            pos = 0.0
    return cash + pos * close[-1], trades


def test_ema_cross_bars_match_reference(shared_data: Path) -> None:
    (t,) = load_freqtrade(shared_data / "ohlcv/binance_spot_1h/BTC_USDT-1h.feather")
    c = t.columns
    bars = BarArrays(c["ts_event"], c["ts_local"], c["open"], c["high"], c["low"], c["close"], c["volume"])
    inst = KNOWN_INSTRUMENTS[t.instrument_id]
    # W1's definition: cash large enough that no order is ever refused for funds
    big = SafetySetup(capital=Fraction(10**9))
    r = BarBacktestRun(
        bars, inst, load_strategy("ema_cross", {"fast": 10, "slow": 50, "size": "1"}), safety=big
    ).run()
    pnl, trades = _reference_ema_cross(c["close"] / 10**t.price_precision, 10, 50, 0.001)
    assert sum(1 for f in r.fills if f.side == "buy") == trades
    assert abs(float(r.net_pnl) - pnl) < 0.01
    assert all(f.liquidity == "taker" for f in r.fills)


def test_bar_mode_orders_go_through_the_gateway(shared_data: Path) -> None:
    """With 10,000 USDT a 1 BTC buy at 2021 prices cannot be funded: the gateway refuses it."""
    (t,) = load_freqtrade(shared_data / "ohlcv/binance_spot_1h/BTC_USDT-1h.feather")
    c = t.columns
    bars = BarArrays(c["ts_event"], c["ts_local"], c["open"], c["high"], c["low"], c["close"], c["volume"])
    inst = KNOWN_INSTRUMENTS[t.instrument_id]
    r = BarBacktestRun(bars, inst, load_strategy("ema_cross", {"size": "1"})).run()
    assert any("balance_reservation" in n for n in r.notes), r.notes
    assert r.fills  # the cheap years still trade

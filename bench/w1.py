"""W1: EMA(10)/EMA(50) long/flat, 1 BTC, fill at the bar's close, 0.1 % taker fee, 1,000,000 bars.

The bars are the real Binance spot BTC/USDT hourly candles (shared/data) tiled to N rows, as the
peers' prep_data.py does; the strategy is ``bastion/strategies/ema_cross.py`` run through the bar
engine, unmodified.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bastion import __version__
from bastion.ops.paths import shared_data_dir

W1_FILE = "ohlcv/binance_spot_1h/BTC_USDT-1h.feather"


def w1(n: int, report: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    from bastion.data.freqtrade import load_freqtrade
    from bastion.model import KNOWN_INSTRUMENTS
    from bastion.research.bar_backtest import BarBacktestRun
    from bastion.strategies import load_strategy
    from bastion.venues.sim.bars import BarArrays

    t0 = time.perf_counter()
    (table,) = load_freqtrade(shared_data_dir() / W1_FILE)
    c = table.columns
    base = BarArrays(c["ts_event"], c["ts_local"], c["open"], c["high"], c["low"], c["close"], c["volume"])
    bars = base.tile(n)
    inst = KNOWN_INSTRUMENTS[table.instrument_id]
    load_s = time.perf_counter() - t0
    params = {"fast": 10, "slow": 50, "size": "1"}
    from fractions import Fraction

    from bastion.research.backtest import SafetySetup

    big = SafetySetup(capital=Fraction(10**9))  # W1: cash so large no order is refused for funds
    t0 = time.perf_counter()
    BarBacktestRun(base.tile(2000), inst, load_strategy("ema_cross", params), safety=big).run()  # warm-up
    jit_s = time.perf_counter() - t0
    strategy = load_strategy("ema_cross", params)
    t0 = time.perf_counter()
    result = BarBacktestRun(bars, inst, strategy, safety=big).run()
    run_s = time.perf_counter() - t0
    buys = sum(1 for f in result.fills if f.side == "buy")
    return report(
        False,
        workload="W1",
        engine="bastion",
        version=__version__,
        bars=n,
        run_s=round(run_s, 4),
        bars_per_s=round(n / run_s),
        pnl=round(float(result.net_pnl), 2),
        trades=buys,
        fills=len(result.fills),
        fees=round(float(result.fees), 2),
        strategy_calls=strategy.signals,  # type: ignore[attr-defined]
        load_s=round(load_s, 2),
        jit_s=round(jit_s, 2),
        result_hash=result.result_hash,
    )

"""Bastion's side of the peer benchmarks (../shared/bench-peers): same workloads, same data.

Each workload runs through Bastion's real engine: the loader, the simulated venue's compiled
loop, the strategy API and an ordinary Python strategy from ``bastion/strategies``. Rates are
in-process, after loading and a JIT warm-up on a prefix, like the peers' scripts; every line
also carries PnL and fill counts so the engines can be cross-checked.

    python bench/run.py W2 [--tiles 8] [--json]
    python bench/run.py W1 [--bars 1000000]
    python bench/run.py W2-replay          # the loop alone, no strategy
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bastion import __version__
from bastion.ops.paths import shared_data_dir

W2_FILE = "ticks_l2/binance_ws_hftbacktest/usdm/btcusdt_20240808.gz"
W1_FILE = "ohlcv/binance_spot_1h/BTC_USDT-1h.feather"
LATENCY_MS = 1.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def report(as_json: bool, **kw: Any) -> dict[str, Any]:
    kw.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    print("RESULT " + json.dumps(kw, default=str), flush=True)
    return kw


def _w2_stream(tiles: int) -> Any:
    from bastion.data.binance_ws import load_binance_ws
    from bastion.model import KNOWN_INSTRUMENTS
    from bastion.research.streams import build_stream
    from bastion.venues.sim.replay import tile

    tables = load_binance_ws([shared_data_dir() / W2_FILE])
    inst = KNOWN_INSTRUMENTS[tables[0].instrument_id]
    # The peers' definition starts at the REST snapshot: drop what the loader saw before it.
    from bastion.data.schema import FLAG_SNAPSHOT, DataType

    book = next(t for t in tables if t.data_type is DataType.BOOK_DELTA)
    first_snap_seq = int(book.columns["seq"][(book.columns["flags"] & FLAG_SNAPSHOT) != 0][0])
    for t in tables:
        keep = t.columns["seq"] >= first_snap_seq
        t.columns = {k: v[keep] for k, v in t.columns.items()}
    return tile(build_stream(tables, inst), tiles)


def w2(tiles: int, replay_only: bool, as_json: bool) -> dict[str, Any]:
    from bastion.research.backtest import BacktestRun
    from bastion.strategies import load_strategy
    from bastion.venues.sim.venue import LatencyModel, SimVenueConfig

    t0 = time.perf_counter()
    stream = _w2_stream(tiles)
    load_s = time.perf_counter() - t0
    lat = int(LATENCY_MS * 1_000_000)
    cfg = SimVenueConfig(latency=LatencyModel(order_ns=lat, response_ns=lat), partial_fills=False)
    params = {"ticks": 2, "order_qty": "0.010", "max_position": "0.100"}

    def make() -> Any:
        if replay_only:
            from bastion.engine.strategy import Strategy

            return Strategy("replay")
        return load_strategy("fixed_spread_mm", params)

    from bastion.venues.sim.replay import EventStream

    warm = EventStream(
        stream.instrument,
        stream.book_range,
        stream.evi[:, :50_000].copy(),
        stream.evk[:, :50_000].copy(),
        stream.price_raw[:50_000].copy(),
    )
    t0 = time.perf_counter()
    BacktestRun(warm, make(), cfg).run()
    jit_s = time.perf_counter() - t0
    strategy = make()
    t0 = time.perf_counter()
    result = BacktestRun(stream, strategy, cfg).run()
    run_s = time.perf_counter() - t0
    fees = sum(float(f.fee) for f in result.fills)
    traded = sum(float(f.price) * float(f.qty) for f in result.fills)
    return report(
        as_json,
        workload="W2-replay" if replay_only else "W2",
        engine="bastion",
        version=__version__,
        tiles=tiles,
        events=result.events,
        run_s=round(run_s, 3),
        events_per_s=round(result.events / run_s),
        strategy_updates=getattr(strategy, "updates", 0),
        submits=result.orders,
        cancels=result.cancels,
        fills=len(result.fills),
        final_pos=float(result.final_position),
        pnl=round(float(result.net_pnl), 2),
        fees=round(fees, 2),
        traded_value=round(traded, 2),
        load_s=round(load_s, 2),
        jit_s=round(jit_s, 2),
        result_hash=result.result_hash,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=["W1", "W2", "W2-replay"])
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true", help="(RESULT lines are always JSON)")
    a = ap.parse_args()
    if a.workload == "W2":
        w2(a.tiles, False, a.json)
    elif a.workload == "W2-replay":
        w2(a.tiles, True, a.json)
    else:
        from bench.w1 import w1

        w1(a.bars, report)


if __name__ == "__main__":
    main()

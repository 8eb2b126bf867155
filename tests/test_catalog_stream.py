"""Streaming from the Parquet catalog replays exactly what the in-memory build replays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bastion.data.binance_ws import load_binance_ws
from bastion.data.catalog import Catalog
from bastion.model import KNOWN_INSTRUMENTS
from bastion.research.backtest import BacktestRun
from bastion.research.streams import build_stream, catalog_stream
from bastion.strategies import load_strategy

USDM = "ticks_l2/binance_ws_hftbacktest/usdm/btcusdt_20240808.gz"
CM = [
    "ticks_l2/binance_ws_hftbacktest/cm/btcusd_perp_20240808.gz",
    "ticks_l2/binance_ws_hftbacktest/cm/btcusd_perp_20240809.gz",
]


def test_catalog_stream_equals_in_memory_events(shared_data: Path, tmp_path: Path) -> None:
    tables = load_binance_ws([shared_data / USDM])
    cat = Catalog(tmp_path / "cat")
    for t in tables:
        cat.write(t)
    inst = KNOWN_INSTRUMENTS["BTCUSDT-PERP.BINANCE"]
    mem = build_stream(tables, inst)
    # small chunks force many merges of the book and trade parts across batch boundaries
    streamed = catalog_stream(tmp_path / "cat", inst, chunk_size=7_919)
    assert len(streamed) == len(mem)
    assert streamed.book_range == mem.book_range
    chunks = list(streamed.chunks())
    assert len(chunks) > 50
    evi = np.concatenate([c.evi for c in chunks], axis=1)
    evk = np.concatenate([c.evk for c in chunks], axis=1)
    assert np.array_equal(evi, mem.evi) and np.array_equal(evk, mem.evk)
    assert streamed.out_of_range == mem.out_of_range


def test_catalog_backtest_same_hash(shared_data: Path, tmp_path: Path) -> None:
    tables = load_binance_ws([shared_data / p for p in CM])
    cat = Catalog(tmp_path / "cat")
    for t in tables:
        cat.write(t)
    inst = KNOWN_INSTRUMENTS["BTCUSD-PERP.BINANCE"]
    params = {"order_qty": "1", "max_position": "5"}
    a = BacktestRun(build_stream(tables, inst), load_strategy("fixed_spread_mm", params)).run()
    b = BacktestRun(catalog_stream(tmp_path / "cat", inst, chunk_size=50_000),
                    load_strategy("fixed_spread_mm", params)).run()  # fmt: skip
    assert len(a.fills) > 0
    assert a.result_hash == b.result_hash
    assert a.events == b.events == len(build_stream(tables, inst))

"""The non-Binance-websocket loaders on their real files, checked against the raw text."""

from __future__ import annotations

import csv
import gzip
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bastion.data.backtesting_csv import load_backtesting_csv
from bastion.data.binance_csv import load_binance_depth_csv
from bastion.data.bybit import load_bybit_orderbook
from bastion.data.freqtrade import (
    load_freqtrade_funding,
    load_freqtrade_mark,
    load_freqtrade_ohlcv,
    load_freqtrade_trades,
    parse_freqtrade_name,
)
from bastion.data.hyperliquid import load_hyperliquid_ws
from bastion.data.kraken import load_kraken_ohlc, load_kraken_trades
from bastion.data.parquet_samples import load_parquet_quotes, load_parquet_trades
from bastion.data.schema import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    FLAG_CLEAR,
    FLAG_LAST,
    FLAG_SNAPSHOT,
    FUNDING_RATE_PRECISION,
    SIDE_ASK,
    SIDE_BID,
    DataError,
    DataType,
)
from bastion.data.tardis import load_tardis

H = 3_600 * 10**9
MS = 1_000_000


def shared_data() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    d = Path(os.environ.get("BASTION_SHARED_DATA", default))
    if not (d / "ticks_l2").is_dir():
        pytest.fail(f"shared data not found at {d} (set BASTION_SHARED_DATA)", pytrace=False)
    return d


@pytest.fixture(scope="module")
def data() -> Path:
    return shared_data()


@pytest.fixture(scope="module")
def samples(data: Path) -> Path:
    return data / "ticks_l2" / "nautilus_samples"


def raw(text: str, precision: int) -> int:
    """Independent text -> raw conversion for the assertions."""
    v = Decimal(text).scaleb(precision)
    assert v == v.to_integral_value()
    return int(v)


def snapshot_flags_ok(flags: np.ndarray[Any, Any]) -> bool:
    return bool(
        flags[0] == FLAG_CLEAR | FLAG_SNAPSHOT
        and flags[-1] & FLAG_LAST
        and np.all(flags & FLAG_SNAPSHOT)
        and not np.any(flags[1:-1] & (FLAG_CLEAR | FLAG_LAST))
    )


# --- freqtrade ------------------------------------------------------------------------------


def test_freqtrade_names() -> None:
    assert parse_freqtrade_name("x/BTC_USDT-1h.feather").instrument_id == "BTCUSDT.UNKNOWN"
    assert parse_freqtrade_name("binance/BTC_USDT-1h.feather").instrument_id == "BTCUSDT.BINANCE"
    n = parse_freqtrade_name("binance_usdm/BTC_USDT_USDT-1h-futures.feather")
    assert (n.instrument_id, n.kind, n.interval_ns) == ("BTCUSDT-PERP.BINANCE", "ohlcv", H)
    n = parse_freqtrade_name("binance_usdm/SOL_USDT_USDT-8h-funding_rate.feather")
    assert (n.instrument_id, n.kind) == ("SOLUSDT-PERP.BINANCE", "funding")
    n = parse_freqtrade_name("freqtrade_testdata/binance_spot_XRP_ETH-trades_20191011.feather")
    assert (n.instrument_id, n.kind, n.interval_ns) == ("XRPETH.BINANCE", "trades", None)
    with pytest.raises(DataError, match="candle type"):
        parse_freqtrade_name("BTC_USDT_USDT-1h-premiumIndex.feather")


def test_freqtrade_spot_bars(data: Path) -> None:
    t = load_freqtrade_ohlcv(data / "ohlcv" / "binance_spot_1h" / "BTC_USDT-1h.feather")
    c = t.columns
    assert (t.data_type, t.instrument_id, len(t)) == (DataType.BAR, "BTCUSDT.BINANCE", 73_265)
    # 2018 volumes have 6 decimals although today's lot is 0.00001; the instrument carries 8
    assert (t.price_precision, t.size_precision) == (2, 8)
    assert c["ts_event"][0] == pd.Timestamp("2018-01-01T00:00Z").value
    assert np.all(c["ts_local"] - c["ts_event"] == H) and np.all(c["interval_ns"] == H)
    assert (c["open"][0], c["high"][0], c["low"][0], c["close"][0]) == (1371565, 1371565, 1340001, 1352901)
    assert c["volume"][0] == 44335619900  # 443.356199
    steps = np.diff(c["ts_event"])
    assert np.all(steps > 0)
    # README: 13 gaps longer than 3 h, the longest 34 h, ending 2018-02-09 10:00
    assert int((steps > 3 * H).sum()) == 13 and steps.max() == 34 * H
    assert c["ts_event"][1:][steps.argmax()] == pd.Timestamp("2018-02-09T10:00Z").value


def test_freqtrade_ms_timestamps_are_converted_to_ns(data: Path) -> None:
    # the perp files store dates as timestamp[ms]; a unit slip would make the step 3.6 ms
    t = load_freqtrade_ohlcv(data / "ohlcv" / "binance_usdm_perp" / "BTC_USDT_USDT-1h-futures.feather")
    assert (t.instrument_id, len(t)) == ("BTCUSDT-PERP.BINANCE", 58_623)
    assert np.all(np.diff(t.columns["ts_event"]) == H)
    assert t.columns["ts_event"][0] == pd.Timestamp("2019-09-08T17:00Z").value


def test_freqtrade_funding_floors_jitter(data: Path) -> None:
    path = (
        data
        / "funding_mark"
        / "freqtrade_testdata_binance_xrp_2021"
        / "XRP_USDT_USDT-8h-funding_rate.feather"
    )
    t = load_freqtrade_funding(path)
    df = pd.read_feather(path)
    assert (t.data_type, t.instrument_id, len(t)) == (DataType.FUNDING, "XRPUSDT-PERP.BINANCE", 91)
    assert t.price_precision == FUNDING_RATE_PRECISION
    jitter = int((df["date"].dt.floor("s") != df["date"]).sum())
    assert jitter > 0 and t.meta["floored_ms_jitter"] == jitter
    assert np.all(t.columns["ts_event"] % 10**9 == 0)
    assert t.columns["ts_event"][0] == pd.Timestamp("2021-11-18T00:00Z").value
    assert t.columns["rate"][0] == 100_000_000  # 0.0001 at 12 decimals
    assert np.all(np.diff(t.columns["ts_event"]) > 0)


def test_freqtrade_mark_is_stamped_at_candle_close(data: Path) -> None:
    t = load_freqtrade_mark(data / "funding_mark" / "binance_usdm" / "BTC_USDT_USDT-1h-mark.feather")
    assert (t.data_type, t.instrument_id, len(t)) == (DataType.MARK, "BTCUSDT-PERP.BINANCE", 56_084)
    assert t.price_precision == 8  # mark prices are computed, not on the 0.1 tick
    assert t.columns["ts_event"][0] == pd.Timestamp("2019-12-23T12:00Z").value  # open 11:00 + 1 h
    assert t.columns["price"][0] == raw("7554.17034744", 8)  # repr of the stored float


def test_freqtrade_trades(data: Path) -> None:
    path = data / "ticks_l2" / "freqtrade_testdata" / "binance_spot_XRP_ETH-trades_20191011.feather"
    t = load_freqtrade_trades(path)
    df = pd.read_feather(path)
    c = t.columns
    assert (t.instrument_id, len(t)) == ("XRPETH.BINANCE", 12_477)
    assert c["ts_event"][0] == 1570752011620 * MS and c["trade_id"][0] == 13519807
    assert c["price"][0] == raw(repr(float(df["price"][0])), t.price_precision) == 141342  # 0.00141342
    assert c["size"][0] == raw("23", t.size_precision)
    assert int((c["aggressor"] == AGGRESSOR_SELL).sum()) == int((df["side"] == "sell").sum())
    assert int((c["aggressor"] == AGGRESSOR_BUY).sum()) == int((df["side"] == "buy").sum())


def write_feather(path: Path, rows: list[tuple[str, float, float, float, float, float]]) -> Path:
    df = pd.DataFrame(rows, columns=["date", "open", "high", "low", "close", "volume"])
    df["date"] = pd.to_datetime(df["date"], utc=True)
    df.to_feather(path)
    return path


def test_freqtrade_bad_bars(tmp_path: Path) -> None:
    rows = [
        ("2024-01-01 00:00", 1.5, 1.6, 1.4, 1.55, 10.0),
        ("2024-01-01 01:00", float("nan"), 1.6, 1.4, 1.55, 10.0),
        ("2024-01-01 02:00", 1.5, 1.6, 1.4, 1.55, -1.0),
        ("2024-01-01 00:00", 1.5, 1.6, 1.4, 1.55, 1.0),  # repeats row 0's time
        ("2024-01-01 03:00", 1.5, 1.6, 1.4, 1.55, 1.0),
    ]
    path = write_feather(tmp_path / "ABC_USDT-1h.feather", rows)
    with pytest.raises(DataError, match=rf"{path}:1: row 1: open/high/low/close is not a finite number"):
        load_freqtrade_ohlcv(path)
    t = load_freqtrade_ohlcv(path, skip_bad=True)
    assert t.meta["bad_rows"] == 3 and len(t) == 2
    assert list(t.columns["seq"]) == [0, 4]
    assert any("timestamp not after the previous row" in s for s in t.meta["bad_row_samples"])


def test_float_price_off_every_grid_is_an_error(tmp_path: Path) -> None:
    path = write_feather(tmp_path / "ABC_USDT-1h.feather", [("2024-01-01 00:00", 1 / 3, 1.0, 0.1, 0.5, 1.0)])
    with pytest.raises(DataError, match="needs more than 10 decimals"):
        load_freqtrade_ohlcv(path)


# --- parquet samples ------------------------------------------------------------------------


def test_parquet_trades(samples: Path) -> None:
    path = samples / "binance_spot_btcusdt_trades_20210108.parquet"
    t = load_parquet_trades(path)
    df = pd.read_parquet(path)
    c = t.columns
    assert (t.instrument_id, len(t), t.price_precision, t.size_precision) == ("BTCUSDT.BINANCE", 2001, 2, 8)
    assert c["trade_id"][0] == 553287559 and c["price"][0] == 3943248 and c["size"][0] == 26300
    assert c["aggressor"][0] == AGGRESSOR_SELL  # buyer_maker True
    assert int((c["aggressor"] == AGGRESSOR_SELL).sum()) == int((df["buyer_maker"] == "True").sum()) == 914
    assert c["ts_event"][0] == pd.Timestamp("2021-01-08T00:00:00.278Z").value


def test_parquet_quotes_and_crossed_rows(samples: Path, tmp_path: Path) -> None:
    path = samples / "binance_spot_btcusdt_quotes_20210108.parquet"
    t = load_parquet_quotes(path)
    c = t.columns
    assert (t.data_type, len(t)) == (DataType.QUOTE, 451)
    assert (c["bid_price"][0], c["ask_price"][0]) == (3943299, 3943362)
    assert (c["bid_size"][0], c["ask_size"][0]) == (310000, 6685100)
    assert np.all(c["bid_price"] < c["ask_price"])
    df = pd.read_parquet(path)
    df["bid"] = np.where(df.index == 5, df["ask"] + 1.0, df["bid"])  # row 5: bid above ask
    bad = tmp_path / "binance_spot_btcusdt_quotes_x.parquet"
    df.to_parquet(bad)
    with pytest.raises(DataError, match=rf"{bad}:5: row 5: crossed quote"):
        load_parquet_quotes(bad)
    assert len(load_parquet_quotes(bad, skip_bad=True)) == 450


# --- Binance depth CSV ------------------------------------------------------------------------


def test_binance_depth_snapshot_csv(samples: Path) -> None:
    path = samples / "binance_usdm_btcusdt_depth_snap_20221101.csv"
    (t,) = load_binance_depth_csv(path)
    c = t.columns
    assert (t.instrument_id, len(t)) == ("BTCUSDT-PERP.BINANCE", 100)
    assert snapshot_flags_ok(c["flags"])
    assert np.all(c["side"] == SIDE_BID)  # the fixture holds only the bid half
    assert (c["price"][0], c["size"][0]) == (203770, 1770)  # 20377.00 / 1.770
    assert np.all(c["update_id"] == 2098021528332) and np.all(c["ts_event"] == 1667346579146 * MS)
    assert list(c["seq"][:2]) == [2, 3]


def test_binance_depth_update_csv(samples: Path) -> None:
    path = samples / "binance_usdm_btcusdt_depth_update_20221101.csv"
    (t,) = load_binance_depth_csv(path)
    c = t.columns
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert len(t) == len(rows) == 100 and t.meta["has_snapshot"] is False
    assert list(c["flags"]) == [0] * 99 + [FLAG_LAST]  # one message
    assert list(c["side"]) == [SIDE_BID if r["side"] == "b" else SIDE_ASK for r in rows]
    assert list(c["price"]) == [raw(r["price"], 1) for r in rows]
    assert list(c["size"]) == [raw(r["qty"], 3) for r in rows]


def test_binance_depth_snapshot_then_stale_update_is_a_gap(samples: Path) -> None:
    # the update file is 10 minutes after the snapshot: its first id is far beyond lastUpdateId
    paths = [
        samples / "binance_usdm_btcusdt_depth_snap_20221101.csv",
        samples / "binance_usdm_btcusdt_depth_update_20221101.csv",
    ]
    with pytest.raises(DataError, match=rf"{paths[1]}:2: sequence gap"):
        load_binance_depth_csv(paths, on_gap="raise")
    (t,) = load_binance_depth_csv(paths)
    assert len(t) == 100 and len(t.meta["gaps"]) == 1
    assert t.meta["gaps"][0] == {
        "file": str(paths[1]),
        "line": 2,
        "expected": 2098021528332,
        "got": 2098041693435,
    }


# --- tardis -----------------------------------------------------------------------------------


def test_tardis_book_snapshots(samples: Path) -> None:
    for levels in (5, 25):
        path = samples / f"tardis_binance-futures_book_snapshot_{levels}_BTCUSDT.csv"
        (t,) = load_tardis(path)
        c = t.columns
        assert (t.instrument_id, len(t)) == ("BTCUSDT-PERP.BINANCE", 10 * 2 * levels)
        with open(path) as fh:
            first = next(csv.DictReader(fh))
        n = 2 * levels
        assert snapshot_flags_ok(c["flags"][:n])
        assert int((c["flags"] & FLAG_CLEAR).astype(bool).sum()) == 10
        assert (c["side"][0], c["price"][0], c["size"][0]) == (
            SIDE_BID,
            raw(first["bids[0].price"], 2),
            raw(first["bids[0].amount"], 3),
        )
        assert (c["side"][levels], c["price"][levels]) == (SIDE_ASK, raw(first["asks[0].price"], 2))
        assert c["ts_event"][0] == int(first["timestamp"]) * 1000
        assert c["ts_local"][0] == int(first["local_timestamp"]) * 1000


def test_tardis_trades(samples: Path) -> None:
    (t,) = load_tardis(samples / "tardis_bitmex_trades_XBTUSD.csv")
    c = t.columns
    assert (t.instrument_id, len(t)) == ("XBTUSD-PERP.BITMEX", 10)
    assert np.all(c["aggressor"] == AGGRESSOR_SELL)
    assert (c["price"][0], c["size"][0]) == (85315, 2152)
    assert len(set(c["trade_id"].tolist())) == 10  # UUIDs hashed, still distinct
    assert c["ts_local"][0] == 1583020803307160 * 1000


def test_tardis_incremental_l2(samples: Path) -> None:
    (t,) = load_tardis(samples / "tardis_deribit_incremental_book_L2_BTC-PERPETUAL.csv")
    c = t.columns
    assert (t.instrument_id, len(t)) == ("BTC-PERP.DERIBIT", 15)
    assert snapshot_flags_ok(c["flags"])  # one snapshot message: same local_timestamp
    assert np.all(c["side"] == SIDE_ASK) and (c["price"][0], c["size"][0]) == (64215, 18640)


def test_tardis_quotes(samples: Path) -> None:
    (t,) = load_tardis(samples / "tardis_huobi-dm-swap_quotes_BTC-USD.csv")
    c = t.columns
    assert (t.instrument_id, t.data_type, len(t)) == ("BTCUSD-PERP.HUOBI", DataType.QUOTE, 10)
    assert (c["bid_price"][0], c["bid_size"][0], c["ask_price"][0], c["ask_size"][0]) == (
        86292,
        806,
        86293,
        5494,
    )


def test_tardis_bad_rows(tmp_path: Path, samples: Path) -> None:
    lines = (samples / "tardis_huobi-dm-swap_quotes_BTC-USD.csv").read_text().splitlines()
    lines[3] = lines[3].replace("8629.2", "8630.0")  # bid above the ask
    lines[5] = lines[5].replace("1588291201371000,1588291201671098", "1588291201371000,1588291201000000")
    path = tmp_path / "quotes.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path}:4: crossed quote"):
        load_tardis(path)
    (t,) = load_tardis(path, skip_bad=True)
    assert len(t) == 8 and t.meta["bad_rows"] == 2
    assert "goes backwards" in t.meta["bad_row_samples"][1]


# --- Kraken -----------------------------------------------------------------------------------


def test_kraken_ohlc(samples: Path) -> None:
    path = samples / "kraken_spot_xbtusdt_ohlc1m_20251110.json"
    t = load_kraken_ohlc(path)
    rows = json.loads(path.read_text())["result"]["XBTUSDT"]
    c = t.columns
    assert (t.instrument_id, len(rows), len(t)) == ("XBTUSDT.KRAKEN", 721, 720)
    assert t.meta["uncommitted_dropped"] == 1  # the last, still-open bar
    assert c["ts_event"][0] == rows[0][0] * 10**9 and np.all(c["interval_ns"] == 60 * 10**9)
    assert c["open"][0] == raw(rows[0][1], 1) and c["volume"][0] == 0
    assert c["close"][-1] == raw(rows[-2][4], 1)
    assert [int(v) for v in c["volume"]] == [raw(r[6], 8) for r in rows[:-1]]


def test_kraken_trades_keep_every_digit_of_time(samples: Path) -> None:
    path = samples / "kraken_spot_xbtusdt_trades_20251110.json"
    t = load_kraken_trades(path)
    c = t.columns
    assert (t.instrument_id, len(t), t.price_precision, t.size_precision) == ("XBTUSDT.KRAKEN", 1000, 1, 8)
    assert c["ts_event"][0] == 1762795433971744500  # "1762795433.9717445" exactly, no float
    assert (c["price"][0], c["size"][0], c["aggressor"][0]) == (1054336, 27625, AGGRESSOR_BUY)
    assert c["trade_id"][-1] == 10219207 and c["aggressor"][-1] == AGGRESSOR_SELL
    assert int((c["aggressor"] == AGGRESSOR_BUY).sum()) == 578


def test_kraken_bad_trade(tmp_path: Path, samples: Path) -> None:
    doc = json.loads((samples / "kraken_spot_xbtusdt_trades_20251110.json").read_text())
    doc["result"]["XBTUSDT"][7][1] = "-0.1"
    path = tmp_path / "trades.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"{path}:7: row 7: .*"):
        load_kraken_trades(path)
    assert len(load_kraken_trades(path, skip_bad=True)) == 999


# --- Bybit ------------------------------------------------------------------------------------


def bybit_lines(samples: Path) -> list[dict[str, Any]]:
    with gzip.open(samples / "bybit_linear_xrpusdt_ob500_20241201.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh]


def test_bybit_orderbook(samples: Path) -> None:
    (t,) = load_bybit_orderbook(samples / "bybit_linear_xrpusdt_ob500_20241201.jsonl.gz")
    msgs = bybit_lines(samples)
    c = t.columns
    assert (t.instrument_id, t.price_precision, t.size_precision) == ("XRPUSDT-PERP.BYBIT", 4, 0)
    assert len(t) == sum(len(m["data"]["b"]) + len(m["data"]["a"]) for m in msgs) == 3966
    assert snapshot_flags_ok(c["flags"][:1000])
    assert (c["price"][0], c["size"][0]) == (19531, 6203)  # ["1.9531","6203"]
    assert c["ts_event"][0] == msgs[0]["cts"] * MS and c["ts_local"][0] == msgs[0]["ts"] * MS
    ids = c["update_id"][np.flatnonzero(c["flags"] & FLAG_LAST)]
    assert list(ids) == [m["data"]["u"] for m in msgs] == list(range(20254869, 20254919))
    assert t.meta["gaps"] == []


def test_bybit_gap(tmp_path: Path, samples: Path) -> None:
    msgs = bybit_lines(samples)
    del msgs[10]
    path = tmp_path / "bybit_linear_xrpusdt_ob500_x.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in msgs))
    with pytest.raises(DataError, match=rf"{path}:11: sequence gap"):
        load_bybit_orderbook(path, on_gap="raise")
    (t,) = load_bybit_orderbook(path)
    assert t.meta["gaps"] == [{"file": str(path), "line": 11, "expected": 20254879, "got": 20254880}]
    assert t.columns["seq"].max() == 10


# --- Hyperliquid --------------------------------------------------------------------------------


def test_hyperliquid(data: Path) -> None:
    path = data / "ticks_l2" / "hyperliquid_ws_hftbacktest" / "btcusd_20250126.gz"
    book, trades = load_hyperliquid_ws(path)
    assert book.instrument_id == "BTC-PERP.HYPERLIQUID"
    assert book.meta["messages"] == {"l2Book": 46, "trades": 9, "other": 0}  # README: 46 + 9
    assert len(book) == 46 * 40
    flags = book.columns["flags"]
    assert int((flags & FLAG_CLEAR).astype(bool).sum()) == 46 and np.all(flags & FLAG_SNAPSHOT)
    with gzip.open(path, "rt") as fh:
        objs = [json.loads(line.split(" ", 1)[1]) for line in fh]
    first_book = next(o for o in objs if o["channel"] == "l2Book")["data"]
    best_bid = first_book["levels"][0][0]
    assert book.columns["price"][0] == raw(best_bid["px"], book.price_precision)
    assert book.columns["size"][0] == raw(best_bid["sz"], book.size_precision)
    all_trades = [t for o in objs if o["channel"] == "trades" for t in o["data"]]
    assert len(trades) == len(all_trades) == 64
    buys = sum(t["side"] == "B" for t in all_trades)
    assert int((trades.columns["aggressor"] == AGGRESSOR_BUY).sum()) == buys
    assert trades.meta["trades_before_first_book"] == 30


# --- backtesting.py CSV -------------------------------------------------------------------------


def test_backtesting_monthly_bars(data: Path) -> None:
    (t,) = load_backtesting_csv(data / "ohlcv" / "misc" / "backtestingpy_BTCUSD_monthly_2012_2024.csv")
    c = t.columns
    assert (t.instrument_id, len(t)) == ("BTCUSD.UNKNOWN", 156)
    assert c["ts_event"][0] == pd.Timestamp("2012-01-01T00:00Z").value
    assert (
        c["interval_ns"][0] == 31 * 86_400 * 10**9 and c["interval_ns"][1] == 29 * 86_400 * 10**9
    )  # Feb 2012
    assert np.all(c["ts_local"][:-1] == c["ts_event"][1:])  # months tile the time line
    assert c["open"][0] == raw("4.58", t.price_precision)


def test_backtesting_hourly_bars(data: Path) -> None:
    (t,) = load_backtesting_csv(data / "ohlcv" / "misc" / "backtestingpy_SOLUSDT_1h_2024.csv")
    assert (t.instrument_id, len(t)) == ("SOLUSDT.UNKNOWN", 1000)
    assert np.all(t.columns["interval_ns"] == H)
    assert t.columns["ts_event"][0] == pd.Timestamp("2024-09-20T15:00Z").value
    assert t.columns["volume"][0] == raw("197950.322", t.size_precision)

"""Format detection, the Parquet catalog (round trip, merging rules) and directory import."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bastion.data.catalog import Catalog, NotInCatalog, source_stem
from bastion.data.detect import UnknownFormatError, detect_format, load_any
from bastion.data.freqtrade import load_freqtrade_ohlcv
from bastion.data.schema import DataError, DataType, Table

H = 3_600 * 10**9


def shared_data() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    d = Path(os.environ.get("BASTION_SHARED_DATA", default))
    if not (d / "ticks_l2").is_dir():
        pytest.fail(f"shared data not found at {d} (set BASTION_SHARED_DATA)", pytrace=False)
    return d


@pytest.fixture(scope="module")
def data() -> Path:
    return shared_data()


SAMPLES = {
    "binance_usdm_btcusdt_depth_snap_20221101.csv": "binance_depth_csv",
    "binance_usdm_btcusdt_depth_update_20221101.csv": "binance_depth_csv",
    "binance_spot_btcusdt_trades_20210108.parquet": "parquet_trades",
    "binance_spot_btcusdt_quotes_20210108.parquet": "parquet_quotes",
    "bybit_linear_xrpusdt_ob500_20241201.jsonl.gz": "bybit_orderbook",
    "tardis_binance-futures_book_snapshot_25_BTCUSDT.csv": "tardis_book_snapshot",
    "tardis_binance-futures_book_snapshot_5_BTCUSDT.csv": "tardis_book_snapshot",
    "tardis_bitmex_trades_XBTUSD.csv": "tardis_trades",
    "tardis_deribit_incremental_book_L2_BTC-PERPETUAL.csv": "tardis_incremental_book_L2",
    "tardis_huobi-dm-swap_quotes_BTC-USD.csv": "tardis_quotes",
    "kraken_spot_xbtusdt_ohlc1m_20251110.json": "kraken_ohlc",
    "kraken_spot_xbtusdt_trades_20251110.json": "kraken_trades",
}


def expected_format(rel: Path) -> str:
    """What each shared file is, from the README's description of the directories."""
    parts = rel.parts
    if parts[1] == "binance_ws_hftbacktest":
        return "binance_ws"
    if parts[1] == "hyperliquid_ws_hftbacktest":
        return "hyperliquid_ws"
    if parts[1] == "nautilus_samples":
        return SAMPLES[rel.name]
    if parts[1] == "misc":
        return "backtesting_csv"
    assert rel.suffix == ".feather"
    for marker, fmt in (
        ("-trades", "freqtrade_trades"),
        ("-mark", "freqtrade_mark"),
        ("-funding_rate", "freqtrade_funding"),
    ):
        if marker in rel.name:
            return fmt
    return "freqtrade_ohlcv"


def test_detect_format_on_every_file(data: Path) -> None:
    files = sorted(
        p for d in ("ticks_l2", "ohlcv", "funding_mark") for p in (data / d).rglob("*") if p.is_file()
    )
    assert len(files) == 25 + 37 + 19  # README inventory: ticks_l2, ohlcv, funding_mark
    for f in files:
        assert detect_format(f) == expected_format(f.relative_to(data)), f


def test_detect_refuses_unsupported_and_mismatched_files(data: Path, tmp_path: Path) -> None:
    for f in [
        data / "prediction_markets" / "polymarket_orderbook_dataset" / "markets.parquet",
        next((data / "dex").rglob("*.csv")),
        data / "README.md",
    ]:
        with pytest.raises(UnknownFormatError, match="unsupported format"):
            detect_format(f)
    # content and name must agree
    fake = tmp_path / "binance_spot_btcusdt_trades_x.csv"
    shutil.copy(data / "ticks_l2" / "nautilus_samples" / "binance_spot_btcusdt_trades_20210108.parquet", fake)
    with pytest.raises(UnknownFormatError, match=r"parquet content in a file not named \.parquet"):
        detect_format(fake)
    mark_as_candles = tmp_path / "BTC_USDT_USDT-1h-trades.feather"
    shutil.copy(data / "funding_mark" / "binance_usdm" / "BTC_USDT_USDT-1h-mark.feather", mark_as_candles)
    with pytest.raises(UnknownFormatError, match="candle"):
        detect_format(mark_as_candles)
    with pytest.raises(UnknownFormatError, match="not a file"):
        detect_format(tmp_path)


def tables_equal(a: Table, b: Table) -> None:
    assert (a.data_type, a.instrument_id, a.price_precision, a.size_precision, a.source) == (
        b.data_type,
        b.instrument_id,
        b.price_precision,
        b.size_precision,
        b.source,
    )
    assert a.meta == b.meta
    assert list(a.columns) == list(b.columns)
    for name in a.columns:
        assert a.columns[name].dtype == b.columns[name].dtype, name
        assert np.array_equal(a.columns[name], b.columns[name]), name


@pytest.mark.parametrize(
    "rel",
    [
        "ticks_l2/hyperliquid_ws_hftbacktest/btcusd_20250126.gz",
        "ticks_l2/nautilus_samples/bybit_linear_xrpusdt_ob500_20241201.jsonl.gz",
        "ticks_l2/nautilus_samples/kraken_spot_xbtusdt_trades_20251110.json",
        "ticks_l2/nautilus_samples/tardis_huobi-dm-swap_quotes_BTC-USD.csv",
        "ticks_l2/freqtrade_testdata/binance_spot_XRP_ETH-trades_20191011.feather",
        "ohlcv/binance_spot_1h/BTC_USDT-1h.feather",
        "funding_mark/binance_usdm/BTC_USDT_USDT-1h-funding_rate.feather",
        "funding_mark/binance_usdm/BTC_USDT_USDT-1h-mark.feather",
    ],
)
def test_round_trip_is_exact(data: Path, tmp_path: Path, rel: str) -> None:
    cat = Catalog(tmp_path)
    for t in load_any(data / rel):
        path = cat.write(t)
        assert path == tmp_path / t.data_type.value / t.instrument_id / f"{source_stem(t.source)}.parquet"
        tables_equal(cat.read(t.data_type, t.instrument_id), t)


def test_parts_are_merged_in_time_order_at_the_finest_precision(data: Path, tmp_path: Path) -> None:
    full = load_freqtrade_ohlcv(data / "ohlcv" / "binance_spot_1h" / "BTC_USDT-1h.feather")
    n = len(full) // 2
    price_cols = ("open", "high", "low", "close")
    late = Table(
        full.data_type,
        full.instrument_id,
        full.price_precision + 1,
        full.size_precision,
        {k: (v[n:] * 10 if k in price_cols else v[n:]) for k, v in full.columns.items()},
        source="/x/late.feather",
    )
    early = Table(
        full.data_type,
        full.instrument_id,
        full.price_precision,
        full.size_precision,
        {k: v[:n] for k, v in full.columns.items()},
        source="/x/early.feather",
    )
    cat = Catalog(tmp_path)
    cat.write(late)  # written first, read back second
    cat.write(early)
    back = cat.read(DataType.BAR, full.instrument_id)
    assert back.price_precision == full.price_precision + 1
    assert [p["name"] for p in back.meta["parts"]] == ["early", "late"]
    for k, v in full.columns.items():
        assert np.array_equal(back.columns[k], v * 10 if k in price_cols else v), k
    assert cat.list() == [(DataType.BAR, full.instrument_id, len(full))]
    with pytest.raises(NotInCatalog):
        cat.read(DataType.TRADE, full.instrument_id)


def test_disagreeing_sources_are_not_mixed(data: Path, tmp_path: Path) -> None:
    cat = Catalog(tmp_path)
    fm = data / "funding_mark"
    for f in [
        fm / "binance_usdm" / "XRP_USDT_USDT-1h-mark.feather",
        fm / "freqtrade_testdata_binance_xrp_2021" / "XRP_USDT_USDT-1h-mark.feather",
        fm / "binance_usdm" / "XRP_USDT_USDT-1h-funding_rate.feather",
        fm / "freqtrade_testdata_binance_xrp_2021" / "XRP_USDT_USDT-8h-funding_rate.feather",
    ]:
        for t in load_any(f):
            cat.write(t)
    # the 2021 test fixture's mark prices differ from the full history: refuse to pick silently
    with pytest.raises(DataError, match="disagrees with"):
        cat.read(DataType.MARK, "XRPUSDT-PERP.BINANCE")
    fixture_path = fm / "freqtrade_testdata_binance_xrp_2021" / "XRP_USDT_USDT-1h-mark.feather"
    fixture = cat.read(DataType.MARK, "XRPUSDT-PERP.BINANCE", source=str(fixture_path.resolve()))
    assert len(fixture) == 100 and fixture.source == str(fixture_path.resolve())
    # the two funding files agree where they overlap: the 91 repeated events appear once
    funding = cat.read(DataType.FUNDING, "XRPUSDT-PERP.BINANCE")
    assert funding.meta["duplicates_dropped"] == 91 and len(funding) == 6973
    assert np.all(np.diff(funding.columns["ts_event"]) > 0)


def test_bars_of_several_intervals_need_a_choice(data: Path, tmp_path: Path) -> None:
    cat = Catalog(tmp_path)
    perp = data / "ohlcv" / "binance_usdm_perp"
    for f in (
        "LINK_USDT_USDT-1m-futures.feather",
        "DOGE_USDT_USDT-1m-futures.feather",
        "DOGE_USDT_USDT-1h-futures.feather",
    ):
        cat.write(load_freqtrade_ohlcv(perp / f))
    with pytest.raises(DataError, match="several intervals"):
        cat.read(DataType.BAR, "DOGEUSDT-PERP.BINANCE")
    hourly = cat.read(DataType.BAR, "DOGEUSDT-PERP.BINANCE", interval_ns=H)
    assert len(hourly) == 11_316 and np.all(hourly.columns["interval_ns"] == H)


def test_overlapping_tick_parts_and_headless_books_are_refused(data: Path, tmp_path: Path) -> None:
    cat = Catalog(tmp_path)
    s = data / "ticks_l2" / "nautilus_samples"
    for f in (
        "tardis_binance-futures_book_snapshot_5_BTCUSDT.csv",
        "tardis_binance-futures_book_snapshot_25_BTCUSDT.csv",
    ):
        cat.write(load_any(s / f)[0])
    with pytest.raises(DataError, match="overlap in time"):
        cat.read(DataType.BOOK_DELTA, "BTCUSDT-PERP.BINANCE")
    assert (
        len(
            cat.read(
                DataType.BOOK_DELTA,
                "BTCUSDT-PERP.BINANCE",
                source="tardis_binance-futures_book_snapshot_5_BTCUSDT",
            )
        )
        == 100
    )
    cat2 = Catalog(tmp_path / "other")
    for f in (
        "binance_usdm_btcusdt_depth_snap_20221101.csv",
        "binance_usdm_btcusdt_depth_update_20221101.csv",
    ):
        cat2.write(load_any(s / f)[0])
    with pytest.raises(DataError, match="does not start with a snapshot"):
        cat2.read(DataType.BOOK_DELTA, "BTCUSDT-PERP.BINANCE")


def test_write_rejects_tables_that_would_not_read_back_the_same(data: Path, tmp_path: Path) -> None:
    t = load_any(data / "ticks_l2" / "nautilus_samples" / "tardis_huobi-dm-swap_quotes_BTC-USD.csv")[0]
    shuffled = Table(
        t.data_type,
        t.instrument_id,
        t.price_precision,
        t.size_precision,
        {k: v[::-1].copy() for k, v in t.columns.items()},
        t.source,
        t.meta,
    )
    with pytest.raises(ValueError, match="not in \\(ts_local, seq\\) order"):
        Catalog(tmp_path).write(shuffled)
    wrong = dict(t.columns, bid_price=t.columns["bid_price"].astype(np.float64))
    with pytest.raises(ValueError, match="bid_price"):
        Catalog(tmp_path).write(Table(t.data_type, t.instrument_id, 1, 0, wrong, t.source))


def test_import_ohlcv_and_ticks(data: Path, tmp_path: Path) -> None:
    """Everything under ohlcv/ and ticks_l2/ except the Binance captures (imported, session by
    session, in test_data_binance_ws.py), plus the out-of-scope Polymarket/DEX directories."""
    cat = Catalog(tmp_path / "cat")
    calls: list[tuple[int, int, str]] = []

    def progress(done: int, total: int, name: str) -> None:
        calls.append((done, total, name))

    summaries = {}
    for rel in (
        "ohlcv",
        "ticks_l2/nautilus_samples",
        "ticks_l2/freqtrade_testdata",
        "ticks_l2/hyperliquid_ws_hftbacktest",
        "prediction_markets",
        "dex",
    ):
        summaries[rel] = cat.import_path(data / rel, progress=progress)
    ohlcv = summaries["ohlcv"]
    assert len(ohlcv.files) == 37 and all(f.status == "ok" for f in ohlcv.files)
    btc = next(f for f in ohlcv.files if f.paths[0].endswith("binance_spot_1h/BTC_USDT-1h.feather"))
    assert btc.rows == 73_265 and btc.tables == [
        {
            "data_type": "bar",
            "instrument_id": "BTCUSDT.BINANCE",
            "rows": 73_265,
            "part": btc.tables[0]["part"],
        }
    ]
    samples = summaries["ticks_l2/nautilus_samples"]
    assert [f.status for f in samples.files] == ["ok"] * 12
    assert {Path(f.paths[0]).name: f.rows for f in samples.files} == {
        "binance_spot_btcusdt_quotes_20210108.parquet": 451,
        "binance_spot_btcusdt_trades_20210108.parquet": 2001,
        "binance_usdm_btcusdt_depth_snap_20221101.csv": 100,
        "binance_usdm_btcusdt_depth_update_20221101.csv": 100,
        "bybit_linear_xrpusdt_ob500_20241201.jsonl.gz": 3966,
        "kraken_spot_xbtusdt_ohlc1m_20251110.json": 720,
        "kraken_spot_xbtusdt_trades_20251110.json": 1000,
        "tardis_binance-futures_book_snapshot_25_BTCUSDT.csv": 500,
        "tardis_binance-futures_book_snapshot_5_BTCUSDT.csv": 100,
        "tardis_bitmex_trades_XBTUSD.csv": 10,
        "tardis_deribit_incremental_book_L2_BTC-PERPETUAL.csv": 15,
        "tardis_huobi-dm-swap_quotes_BTC-USD.csv": 10,
    }
    assert summaries["ticks_l2/hyperliquid_ws_hftbacktest"].files[0].rows == 1840 + 64
    assert summaries["ticks_l2/freqtrade_testdata"].rows == 2469 + 12_477
    for rel in ("prediction_markets", "dex"):
        s = summaries[rel]
        assert s.files and all(
            f.status == "unsupported" and "unsupported format" in (f.error or "") for f in s.files
        )
    # the progress callback saw every file of every import, ending at done == total
    assert calls[-1][0] == calls[-1][1] and all(0 < d <= t for d, t, _ in calls)
    # what was imported reads back
    listed = {(dt, iid): rows for dt, iid, rows in cat.list()}
    assert listed[(DataType.TRADE, "XBTUSDT.KRAKEN")] == 1000
    assert listed[(DataType.BOOK_DELTA, "XRPUSDT-PERP.BYBIT")] == 3966
    assert len(cat.read(DataType.BAR, "BTCUSDT.BINANCE")) == 73_265


def test_import_reports_bad_files_and_carries_on(data: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = data / "ticks_l2" / "nautilus_samples" / "tardis_huobi-dm-swap_quotes_BTC-USD.csv"
    shutil.copy(good, src / "a_good.csv")
    lines = good.read_text().splitlines()
    lines[2] = lines[2].replace("8629.3", "NaN")
    (src / "b_bad.csv").write_text("\n".join(lines) + "\n")
    cat = Catalog(tmp_path / "cat")
    summary = cat.import_path(src)
    assert [f.status for f in summary.files] == ["ok", "error"]
    assert "b_bad.csv:3" in (summary.files[1].error or "")
    summary = cat.import_path(src, skip_bad=True)
    assert [(f.status, f.rows, f.bad_rows) for f in summary.files] == [("ok", 10, 0), ("ok", 9, 1)]

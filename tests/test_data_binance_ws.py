"""Binance websocket captures: the sync procedure, sequence gaps and bad input, on the real files."""

from __future__ import annotations

import gzip
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bastion.data.binance_ws import infer_instrument_id, load_binance_ws
from bastion.data.catalog import Catalog, ImportSummary
from bastion.data.schema import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    FLAG_CLEAR,
    FLAG_LAST,
    FLAG_SNAPSHOT,
    SIDE_ASK,
    SIDE_BID,
    DataError,
    DataType,
)


def shared_data() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    d = Path(os.environ.get("BASTION_SHARED_DATA", default))
    if not (d / "ticks_l2").is_dir():
        pytest.fail(f"shared data not found at {d} (set BASTION_SHARED_DATA)", pytrace=False)
    return d


@pytest.fixture(scope="module")
def ws_dir() -> Path:
    return shared_data() / "ticks_l2" / "binance_ws_hftbacktest"


@pytest.fixture(scope="module")
def usdm_btc(ws_dir: Path) -> Any:
    return load_binance_ws(ws_dir / "usdm" / "btcusdt_20240808.gz")


def raw_lines(path: Path, limit: int | None = None) -> list[bytes]:
    out = []
    with gzip.open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                break
            out.append(line)
    return out


def parse(line: bytes) -> tuple[int, dict[str, Any]]:
    ts, js = line.split(b" ", 1)
    return int(ts), json.loads(js)


def unparse(ts: int, obj: dict[str, Any]) -> bytes:
    return f"{ts} {json.dumps(obj, separators=(',', ':'))}\n".encode()


def write_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as fh:
        fh.writelines(lines)
    return path


def reference(paths: list[Path], futures: bool) -> dict[str, Any]:
    """An independent, deliberately simple reading of the capture: which diffs a correct sync
    keeps (u >= L on futures, u > L on spot, given no gaps), and what the trades are."""
    snap_line, L, n_snap_levels = None, None, 0
    depth: list[tuple[int, int, int, int]] = []  # (first, last, levels, global line)
    trades = sells = 0
    first_trade: dict[str, Any] | None = None
    g = 0
    for p in paths:
        for line in raw_lines(p):
            g += 1
            _, obj = parse(line)
            if "lastUpdateId" in obj:
                snap_line, L = g, obj["lastUpdateId"]
                n_snap_levels = len(obj["bids"]) + len(obj["asks"])
            elif obj["stream"].endswith("@trade"):
                trades += 1
                sells += obj["data"]["m"] is True
                first_trade = first_trade or obj["data"]
            elif "@depth" in obj["stream"]:
                d = obj["data"]
                depth.append((d["U"], d["u"], len(d["b"]) + len(d["a"]), g))
    assert L is not None and snap_line is not None
    kept = [d for d in depth if (d[1] >= L if futures else d[1] > L)]
    return {
        "snapshot_line": snap_line,
        "L": L,
        "snapshot_levels": n_snap_levels,
        "kept": kept,
        "stale": sum(1 for d in depth if d[3] < snap_line and d not in kept),
        "book_rows": n_snap_levels + sum(d[2] for d in kept),
        "trades": trades,
        "sells": sells,
        "first_trade": first_trade,
    }


@pytest.fixture(scope="module")
def usdm_ref(ws_dir: Path) -> dict[str, Any]:
    return reference([ws_dir / "usdm" / "btcusdt_20240808.gz"], futures=True)


@pytest.fixture(scope="module")
def ws_catalog(ws_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, ImportSummary]:
    """Every capture imported once: each session (0808 then 0809) is loaded as one stream."""
    cat = Catalog(tmp_path_factory.mktemp("catalog"))
    calls: list[tuple[int, int, str]] = []
    summary = cat.import_path(ws_dir, progress=lambda done, total, name: calls.append((done, total, name)))
    assert calls[-1][:2] == (10, 10) and [c[0] for c in calls] == sorted(c[0] for c in calls)
    return cat, summary


# --------------------------------------------------------------------------------------------
# real files


def test_instrument_ids_from_layout(ws_dir: Path) -> None:
    assert infer_instrument_id(ws_dir / "spot" / "btcusdt_20240808.gz") == "BTCUSDT.BINANCE"
    assert infer_instrument_id(ws_dir / "usdm" / "ethusdt_20240808.gz") == "ETHUSDT-PERP.BINANCE"
    assert infer_instrument_id(ws_dir / "cm" / "btcusd_perp_20240809.gz") == "BTCUSD-PERP.BINANCE"


def test_usdm_btc_rows_match_an_independent_reading(usdm_btc: Any, usdm_ref: dict[str, Any]) -> None:
    book, trades = usdm_btc
    ref = usdm_ref
    assert book.data_type is DataType.BOOK_DELTA and trades.data_type is DataType.TRADE
    assert book.instrument_id == "BTCUSDT-PERP.BINANCE"
    assert (book.price_precision, book.size_precision) == (1, 3)
    assert len(trades) == ref["trades"] == 21_313  # README: usdm BTC 21,313 trades
    assert len(book) == ref["book_rows"]
    m = book.meta
    assert m["messages"] == {"depth": 6551, "bookTicker": 66089, "trade": 21313, "snapshot": 1}
    assert [s["line"] for s in m["snapshots"]] == [ref["snapshot_line"]] == [55]
    assert m["snapshots"][0]["buffered"] == 6
    assert m["diffs_stale_dropped"] == ref["stale"] == 4
    assert m["diffs_applied"] == len(ref["kept"]) == 6547
    assert m["gaps"] == [] and m["bad_rows"] == 0 and m["diffs_unsynced_dropped"] == 0


def test_usdm_btc_snapshot_rows(usdm_btc: Any) -> None:
    book, _ = usdm_btc
    c = book.columns
    # first snapshot row is the best bid of the raw REST snapshot: ["61800.20","2.909"]
    assert c["flags"][0] == FLAG_CLEAR | FLAG_SNAPSHOT
    assert (c["side"][0], c["price"][0], c["size"][0]) == (SIDE_BID, 618002, 2909)
    assert c["ts_event"][0] == 1723161256493 * 1_000_000  # snapshot T
    assert c["ts_local"][0] == 1723161255319702566
    assert c["update_id"][0] == 5123107852948 and c["seq"][0] == 55
    # last snapshot row: the 1000th ask ["61976.20","0.002"]
    assert c["flags"][1999] == FLAG_SNAPSHOT | FLAG_LAST
    assert (c["side"][1999], c["price"][1999], c["size"][1999]) == (SIDE_ASK, 619762, 2)
    assert np.all(c["flags"][:2000] & FLAG_SNAPSHOT)
    assert not np.any(c["flags"][2000:] & (FLAG_SNAPSHOT | FLAG_CLEAR))
    # a known level in the middle of the snapshot: bids[1] = ["61800.10","0.696"]
    assert (c["price"][1], c["size"][1]) == (618001, 696)


def test_buffered_diffs_become_effective_at_the_snapshot(usdm_btc: Any, usdm_ref: dict[str, Any]) -> None:
    book, _ = usdm_btc
    ref = usdm_ref
    first_kept = ref["kept"][0]
    L = ref["L"]
    assert first_kept[0] <= L <= first_kept[1]  # the documented straddle
    assert first_kept[3] < 55  # it was received before the snapshot line
    c = book.columns
    row = 2000
    assert c["update_id"][row] == first_kept[1]
    assert c["seq"][row] == 55 and c["ts_local"][row] == c["ts_local"][0]
    # (ts_local, seq) never goes backwards, so a time sort cannot move a diff before the CLEAR
    tl, seq = c["ts_local"], c["seq"]
    assert np.all((np.diff(tl) > 0) | ((np.diff(tl) == 0) & (np.diff(seq) >= 0)))


def test_message_boundaries_and_update_ids(usdm_btc: Any, usdm_ref: dict[str, Any]) -> None:
    book, _ = usdm_btc
    ref = usdm_ref
    c = book.columns
    last = np.flatnonzero(c["flags"] & FLAG_LAST)
    with_levels = [d for d in ref["kept"] if d[2] > 0]
    assert len(last) == 1 + len(with_levels)
    assert last[-1] == len(book) - 1
    # each message's rows share one update_id, and update ids increase message by message
    assert list(c["update_id"][last[1:]]) == [d[1] for d in with_levels]
    assert np.all(np.diff(c["update_id"][last]) > 0)


def test_trades_match_raw_text(usdm_btc: Any, usdm_ref: dict[str, Any]) -> None:
    _, trades = usdm_btc
    ref = usdm_ref
    t0 = ref["first_trade"]
    c = trades.columns
    assert c["price"][0] == int(Decimal(t0["p"]) * 10)  # 1 decimal
    assert c["size"][0] == int(Decimal(t0["q"]) * 1000)  # 3 decimals
    assert c["ts_event"][0] == t0["T"] * 1_000_000
    assert c["trade_id"][0] == t0["t"]
    assert c["aggressor"][0] == (AGGRESSOR_SELL if t0["m"] else AGGRESSOR_BUY)
    assert int((c["aggressor"] == AGGRESSOR_SELL).sum()) == ref["sells"]
    assert int((c["aggressor"] == AGGRESSOR_BUY).sum()) == ref["trades"] - ref["sells"]


SESSIONS = [
    # (instrument, files, snapshot line, buffered before it, stale dropped, trades per the README)
    ("BTCUSDT.BINANCE", ["spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"], 8, 3, 2, 9_757 + 10_147),
    ("ETHUSDT.BINANCE", ["spot/ethusdt_20240808.gz", "spot/ethusdt_20240809.gz"], 6, 2, 2, 6_106 + 8_409),
    ("BTCUSDT-PERP.BINANCE", ["usdm/btcusdt_20240808.gz"], 55, 6, 4, 21_313),
    ("ETHUSDT-PERP.BINANCE", ["usdm/ethusdt_20240808.gz"], 41, 7, 5, 14_076),
    (
        "BTCUSD-PERP.BINANCE",
        ["cm/btcusd_perp_20240808.gz", "cm/btcusd_perp_20240809.gz"],
        37,
        25,
        23,
        2_286 + 2_949,
    ),
    (
        "ETHUSD-PERP.BINANCE",
        ["cm/ethusd_perp_20240808.gz", "cm/ethusd_perp_20240809.gz"],
        27,
        24,
        22,
        1_732 + 1_863,
    ),
]


@pytest.mark.parametrize(("iid", "files", "snap_line", "buffered", "stale", "n_trades"), SESSIONS)
def test_sessions_stay_in_sequence_across_files(
    ws_dir: Path,
    ws_catalog: tuple[Catalog, ImportSummary],
    iid: str,
    files: list[str],
    snap_line: int,
    buffered: int,
    stale: int,
    n_trades: int,
) -> None:
    cat, summary = ws_catalog
    paths = [str(ws_dir / f) for f in files]
    (entry,) = [f for f in summary.files if f.paths == paths]
    assert (entry.status, entry.format, entry.gaps, entry.bad_rows) == ("ok", "binance_ws", 0, 0)
    book = cat.read(DataType.BOOK_DELTA, iid)
    trades = cat.read(DataType.TRADE, iid)
    m = book.meta
    assert m["gaps"] == [], "a real capture must be gap-free, also across the 0808 -> 0809 boundary"
    assert m["bad_rows"] == 0 and m["diffs_unsynced_dropped"] == 0
    assert m["snapshots"] == [
        {
            "file": paths[0],
            "line": snap_line,
            "last_update_id": m["snapshots"][0]["last_update_id"],
            "buffered": buffered,
        }
    ]
    assert m["diffs_stale_dropped"] == stale
    assert m["diffs_applied"] + stale == m["messages"]["depth"]
    assert len(trades) == n_trades
    assert entry.rows == len(book) + len(trades)
    if len(paths) == 2:  # rows keep flowing after the file boundary, with seq counting on
        lines_0808 = len(raw_lines(Path(paths[0])))
        assert book.columns["seq"].max() > lines_0808
        assert trades.columns["seq"].max() > lines_0808


def test_catalog_round_trip_is_exact(ws_catalog: tuple[Catalog, ImportSummary], usdm_btc: Any) -> None:
    cat, _ = ws_catalog
    for loaded in usdm_btc:
        back = cat.read(loaded.data_type, loaded.instrument_id)
        assert (back.price_precision, back.size_precision, back.source) == (
            loaded.price_precision,
            loaded.size_precision,
            loaded.source,
        )
        assert back.meta == loaded.meta
        for name, col in loaded.columns.items():
            assert back.columns[name].dtype == col.dtype and np.array_equal(back.columns[name], col), name


def test_spot_sizes_finer_than_the_instrument_lot_are_kept_exactly(
    ws_catalog: tuple[Catalog, ImportSummary],
) -> None:
    # Binance spot BTCUSDT depth carries 6-decimal quantities (resting orders from before the
    # lot size became 0.00001); the instrument carries 8 decimals, so nothing is rounded.
    cat, _ = ws_catalog
    book = cat.read(DataType.BOOK_DELTA, "BTCUSDT.BINANCE")
    assert (book.price_precision, book.size_precision) == (2, 8)
    assert book.meta["precision_widened"] == {}
    lot_raw = 10 ** (8 - 5)
    assert np.any(book.columns["size"] % lot_raw != 0)  # sizes below the order lot exist
    assert book.columns["ts_event"][0] == book.columns["ts_local"][0]  # spot snapshot: local time


def test_explicit_precision_is_strict(tmp_path: Path, ws_dir: Path) -> None:
    lines = raw_lines(ws_dir / "spot" / "btcusdt_20240808.gz", limit=3000)
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    with pytest.raises(DataError, match="has more than 5 decimals"):
        load_binance_ws(path, instrument_id="BTCUSDT.BINANCE", price_precision=2, size_precision=5)


def test_continuation_file_alone_has_no_book(ws_dir: Path) -> None:
    book, trades = load_binance_ws(ws_dir / "cm" / "btcusd_perp_20240809.gz")
    assert len(book) == 0
    assert book.meta["diffs_unsynced_dropped"] == 17_948  # README: cm BTC 17,948 diffs in 0809
    assert len(trades) == 2_949


# --------------------------------------------------------------------------------------------
# sequence gaps (fixtures cut from the real file)


@pytest.fixture(scope="module")
def head_lines(ws_dir: Path) -> list[bytes]:
    return raw_lines(ws_dir / "usdm" / "btcusdt_20240808.gz", limit=400)


@pytest.fixture(scope="module")
def clean_head(tmp_path_factory: pytest.TempPathFactory, head_lines: list[bytes]) -> Any:
    path = write_gz(tmp_path_factory.mktemp("clean") / "btcusdt_20240808.gz", head_lines)
    return load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE")


def depth_positions(lines: list[bytes], after: int) -> list[int]:
    """0-based indices of depth-diff lines after 0-based index ``after``."""
    return [i for i, line in enumerate(lines) if i > after and b"@depth" in line[:80]]


def test_gap_raises_with_file_and_line(tmp_path: Path, head_lines: list[bytes]) -> None:
    snap = 54  # 0-based index of the snapshot line (line 55)
    d = depth_positions(head_lines, snap)
    lines = head_lines[: d[1]] + head_lines[d[1] + 1 :]  # delete the 2nd diff after the snapshot
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    next_line = d[2]  # 0-based in the original = 1-based line number in the shortened file
    with pytest.raises(DataError, match=rf"{path}:{next_line}: sequence gap"):
        load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE", on_gap="raise")


def test_gap_resync_reports_and_stops_the_book(tmp_path: Path, head_lines: list[bytes]) -> None:
    snap = 54
    d = depth_positions(head_lines, snap)
    lines = head_lines[: d[1]] + head_lines[d[1] + 1 :]
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    book, trades = load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE")
    _, before = parse(head_lines[d[0]])
    _, after = parse(head_lines[d[2]])
    gap_line = d[2]
    assert book.meta["gaps"] == [
        {"file": str(path), "line": gap_line, "expected": before["data"]["u"], "got": after["data"]["pu"]}
    ]
    # after the gap: one invalidation marker (a lone CLEAR row of size 0), then no book rows
    c = book.columns
    after_gap = np.flatnonzero(c["seq"] >= gap_line)
    assert len(after_gap) == 1
    k = after_gap[0]
    assert c["seq"][k] == gap_line and c["size"][k] == 0
    assert c["flags"][k] & FLAG_CLEAR and not c["flags"][k] & FLAG_SNAPSHOT
    assert book.meta["diffs_unsynced_dropped"] == len(depth_positions(lines, gap_line - 2))
    assert trades.columns["seq"].max() > gap_line  # trades are not affected by a book gap


def test_snapshot_that_no_buffered_diff_reaches_is_a_gap(tmp_path: Path, head_lines: list[bytes]) -> None:
    # A snapshot older than every buffered diff (lastUpdateId below the first U) cannot be
    # continued: the first diff must straddle it.
    snap = 54
    before = [i for i in depth_positions(head_lines, -1) if i < snap]
    _, first = parse(head_lines[before[0]])
    ts, snap_obj = parse(head_lines[snap])
    lines = list(head_lines)
    lines[snap] = unparse(ts, dict(snap_obj, lastUpdateId=first["data"]["U"] - 5))
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    with pytest.raises(DataError, match=rf"{path}:{before[0] + 1}: sequence gap \(first diff"):
        load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE", on_gap="raise")
    book, _ = load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE")
    assert [g["line"] for g in book.meta["gaps"]] == [before[0] + 1]
    assert len(book) == 2001  # the snapshot, the gap's invalidation marker; no later snapshot
    assert book.meta["diffs_unsynced_dropped"] == len(depth_positions(head_lines, -1))


def book_after(book: Any, last_seq: int) -> tuple[list[list[str]], list[list[str]]]:
    """Replay BOOK_DELTA rows up to ``last_seq`` into Binance-style [price, qty] text levels."""
    c = book.columns
    sides: dict[int, dict[int, int]] = {SIDE_BID: {}, SIDE_ASK: {}}
    for k in np.flatnonzero(c["seq"] <= last_seq):
        if c["flags"][k] & FLAG_CLEAR:
            sides[SIDE_BID].clear()
            sides[SIDE_ASK].clear()
        levels = sides[int(c["side"][k])]
        p, q = int(c["price"][k]), int(c["size"][k])
        if q:
            levels[p] = q
        else:
            levels.pop(p, None)

    def text(p: int, q: int) -> list[str]:
        return [f"{Decimal(p).scaleb(-1):.2f}", f"{Decimal(q).scaleb(-3):.3f}"]

    bids = [text(p, sides[SIDE_BID][p]) for p in sorted(sides[SIDE_BID], reverse=True)]
    asks = [text(p, sides[SIDE_ASK][p]) for p in sorted(sides[SIDE_ASK])]
    return bids, asks


def test_gap_resync_resumes_at_the_next_snapshot(
    tmp_path: Path, head_lines: list[bytes], clean_head: Any
) -> None:
    snap = 54
    d = depth_positions(head_lines, snap)
    # Delete the 2nd diff after the snapshot (a gap at the 3rd), then insert before the 6th diff a
    # fresh snapshot: the true book after the 5th diff, with a lastUpdateId the 6th diff straddles.
    _, diff6 = parse(head_lines[d[5]])
    _, snap_obj = parse(head_lines[snap])
    bids, asks = book_after(clean_head[0], d[4] + 1)
    snap_obj = dict(snap_obj, lastUpdateId=diff6["data"]["U"], bids=bids, asks=asks)
    resnap = unparse(parse(head_lines[d[5] - 1])[0], snap_obj)
    lines = head_lines[: d[1]] + head_lines[d[1] + 1 : d[5]] + [resnap] + head_lines[d[5] :]
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    book, _ = load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE")
    assert len(book.meta["gaps"]) == 1
    c = book.columns
    clears = np.flatnonzero(c["flags"] & FLAG_CLEAR)
    assert len(clears) == 3  # snapshot, gap marker, new snapshot
    resnap_line = d[5]  # 1-based line of the inserted snapshot in the new file
    gap_line = d[2]
    assert c["seq"][clears[1]] == gap_line and c["size"][clears[1]] == 0
    assert c["seq"][clears[2]] == resnap_line
    between = (c["seq"] >= gap_line) & (c["seq"] < resnap_line)
    assert np.flatnonzero(between).tolist() == [clears[1]]  # only the marker in between
    assert c["seq"].max() > resnap_line  # and the book resumes after the new snapshot
    # the resumed book equals the clean one: replaying both to the end gives the same levels
    assert book_after(book, 10**9) == book_after(clean_head[0], 10**9)


# --------------------------------------------------------------------------------------------
# bad input


def _first(lines: list[bytes], marker: bytes, after: int = 54) -> int:
    return next(i for i, line in enumerate(lines) if i > after and marker in line[:80])


def _edit_json(lines: list[bytes], i: int, fn: Any) -> list[bytes]:
    ts, obj = parse(lines[i])
    out = list(lines)
    out[i] = unparse(ts, fn(obj) or obj)
    return out


def case_malformed_json(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@trade")
    ts, _ = parse(lines[i])
    return [*lines[:i], f"{ts} {{not json\n".encode(), *lines[i:]], i + 1, "malformed line"


def case_nan_price(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@trade")
    return _edit_json(lines, i, lambda o: o["data"].update(p="NaN")), i + 1, "not a number"


def case_non_numeric_price(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@trade")
    return _edit_json(lines, i, lambda o: o["data"].update(p="6180O.1")), i + 1, "not a number"


def case_negative_size(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@trade")
    return _edit_json(lines, i, lambda o: o["data"].update(q="-0.005")), i + 1, "size must be positive"


def case_missing_field(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@trade")
    return _edit_json(lines, i, lambda o: o["data"].pop("T") and None), i + 1, "missing field 'T'"


def case_time_backwards(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@trade")
    _, obj = parse(lines[i])
    prev_ts, _ = parse(lines[i - 1])
    out = list(lines)
    out[i] = unparse(prev_ts - 1_000_000, obj)
    return out, i + 1, "goes backwards"


def case_crossed_book(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@depth")
    return _edit_json(lines, i, lambda o: o["data"]["b"].append(["70000.00", "1.000"])), i + 1, "crossed book"


def case_negative_depth_size(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    i = _first(lines, b"@depth")
    return _edit_json(lines, i, lambda o: o["data"]["a"].append(["61900.00", "-1.000"])), i + 1, "negative"


TRADE_CASES = [
    case_malformed_json,
    case_nan_price,
    case_non_numeric_price,
    case_negative_size,
    case_missing_field,
]
BOOK_CASES = [case_crossed_book, case_negative_depth_size]


@pytest.mark.parametrize("case", [*TRADE_CASES, case_time_backwards, *BOOK_CASES])
def test_bad_input_raises_with_file_and_line(tmp_path: Path, head_lines: list[bytes], case: Any) -> None:
    lines, line_no, reason = case(head_lines)
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    with pytest.raises(DataError, match=rf"{path}:{line_no}: .*{reason}") as err:
        load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE")
    assert err.value.line == line_no and err.value.path == str(path)


@pytest.mark.parametrize("case", [*TRADE_CASES, case_time_backwards])
def test_skip_bad_counts_a_bad_trade_line(
    tmp_path: Path, head_lines: list[bytes], clean_head: Any, case: Any
) -> None:
    lines, line_no, _ = case(head_lines)
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    book, trades = load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE", skip_bad=True)
    assert book.meta["bad_rows"] == 1
    assert book.meta["bad_row_samples"][0].startswith(f"{path}:{line_no}:")
    clean_book, clean_trades = clean_head
    assert len(book) == len(clean_book)  # the book is untouched
    expected = len(clean_trades) if case is case_malformed_json else len(clean_trades) - 1
    assert len(trades) == expected


@pytest.mark.parametrize("case", BOOK_CASES)
def test_skip_bad_diff_is_not_silently_absorbed(tmp_path: Path, head_lines: list[bytes], case: Any) -> None:
    # Skipping a depth diff leaves its update ids unconsumed, so the next diff reports the gap
    # and the book stops: a missing diff is never papered over.
    lines, line_no, _ = case(head_lines)
    path = write_gz(tmp_path / "btcusdt_20240808.gz", lines)
    book, _ = load_binance_ws(path, instrument_id="BTCUSDT-PERP.BINANCE", skip_bad=True)
    assert book.meta["bad_rows"] == 1
    assert len(book.meta["gaps"]) == 1 and book.meta["gaps"][0]["line"] > line_no
    c = book.columns
    late = np.flatnonzero(c["seq"] >= line_no)  # only the gap's invalidation marker follows
    assert len(late) == 1 and c["flags"][late[0]] & FLAG_CLEAR and c["size"][late[0]] == 0


def test_unknown_instrument_precision_is_read_off_the_data(shared_data: Path) -> None:
    # no instrument definition: the grid is inferred (2 price decimals, 6 size decimals here)
    path = shared_data / "ticks_l2/binance_ws_hftbacktest/spot/btcusdt_20240808.gz"
    book, _ = load_binance_ws(path, instrument_id="BTCUSDT.ELSEWHERE")
    assert (book.price_precision, book.size_precision) == (2, 6)

"""Binance depth CSV (``symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu``).

Rows that share (timestamp, first_update_id, last_update_id, update_type) are one venue message.
``update_type=snap`` rows are a snapshot (CLEAR on its first row, SNAPSHOT on all, LAST on its
last); ``set`` rows are diffs (LAST on the last row of each message; qty 0 deletes the level).

Sequence checks follow the futures rules (these files are published for USDT-M/COIN-M): after a
snapshot with ``last_update_id`` L, diffs with ``u < L`` are dropped, the first applied one must
have ``U <= L <= u``, and each later one ``pu == previous u``. A gap raises or, with
``on_gap="resync"``, is recorded in ``meta["gaps"]`` and diffs are dropped until the next snapshot.

A file of diffs with no snapshot (like the ``depth_update`` sample) is loaded as it is, with
``meta["has_snapshot"] = False``: it cannot rebuild a book on its own, but it is the user's data
and replaying it onto a book synced elsewhere is legitimate. Continuity between its messages is
still checked. The venue gives one clock, so ts_local = ts_event = ``timestamp`` (ms).
``seq`` is the line number (the header is line 1), counting on across several files.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.data._book import LightBook
from bastion.data._common import (
    NS_PER_MS,
    BadRows,
    OnGap,
    PathLike,
    as_paths,
    floor_precisions,
    log,
    make_table,
    open_text,
    source_name,
    text_precision,
)
from bastion.data._numbers import parse_fixed
from bastion.data.schema import (
    FLAG_CLEAR,
    FLAG_LAST,
    FLAG_SNAPSHOT,
    SIDE_ASK,
    SIDE_BID,
    DataError,
    DataType,
    Table,
)

HEADER = [
    "symbol",
    "timestamp",
    "first_update_id",
    "last_update_id",
    "side",
    "update_type",
    "price",
    "qty",
    "pu",
]
_MARKET = re.compile(r"(?:^|_)(spot|usdm|um|cm)(?:_|$)")


def instrument_id_for(symbol: str, path: Path) -> str:
    """BTCUSDT -> BTCUSDT-PERP.BINANCE (USDT-M, the default: Binance publishes depth files for
    futures); BTCUSD_PERP -> BTCUSD-PERP.BINANCE; a ``spot`` hint in the file name gives spot."""
    m = _MARKET.search(path.name.lower())
    if symbol.endswith("_PERP"):
        return f"{symbol.removesuffix('_PERP')}-PERP.BINANCE"
    if m and m.group(1) == "spot":
        return f"{symbol}.BINANCE"
    return f"{symbol}-PERP.BINANCE"


class _Row:
    __slots__ = ("first", "kind", "last", "line", "path", "prev", "price", "qty", "seq", "side", "ts")

    def __init__(self, path: str, line: int, seq: int, rec: list[str]) -> None:
        self.path, self.line, self.seq = path, line, seq
        self.ts = int(rec[1]) * NS_PER_MS
        self.first, self.last, self.prev = int(rec[2]), int(rec[3]), int(rec[8])
        side = rec[4]
        if side not in ("b", "a"):
            raise ValueError(f"side must be b or a, got {side!r}")
        self.side = SIDE_BID if side == "b" else SIDE_ASK
        self.kind = rec[5]
        if self.kind not in ("snap", "set"):
            raise ValueError(f"update_type must be snap or set, got {self.kind!r}")
        self.price = rec[6]
        self.qty = rec[7]


def load_binance_depth_csv(
    paths: PathLike | Sequence[PathLike],
    *,
    instrument_id: str | None = None,
    skip_bad: bool = False,
    on_gap: OnGap = "resync",
) -> list[Table]:
    files = as_paths(paths)
    bad = BadRows(skip_bad)
    rows: list[_Row] = []
    symbol: str | None = None
    seq = 0
    for f in files:
        fs = str(f)
        with open_text(f) as fh:
            reader = csv.reader(fh)
            for line, rec in enumerate(reader, 1):
                seq += 1
                if line == 1:
                    if rec != HEADER:
                        raise DataError(fs, 1, f"unexpected header {rec}")
                    continue
                if len(rec) != len(HEADER):
                    bad(fs, line, f"expected {len(HEADER)} fields, got {len(rec)}")
                    continue
                if symbol is None:
                    symbol = rec[0]
                elif rec[0] != symbol:
                    bad(fs, line, f"symbol {rec[0]} is not {symbol}: one instrument per stream")
                    continue
                try:
                    rows.append(_Row(fs, line, seq, rec))
                except ValueError as exc:
                    bad(fs, line, str(exc))
    if symbol is None:
        raise DataError(str(files[0]), None, "no data rows")
    iid = instrument_id or instrument_id_for(symbol, files[0])
    pp, sp = floor_precisions(iid, text_precision(r.price for r in rows), text_precision(r.qty for r in rows))

    # Group rows into messages and parse values; a bad row drops its whole message, because a
    # message applied in part would leave the book in a state the venue never had.
    messages: list[list[_Row]] = []
    for r in rows:
        if messages:
            h = messages[-1][0]
            if (h.ts, h.first, h.last, h.kind) == (r.ts, r.first, r.last, r.kind) and h.path == r.path:
                messages[-1].append(r)
                continue
        messages.append([r])

    cols: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "side", "price", "size", "flags", "update_id")
    }
    book = LightBook(track_undo=True)
    snapshot_id: int | None = None
    last_u: int | None = None
    awaiting_snapshot = False  # after a gap only a snapshot can resume the book
    gaps: list[dict[str, Any]] = []
    dropped = 0
    for msg in messages:
        head = msg[0]
        try:
            prices = [parse_fixed(r.price, pp) for r in msg]
            sizes = [parse_fixed(r.qty, sp) for r in msg]
        except ValueError as exc:
            bad(head.path, head.line, f"message at this line: {exc}")
            continue
        bad_level = next(
            (i for i, (p, q) in enumerate(zip(prices, sizes, strict=True)) if p <= 0 or q < 0), None
        )
        if bad_level is None and head.kind == "snap":
            bad_level = next((i for i, q in enumerate(sizes) if q == 0), None)
        if bad_level is not None:
            r = msg[bad_level]
            bad(r.path, r.line, f"bad level price={r.price} qty={r.qty}")
            continue
        if head.kind == "snap":
            bids = [(p, q) for r, p, q in zip(msg, prices, sizes, strict=True) if r.side == SIDE_BID]
            asks = [(p, q) for r, p, q in zip(msg, prices, sizes, strict=True) if r.side == SIDE_ASK]
            if bids and asks and max(p for p, _ in bids) >= min(p for p, _ in asks):
                bad(head.path, head.line, "crossed snapshot")
                continue
            book.clear()
            book.load([p for p, _ in bids], [q for _, q in bids], [p for p, _ in asks], [q for _, q in asks])
            book.commit()
            awaiting_snapshot = False
            snapshot_id, last_u = head.last, None
            flags = [FLAG_SNAPSHOT] * len(msg)
            flags[0] |= FLAG_CLEAR
        else:
            gap: tuple[int, int] | None = None
            if awaiting_snapshot:
                dropped += 1
                continue
            if snapshot_id is not None and last_u is None:
                if head.last < snapshot_id:
                    dropped += 1
                    continue
                if not head.first <= snapshot_id <= head.last:
                    gap = (snapshot_id, head.first)
            elif last_u is not None and head.prev != last_u:
                gap = (last_u, head.prev)
            if gap is not None:
                if on_gap == "raise":
                    raise DataError(head.path, head.line, f"sequence gap: expected {gap[0]}, got {gap[1]}")
                gaps.append({"file": head.path, "line": head.line, "expected": gap[0], "got": gap[1]})
                log.warning("sequence_gap", file=head.path, line=head.line, expected=gap[0], got=gap[1])
                book.clear()
                snapshot_id, last_u = None, None
                awaiting_snapshot = True
                dropped += 1
                continue
            for r, p, q in zip(msg, prices, sizes, strict=True):
                book.update(r.side, [p], [q])
            crossed = book.crossed() if snapshot_id is not None else None
            if crossed:
                book.rollback()
                bad(head.path, head.line, f"crossed book after message: bid {crossed[0]} >= ask {crossed[1]}")
                continue
            book.commit()
            last_u = head.last
            flags = [0] * len(msg)
        flags[-1] |= FLAG_LAST
        n = len(msg)
        cols["ts_event"].extend([head.ts] * n)
        cols["ts_local"].extend([head.ts] * n)
        cols["seq"].extend(r.seq for r in msg)
        cols["side"].extend(r.side for r in msg)
        cols["price"].extend(prices)
        cols["size"].extend(sizes)
        cols["flags"].extend(flags)
        cols["update_id"].extend([head.last] * n)
    meta = {
        "format": "binance_depth_csv",
        "files": [str(f) for f in files],
        "messages": len(messages),
        "has_snapshot": any(m[0].kind == "snap" for m in messages),
        "gaps": gaps,
        "diffs_dropped": dropped,
        **bad.meta(),
    }
    return [make_table(DataType.BOOK_DELTA, iid, pp, sp, dict(cols), source=source_name(files), meta=meta)]

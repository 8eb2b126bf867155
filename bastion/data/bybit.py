"""Bybit public-data order book (``orderbook.N``) JSON lines, optionally gzipped -> BOOK_DELTA.

Each line is ``{"topic","type":"snapshot"|"delta","ts","cts","data":{"s","b","a","u","seq"}}``.
A snapshot replaces the book (CLEAR|SNAPSHOT on its first row, LAST on its last); a delta sets
levels (size 0 deletes; LAST on its last row). Bybit's ``u`` increases by exactly 1 per message
of one stream, so a delta whose ``u`` is not the previous ``u + 1`` is a sequence gap: it raises
with ``on_gap="raise"``, else it is recorded in ``meta["gaps"]`` and deltas are dropped until the
next snapshot (Bybit sends one after a service restart, with ``u = 1``). Deltas before the first
snapshot cannot be applied and are dropped (counted).

Timestamps (ms): ts_event = ``cts`` (matching-engine time of the change) when present, else
``ts``; ts_local = ``ts`` (when Bybit published the message: the closest thing to a receive time
that public data has). ``seq`` is the line number. ``update_id`` = ``u``.

Instrument id: ``<SYMBOL>-PERP.BYBIT`` for linear/inverse (the default: ob500 public data is the
derivatives archive), ``<SYMBOL>.BYBIT`` when the file name says ``spot``. Precisions are the
decimals the text needs (two passes over the file: these files are small).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion.data._book import LightBook, snapshot_crossed
from bastion.data._common import (
    NS_PER_MS,
    BadRows,
    OnGap,
    PathLike,
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


def instrument_id_for(symbol: str, path: Path) -> str:
    return f"{symbol}.BYBIT" if "spot" in path.name.lower() else f"{symbol}-PERP.BYBIT"


def _level_texts(objs: list[tuple[int, Any]], k: int) -> list[Any]:
    out: list[Any] = []
    for _, o in objs:
        try:
            for side in ("b", "a"):
                out.extend(lv[k] for lv in o["data"][side])
        except (KeyError, TypeError, IndexError):
            continue
    return out


def load_bybit_orderbook(
    path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False, on_gap: OnGap = "resync"
) -> list[Table]:
    p = Path(path)
    ps = str(p)
    bad = BadRows(skip_bad)
    objs: list[tuple[int, Any]] = []
    with open_text(p) as fh:
        for line, text in enumerate(fh, 1):
            try:
                objs.append((line, json.loads(text)))
            except ValueError as exc:
                bad(ps, line, f"not valid JSON: {exc}")
    symbol = next(
        (o["data"].get("s") for _, o in objs if isinstance(o, dict) and isinstance(o.get("data"), dict)), None
    )
    if not isinstance(symbol, str):
        raise DataError(ps, None, "no order book message with a symbol")
    iid = instrument_id or instrument_id_for(symbol, p)
    pp, sp = floor_precisions(
        iid, text_precision(_level_texts(objs, 0)), text_precision(_level_texts(objs, 1))
    )
    cols: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "side", "price", "size", "flags", "update_id")
    }
    book = LightBook(track_undo=True)
    last_u: int | None = None  # None: no synced book
    last_local = 0
    gaps: list[dict[str, Any]] = []
    dropped = 0
    snapshots = 0
    for line, o in objs:
        try:
            kind = o["type"]
            data = o["data"]
            if data["s"] != symbol:
                raise ValueError(f"symbol {data['s']} is not {symbol}: one instrument per file")
            u = data["u"]
            ts = o["ts"]
            cts = o.get("cts", ts)
            if type(u) is not int or type(ts) is not int or type(cts) is not int:
                raise ValueError("u/ts/cts must be integers")
            tl, te = ts * NS_PER_MS, cts * NS_PER_MS
            if tl < last_local:
                raise ValueError(f"ts goes backwards: {tl} < {last_local}")
            if kind not in ("snapshot", "delta"):
                raise ValueError(f"unknown message type {kind!r}")
            levels: list[tuple[int, int, int]] = []
            for side, key in ((SIDE_BID, "b"), (SIDE_ASK, "a")):
                for pt, qt in data[key]:
                    pr, q = parse_fixed(pt, pp), parse_fixed(qt, sp)
                    if pr <= 0 or q < 0 or (kind == "snapshot" and q == 0):
                        raise ValueError(f"bad level price={pt} size={qt}")
                    levels.append((side, pr, q))
        except (KeyError, TypeError, ValueError) as exc:
            bad(ps, line, f"missing field {exc}" if isinstance(exc, KeyError) else str(exc))
            continue
        last_local = tl
        if kind == "snapshot":
            bids = [pr for s, pr, _ in levels if s == SIDE_BID]
            asks = [pr for s, pr, _ in levels if s == SIDE_ASK]
            crossed = snapshot_crossed(bids, asks)
            if crossed or not levels:
                bad(ps, line, "crossed or empty snapshot")
                continue
            book.load(
                bids,
                [q for s, _, q in levels if s == SIDE_BID],
                asks,
                [q for s, _, q in levels if s == SIDE_ASK],
            )
            book.commit()
            snapshots += 1
            flags = [FLAG_SNAPSHOT] * len(levels)
            flags[0] |= FLAG_CLEAR
        else:
            if last_u is None:
                dropped += 1
                continue
            if u != last_u + 1:
                if on_gap == "raise":
                    raise DataError(ps, line, f"sequence gap: expected u {last_u + 1}, got {u}")
                gaps.append({"file": ps, "line": line, "expected": last_u + 1, "got": u})
                log.warning("sequence_gap", file=ps, line=line, expected=last_u + 1, got=u)
                book.clear()
                last_u = None
                dropped += 1
                continue
            for s, pr, q in levels:
                book.update(s, [pr], [q])
            crossed = book.crossed()
            if crossed:
                book.rollback()
                bad(ps, line, f"crossed book after message: bid {crossed[0]} >= ask {crossed[1]}")
                continue
            book.commit()
            flags = [0] * len(levels)
        last_u = u
        if not levels:
            continue
        flags[-1] |= FLAG_LAST
        n = len(levels)
        cols["ts_event"].extend([te] * n)
        cols["ts_local"].extend([tl] * n)
        cols["seq"].extend([line] * n)
        cols["side"].extend(s for s, _, _ in levels)
        cols["price"].extend(pr for _, pr, _ in levels)
        cols["size"].extend(q for _, _, q in levels)
        cols["flags"].extend(flags)
        cols["update_id"].extend([u] * n)
    meta = {
        "format": "bybit_orderbook",
        "symbol": symbol,
        "lines": len(objs),
        "snapshots": snapshots,
        "gaps": gaps,
        "deltas_dropped": dropped,
        **bad.meta(),
    }
    return [make_table(DataType.BOOK_DELTA, iid, pp, sp, cols, source=source_name([p]), meta=meta)]

"""Kraken REST responses saved as JSON: ``OHLC`` -> BAR and ``Trades`` -> TRADE.

Both are ``{"error": [], "result": {"<PAIR>": [rows...], "last": ...}}``. The JSON is parsed with
``parse_float=Decimal`` so the trade times (float seconds with 7 decimals) keep every digit of
their text and convert to integer nanoseconds exactly. There is one clock (Kraken's), so
ts_local = ts_event for trades; bars use ts_local = close time.

OHLC rows are ``[time_s, open, high, low, close, vwap, volume, count]`` with time = bar open.
Kraken's last OHLC row is the current, not yet committed bar (its time is after ``last``); it is
incomplete, so it is dropped and counted in ``meta["uncommitted_dropped"]``.
Trade rows are ``[price, volume, time_s, side b/s, type m/l, misc, trade_id]``; ``side`` is the
taker's, i.e. the aggressor.

Instrument id: ``<PAIR>.KRAKEN`` (``XBTUSDT.KRAKEN``). ``seq`` and error "lines" are the 0-based
row index in the result array (pretty-printed JSON has no meaningful line per row).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

from bastion.data._common import (
    NS_PER_S,
    BadRows,
    PathLike,
    floor_precisions,
    make_table,
    open_text,
    source_name,
    text_precision,
)
from bastion.data._numbers import parse_fixed, seconds_to_ns
from bastion.data.freqtrade import timeframe_ns
from bastion.data.schema import AGGRESSOR_BUY, AGGRESSOR_SELL, DataError, DataType, Table

_OHLC_TF = re.compile(r"ohlc(\d+[mhdw])")


def _read(path: Path) -> tuple[str, list[Any], Any]:
    try:
        with open_text(path) as fh:
            doc = json.load(fh, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(str(path), None, f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or "result" not in doc:
        raise DataError(str(path), None, "not a Kraken REST response (no 'result')")
    if doc.get("error"):
        raise DataError(str(path), None, f"Kraken returned errors: {doc['error']}")
    result = doc["result"]
    pairs = [k for k in result if k != "last"]
    if len(pairs) != 1 or not isinstance(result[pairs[0]], list):
        raise DataError(str(path), None, f"expected one pair in result, got {pairs}")
    return pairs[0], result[pairs[0]], result.get("last")


def kraken_kind(doc_rows: list[Any]) -> str | None:
    """'ohlc' or 'trades' from the shape of the first row."""
    if not doc_rows or not isinstance(doc_rows[0], list):
        return None
    r = doc_rows[0]
    if len(r) == 8 and isinstance(r[0], int) and isinstance(r[1], str):
        return "ohlc"
    if len(r) == 7 and isinstance(r[0], str) and r[3] in ("b", "s"):
        return "trades"
    return None


def load_kraken(path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False) -> list[Table]:
    p = Path(path)
    _, rows, _ = _read(p)
    kind = kraken_kind(rows)
    if kind == "ohlc":
        return [load_kraken_ohlc(p, instrument_id=instrument_id, skip_bad=skip_bad)]
    if kind == "trades":
        return [load_kraken_trades(p, instrument_id=instrument_id, skip_bad=skip_bad)]
    raise DataError(str(p), None, "neither a Kraken OHLC nor a Trades response")


def load_kraken_ohlc(
    path: PathLike,
    *,
    instrument_id: str | None = None,
    interval_ns: int | None = None,
    skip_bad: bool = False,
) -> Table:
    p = Path(path)
    ps = str(p)
    pair, rows, last = _read(p)
    iid = instrument_id or f"{pair}.KRAKEN"
    bad = BadRows(skip_bad)
    uncommitted = 0
    tail = rows[-1] if rows else None
    tail_time = tail[0] if isinstance(tail, list) and tail else None
    if isinstance(last, int) and isinstance(tail_time, int) and tail_time > last:
        rows = rows[:-1]
        uncommitted = 1
    if interval_ns is None:
        m = _OHLC_TF.search(p.name.lower())
        if m:
            interval_ns = timeframe_ns(m.group(1))
        else:
            times = sorted({r[0] for r in rows if isinstance(r, list) and r and isinstance(r[0], int)})
            steps = [b - a for a, b in pairwise(times)]
            if not steps:
                raise DataError(ps, None, "cannot infer the bar interval; pass interval_ns")
            interval_ns = max(set(steps), key=steps.count) * NS_PER_S
    good = [r for r in rows if isinstance(r, list) and len(r) == 8]
    pp, sp = floor_precisions(
        iid, text_precision(v for r in good for v in r[1:5]), text_precision(r[6] for r in good)
    )
    cols: dict[str, list[int]] = {
        k: []
        for k in ("ts_event", "ts_local", "seq", "interval_ns", "open", "high", "low", "close", "volume")
    }
    prev = -1
    for i, r in enumerate(rows):
        try:
            if not isinstance(r, list) or len(r) != 8:
                raise ValueError("expected [time, open, high, low, close, vwap, volume, count]")
            t = r[0]
            if type(t) is not int:
                raise ValueError(f"time {t!r} is not an integer")
            o, h, lo, c = (parse_fixed(x, pp) for x in r[1:5])
            v = parse_fixed(r[6], sp)
            if min(o, h, lo, c) <= 0 or v < 0:
                raise ValueError("non-positive price or negative volume")
            if h < max(o, c) or lo > min(o, c):
                raise ValueError("high/low do not bracket open and close")
            te = t * NS_PER_S
            if te <= prev:
                raise ValueError("time not after the previous bar")
        except ValueError as exc:
            bad(ps, i, f"row {i}: {exc}")
            continue
        prev = te
        for k, val in zip(cols, (te, te + interval_ns, i, interval_ns, o, h, lo, c, v), strict=True):
            cols[k].append(val)
    meta = {
        "format": "kraken_ohlc",
        "pair": pair,
        "rows_in_file": len(rows) + uncommitted,
        "uncommitted_dropped": uncommitted,
        "interval_ns": interval_ns,
        **bad.meta(),
    }
    return make_table(DataType.BAR, iid, pp, sp, cols, source=source_name([p]), meta=meta)


def load_kraken_trades(path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False) -> Table:
    p = Path(path)
    ps = str(p)
    pair, rows, _ = _read(p)
    iid = instrument_id or f"{pair}.KRAKEN"
    bad = BadRows(skip_bad)
    good = [r for r in rows if isinstance(r, list) and len(r) == 7]
    pp, sp = floor_precisions(iid, text_precision(r[0] for r in good), text_precision(r[1] for r in good))
    cols: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "price", "size", "aggressor", "trade_id")
    }
    prev = 0
    for i, r in enumerate(rows):
        try:
            if not isinstance(r, list) or len(r) != 7:
                raise ValueError("expected [price, volume, time, side, type, misc, trade_id]")
            price, size = parse_fixed(r[0], pp), parse_fixed(r[1], sp)
            if price <= 0 or size <= 0:
                raise ValueError("non-positive price or size")
            t = r[2]
            if not isinstance(t, Decimal | int) or isinstance(t, bool):
                raise ValueError(f"time {t!r} is not a number")
            te = seconds_to_ns(t)
            if te < prev:
                raise ValueError("time goes backwards")
            side = r[3]
            if side not in ("b", "s"):
                raise ValueError(f"side must be b or s, got {side!r}")
            tid = r[6]
            if type(tid) is not int:
                raise ValueError(f"trade id {tid!r} is not an integer")
        except ValueError as exc:
            bad(ps, i, f"row {i}: {exc}")
            continue
        prev = te
        for k, val in zip(
            cols, (te, te, i, price, size, AGGRESSOR_BUY if side == "b" else AGGRESSOR_SELL, tid), strict=True
        ):
            cols[k].append(val)
    meta = {"format": "kraken_trades", "pair": pair, "rows_in_file": len(rows), **bad.meta()}
    return make_table(DataType.TRADE, iid, pp, sp, cols, source=source_name([p]), meta=meta)

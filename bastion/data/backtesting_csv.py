"""backtesting.py-style OHLCV CSV: ``<date>,Open,High,Low,Close,Volume`` -> BAR.

The first column is a naive date or datetime (taken as UTC), named ``timestamp``/``date``/
``Date`` or left unnamed (a pandas index). Values are text and are parsed exactly.

Bar time: for intraday/daily files the date is the bar open (ts_event) and ts_local = open +
interval, the interval coming from the file name (``_1h_``) or the most common step. Monthly
files (``monthly`` in the name, or steps of 28-31 days) are labelled at month end the way pandas'
``resample("M")`` labels them, so each bar covers that calendar month: ts_event = the first day of
the month 00:00 UTC and interval_ns = that month's length (it varies per row, which the schema
allows). The venue is not recorded in these files: the id is ``<SYMBOL>.UNKNOWN``.
"""

from __future__ import annotations

import calendar
import csv
import re
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

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
from bastion.data._numbers import parse_fixed
from bastion.data.freqtrade import timeframe_ns
from bastion.data.schema import DataError, DataType, Table

VALUE_COLUMNS = ["Open", "High", "Low", "Close", "Volume"]
DATE_COLUMNS = ("", "timestamp", "date", "Date", "datetime", "Datetime", "time")
_TF = re.compile(r"(?:^|_)(\d+[smhdw]|monthly)(?:_|$)")
_SYMBOL = re.compile(r"(?:^|_)([A-Z0-9]{5,})(?:_|$)")


def is_backtesting_header(header: list[str]) -> bool:
    return len(header) == 6 and header[0] in DATE_COLUMNS and header[1:] == VALUE_COLUMNS


def _parse_time(text: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"unrecognised date {text!r}")


def _ns(dt: datetime) -> int:
    return int(calendar.timegm(dt.utctimetuple())) * NS_PER_S + dt.microsecond * 1000


def load_backtesting_csv(
    path: PathLike,
    *,
    instrument_id: str | None = None,
    interval_ns: int | None = None,
    skip_bad: bool = False,
) -> list[Table]:
    p = Path(path)
    ps = str(p)
    with open_text(p) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or not is_backtesting_header(header):
            raise DataError(ps, 1, f"not a <date>,Open,High,Low,Close,Volume header: {header}")
        recs = list(enumerate(reader, 2))
    m = _SYMBOL.search(p.stem)
    iid = instrument_id or (f"{m.group(1)}.UNKNOWN" if m else None)
    if iid is None:
        raise DataError(ps, None, "cannot infer the instrument from the file name; pass instrument_id")
    bad = BadRows(skip_bad)
    good = [r for _, r in recs if len(r) == 6]
    pp, sp = floor_precisions(
        iid, text_precision(v for r in good for v in r[1:5]), text_precision(r[5] for r in good)
    )
    parsed: list[tuple[int, datetime, int, int, int, int, int]] = []
    for line, r in recs:
        try:
            if len(r) != 6:
                raise ValueError(f"expected 6 fields, got {len(r)}")
            dt = _parse_time(r[0])
            o, h, lo, c = (parse_fixed(x, pp) for x in r[1:5])
            v = parse_fixed(r[5], sp)
            if min(o, h, lo, c) <= 0 or v < 0:
                raise ValueError("non-positive price or negative volume")
            if h < max(o, c) or lo > min(o, c):
                raise ValueError("high/low do not bracket open and close")
            if parsed and dt <= parsed[-1][1]:
                raise ValueError("date not after the previous row")
        except ValueError as exc:
            bad(ps, line, str(exc))
            continue
        parsed.append((line, dt, o, h, lo, c, v))
    tf = _TF.search(p.stem)
    monthly = tf is not None and tf.group(1) == "monthly"
    if interval_ns is None and not monthly:
        if tf is not None:
            interval_ns = timeframe_ns(tf.group(1))
        else:
            steps = [_ns(b[1]) - _ns(a[1]) for a, b in pairwise(parsed)]
            if not steps:
                raise DataError(ps, None, "cannot infer the bar interval; pass interval_ns")
            step = max(set(steps), key=steps.count)
            if 28 * 86400 * NS_PER_S <= step <= 31 * 86400 * NS_PER_S:
                monthly = True
            else:
                interval_ns = step
    cols: dict[str, list[int]] = {
        k: []
        for k in ("ts_event", "ts_local", "seq", "interval_ns", "open", "high", "low", "close", "volume")
    }
    for line, dt, o, h, lo, c, v in parsed:
        if monthly:
            if dt.day != calendar.monthrange(dt.year, dt.month)[1] or (dt.hour, dt.minute, dt.second) != (
                0,
                0,
                0,
            ):
                bad(ps, line, f"monthly bar labelled {dt:%Y-%m-%d %H:%M}, not at a month end")
                continue
            start = datetime(dt.year, dt.month, 1, tzinfo=UTC)
            end = datetime(dt.year + dt.month // 12, dt.month % 12 + 1, 1, tzinfo=UTC)
            te, iv = _ns(start), _ns(end) - _ns(start)
        else:
            assert interval_ns is not None
            te, iv = _ns(dt), interval_ns
        for k, val in zip(cols, (te, te + iv, line, iv, o, h, lo, c, v), strict=True):
            cols[k].append(val)
    meta = {"format": "backtesting_csv", "monthly": monthly, "rows_in_file": len(recs), **bad.meta()}
    return [make_table(DataType.BAR, iid, pp, sp, cols, source=source_name([p]), meta=meta)]

"""freqtrade feather files: OHLCV candles, mark-price candles, funding events and trades.

freqtrade reuses one candle schema (date, open, high, low, close, volume) for several kinds of
data and tells them apart only by the file name, so the name is parsed first:
``BTC_USDT-1h.feather`` (spot candles), ``BTC_USDT_USDT-1h-futures.feather`` (perpetual candles),
``...-1h-mark.feather`` (mark price), ``...-8h-funding_rate.feather`` (funding events, rate in
``open``), ``XRP_ETH-trades.feather`` (trades). An optional ``<venue>_<market>_`` prefix and
``_<yyyymmdd>`` suffix (as in shared/data) are accepted.

Instrument ids: a pair with a settle currency is a perpetual (``BTCUSDT-PERP.<VENUE>``), else
spot (``BTCUSDT.<VENUE>``). The venue comes from the file-name prefix or the two enclosing
directory names (freqtrade keeps ``user_data/data/<exchange>/``); when none names a venue the id
ends in ``.UNKNOWN`` (e.g. the 2018 BTC-quoted test candles, whose venue is undocumented).

Values are floats, so precisions are inferred from the data (see ``float_columns_to_raw``): the
smallest decimals that put every price on its grid (at most 10; a known instrument's precision
is a floor), volumes at most 8 decimals and rounded half-even beyond.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from bastion.data._common import (
    NS_PER_MS,
    NS_PER_S,
    BadRows,
    PathLike,
    drop_bad_rows,
    float_columns_to_raw,
    known_precisions,
    log,
    make_table,
    not_increasing,
    source_name,
)
from bastion.data.schema import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    AGGRESSOR_UNKNOWN,
    FUNDING_RATE_PRECISION,
    DataError,
    DataType,
    Table,
)

PRICE_DECIMALS_CAP = 10
VOLUME_DECIMALS_CAP = 8
VENUES = (
    "binance",
    "bybit",
    "okx",
    "kraken",
    "kucoin",
    "gateio",
    "bitget",
    "bitmex",
    "deribit",
    "hyperliquid",
)

_NAME = re.compile(
    r"^(?:(?P<prefix>[a-z0-9]+(?:_[a-z0-9]+)*?)_)?"
    r"(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?:_(?P<settle>[A-Z0-9]+))?"
    r"-(?P<rest>[A-Za-z0-9_-]+?)(?:_(?P<date>\d{8}))?\.feather$"
)
_TF = re.compile(r"^(\d+)([smhdw])$")
_UNIT_NS = {
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": 86400 * NS_PER_S,
    "w": 7 * 86400 * NS_PER_S,
}


def timeframe_ns(tf: str) -> int:
    """``"5m"`` -> 300e9. Calendar months are not a fixed interval and are refused."""
    m = _TF.match(tf)
    if not m:
        raise ValueError(f"unsupported timeframe {tf!r}")
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


@dataclass(frozen=True, slots=True)
class FreqtradeName:
    instrument_id: str
    kind: str  # "ohlcv" | "mark" | "funding" | "trades"
    interval_ns: int | None  # from the timeframe in the name (None for trades)


def venue_from_path(path: Path, prefix: str = "") -> str:
    tokens: set[str] = set(re.split(r"[_\-.]", prefix.lower()))
    for part in (path.parent.name, path.parent.parent.name):
        tokens.update(re.split(r"[_\-.]", part.lower()))
    for v in VENUES:
        if v in tokens:
            return v.upper()
    return "UNKNOWN"


def parse_freqtrade_name(path: PathLike) -> FreqtradeName:
    p = Path(path)
    m = _NAME.match(p.name)
    if not m:
        raise DataError(
            str(p), None, "not a freqtrade file name (<BASE>_<QUOTE>[_<SETTLE>]-<timeframe>[-<kind>].feather)"
        )
    venue = venue_from_path(p, m.group("prefix") or "")
    perp = m.group("settle") is not None
    symbol = m.group("base") + m.group("quote")
    iid = f"{symbol}-PERP.{venue}" if perp else f"{symbol}.{venue}"
    rest = m.group("rest")
    if rest == "trades":
        return FreqtradeName(iid, "trades", None)
    tf, _, candle = rest.partition("-")
    kind = {"": "ohlcv", "futures": "ohlcv", "spot": "ohlcv", "mark": "mark", "funding_rate": "funding"}.get(
        candle
    )
    if kind is None:
        raise DataError(str(p), None, f"unsupported freqtrade candle type {candle!r}")
    try:
        interval = timeframe_ns(tf)
    except ValueError as exc:
        raise DataError(str(p), None, str(exc)) from exc
    return FreqtradeName(iid, kind, interval)


def _read(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        table = feather.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(str(path), None, f"cannot read feather file: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(str(path), None, f"missing columns {missing}")
    return {c: table.column(c) for c in required}


def _dates_ns(path: Path, col: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(int64 ns since epoch UTC, null mask) of a timestamp column (naive = UTC)."""
    if not pa.types.is_timestamp(col.type):
        raise DataError(str(path), None, f"date column has type {col.type}, expected a timestamp")
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    arr = col.cast(pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).fill_null(0)
    return arr.to_numpy(), nulls


def _floats(col: Any) -> np.ndarray[Any, Any]:
    return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _infer_interval(ts: np.ndarray[Any, Any]) -> int:
    d = np.diff(ts)
    d = d[d > 0]
    if d.size == 0:
        raise ValueError("cannot infer the bar interval from fewer than two rows")
    values, counts = np.unique(d, return_counts=True)
    return int(values[np.argmax(counts)])


def load_freqtrade(
    path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False
) -> list[Table]:
    """Load any freqtrade feather file, dispatching on its name."""
    name = parse_freqtrade_name(path)
    if name.kind == "ohlcv":
        return [load_freqtrade_ohlcv(path, instrument_id=instrument_id, skip_bad=skip_bad)]
    if name.kind == "mark":
        return [load_freqtrade_mark(path, instrument_id=instrument_id, skip_bad=skip_bad)]
    if name.kind == "funding":
        return [load_freqtrade_funding(path, instrument_id=instrument_id, skip_bad=skip_bad)]
    return [load_freqtrade_trades(path, instrument_id=instrument_id, skip_bad=skip_bad)]


def _name_or_none(p: Path) -> FreqtradeName | None:
    try:
        return parse_freqtrade_name(p)
    except DataError:
        return None


def load_freqtrade_ohlcv(
    path: PathLike,
    *,
    instrument_id: str | None = None,
    interval_ns: int | None = None,
    skip_bad: bool = False,
) -> Table:
    """Candles -> BAR. ts_event = open time, ts_local = close time (open + interval).

    The interval comes from the file name, else from the data (the most common step); missing
    candles are simply absent rows. Rows with NaN/negative values, high/low that do not bracket
    open and close, or a timestamp not after the previous row are bad rows.
    """
    p = Path(path)
    ps = str(p)
    name = _name_or_none(p)
    iid = instrument_id or (name.instrument_id if name else None)
    if iid is None:
        raise DataError(ps, None, "cannot infer the instrument from the file name; pass instrument_id")
    cols = _read(p, ("date", "open", "high", "low", "close", "volume"))
    ts, ts_null = _dates_ns(p, cols["date"])
    o, h, lo, c, v = (_floats(cols[k]) for k in ("open", "high", "low", "close", "volume"))
    n = len(ts)
    ohlc = np.stack([o, h, lo, c])
    with np.errstate(invalid="ignore"):
        nonfinite = ~np.isfinite(ohlc).all(axis=0)
        negative = (ohlc < 0).any(axis=0)
        vol_bad = ~np.isfinite(v) | (v < 0)
        unbracketed = (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    value_bad = ts_null | nonfinite | negative | vol_bad | unbracketed
    order_bad = np.zeros(n, dtype=bool)
    ok_idx = np.flatnonzero(~value_bad)
    order_bad[ok_idx] = not_increasing(ts[ok_idx], strict=True)
    bad = BadRows(skip_bad)
    keep = drop_bad_rows(
        bad,
        ps,
        n,
        [
            (ts_null, "missing date"),
            (nonfinite, "open/high/low/close is not a finite number"),
            (negative, "negative price"),
            (vol_bad, "volume is NaN or negative"),
            (unbracketed, "high/low do not bracket open and close"),
            (order_bad, "timestamp not after the previous row"),
        ],
    )
    ts = ts[keep]
    known = known_precisions(iid)
    prices, pp, _ = float_columns_to_raw(
        ps,
        {"open": o[keep], "high": h[keep], "low": lo[keep], "close": c[keep]},
        cap=PRICE_DECIMALS_CAP,
        floor=known[0] if known else 0,
    )
    vols, sp, rounded = float_columns_to_raw(
        ps,
        {"volume": v[keep]},
        cap=VOLUME_DECIMALS_CAP,
        floor=known[1] if known else 0,
        round_beyond_cap=True,
    )
    interval = interval_ns or (name.interval_ns if name else None)
    inferred = _infer_interval(ts) if len(ts) > 1 else None
    if interval is None:
        if inferred is None:
            raise DataError(ps, None, "cannot infer the bar interval; pass interval_ns")
        interval = inferred
    elif inferred is not None and inferred != interval:
        log.warning("bar_interval_mismatch", file=ps, from_name=interval, from_data=inferred)
    meta = {
        "format": "freqtrade_ohlcv",
        "rows_in_file": n,
        "interval_ns": interval,
        "interval_from_data": inferred,
        "volume_rounded": rounded,
        **bad.meta(),
    }
    return make_table(
        DataType.BAR,
        iid,
        pp,
        sp,
        {
            "ts_event": ts,
            "ts_local": ts + interval,
            "seq": np.flatnonzero(keep),
            "interval_ns": np.full(len(ts), interval, dtype=np.int64),
            "open": prices["open"],
            "high": prices["high"],
            "low": prices["low"],
            "close": prices["close"],
            "volume": vols["volume"],
        },
        source=source_name([p]),
        meta=meta,
    )


def load_freqtrade_mark(
    path: PathLike,
    *,
    instrument_id: str | None = None,
    interval_ns: int | None = None,
    skip_bad: bool = False,
) -> Table:
    """Mark-price candles -> MARK: price = candle close, ts_event = ts_local = candle close time.

    A mark candle's close is the mark price at the end of its interval, so stamping it with the
    close time (open + interval) is the only choice without look-ahead; it is also the mark at
    the funding timestamp that starts the next candle. Mark prices are computed indices, not on
    the tick grid, so the precision is inferred from the data even for a known instrument.
    """
    p = Path(path)
    ps = str(p)
    name = _name_or_none(p)
    iid = instrument_id or (name.instrument_id if name else None)
    if iid is None:
        raise DataError(ps, None, "cannot infer the instrument from the file name; pass instrument_id")
    cols = _read(p, ("date", "close"))
    ts, ts_null = _dates_ns(p, cols["date"])
    c = _floats(cols["close"])
    n = len(ts)
    with np.errstate(invalid="ignore"):
        value_bad = ~np.isfinite(c) | (c <= 0)
    order_bad = np.zeros(n, dtype=bool)
    ok_idx = np.flatnonzero(~(value_bad | ts_null))
    order_bad[ok_idx] = not_increasing(ts[ok_idx], strict=True)
    bad = BadRows(skip_bad)
    keep = drop_bad_rows(
        bad,
        ps,
        n,
        [
            (ts_null, "missing date"),
            (value_bad, "close is not a positive number"),
            (order_bad, "timestamp not after the previous row"),
        ],
    )
    ts = ts[keep]
    interval = interval_ns or (name.interval_ns if name else None)
    if interval is None:
        interval = _infer_interval(ts)
    known = known_precisions(iid)
    prices, pp, _ = float_columns_to_raw(
        ps, {"close": c[keep]}, cap=PRICE_DECIMALS_CAP, floor=known[0] if known else 0
    )
    t_close = ts + interval
    return make_table(
        DataType.MARK,
        iid,
        pp,
        known[1] if known else 0,
        {"ts_event": t_close, "ts_local": t_close, "seq": np.flatnonzero(keep), "price": prices["close"]},
        source=source_name([p]),
        meta={"format": "freqtrade_mark", "rows_in_file": n, "interval_ns": interval, **bad.meta()},
    )


def load_freqtrade_funding(
    path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False
) -> Table:
    """Funding events -> FUNDING: rate = ``open`` as raw x 1e-12, ts floored to the second.

    freqtrade stores a few events with milliseconds of jitter (00:00:00.010); the venue's funding
    time is the whole second. ts_event = ts_local (one clock). The table's price_precision is
    FUNDING_RATE_PRECISION so the rate column reads like any other raw value; size_precision is 0.
    """
    p = Path(path)
    ps = str(p)
    name = _name_or_none(p)
    iid = instrument_id or (name.instrument_id if name else None)
    if iid is None:
        raise DataError(ps, None, "cannot infer the instrument from the file name; pass instrument_id")
    cols = _read(p, ("date", "open"))
    ts, ts_null = _dates_ns(p, cols["date"])
    rate = _floats(cols["open"])
    n = len(ts)
    floored = ts - ts % NS_PER_S
    jitter = int((floored != ts).sum())
    value_bad = ~np.isfinite(rate)
    order_bad = np.zeros(n, dtype=bool)
    ok_idx = np.flatnonzero(~(value_bad | ts_null))
    order_bad[ok_idx] = not_increasing(floored[ok_idx], strict=True)
    bad = BadRows(skip_bad)
    keep = drop_bad_rows(
        bad,
        ps,
        n,
        [
            (ts_null, "missing date"),
            (value_bad, "rate is not a finite number"),
            (order_bad, "timestamp not after the previous row"),
        ],
    )
    from bastion.data._numbers import floats_to_raw

    raw, bad_i = floats_to_raw(rate[keep], FUNDING_RATE_PRECISION)
    if bad_i >= 0:
        raise DataError(
            ps, None, f"rate {rate[keep][bad_i]!r} does not fit {FUNDING_RATE_PRECISION} decimals"
        )
    ts = floored[keep]
    cadence = _infer_interval(ts) if len(ts) > 1 else None
    return make_table(
        DataType.FUNDING,
        iid,
        FUNDING_RATE_PRECISION,
        0,
        {"ts_event": ts, "ts_local": ts, "seq": np.flatnonzero(keep), "rate": raw},
        source=source_name([p]),
        meta={
            "format": "freqtrade_funding",
            "rows_in_file": n,
            "floored_ms_jitter": jitter,
            "cadence_ns": cadence,
            **bad.meta(),
        },
    )


def _trade_ids(col: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(int64 ids, mask of rows whose id is not an integer)."""
    vals = col.to_pylist()
    out = np.zeros(len(vals), dtype=np.int64)
    bad = np.zeros(len(vals), dtype=bool)
    for i, v in enumerate(vals):
        try:
            out[i] = int(v)
        except (TypeError, ValueError, OverflowError):
            bad[i] = True
    return out, bad


def load_freqtrade_trades(
    path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False
) -> Table:
    """freqtrade trades -> TRADE. ``side`` is the aggressor (buy/sell); ``timestamp`` is ms UTC and
    serves as both ts_event and ts_local (freqtrade keeps no receive time)."""
    p = Path(path)
    ps = str(p)
    name = _name_or_none(p)
    iid = instrument_id or (name.instrument_id if name else None)
    if iid is None:
        raise DataError(ps, None, "cannot infer the instrument from the file name; pass instrument_id")
    cols = _read(p, ("timestamp", "id", "side", "price", "amount"))
    ts_col = cols["timestamp"]
    ts_null = ts_col.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(ts_col.type):
        ts, _ = _dates_ns(p, ts_col)
    else:
        ts = ts_col.cast(pa.int64()).fill_null(0).to_numpy() * NS_PER_MS
    price, amount = _floats(cols["price"]), _floats(cols["amount"])
    sides = np.asarray(cols["side"].to_pylist(), dtype=object)
    n = len(ts)
    aggr = np.full(n, AGGRESSOR_UNKNOWN, dtype=np.int8)
    aggr[sides == "buy"] = AGGRESSOR_BUY
    aggr[sides == "sell"] = AGGRESSOR_SELL
    with np.errstate(invalid="ignore"):
        price_bad = ~np.isfinite(price) | (price <= 0)
        size_bad = ~np.isfinite(amount) | (amount <= 0)
    side_bad = (aggr == AGGRESSOR_UNKNOWN) & np.array([s not in (None, "") for s in sides], dtype=bool)
    ids, id_bad = _trade_ids(cols["id"])
    order_bad = np.zeros(n, dtype=bool)
    ok_idx = np.flatnonzero(~(price_bad | size_bad | ts_null))
    order_bad[ok_idx] = not_increasing(ts[ok_idx], strict=False)
    bad = BadRows(skip_bad)
    keep = drop_bad_rows(
        bad,
        ps,
        n,
        [
            (ts_null, "missing timestamp"),
            (price_bad, "price is not a positive number"),
            (size_bad, "amount is not a positive number"),
            (side_bad, "side is not buy/sell"),
            (id_bad, "trade id is not an integer"),
            (order_bad, "timestamp goes backwards"),
        ],
    )
    known = known_precisions(iid)
    prices, pp, _ = float_columns_to_raw(
        ps, {"price": price[keep]}, cap=PRICE_DECIMALS_CAP, floor=known[0] if known else 0
    )
    sizes, sp, _ = float_columns_to_raw(
        ps, {"amount": amount[keep]}, cap=PRICE_DECIMALS_CAP, floor=known[1] if known else 0
    )
    ts = ts[keep]
    return make_table(
        DataType.TRADE,
        iid,
        pp,
        sp,
        {
            "ts_event": ts,
            "ts_local": ts,
            "seq": np.flatnonzero(keep),
            "price": prices["price"],
            "size": sizes["amount"],
            "aggressor": aggr[keep],
            "trade_id": ids[keep],
        },
        source=source_name([p]),
        meta={"format": "freqtrade_trades", "rows_in_file": n, **bad.meta()},
    )

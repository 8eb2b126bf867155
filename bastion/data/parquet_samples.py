"""Parquet trade and quote samples (nautilus_trader's Binance spot fixtures).

Trades: ``timestamp, trade_id, price, quantity, buyer_maker`` -> TRADE (``buyer_maker`` true means
the seller was the aggressor). Quotes: ``timestamp, symbol, ask_size, ask, bid_size, bid`` -> QUOTE;
a crossed or locked quote (bid >= ask) cannot be a real top of book and is a bad row. There is one
clock (the venue's), so ts_local = ts_event. Values are floats: precisions are inferred from the
data with the known instrument's precision as a floor (see ``float_columns_to_raw``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bastion.data._common import (
    NS_PER_MS,
    BadRows,
    PathLike,
    drop_bad_rows,
    float_columns_to_raw,
    known_precisions,
    make_table,
    not_increasing,
    source_name,
)
from bastion.data.schema import AGGRESSOR_BUY, AGGRESSOR_SELL, DataError, DataType, Table

TRADE_COLUMNS = ("timestamp", "trade_id", "price", "quantity", "buyer_maker")
QUOTE_COLUMNS = ("timestamp", "ask_size", "ask", "bid_size", "bid")
_CAP = 10
_NAME = re.compile(
    r"^(?:(?P<venue>[a-z]+)_(?P<market>spot|usdm|cm|linear|inverse|futures)_)?(?P<symbol>[a-z0-9]+)[-_](?:trades|quotes)"
)


def infer_instrument_id(path: PathLike) -> str:
    """``binance_spot_btcusdt_trades_20210108.parquet`` -> ``BTCUSDT.BINANCE``; without a venue
    prefix the id ends in ``.UNKNOWN``; a derivatives market gives ``-PERP``."""
    p = Path(path)
    m = _NAME.match(p.name.lower())
    if not m:
        raise DataError(str(p), None, "cannot infer the instrument from the file name; pass instrument_id")
    venue = (m.group("venue") or "unknown").upper()
    perp = m.group("market") not in (None, "spot")
    return f"{m.group('symbol').upper()}{'-PERP' if perp else ''}.{venue}"


def _read(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(str(path), None, f"cannot read parquet file: {exc}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(str(path), None, f"missing columns {missing}")
    return {c: table.column(c) for c in required}


def _timestamps(path: Path, col: Any) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(col.type):
        ns = col.cast(pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).fill_null(0).to_numpy()
    elif pa.types.is_integer(col.type):
        ns = col.cast(pa.int64()).fill_null(0).to_numpy() * NS_PER_MS  # integer ms, as Binance writes them
    else:
        raise DataError(str(path), None, f"timestamp column has type {col.type}")
    return ns, nulls


def _floats(col: Any) -> np.ndarray[Any, Any]:
    return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def load_parquet_trades(path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False) -> Table:
    p = Path(path)
    ps = str(p)
    iid = instrument_id or infer_instrument_id(p)
    cols = _read(p, TRADE_COLUMNS)
    ts, ts_null = _timestamps(p, cols["timestamp"])
    price, qty = _floats(cols["price"]), _floats(cols["quantity"])
    ids_null = cols["trade_id"].is_null().to_numpy(zero_copy_only=False)
    ids = cols["trade_id"].cast(pa.int64()).fill_null(0).to_numpy()
    bm = cols["buyer_maker"]
    if pa.types.is_boolean(bm.type):
        maker_vals: list[Any] = bm.to_pylist()
    else:
        maker_vals = [
            {"true": True, "false": False}.get(str(v).lower()) if v is not None else None
            for v in bm.to_pylist()
        ]
    n = len(ts)
    maker_bad = np.array([v is None for v in maker_vals], dtype=bool)
    maker = np.array([bool(v) for v in maker_vals], dtype=bool)
    with np.errstate(invalid="ignore"):
        price_bad = ~np.isfinite(price) | (price <= 0)
        size_bad = ~np.isfinite(qty) | (qty <= 0)
    order_bad = np.zeros(n, dtype=bool)
    ok = np.flatnonzero(~(ts_null | price_bad | size_bad))
    order_bad[ok] = not_increasing(ts[ok], strict=False)
    bad = BadRows(skip_bad)
    keep = drop_bad_rows(
        bad,
        ps,
        n,
        [
            (ts_null, "missing timestamp"),
            (ids_null, "missing trade_id"),
            (price_bad, "price is not a positive number"),
            (size_bad, "quantity is not a positive number"),
            (maker_bad, "buyer_maker is not true/false"),
            (order_bad, "timestamp goes backwards"),
        ],
    )
    known = known_precisions(iid)
    prices, pp, _ = float_columns_to_raw(ps, {"price": price[keep]}, cap=_CAP, floor=known[0] if known else 0)
    sizes, sp, _ = float_columns_to_raw(ps, {"quantity": qty[keep]}, cap=_CAP, floor=known[1] if known else 0)
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
            "size": sizes["quantity"],
            "aggressor": np.where(maker[keep], AGGRESSOR_SELL, AGGRESSOR_BUY).astype(np.int8),
            "trade_id": ids[keep],
        },
        source=source_name([p]),
        meta={"format": "parquet_trades", "rows_in_file": n, **bad.meta()},
    )


def load_parquet_quotes(path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False) -> Table:
    p = Path(path)
    ps = str(p)
    iid = instrument_id or infer_instrument_id(p)
    cols = _read(p, QUOTE_COLUMNS)
    ts, ts_null = _timestamps(p, cols["timestamp"])
    bid, ask = _floats(cols["bid"]), _floats(cols["ask"])
    bsz, asz = _floats(cols["bid_size"]), _floats(cols["ask_size"])
    n = len(ts)
    with np.errstate(invalid="ignore"):
        price_bad = ~np.isfinite(bid) | ~np.isfinite(ask) | (bid <= 0) | (ask <= 0)
        size_bad = ~np.isfinite(bsz) | ~np.isfinite(asz) | (bsz < 0) | (asz < 0)
        crossed = ~price_bad & (bid >= ask)
    order_bad = np.zeros(n, dtype=bool)
    ok = np.flatnonzero(~(ts_null | price_bad | size_bad | crossed))
    order_bad[ok] = not_increasing(ts[ok], strict=False)
    bad = BadRows(skip_bad)
    keep = drop_bad_rows(
        bad,
        ps,
        n,
        [
            (ts_null, "missing timestamp"),
            (price_bad, "bid/ask is not a positive number"),
            (size_bad, "bid/ask size is NaN or negative"),
            (crossed, "crossed quote: bid >= ask"),
            (order_bad, "timestamp goes backwards"),
        ],
    )
    known = known_precisions(iid)
    prices, pp, _ = float_columns_to_raw(
        ps, {"bid": bid[keep], "ask": ask[keep]}, cap=_CAP, floor=known[0] if known else 0
    )
    sizes, sp, _ = float_columns_to_raw(
        ps, {"bid_size": bsz[keep], "ask_size": asz[keep]}, cap=_CAP, floor=known[1] if known else 0
    )
    ts = ts[keep]
    return make_table(
        DataType.QUOTE,
        iid,
        pp,
        sp,
        {
            "ts_event": ts,
            "ts_local": ts,
            "seq": np.flatnonzero(keep),
            "bid_price": prices["bid"],
            "bid_size": sizes["bid_size"],
            "ask_price": prices["ask"],
            "ask_size": sizes["ask_size"],
        },
        source=source_name([p]),
        meta={"format": "parquet_quotes", "rows_in_file": n, **bad.meta()},
    )

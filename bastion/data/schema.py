"""The catalog's columnar schemas: one per data type, prices and sizes as exact raw integers.

Every table stores prices and sizes as ``int64`` raw values at the instrument's precision (the
precisions travel in the table's metadata), so a catalog round trip is exact and the simulator
can replay the columns without parsing. Timestamps are ``int64`` nanoseconds since the epoch, UTC:
``ts_event`` is the venue's time, ``ts_local`` the time the recorder received it (equal to
``ts_event`` when the source has only one clock). ``seq`` is the row's position in the source, so
that two tables cut from one stream (book deltas and trades) merge back in their original order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


class DataType(enum.StrEnum):
    BOOK_DELTA = "book_delta"
    TRADE = "trade"
    QUOTE = "quote"
    BAR = "bar"
    FUNDING = "funding"
    MARK = "mark"


# book_delta.side / trade.aggressor
SIDE_BID = 1
SIDE_ASK = 2
AGGRESSOR_BUY = 1
AGGRESSOR_SELL = 2
AGGRESSOR_UNKNOWN = 0

# book_delta.flags
FLAG_SNAPSHOT = 1  # row belongs to a full snapshot
FLAG_CLEAR = 2  # the book is cleared before this row (first row of a snapshot; alone, without
# FLAG_SNAPSHOT and with size 0, it marks a sequence gap: the book is invalid until a snapshot)
FLAG_LAST = 4  # last row of one venue message: the book is consistent after it

FUNDING_RATE_PRECISION = 12  # funding rates stored as raw int64 × 1e-12

_TS = [
    pa.field("ts_event", pa.int64(), nullable=False),
    pa.field("ts_local", pa.int64(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
]

SCHEMAS: dict[DataType, pa.Schema] = {
    DataType.BOOK_DELTA: pa.schema(
        [
            *_TS,
            pa.field("side", pa.int8(), nullable=False),
            pa.field("price", pa.int64(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),  # 0 = delete the level
            pa.field("flags", pa.uint8(), nullable=False),
            pa.field("update_id", pa.int64(), nullable=False),  # venue sequence (0 if none)
        ]
    ),
    DataType.TRADE: pa.schema(
        [
            *_TS,
            pa.field("price", pa.int64(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("aggressor", pa.int8(), nullable=False),
            pa.field("trade_id", pa.int64(), nullable=False),
        ]
    ),
    DataType.QUOTE: pa.schema(
        [
            *_TS,
            pa.field("bid_price", pa.int64(), nullable=False),
            pa.field("bid_size", pa.int64(), nullable=False),
            pa.field("ask_price", pa.int64(), nullable=False),
            pa.field("ask_size", pa.int64(), nullable=False),
        ]
    ),
    DataType.BAR: pa.schema(
        [
            *_TS,  # ts_event = bar OPEN time; ts_local = bar close time (when it is known)
            pa.field("interval_ns", pa.int64(), nullable=False),
            pa.field("open", pa.int64(), nullable=False),
            pa.field("high", pa.int64(), nullable=False),
            pa.field("low", pa.int64(), nullable=False),
            pa.field("close", pa.int64(), nullable=False),
            pa.field("volume", pa.int64(), nullable=False),
        ]
    ),
    DataType.FUNDING: pa.schema(
        [
            *_TS,
            pa.field("rate", pa.int64(), nullable=False),  # × 10^-FUNDING_RATE_PRECISION
        ]
    ),
    DataType.MARK: pa.schema(
        [
            *_TS,
            pa.field("price", pa.int64(), nullable=False),
        ]
    ),
}


@dataclass(slots=True)
class Table:
    """One data type for one instrument, as loaded from a source or the catalog.

    ``columns`` holds NumPy arrays keyed by the schema's field names. ``price_precision`` and
    ``size_precision`` say how to read the raw integers.
    """

    data_type: DataType
    instrument_id: str
    price_precision: int
    size_precision: int
    columns: dict[str, Any]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["ts_event"]) if self.columns else 0


class DataError(ValueError):
    """Bad input data: names the file, the line (or row) and what was wrong."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason

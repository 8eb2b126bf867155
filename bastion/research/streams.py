"""From data tables to the simulated venue's event streams: in memory, or streamed from the catalog.

Book deltas, trades and funding of one instrument are merged into one stream in the order the
recorder saw them (local time, then source order) and converted once to book indices. The
catalog stream does the same merge incrementally, batch by batch from the Parquet parts, so a
backtest over a catalog holds one chunk in memory whatever the length of the data — and it
yields exactly the events, in exactly the order, that the in-memory stream would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

from bastion.data.catalog import Catalog, Part
from bastion.data.schema import AGGRESSOR_BUY, AGGRESSOR_SELL, SIDE_BID, DataType, Table
from bastion.model.instruments import Instrument
from bastion.venues.sim import layout as L
from bastion.venues.sim.book_range import BookRange, choose_range
from bastion.venues.sim.replay import DEFAULT_CHUNK, Chunk, EventStream

_STREAM_TYPES = (DataType.BOOK_DELTA, DataType.TRADE, DataType.QUOTE, DataType.FUNDING)
MARKET_TYPES = (DataType.BOOK_DELTA, DataType.TRADE, DataType.QUOTE)
Cols = dict[str, npt.NDArray[Any]]


def _rescale(
    values: npt.NDArray[np.int64], have: int, want: int, what: str, source: str
) -> npt.NDArray[np.int64]:
    """Carry raw integers to a finer precision (exact: multiply by a power of ten)."""
    if have == want:
        return np.asarray(values, dtype=np.int64)
    if have > want:
        raise ValueError(f"{source}: {what} precision {have} is finer than the stream's {want}")
    return np.asarray(values * np.int64(10 ** (want - have)), dtype=np.int64)


@dataclass(slots=True)
class _Rows:
    """Rows of one table in event-column form (before the book index is known)."""

    ts_e: npt.NDArray[np.int64]
    ts_l: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    kind: npt.NDArray[np.uint8]
    flags: npt.NDArray[np.uint8]
    price: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ts_e.shape[0])

    def take(self, sel: Any) -> _Rows:
        return _Rows(*(getattr(self, f)[sel] for f in _ROW_FIELDS))


_ROW_FIELDS = ("ts_e", "ts_l", "seq", "kind", "flags", "price", "size")


def _concat(rows: list[_Rows]) -> _Rows:
    return _Rows(*(np.concatenate([getattr(r, f) for r in rows]) for f in _ROW_FIELDS))


def _quote_rows(c: Cols, pprec: int, sprec: int, pp: int, sp: int, source: str) -> _Rows:
    """Top-of-book quotes as book rows: a side's old level is removed only when its price moved
    (removing and re-adding the same price would throw away our queue position)."""
    n = len(c["ts_event"])
    bp = _rescale(c["bid_price"], pprec, pp, "price", source)
    ap = _rescale(c["ask_price"], pprec, pp, "price", source)
    bq = _rescale(c["bid_size"], sprec, sp, "size", source)
    aq = _rescale(c["ask_size"], sprec, sp, "size", source)
    prev_b = np.concatenate([[0], bp[:-1]])
    prev_a = np.concatenate([[0], ap[:-1]])
    # four slots per quote: [remove old bid, set bid, remove old ask, set ask]; unused slots dropped
    keep = np.empty((n, 4), dtype=bool)
    keep[:, 0] = (prev_b != bp) & (prev_b > 0)
    keep[:, 1] = True
    keep[:, 2] = (prev_a != ap) & (prev_a > 0)
    keep[:, 3] = True
    price = np.stack([prev_b, bp, prev_a, ap], axis=1)
    size = np.stack([np.zeros(n, np.int64), bq, np.zeros(n, np.int64), aq], axis=1)
    kind = np.tile(np.array([L.KIND_BID, L.KIND_BID, L.KIND_ASK, L.KIND_ASK], dtype=np.uint8), (n, 1))
    flags = np.zeros((n, 4), dtype=np.uint8)
    flags[:, 3] = L.FLAG_LAST
    rep = np.repeat(np.arange(n), 4).reshape(n, 4)
    m = keep.ravel()
    r = rep.ravel()[m]
    return _Rows(
        np.asarray(c["ts_event"], dtype=np.int64)[r],
        np.asarray(c["ts_local"], dtype=np.int64)[r],
        np.asarray(c["seq"], dtype=np.int64)[r],
        kind.ravel()[m],
        flags.ravel()[m],
        price.ravel()[m],
        size.ravel()[m],
    )


def _to_rows(dt: DataType, c: Cols, pprec: int, sprec: int, pp: int, sp: int, source: str) -> _Rows:
    n = len(c["ts_event"])
    if dt is DataType.QUOTE:
        return _quote_rows(c, pprec, sprec, pp, sp, source)
    if dt is DataType.BOOK_DELTA:
        kind = np.where(c["side"] == SIDE_BID, L.KIND_BID, L.KIND_ASK).astype(np.uint8)
        flags = np.asarray(c["flags"], dtype=np.uint8)
        price = _rescale(c["price"], pprec, pp, "price", source)
        size = _rescale(c["size"], sprec, sp, "size", source)
    elif dt is DataType.TRADE:
        agg = c["aggressor"]
        kind = np.full(n, L.KIND_TRADE_UNKNOWN, dtype=np.uint8)
        kind[agg == AGGRESSOR_BUY] = L.KIND_TRADE_BUY
        kind[agg == AGGRESSOR_SELL] = L.KIND_TRADE_SELL
        flags = np.zeros(n, dtype=np.uint8)
        price = _rescale(c["price"], pprec, pp, "price", source)
        size = _rescale(c["size"], sprec, sp, "size", source)
    else:  # funding: the rate rides in the size column (raw × 1e-12)
        kind = np.full(n, L.KIND_FUNDING, dtype=np.uint8)
        flags = np.zeros(n, dtype=np.uint8)
        price = np.zeros(n, dtype=np.int64)
        size = np.asarray(c["rate"], dtype=np.int64)
    return _Rows(
        np.asarray(c["ts_event"], dtype=np.int64),
        np.asarray(c["ts_local"], dtype=np.int64),
        np.asarray(c["seq"], dtype=np.int64),
        kind,
        flags,
        price,
        size,
    )


def _sort(rows: _Rows) -> _Rows:
    return rows.take(np.lexsort((rows.seq, rows.ts_l)))


def _chunk(rows: _Rows, rng: BookRange) -> tuple[Chunk, int]:
    market = rows.kind != L.KIND_FUNDING
    idx = rng.index_of(rows.price)
    idx[~market] = -1
    out = int(((idx < 0) & market).sum())
    n = len(rows)
    evi = np.empty((L.EVI_ROWS, n), dtype=np.int64)
    evi[L.EV_TS_EVENT] = rows.ts_e
    evi[L.EV_TS_LOCAL] = rows.ts_l
    evi[L.EV_PRICE_IDX] = idx
    evi[L.EV_SIZE] = rows.size
    evk = np.empty((L.EVK_ROWS, n), dtype=np.uint8)
    evk[L.EK_KIND] = rows.kind
    evk[L.EK_FLAGS] = rows.flags
    return Chunk(evi, evk, rows.price), out


def _is_trade(kind: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = (
        (kind == L.KIND_TRADE_BUY) | (kind == L.KIND_TRADE_SELL) | (kind == L.KIND_TRADE_UNKNOWN)
    )
    return out


def _bounds(a: npt.NDArray[np.int64]) -> list[int]:
    return [int(a.min()), int(a.max())] if len(a) else []


def book_range_for(instrument: Instrument, book_bounds: list[int], trade_bounds: list[int]) -> BookRange:
    """The dense book's range from the extremes of book and trade prices (the same rule whether
    the data is in memory or streamed, so both replays are identical)."""
    prices = np.array(book_bounds or trade_bounds, dtype=np.int64)
    trades = np.array(trade_bounds, dtype=np.int64) if trade_bounds else None
    return choose_range(prices, instrument.tick_raw, trades_raw=trades)


def stream_precisions(instrument: Instrument, precisions: list[tuple[int, int]]) -> Instrument:
    """The instrument carried at the finest precision of its market data (nothing rounded)."""
    pp = max([instrument.price_precision, *(p for p, _ in precisions)])
    sp = max([instrument.size_precision, *(s for _, s in precisions)])
    return instrument.refined(pp, sp)


def build_stream(tables: list[Table], instrument: Instrument) -> EventStream:
    """Merge book deltas, trades and funding of ``instrument`` into one in-memory stream.

    When the data carries finer decimals than the instrument's tick or lot (Binance spot book
    sizes below the order lot, for example) the stream and its instrument use the finer
    precision, so nothing is rounded away.
    """
    market = [t for t in tables if t.data_type in MARKET_TYPES]
    instrument = stream_precisions(instrument, [(t.price_precision, t.size_precision) for t in market])
    pp, sp = instrument.price_precision, instrument.size_precision
    parts: list[_Rows] = []
    sources: list[str] = []
    for t in tables:
        if t.data_type not in _STREAM_TYPES or len(t) == 0:
            continue
        parts.append(_to_rows(t.data_type, t.columns, t.price_precision, t.size_precision, pp, sp, t.source))
        if t.source not in sources:
            sources.append(t.source)
    if not parts:
        raise ValueError(f"no book, trade or funding data for {instrument.id}")
    rows = _sort(_concat(parts))
    mkt = rows.kind != L.KIND_FUNDING
    if not mkt.any():
        raise ValueError(f"no book or trade data for {instrument.id}")
    trades = rows.price[_is_trade(rows.kind)]
    book = rows.price[mkt & ~_is_trade(rows.kind)]
    rng = book_range_for(instrument, _bounds(book), _bounds(trades))
    chunk, out = _chunk(rows, rng)
    return EventStream(instrument, rng, chunk.evi, chunk.evk, chunk.price_raw, sources, out)


# --- streaming from the catalog ---------------------------------------------------------------


@dataclass(slots=True)
class _PartReader:
    """Reads one catalog part batch by batch and keeps the rows not yet merged."""

    part: Part
    order: int  # position in the concatenation order of the in-memory build (ties break on it)
    batch_rows: int
    pp: int
    sp: int
    _batches: Iterator[Any] | None = None
    buffer: _Rows | None = None
    exhausted: bool = False

    def fill(self) -> bool:
        """Append the next batch to the buffer; False when the part has no more rows."""
        if self._batches is None:
            self._batches = pq.ParquetFile(self.part.path).iter_batches(batch_size=self.batch_rows)
        batch = next(self._batches, None)
        if batch is None:
            self.exhausted = True
            return False
        cols = {name: batch.column(name).to_numpy() for name in batch.schema.names}
        rows = _to_rows(self.part.data_type, cols, self.part.price_precision, self.part.size_precision,
                        self.pp, self.sp, self.part.source)  # fmt: skip
        self.buffer = rows if self.buffer is None or not len(self.buffer) else _concat([self.buffer, rows])
        return True

    @property
    def last_ts(self) -> int | None:
        return int(self.buffer.ts_l[-1]) if self.buffer is not None and len(self.buffer) else None


@dataclass(slots=True)
class CatalogStream:
    """One instrument's book, trades and funding replayed straight from the catalog's Parquet parts."""

    instrument: Instrument
    book_range: BookRange
    parts: list[Part]
    sources: list[str]
    rows: int
    first_ts: int
    last_ts: int
    chunk_size: int = DEFAULT_CHUNK
    out_of_range: int = 0
    _lag: int | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.rows

    @property
    def start_ns(self) -> int:
        return self.first_ts

    @property
    def end_ns(self) -> int:
        return self.last_ts

    def min_feed_lag_ns(self) -> int:
        if self._lag is None:
            lag = 0
            first = True
            for p in self.parts:
                for b in pq.ParquetFile(p.path).iter_batches(
                    batch_size=self.chunk_size, columns=["ts_event", "ts_local"]
                ):
                    d = int((b.column("ts_local").to_numpy() - b.column("ts_event").to_numpy()).min())
                    lag = d if first else min(lag, d)
                    first = False
            self._lag = lag
        return self._lag

    def chunks(self) -> Iterator[Chunk]:
        """k-way merge of the parts, in (ts_local, seq, part order) — the in-memory build's order."""
        pp, sp = self.instrument.price_precision, self.instrument.size_precision
        readers = [_PartReader(p, k, self.chunk_size, pp, sp) for k, p in enumerate(self.parts)]
        self.out_of_range = 0
        while True:
            live = [r for r in readers if not r.exhausted or (r.buffer is not None and len(r.buffer))]
            if not live:
                return
            for r in live:
                if (r.buffer is None or not len(r.buffer)) and not r.exhausted:
                    r.fill()
            bounded = [r.last_ts for r in live if not r.exhausted and r.last_ts is not None]
            horizon = min(bounded) if bounded else None
            taken: list[_Rows] = []
            for r in readers:
                if r.buffer is None or not len(r.buffer):
                    continue
                if horizon is None:
                    cut = len(r.buffer)
                else:  # rows at the horizon may continue in a part's next batch: keep them back
                    cut = int(np.searchsorted(r.buffer.ts_l, horizon, side="left"))
                if cut:
                    taken.append(r.buffer.take(slice(0, cut)))
                    r.buffer = r.buffer.take(slice(cut, None))
            if not taken:
                # every buffered row sits at the horizon: read further in the parts that end there
                for r in live:
                    if not r.exhausted and r.last_ts == horizon:
                        r.fill()
                continue
            chunk, out = _chunk(_sort(_concat(taken)), self.book_range)
            self.out_of_range += out
            yield chunk


def _stats(part: Part, column: str) -> tuple[int, int] | None:
    md = pq.ParquetFile(part.path).metadata
    idx = md.schema.names.index(column)
    lo: int | None = None
    hi: int | None = None
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            return None
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return (int(lo), int(hi)) if lo is not None and hi is not None else None


def catalog_stream(root: Path, instrument: Instrument, chunk_size: int = DEFAULT_CHUNK) -> CatalogStream:
    """A streamed replay of everything the catalog holds for ``instrument``.

    The book's price range comes from the parts' Parquet statistics (where trades printed, ±20%),
    so nothing is read in full up front.
    """
    cat = Catalog(root)
    parts = [p for dt in _STREAM_TYPES for p in cat.parts(dt, instrument.id)]
    market = [p for p in parts if p.data_type in MARKET_TYPES]
    if not market:
        raise ValueError(f"{root}: no book or trade data for {instrument.id}")
    instrument = stream_precisions(instrument, [(p.price_precision, p.size_precision) for p in market])
    pp = instrument.price_precision

    def scaled(p: Part, col: str) -> list[int]:
        st = _stats(p, col)
        if st is None:
            raise ValueError(f"{p.path}: no column statistics for {col}; re-import the file")
        f = 10 ** (pp - p.price_precision) if col.endswith("price") else 1
        return [st[0] * f, st[1] * f]

    trade_px = [x for p in market if p.data_type is DataType.TRADE for x in scaled(p, "price")]
    book_px = [x for p in market if p.data_type is DataType.BOOK_DELTA for x in scaled(p, "price")]
    book_px += [x for p in market if p.data_type is DataType.QUOTE for c in ("bid_price", "ask_price")
                for x in scaled(p, c)]  # fmt: skip
    rng = book_range_for(instrument, [min(book_px), max(book_px)] if book_px else [],
                         [min(trade_px), max(trade_px)] if trade_px else [])  # fmt: skip
    ts = [x for p in parts for x in scaled(p, "ts_event")]
    return CatalogStream(
        instrument=instrument,
        book_range=rng,
        parts=parts,
        sources=sorted({p.source for p in parts}),
        rows=sum(p.rows for p in parts),
        first_ts=min(ts),
        last_ts=max(ts),
        chunk_size=chunk_size,
    )

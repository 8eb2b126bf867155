"""Turn catalog tables into the columnar event chunks the compiled loop replays.

Book deltas, trades and funding of one instrument are merged into one stream ordered as the
recorder saw them (local time, then source order), converted once to book indices, and handed
to the loop in fixed-size chunks so the per-event cost in Python is zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from bastion.data.schema import AGGRESSOR_BUY, AGGRESSOR_SELL, SIDE_BID, DataType, Table
from bastion.model.instruments import Instrument
from bastion.venues.sim import layout as L
from bastion.venues.sim.book_range import BookRange, choose_range

DEFAULT_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Chunk:
    """A contiguous run of events; the compiled loop replays one chunk at a time."""

    evi: npt.NDArray[np.int64]  # shape (EVI_ROWS, n)
    evk: npt.NDArray[np.uint8]  # shape (EVK_ROWS, n)
    price_raw: npt.NDArray[np.int64]  # raw price of each event (trades, reports)
    ts_shift_ns: int = 0  # to add to every timestamp (a tiled copy), applied by the loop

    def __len__(self) -> int:
        return int(self.evi.shape[1])


@dataclass(slots=True)
class EventStream:
    """All events of one instrument as parallel columns (see ``layout.EV_*``/``EK_*``).

    The loop consumes it chunk by chunk (:meth:`chunks`), so a run's working memory is one chunk
    plus the book whatever the length of the data. ``tiles > 1`` replays the base events that
    many times back to back, shifted in time, without materializing the copies (benchmarks).
    """

    instrument: Instrument
    book_range: BookRange
    evi: npt.NDArray[np.int64]  # base events, shape (EVI_ROWS, n)
    evk: npt.NDArray[np.uint8]  # shape (EVK_ROWS, n)
    price_raw: npt.NDArray[np.int64]
    sources: list[str] = field(default_factory=list)
    out_of_range: int = 0
    tiles: int = 1
    tile_span_ns: int = 0
    chunk_size: int = DEFAULT_CHUNK

    @property
    def base_len(self) -> int:
        return int(self.evi.shape[1])

    def __len__(self) -> int:
        return self.base_len * self.tiles

    def chunks(self) -> Iterator[Chunk]:
        n = self.base_len
        size = max(1, self.chunk_size)
        for k in range(self.tiles):
            shift = k * self.tile_span_ns
            for start in range(0, n, size):
                end = min(n, start + size)
                yield Chunk(self.evi[:, start:end], self.evk[:, start:end], self.price_raw[start:end], shift)

    def min_feed_lag_ns(self) -> int:
        """Smallest recorded (local − venue) time: the shift that makes every feed latency ≥ 0."""
        if not self.base_len:
            return 0
        return int((self.evi[L.EV_TS_LOCAL] - self.evi[L.EV_TS_EVENT]).min())

    @property
    def start_ns(self) -> int:
        return int(self.evi[L.EV_TS_EVENT, 0]) if self.base_len else 0

    @property
    def end_ns(self) -> int:
        if not self.base_len:
            return 0
        return int(self.evi[L.EV_TS_EVENT, -1]) + (self.tiles - 1) * self.tile_span_ns


def _rescale(
    values: npt.NDArray[np.int64], have: int, want: int, what: str, source: str
) -> npt.NDArray[np.int64]:
    """Carry raw integers to a finer precision (exact: multiply by a power of ten)."""
    if have == want:
        return values
    if have > want:
        raise ValueError(f"{source}: {what} precision {have} is finer than the stream's {want}")
    return np.asarray(values * np.int64(10 ** (want - have)), dtype=np.int64)


def build_stream(tables: list[Table], instrument: Instrument) -> EventStream:
    """Merge book deltas, trades and funding of ``instrument`` into one replayable stream.

    When the data carries finer decimals than the instrument's tick or lot (Binance spot book
    sizes below the order lot, for example) the stream and the returned instrument use the
    finer precision, so nothing is rounded away.
    """
    market_tables = [t for t in tables if t.data_type in (DataType.BOOK_DELTA, DataType.TRADE)]
    pp = max([instrument.price_precision, *(t.price_precision for t in market_tables)])
    sp = max([instrument.size_precision, *(t.size_precision for t in market_tables)])
    instrument = instrument.refined(pp, sp)
    parts_ts_e: list[npt.NDArray[np.int64]] = []
    parts_ts_l: list[npt.NDArray[np.int64]] = []
    parts_seq: list[npt.NDArray[np.int64]] = []
    parts_kind: list[npt.NDArray[np.uint8]] = []
    parts_flags: list[npt.NDArray[np.uint8]] = []
    parts_price: list[npt.NDArray[np.int64]] = []
    parts_size: list[npt.NDArray[np.int64]] = []
    sources: list[str] = []
    for t in tables:
        c = t.columns
        n = len(t)
        if n == 0:
            continue
        if t.data_type is DataType.BOOK_DELTA:
            kind = np.where(c["side"] == SIDE_BID, L.KIND_BID, L.KIND_ASK).astype(np.uint8)
            flags = c["flags"].astype(np.uint8)
            price = _rescale(c["price"], t.price_precision, pp, "price", t.source)
            size = _rescale(c["size"], t.size_precision, sp, "size", t.source)
        elif t.data_type is DataType.TRADE:
            agg = c["aggressor"]
            kind = np.full(n, L.KIND_TRADE_UNKNOWN, dtype=np.uint8)
            kind[agg == AGGRESSOR_BUY] = L.KIND_TRADE_BUY
            kind[agg == AGGRESSOR_SELL] = L.KIND_TRADE_SELL
            flags = np.zeros(n, dtype=np.uint8)
            price = _rescale(c["price"], t.price_precision, pp, "price", t.source)
            size = _rescale(c["size"], t.size_precision, sp, "size", t.source)
        elif t.data_type is DataType.FUNDING:
            kind = np.full(n, L.KIND_FUNDING, dtype=np.uint8)
            flags = np.zeros(n, dtype=np.uint8)
            price = np.zeros(n, dtype=np.int64)
            size = c["rate"]
        else:
            continue
        if t.source not in sources:
            sources.append(t.source)
        parts_ts_e.append(np.asarray(c["ts_event"], dtype=np.int64))
        parts_ts_l.append(np.asarray(c["ts_local"], dtype=np.int64))
        parts_seq.append(np.asarray(c["seq"], dtype=np.int64))
        parts_kind.append(kind)
        parts_flags.append(flags)
        parts_price.append(np.asarray(price, dtype=np.int64))
        parts_size.append(np.asarray(size, dtype=np.int64))
    if not parts_ts_e:
        raise ValueError(f"no book, trade or funding data for {instrument.id}")
    ts_e = np.concatenate(parts_ts_e)
    ts_l = np.concatenate(parts_ts_l)
    seq = np.concatenate(parts_seq)
    kind = np.concatenate(parts_kind)
    order = np.lexsort((seq, ts_l))
    ts_e, ts_l, kind = ts_e[order], ts_l[order], kind[order]
    flags = np.concatenate(parts_flags)[order]
    price = np.concatenate(parts_price)[order]
    size = np.concatenate(parts_size)[order]
    market = kind != L.KIND_FUNDING
    if not market.any():
        raise ValueError(f"no book or trade data for {instrument.id}")
    is_trade = (kind == L.KIND_TRADE_BUY) | (kind == L.KIND_TRADE_SELL) | (kind == L.KIND_TRADE_UNKNOWN)
    rng = choose_range(price[market], instrument.tick_raw, trades_raw=price[is_trade])
    idx = rng.index_of(price)
    idx[~market] = -1
    out = int(((idx < 0) & market).sum())
    n = len(ts_e)
    evi = np.empty((L.EVI_ROWS, n), dtype=np.int64)
    evi[L.EV_TS_EVENT] = ts_e
    evi[L.EV_TS_LOCAL] = ts_l
    evi[L.EV_PRICE_IDX] = idx
    evi[L.EV_SIZE] = size
    evk = np.empty((L.EVK_ROWS, n), dtype=np.uint8)
    evk[L.EK_KIND] = kind
    evk[L.EK_FLAGS] = flags
    return EventStream(instrument, rng, evi, evk, price, sources, out)


def tile(stream: EventStream, times: int) -> EventStream:
    """Repeat a stream back to back in time (benchmarks: same data, longer run), lazily."""
    if times <= 1:
        return stream
    lo = int(min(stream.evi[L.EV_TS_LOCAL].min(), stream.evi[L.EV_TS_EVENT].min()))
    hi = int(max(stream.evi[L.EV_TS_LOCAL].max(), stream.evi[L.EV_TS_EVENT].max()))
    return replace(
        stream, tiles=times, tile_span_ns=hi - lo + 1_000_000_000, out_of_range=stream.out_of_range * times
    )

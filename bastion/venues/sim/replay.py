"""The columnar event chunks the compiled loop replays, and the streams that yield them.

A stream hands the loop fixed-size chunks of parallel columns (times, book index, size, kind,
flags), so the per-event cost in Python is zero and the working memory is one chunk. Building a
stream from data tables is the research layer's job (``bastion.research.streams``); the venue
only knows the columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bastion.model.instruments import Instrument
from bastion.venues.sim import layout as L
from bastion.venues.sim.book_range import BookRange

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


class StreamSource(Protocol):
    """What the simulated venue needs from any stream: its instrument, book range and chunks."""

    instrument: Instrument
    book_range: BookRange
    sources: list[str]
    out_of_range: int

    def __len__(self) -> int: ...

    def chunks(self) -> Iterator[Chunk]: ...

    def min_feed_lag_ns(self) -> int: ...

    @property
    def start_ns(self) -> int: ...

    @property
    def end_ns(self) -> int: ...


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


def tile(stream: EventStream, times: int) -> EventStream:
    """Repeat a stream back to back in time (benchmarks: same data, longer run), lazily."""
    if times <= 1:
        return stream
    lo = int(min(stream.evi[L.EV_TS_LOCAL].min(), stream.evi[L.EV_TS_EVENT].min()))
    hi = int(max(stream.evi[L.EV_TS_LOCAL].max(), stream.evi[L.EV_TS_EVENT].max()))
    return replace(
        stream, tiles=times, tile_span_ns=hi - lo + 1_000_000_000, out_of_range=stream.out_of_range * times
    )

"""One instrument's L2 book kept exactly from a websocket feed, and whether it can be trusted.

A websocket book is a local copy of the venue's book that is only right while every frame
since the last snapshot has arrived, in order, and was applied correctly. :class:`SyncedBook`
is venue-independent: an adapter parses the venue's frames and calls :meth:`SyncedBook.apply_snapshot`
/ :meth:`SyncedBook.apply_delta`; the book checks continuity with what the venue offers

* **sequence numbers** (``sequence``, and ``first_sequence`` for venues whose diff covers a
  range): a hole means a lost frame, so the book is no longer the venue's;
* **a checksum** of the top of the book (``checksum_fn``, e.g. :func:`kraken_v2_checksum`),
  compared after every frame that carries one;
* **liveness**: no frame (or heartbeat, see :meth:`SyncedBook.touch`) for ``stale_after_s``
  seconds of the injected clock; and the adapter reports a lost connection.

Any of these makes the book ``STALE`` with a reason; ``is_tradeable`` is then false, so no
strategy quotes on it, and ``needs_resync`` tells the adapter to fetch a fresh snapshot
(resubscribe or reconnect). A snapshot that passes its checks makes the book ``LIVE`` again.

Numbers are exact: prices and sizes are kept as fixed-point raw integers at the instrument's
precision (:mod:`bastion.model.fixed`). Frames must be parsed with :func:`loads_exact`
(``json.loads(text, parse_float=Decimal)``) so no float ever touches a level; a float, a value
off the precision grid or a negative size makes the book ``STALE`` with reason ``invalid``.
"""

from __future__ import annotations

import bisect
import json
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from bastion.model.fixed import Price, Quantity, format_raw, raw_from_decimal

Number = Decimal | int | str
Level = tuple[Number, Number]
RawLevel = tuple[int, int]


def loads_exact(text: str | bytes) -> Any:
    """Parse a frame keeping every non-integer number as the exact Decimal of its text."""
    return json.loads(text, parse_float=Decimal)


class BookState(StrEnum):
    SYNCING = "syncing"  # no snapshot yet (or a resync is under way): not tradeable
    LIVE = "live"  # snapshot plus every delta since, all checks passed
    STALE = "stale"  # continuity lost: not tradeable until a fresh snapshot


class StaleReason(StrEnum):
    CHECKSUM = "checksum"  # the venue's checksum disagrees with the local book
    GAP = "gap"  # a sequence number was skipped
    DISCONNECT = "disconnect"  # the connection dropped
    STALE = "stale"  # nothing received for stale_after_s
    INVALID = "invalid"  # a level that cannot be represented exactly (float, off-grid, negative)


class _Side:
    """One side of the book: raw price -> raw size, plus the prices in book order (best first)."""

    __slots__ = ("_keys", "_levels", "_sign")

    def __init__(self, descending: bool) -> None:
        self._sign = -1 if descending else 1
        self._levels: dict[int, int] = {}
        self._keys: list[int] = []  # sign * price, ascending, so index 0 is the best level

    def clear(self) -> None:
        self._levels.clear()
        self._keys.clear()

    def set(self, price: int, size: int) -> None:
        if size == 0:
            if self._levels.pop(price, None) is not None:
                key = self._sign * price
                del self._keys[bisect.bisect_left(self._keys, key)]
            return
        if price not in self._levels:
            bisect.insort(self._keys, self._sign * price)
        self._levels[price] = size

    def truncate(self, depth: int) -> None:
        if len(self._keys) > depth:
            for key in self._keys[depth:]:
                del self._levels[self._sign * key]
            del self._keys[depth:]

    def top(self, n: int | None = None) -> list[RawLevel]:
        keys = self._keys if n is None else self._keys[:n]
        return [(self._sign * k, self._levels[self._sign * k]) for k in keys]

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class BookCounters:
    """What happened to the book; read by monitoring and by the tests."""

    snapshots: int = 0
    deltas: int = 0
    checksums_ok: int = 0
    ignored_deltas: int = 0  # deltas received while not LIVE (e.g. during a resync)
    old_deltas: int = 0  # deltas at or below the current sequence (duplicates)
    resync_requests: int = 0  # times the book asked for a fresh snapshot
    resyncs: int = 0  # times a snapshot brought a STALE book back to LIVE
    stale: Counter[StaleReason] = field(default_factory=Counter)  # entries into STALE, by reason


ChecksumFn = Callable[["SyncedBook"], int]


def kraken_v2_checksum(book: SyncedBook) -> int:
    """Kraken spot websocket v2 book checksum (CRC32 of the top 10 levels of each side).

    For the 10 best asks (lowest price first) then the 10 best bids (highest first): price and
    size written with the pair's price and size precision, the '.' removed and leading zeros
    stripped, all concatenated; the checksum is the unsigned CRC32 of that ASCII text.
    """
    parts: list[str] = []
    for levels in (book.ask_levels(10), book.bid_levels(10)):
        for price, size in levels:
            parts.append(_kraken_digits(price, book.price_precision))
            parts.append(_kraken_digits(size, book.size_precision))
    return zlib.crc32("".join(parts).encode("ascii")) & 0xFFFFFFFF


def _kraken_digits(raw: int, precision: int) -> str:
    return format_raw(raw, precision).replace(".", "").lstrip("0")


class SyncedBook:
    """The exact L2 book of one instrument, with its sync state (see the module docstring).

    ``depth``: keep only the best ``depth`` levels per side after every frame (venues that
    stream a truncated book, like Kraken, do not send deletions for levels pushed out of the
    window). ``stale_after_s`` is measured on ``clock`` (seconds, monotonic; injectable).
    """

    def __init__(
        self,
        symbol: str,
        price_precision: int,
        size_precision: int,
        *,
        depth: int | None = None,
        checksum_fn: ChecksumFn | None = None,
        stale_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_buffered_deltas: int = 10_000,
        on_change: Callable[[SyncedBook], None] | None = None,
    ) -> None:
        if depth is not None and depth <= 0:
            raise ValueError("depth must be positive")
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        self.symbol = symbol
        self.price_precision = price_precision
        self.size_precision = size_precision
        self.depth = depth
        self.checksum_fn = checksum_fn
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.max_buffered_deltas = max_buffered_deltas
        self.on_change = on_change
        self.counters = BookCounters()
        self.history: deque[tuple[BookState, StaleReason | None]] = deque(maxlen=256)
        self._bids = _Side(descending=True)
        self._asks = _Side(descending=False)
        self._state = BookState.SYNCING
        self._reason: StaleReason | None = None
        self._detail = ""
        self._needs_resync = False
        self._sequence: int | None = None
        self._last_update: float | None = None
        self._sync_started: float | None = None
        self._buffer: deque[tuple[Sequence[Level], Sequence[Level], int, int, int | None]] = deque()
        self.history.append((self._state, None))

    # ----------------------------------------------------------------------------- state
    @property
    def state(self) -> BookState:
        return self._state

    @property
    def reason(self) -> StaleReason | None:
        """Why the book last went STALE (kept through the resync; None once LIVE again)."""
        return self._reason

    @property
    def detail(self) -> str:
        return self._detail

    @property
    def is_tradeable(self) -> bool:
        return self._state is BookState.LIVE

    @property
    def needs_resync(self) -> bool:
        """True from the moment the book goes STALE until :meth:`begin_resync` is called."""
        return self._needs_resync

    @property
    def sequence(self) -> int | None:
        return self._sequence

    @property
    def last_update(self) -> float | None:
        return self._last_update

    def _set_state(self, state: BookState, reason: StaleReason | None) -> None:
        if state is self._state and reason is self._reason:
            return
        self._state = state
        self._reason = reason
        self.history.append((state, reason))
        if self.on_change is not None:
            self.on_change(self)

    def mark_stale(self, reason: StaleReason, detail: str = "") -> None:
        """Distrust the book (idempotent while already STALE) and ask for a fresh snapshot."""
        if self._state is BookState.STALE:
            return
        self.counters.stale[reason] += 1
        self.counters.resync_requests += 1
        self._detail = detail
        self._needs_resync = True
        self._sync_started = None
        self._buffer.clear()
        self._set_state(BookState.STALE, reason)

    def mark_disconnected(self) -> None:
        self.mark_stale(StaleReason.DISCONNECT, "connection lost")

    def begin_resync(self) -> None:
        """The adapter has (re)subscribed and waits for a snapshot; not tradeable until it comes.

        Call it on every subscribe, the first one included: from then on a snapshot that does
        not arrive within ``stale_after_s`` also makes the book STALE (reason ``stale``).
        """
        self._needs_resync = False
        self._buffer.clear()
        self._sync_started = self.clock()
        if self._state is BookState.STALE:
            self._state = BookState.SYNCING  # keep the reason: it says why we are resyncing
            self.history.append((BookState.SYNCING, self._reason))
            if self.on_change is not None:
                self.on_change(self)

    def touch(self) -> None:
        """The venue is alive (e.g. a heartbeat) and has nothing new for this book."""
        self._last_update = self.clock()

    def check_stale(self) -> bool:
        """Go STALE if nothing arrived for ``stale_after_s`` (or an awaited snapshot did not
        come in that time); returns whether it just did."""
        now = self.clock()
        if self._state is BookState.LIVE and self._last_update is not None:
            idle = now - self._last_update
            if idle >= self.stale_after_s:
                self.mark_stale(StaleReason.STALE, f"no update for {idle:.3f}s")
                return True
        elif self._state is BookState.SYNCING and self._sync_started is not None:
            waited = now - self._sync_started
            if waited >= self.stale_after_s:
                self.mark_stale(StaleReason.STALE, f"no snapshot for {waited:.3f}s")
                return True
        return False

    # ----------------------------------------------------------------------------- frames
    def _raw(self, level: Level) -> RawLevel:
        price, size = level
        if isinstance(price, float) or isinstance(size, float):
            raise ValueError("float in a book level (parse frames with loads_exact)")
        p = raw_from_decimal(price, self.price_precision)
        q = raw_from_decimal(size, self.size_precision)
        if q < 0:
            raise ValueError(f"negative size {size}")
        return p, q

    def _parse(self, levels: Iterable[Level]) -> list[RawLevel]:
        return [self._raw(level) for level in levels]

    def apply_snapshot(
        self,
        bids: Iterable[Level],
        asks: Iterable[Level],
        *,
        sequence: int | None = None,
        checksum: int | None = None,
    ) -> bool:
        """Replace the book; returns whether it is LIVE afterwards."""
        try:
            raw_bids, raw_asks = self._parse(bids), self._parse(asks)
        except (ValueError, TypeError) as exc:
            self.mark_stale(StaleReason.INVALID, f"snapshot: {exc}")
            return False
        was_live = self._state is BookState.LIVE
        was_stale = self._reason is not None
        self.counters.snapshots += 1
        self._bids.clear()
        self._asks.clear()
        self._put(raw_bids, raw_asks)
        self._sequence = sequence
        self._last_update = self.clock()
        buffered = list(self._buffer)
        self._buffer.clear()
        self._needs_resync = False
        self._sync_started = None
        # the book becomes (or stays) LIVE only through a verified snapshot; a failed check
        # takes it from here to STALE with the reason, counted once
        self._state = BookState.SYNCING
        if not self._verify(checksum):
            return False
        if was_stale:
            self.counters.resyncs += 1
        self._detail = ""
        if was_live:
            self._state = BookState.LIVE  # a repeated snapshot: no transition to report
        else:
            self._set_state(BookState.LIVE, None)
        # deltas that arrived before the snapshot (venues that stream them independently)
        if self._sequence is not None:
            for b, a, seq, first, cs in buffered:
                if seq <= self._sequence:
                    continue
                if not self.apply_delta(b, a, sequence=seq, first_sequence=first, checksum=cs):
                    break
        return self._state is BookState.LIVE

    def apply_delta(
        self,
        bids: Sequence[Level],
        asks: Sequence[Level],
        *,
        sequence: int | None = None,
        first_sequence: int | None = None,
        checksum: int | None = None,
    ) -> bool:
        """Apply changed levels (size 0 deletes); returns whether the book is LIVE afterwards.

        ``sequence`` is the frame's (last) sequence number, ``first_sequence`` the first one it
        covers when a frame spans a range (defaults to ``sequence``): the frame must start at or
        before ``current + 1``, and one at or below ``current`` is an old duplicate (ignored).
        """
        if self._state is not BookState.LIVE:
            if (
                self._state is BookState.SYNCING
                and sequence is not None
                and not self._needs_resync
                and len(self._buffer) < self.max_buffered_deltas
            ):
                first = sequence if first_sequence is None else first_sequence
                self._buffer.append((bids, asks, sequence, first, checksum))
            else:
                self.counters.ignored_deltas += 1
            return False
        if sequence is not None and self._sequence is not None:
            first = sequence if first_sequence is None else first_sequence
            if sequence <= self._sequence:
                self.counters.old_deltas += 1
                self._last_update = self.clock()
                return True
            if first > self._sequence + 1:
                self.mark_stale(StaleReason.GAP, f"expected {self._sequence + 1}, got {first}")
                return False
        try:
            raw_bids, raw_asks = self._parse(bids), self._parse(asks)
        except (ValueError, TypeError) as exc:
            self.mark_stale(StaleReason.INVALID, f"delta: {exc}")
            return False
        self.counters.deltas += 1
        self._put(raw_bids, raw_asks)
        if sequence is not None:
            self._sequence = sequence
        self._last_update = self.clock()
        return self._verify(checksum)

    def _put(self, bids: list[RawLevel], asks: list[RawLevel]) -> None:
        for price, size in bids:
            self._bids.set(price, size)
        for price, size in asks:
            self._asks.set(price, size)
        if self.depth is not None:
            self._bids.truncate(self.depth)
            self._asks.truncate(self.depth)

    def _verify(self, checksum: int | None) -> bool:
        if checksum is None or self.checksum_fn is None:
            return True
        local = self.checksum_fn(self)
        if local != checksum:
            self.mark_stale(StaleReason.CHECKSUM, f"venue {checksum} != local {local}")
            return False
        self.counters.checksums_ok += 1
        return True

    # ----------------------------------------------------------------------------- reading
    def bid_levels(self, n: int | None = None) -> list[RawLevel]:
        """Best bids first, as (raw price, raw size) at this book's precisions."""
        return self._bids.top(n)

    def ask_levels(self, n: int | None = None) -> list[RawLevel]:
        """Best asks first, as (raw price, raw size) at this book's precisions."""
        return self._asks.top(n)

    def bids(self, n: int | None = None) -> list[tuple[Price, Quantity]]:
        return [self._typed(level) for level in self._bids.top(n)]

    def asks(self, n: int | None = None) -> list[tuple[Price, Quantity]]:
        return [self._typed(level) for level in self._asks.top(n)]

    def best_bid(self) -> tuple[Price, Quantity] | None:
        top = self._bids.top(1)
        return self._typed(top[0]) if top else None

    def best_ask(self) -> tuple[Price, Quantity] | None:
        top = self._asks.top(1)
        return self._typed(top[0]) if top else None

    def _typed(self, level: RawLevel) -> tuple[Price, Quantity]:
        return Price(level[0], self.price_precision), Quantity(level[1], self.size_precision)

    def as_decimal(self) -> dict[str, list[tuple[Decimal, Decimal]]]:
        """``{"bids": [...], "asks": [...]}`` as exact Decimals (for comparisons and logs)."""
        return {
            "bids": [(p.to_decimal(), q.to_decimal()) for p, q in self.bids()],
            "asks": [(p.to_decimal(), q.to_decimal()) for p, q in self.asks()],
        }

    def __repr__(self) -> str:
        return (
            f"SyncedBook({self.symbol!r}, {self._state.value}, reason={self._reason}, "
            f"bids={len(self._bids)}, asks={len(self._asks)})"
        )

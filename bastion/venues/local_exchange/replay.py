"""The market the local exchange replays: real recorded book changes and trades, as columns.

The exchange never makes up prices. Its market is a recorded capture handed in by the caller as
:class:`MarketEvents` (parallel NumPy columns), because loading files is the data layer's job and
``bastion.venues`` may not import ``bastion.data``. Two ways in:

* :meth:`MarketEvents.from_columns` takes the catalog's BOOK_DELTA and TRADE column dicts (the
  arrays of ``bastion.data`` tables), merged back into arrival order;
* :meth:`MarketEvents.from_levels` / :meth:`MarketEvents.from_kraken_depth` build a static book
  from one recorded snapshot (a Kraken ``Depth`` body, a WebSocket book snapshot).

Side codes are the catalog's (``bastion.data.schema``): book side 1 = bid, 2 = ask; trade side is
the aggressor, 1 = buy, 2 = sell, 0 = unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

KIND_LEVEL = 0  # set the level (side, price) to size; size 0 removes it
KIND_TRADE = 1  # a print: side is the aggressor
KIND_CLEAR = 2  # wipe both sides (a snapshot follows, or the feed lost sync)

SIDE_BID = 1
SIDE_ASK = 2
AGGRESSOR_BUY = 1
AGGRESSOR_SELL = 2

# one market event outside the columns, as a live feed delivers it: (ts_ns, kind, side, price, size),
# price and size raw at the feed's precisions (the same codes as the columns)
MarketRow = tuple[int, int, int, int, int]

# catalog BOOK_DELTA flags (bastion.data.schema)
_FLAG_SNAPSHOT = 1
_FLAG_CLEAR = 2


def _decimals(text: str) -> int:
    exp = Decimal(text).as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


@dataclass(frozen=True, slots=True)
class MarketEvents:
    """One pair's market, in arrival order; prices and sizes are raw integers at their precision."""

    ts: npt.NDArray[np.int64]
    kind: npt.NDArray[np.uint8]
    side: npt.NDArray[np.int8]
    price: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    price_precision: int
    size_precision: int
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("kind", "side", "price", "size"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"MarketEvents: column {name} has {len(getattr(self, name))} rows, ts {n}")
        if n > 1 and bool(np.any(np.diff(self.ts) < 0)):
            raise ValueError("MarketEvents: ts must not decrease (events are replayed in arrival order)")

    def __len__(self) -> int:
        return len(self.ts)

    def fingerprint(self) -> str:
        """Enough to notice, after a restart, that the saved replay position refers to other data."""
        if not len(self):
            return f"{self.source}|0"
        return (
            f"{self.source}|{len(self)}|{int(self.ts[0])}|{int(self.ts[-1])}|"
            f"{self.price_precision}|{self.size_precision}|{int(self.price.sum())}"
        )

    @classmethod
    def empty(cls, source: str = "") -> MarketEvents:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, np.zeros(0, np.uint8), np.zeros(0, np.int8), z, z, 0, 0, source)

    @classmethod
    def from_columns(
        cls,
        book: Mapping[str, Any] | None,
        trades: Mapping[str, Any] | None,
        price_precision: int,
        size_precision: int,
        *,
        source: str = "",
        time_column: str = "ts_local",
    ) -> MarketEvents:
        """Merge catalog BOOK_DELTA and TRADE columns back into the order they arrived in.

        Both tables carry ``seq`` (the row's place in the original stream), which is the
        authoritative order; times come from ``time_column`` (the receive time by default, the
        clock the recorder saw) and are made non-decreasing along that order.
        """
        parts: list[tuple[Any, ...]] = []  # (seq, sub, ts, kind, side, price, size)
        if book is not None and len(book["price"]):
            flags = np.asarray(book["flags"], dtype=np.int64)
            seq = np.asarray(book["seq"], dtype=np.int64)
            ts = np.asarray(book[time_column], dtype=np.int64)
            size = np.asarray(book["size"], dtype=np.int64)
            clear = (flags & _FLAG_CLEAR) != 0
            # a gap marker (clear without snapshot, size 0) carries only the wipe, no level
            level = ~(clear & ((flags & _FLAG_SNAPSHOT) == 0) & (size == 0))
            n = int(level.sum())
            parts.append(
                (
                    seq[level],
                    np.ones(n, np.int64),
                    ts[level],
                    np.full(n, KIND_LEVEL, np.uint8),
                    np.asarray(book["side"], dtype=np.int8)[level],
                    np.asarray(book["price"], dtype=np.int64)[level],
                    size[level],
                )
            )
            m = int(clear.sum())
            if m:
                parts.append(
                    (
                        seq[clear],
                        np.zeros(m, np.int64),  # the wipe goes before the row that carries it
                        ts[clear],
                        np.full(m, KIND_CLEAR, np.uint8),
                        np.zeros(m, np.int8),
                        np.zeros(m, np.int64),
                        np.zeros(m, np.int64),
                    )
                )
        if trades is not None and len(trades["price"]):
            seq = np.asarray(trades["seq"], dtype=np.int64)
            n = len(seq)
            parts.append(
                (
                    seq,
                    np.full(n, 2, np.int64),
                    np.asarray(trades[time_column], dtype=np.int64),
                    np.full(n, KIND_TRADE, np.uint8),
                    np.asarray(trades["aggressor"], dtype=np.int8),
                    np.asarray(trades["price"], dtype=np.int64),
                    np.asarray(trades["size"], dtype=np.int64),
                )
            )
        if not parts:
            return cls.empty(source)
        cols = [np.concatenate([p[i] for p in parts]) for i in range(7)]
        order = np.lexsort((np.arange(len(cols[0])), cols[1], cols[0]))
        ts = np.maximum.accumulate(cols[2][order])
        return cls(
            ts=ts.astype(np.int64),
            kind=cols[3][order].astype(np.uint8),
            side=cols[4][order].astype(np.int8),
            price=cols[5][order].astype(np.int64),
            size=cols[6][order].astype(np.int64),
            price_precision=price_precision,
            size_precision=size_precision,
            source=source,
        )

    @classmethod
    def from_levels(
        cls,
        bids: Sequence[tuple[str, str]],
        asks: Sequence[tuple[str, str]],
        ts_ns: int,
        *,
        source: str = "",
    ) -> MarketEvents:
        """A static book from one recorded snapshot, levels given as text (price, size)."""
        pp = max((_decimals(p) for p, _ in (*bids, *asks)), default=0)
        sp = max((_decimals(s) for _, s in (*bids, *asks)), default=0)
        rows = [(SIDE_BID, p, s) for p, s in bids] + [(SIDE_ASK, p, s) for p, s in asks]
        n = len(rows) + 1
        return cls(
            ts=np.full(n, ts_ns, np.int64),
            kind=np.array([KIND_CLEAR] + [KIND_LEVEL] * len(rows), np.uint8),
            side=np.array([0] + [r[0] for r in rows], np.int8),
            price=np.array([0] + [int(Decimal(r[1]).scaleb(pp)) for r in rows], np.int64),
            size=np.array([0] + [int(Decimal(r[2]).scaleb(sp)) for r in rows], np.int64),
            price_precision=pp,
            size_precision=sp,
            source=source,
        )

    @classmethod
    def from_kraken_depth(cls, body: Mapping[str, Any], pair_key: str, *, source: str = "") -> MarketEvents:
        """A static book from a recorded Kraken ``GET /0/public/Depth`` response body."""
        book = body["result"][pair_key]
        bids = [(str(b[0]), str(b[1])) for b in book["bids"]]
        asks = [(str(a[0]), str(a[1])) for a in book["asks"]]
        stamps = [int(x[2]) for x in (*book["bids"], *book["asks"])]
        ts = max(stamps, default=0) * 1_000_000_000
        return cls.from_levels(bids, asks, ts, source=source or f"kraken Depth {pair_key}")

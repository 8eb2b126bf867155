"""Choose the dense price range the simulated book covers.

The compiled book is a dense array indexed by price tick, which makes every update O(1) but
needs a bounded range. Levels far outside it (deep in a 1000-level snapshot) cannot affect the
touch or our fills for a market maker, so they are ignored and counted, as hftbacktest's
region of interest does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_TICKS = 4_000_000  # 64 MB for both sides; beyond this the range is centred on the trades


@dataclass(frozen=True, slots=True)
class BookRange:
    lo_raw: int  # raw price of index 0
    tick_raw: int
    n_ticks: int

    def index_of(self, price_raw: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Book index of each raw price; -1 where the price is outside the range or off-grid."""
        off = price_raw - self.lo_raw
        idx = off // self.tick_raw
        bad = (off < 0) | (idx >= self.n_ticks) | (off % self.tick_raw != 0)
        return np.where(bad, -1, idx).astype(np.int64)

    def price_of(self, idx: int) -> int:
        return self.lo_raw + idx * self.tick_raw


def choose_range(
    prices_raw: npt.NDArray[np.int64],
    tick_raw: int,
    center_raw: int | None = None,
    *,
    margin: float = 0.25,
    max_ticks: int = MAX_TICKS,
) -> BookRange:
    """A range covering every price seen plus a margin, capped around ``center_raw``."""
    if len(prices_raw) == 0:
        raise ValueError("cannot size a book without any prices")
    lo = int(prices_raw.min())
    hi = int(prices_raw.max())
    span = hi - lo
    lo = max(tick_raw, lo - int(span * margin) - 100 * tick_raw)
    hi = hi + int(span * margin) + 100 * tick_raw
    lo -= lo % tick_raw
    n = (hi - lo) // tick_raw + 1
    if n > max_ticks:
        c = int(np.median(prices_raw)) if center_raw is None else center_raw
        half = max_ticks // 2
        lo = max(tick_raw, c - half * tick_raw)
        lo -= lo % tick_raw
        n = max_ticks
    return BookRange(lo_raw=lo, tick_raw=tick_raw, n_ticks=int(n))

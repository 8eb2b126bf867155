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
    trades_raw: npt.NDArray[np.int64] | None = None,
    margin: float = 0.25,
    max_ticks: int = MAX_TICKS,
) -> BookRange:
    """A range covering nearly every price seen plus a margin, capped around ``center_raw``."""
    if len(prices_raw) == 0:
        raise ValueError("cannot size a book without any prices")
    # Quantiles, not min/max: a 1000-level snapshot reaches far from the touch, and one stray
    # level at a silly price must not size the whole book.
    q_lo, q_hi = np.quantile(prices_raw, [0.0005, 0.9995])
    c = int(np.median(prices_raw)) if center_raw is None else center_raw
    span = max(int(q_hi - q_lo), 1)
    pad = int(span * margin) + int(c * 0.02) + 100 * tick_raw
    lo = max(tick_raw, int(q_lo) - pad)
    hi = int(q_hi) + pad
    if trades_raw is not None and len(trades_raw):
        # Where the market actually traded, ±20%, is all a resting order can ever be filled at.
        lo = max(lo, int(trades_raw.min() * 0.8))
        hi = min(hi, int(trades_raw.max() * 1.2))
    lo -= lo % tick_raw
    n = (hi - lo) // tick_raw + 1
    if n > max_ticks:
        half = max_ticks // 2
        lo = max(tick_raw, c - half * tick_raw)
        lo -= lo % tick_raw
        n = max_ticks
    return BookRange(lo_raw=lo, tick_raw=tick_raw, n_ticks=int(n))

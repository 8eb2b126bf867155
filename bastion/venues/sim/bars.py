"""Bar mode: replay OHLCV candles when nothing finer exists, with explicit intrabar fill rules.

A candle says where the price went but not in which order, so every fill rule here is stated
and conservative:

- a market order fills as taker at the close of the bar it was sent on (``fill_at="close"``,
  the usual research convention) or at the next bar's open (``fill_at="next_open"``);
- a resting buy limit at P fills on a later bar only if that bar's low went *below* P
  (``limit_rule="through"``, default) or reached it (``"touch"``), at P, or at the open when
  the bar opened beyond P (a gap fills at the better open price, never at an invented one);
  sells mirror this.

Indicators that a strategy declares (EMA today) are computed in the compiled loop, and the
loop returns to Python only when the strategy must look: on every bar, or only when a watched
pair of indicators changes order (a crossover). That is what lets an ordinary Python strategy
run a million bars in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

NO_SIGN = 2  # "no comparison yet": the first eligible bar always wakes the strategy

# scalar slots
B_IDX = 0
B_N = 1
B_WARMUP = 2
B_EVERY_BAR = 3
B_SIGN = 4
B_N_ORD = 5
B_N_FILLS = 6
B_TOUCH = 7
B_SAMPLE_EVERY = 8
B_NEXT_SAMPLE = 9
B_PRICE_SCALE = 10
B_EVENT_BAR = 11  # wake Python after this bar for a scheduled event (funding); -1: none
B_FIELDS = 16

# resting order rows
BO_OID = 0
BO_SIDE = 1
BO_PRICE = 2  # raw; 0 for market-at-next-open
BO_QTY = 3
BO_IS_MARKET = 4
BO_FIELDS = 5

# fill rows
BF_OID = 0
BF_PRICE = 1
BF_QTY = 2
BF_MAKER = 3
BF_BAR = 4
BF_FIELDS = 5

BR_END = 0  # return flags (several may be set at once)
BR_WAKE = 1
BR_FILLS = 2
BR_SAMPLE = 4
BR_EVENT = 8

IND_EMA = 1


@njit(cache=True)
def _update_indicators(ind_kind, ind_param, ind_val, close_f, i):  # type: ignore[no-untyped-def]
    for k in range(ind_kind.shape[0]):
        if ind_kind[k] == IND_EMA:
            if i == 0:
                ind_val[k] = close_f
            else:
                a = 2.0 / (ind_param[k] + 1.0)
                ind_val[k] += a * (close_f - ind_val[k])


@njit(cache=True)
def _match_resting(o, h, lo, i, bord, fills, s):  # type: ignore[no-untyped-def]
    touch = s[B_TOUCH] == 1
    j = 0
    while j < s[B_N_ORD]:
        side = bord[j, BO_SIDE]
        px = bord[j, BO_PRICE]
        filled = False
        fill_px = 0
        maker = 1
        if bord[j, BO_IS_MARKET] == 1:
            filled = True
            fill_px = o[i]
            maker = 0
        elif side > 0:
            if lo[i] < px or (touch and lo[i] == px):
                filled = True
                fill_px = min(px, o[i])
        else:
            if h[i] > px or (touch and h[i] == px):
                filled = True
                fill_px = max(px, o[i])
        if filled:
            k = s[B_N_FILLS]
            fills[k, BF_OID] = bord[j, BO_OID]
            fills[k, BF_PRICE] = fill_px
            fills[k, BF_QTY] = bord[j, BO_QTY]
            fills[k, BF_MAKER] = maker
            fills[k, BF_BAR] = i
            s[B_N_FILLS] = k + 1
            last = s[B_N_ORD] - 1
            for f in range(BO_FIELDS):
                bord[j, f] = bord[last, f]
            s[B_N_ORD] = last
        else:
            j += 1


@njit(cache=True)
def advance_bars(o, h, lo, c, ind_kind, ind_param, ind_val, watch, bord, fills, s):  # type: ignore[no-untyped-def]
    """Run bars until the strategy must look; the current bar is ``s[B_IDX] - 1`` on return."""
    n = s[B_N]
    scale = float(s[B_PRICE_SCALE])
    i = s[B_IDX]
    while i < n:
        if s[B_N_ORD] > 0:
            _match_resting(o, h, lo, i, bord, fills, s)
        _update_indicators(ind_kind, ind_param, ind_val, c[i] / scale, i)
        i += 1
        s[B_IDX] = i
        flags = BR_FILLS if s[B_N_FILLS] > 0 else 0
        if i - 1 >= s[B_WARMUP]:
            if s[B_EVERY_BAR] == 1:
                flags |= BR_WAKE
            elif watch.shape[0] == 2:
                d = ind_val[watch[0]] - ind_val[watch[1]]
                sign = 1 if d > 0 else (-1 if d < 0 else 0)
                if sign != s[B_SIGN]:
                    s[B_SIGN] = sign
                    flags |= BR_WAKE
        if i - 1 >= s[B_NEXT_SAMPLE]:
            s[B_NEXT_SAMPLE] = i - 1 + s[B_SAMPLE_EVERY]
            flags |= BR_SAMPLE
        if i - 1 == s[B_EVENT_BAR]:
            flags |= BR_EVENT
        if flags:
            return flags
    return BR_END


@dataclass(frozen=True, slots=True)
class BarArrays:
    ts: npt.NDArray[np.int64]  # bar open time
    close_ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.int64]
    high: npt.NDArray[np.int64]
    low: npt.NDArray[np.int64]
    close: npt.NDArray[np.int64]
    volume: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def tile(self, n: int) -> BarArrays:
        """Repeat the bars back to back until ``n`` rows (benchmarks), times kept increasing."""
        reps = -(-n // len(self))
        step = int(np.median(np.diff(self.ts))) if len(self) > 1 else 60_000_000_000
        ts = self.ts[0] + np.arange(n, dtype=np.int64) * step

        def t(a: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
            return np.ascontiguousarray(np.tile(a, reps)[:n])

        return BarArrays(
            ts, ts + step, t(self.open), t(self.high), t(self.low), t(self.close), t(self.volume)
        )

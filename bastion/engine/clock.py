"""Clocks: simulated (driven by the data) and wall (paper, live).

Strategies read time only through a clock, never from the system, so the same code gives the
same decisions in a backtest as it would have live.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SimClock:
    """Set by the replay loop; never moves backwards."""

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def set(self, ts_ns: int) -> None:
        if ts_ns > self._now:
            self._now = ts_ns


class WallClock:
    __slots__ = ()

    def now_ns(self) -> int:
        return time.time_ns()

"""One request budget per venue, shared by every caller in the process.

Venues count requests per key, not per caller: the market-data poller, the order path and the
reconciler all spend the same budget. Giving each its own limiter is how a bot gets itself
banned during a busy minute (every part stays "under the limit" while their sum is not). So the
limiter is looked up by venue name from a process-wide registry, and everything that talks to
that venue draws from the same bucket.

A token bucket: ``rate`` tokens per second, at most ``burst`` saved up. ``acquire`` waits (never
refuses) because a request that is late is safe and a request that is dropped is not; callers
with a deadline pass ``timeout`` and get :class:`RateLimitTimeout`, a retryable condition.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from bastion.venues.registry import venue_spec


class RateLimitTimeout(TimeoutError):
    """The budget did not allow the request within the caller's timeout."""


class RateLimiter:
    """A thread-safe token bucket; ``clock`` and ``sleep`` are injectable so tests need no waiting."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got rate={rate}, burst={burst})")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()
        self.waited_s = 0.0  # total time callers spent waiting: a figure for the metrics
        self.requests = 0

    def _reserve(self, cost: float) -> float:
        """Take ``cost`` tokens (possibly going negative) and return how long to wait for them."""
        if cost > self.burst:
            raise ValueError(f"a request costing {cost} can never fit a burst of {self.burst}")
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= cost
            self.requests += 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.waited_s += wait
            return wait

    def _refund(self, cost: float) -> None:
        with self._lock:
            self._tokens = min(float(self.burst), self._tokens + cost)
            self.requests -= 1

    def acquire(self, cost: float = 1.0, timeout: float | None = None) -> float:
        """Block until ``cost`` tokens are ours; returns the seconds waited."""
        wait = self._reserve(cost)
        if timeout is not None and wait > timeout:
            self._refund(cost)
            raise RateLimitTimeout(f"rate limit: next slot in {wait:.3f}s > timeout {timeout:.3f}s")
        if wait > 0:
            self._sleep(wait)
        return wait

    async def acquire_async(self, cost: float = 1.0, timeout: float | None = None) -> float:
        """The same budget for asyncio callers (ccxt.pro, websockets)."""
        wait = self._reserve(cost)
        if timeout is not None and wait > timeout:
            self._refund(cost)
            raise RateLimitTimeout(f"rate limit: next slot in {wait:.3f}s > timeout {timeout:.3f}s")
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(venue: str, rate: float | None = None, burst: int | None = None) -> RateLimiter:
    """The process-wide limiter of ``venue``, created on first use from the venue table.

    ``rate``/``burst`` override the table only when the limiter is first created (a config
    setting for a higher-tier key); later callers always get the same object.
    """
    key = venue.strip().lower()
    with _registry_lock:
        lim = _registry.get(key)
        if lim is None:
            spec = venue_spec(key)
            lim = RateLimiter(rate or spec.rate_per_second, burst or spec.burst)
            _registry[key] = lim
        return lim


def reset_limiters() -> None:
    """Forget every limiter (tests; a process that re-reads its config)."""
    with _registry_lock:
        _registry.clear()

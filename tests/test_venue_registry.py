"""The venue table and the shared per-venue rate limiter."""

from __future__ import annotations

import asyncio
import threading

import ccxt
import pytest

from bastion.risk.policy import DEFAULT_ALLOWED_VENUES, DEFAULT_DENIED_VENUES
from bastion.venues.rate_limit import RateLimiter, RateLimitTimeout, limiter_for, reset_limiters
from bastion.venues.registry import VENUES, UnknownVenue, venue_spec


def test_every_policy_venue_is_in_the_table_and_every_ccxt_id_exists() -> None:
    for name in (*DEFAULT_ALLOWED_VENUES, *DEFAULT_DENIED_VENUES):
        assert venue_spec(name).name == name
    for spec in VENUES.values():
        if spec.ccxt_id is not None:
            assert spec.ccxt_id in ccxt.exchanges, spec


def test_unknown_venue_names_the_known_ones() -> None:
    with pytest.raises(UnknownVenue, match="kraken"):
        venue_spec("mtgox")


class FakeTime:
    """A clock that only moves when someone sleeps: the limiter's arithmetic, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_bucket_allows_the_burst_then_paces_at_the_rate() -> None:
    t = FakeTime()
    lim = RateLimiter(rate=2.0, burst=3, clock=t.clock, sleep=t.sleep)
    waits = [lim.acquire() for _ in range(7)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert t.now == pytest.approx(2.0)  # 7 requests = 3 free + 4 at 2/s


def test_timeout_refuses_without_spending_the_budget() -> None:
    t = FakeTime()
    lim = RateLimiter(rate=1.0, burst=1, clock=t.clock, sleep=t.sleep)
    lim.acquire()
    with pytest.raises(RateLimitTimeout):
        lim.acquire(timeout=0.1)
    t.now += 1.0
    assert lim.acquire(timeout=0.1) == 0.0  # the refused call did not take a token


def test_a_cost_above_the_burst_is_an_error_not_a_hang() -> None:
    with pytest.raises(ValueError, match="never fit"):
        RateLimiter(rate=1.0, burst=2).acquire(cost=3)


def test_one_limiter_per_venue_shared_by_threads_and_asyncio() -> None:
    reset_limiters()
    a = limiter_for("Kraken")
    assert limiter_for("kraken") is a
    assert limiter_for("coinbase") is not a
    t = FakeTime()
    lim = RateLimiter(rate=10.0, burst=5, clock=t.clock, sleep=lambda s: None)
    threads = [threading.Thread(target=lim.acquire) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 20 requests at one instant: 5 from the burst, the other 15 queued 0.1 s apart
    assert lim.requests == 20
    assert lim.waited_s == pytest.approx(sum(0.1 * k for k in range(1, 16)))
    lim2 = RateLimiter(rate=1000.0, burst=1)
    asyncio.run(_many(lim2, 3))
    assert lim2.requests == 3
    reset_limiters()


async def _many(lim: RateLimiter, n: int) -> None:
    await asyncio.gather(*(lim.acquire_async() for _ in range(n)))

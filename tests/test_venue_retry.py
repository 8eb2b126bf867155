"""Retries: only retryable errors, with growing, jittered waits, never beyond the attempts."""

from __future__ import annotations

import random

import pytest

from bastion.venues.base import VenueAuthError, VenueRejected, VenueTimeout, VenueUnavailable
from bastion.venues.retry import backoff_delays, with_retries


def test_retryable_errors_are_retried_with_growing_waits() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise VenueTimeout("no answer") if len(calls) == 1 else VenueUnavailable("502")
        return "ok"

    assert with_retries(flaky, attempts=4, base_s=0.1, sleep=slept.append, rng=random.Random(1)) == "ok"
    assert len(calls) == 3 and len(slept) == 2
    assert 0.05 <= slept[0] <= 0.1 and 0.1 <= slept[1] <= 0.2


def test_fatal_errors_are_raised_at_once() -> None:
    for exc in (VenueAuthError("bad key"), VenueRejected("insufficient funds")):
        calls: list[int] = []

        def fail(e: Exception = exc, seen: list[int] = calls) -> None:
            seen.append(1)
            raise e

        with pytest.raises(type(exc)):
            with_retries(fail, attempts=5, sleep=lambda s: None)
        assert calls == [1]


def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise VenueUnavailable(f"down {len(calls)}")

    with pytest.raises(VenueUnavailable, match="down 3"):
        with_retries(down, attempts=3, sleep=lambda s: None)
    assert len(calls) == 3


def test_delays_are_capped_and_jittered() -> None:
    d = backoff_delays(8, 0.5, 4.0, random.Random(7))
    assert len(d) == 7 and all(0 < x <= 4.0 for x in d)
    assert max(d) > 2.0 and d != backoff_delays(8, 0.5, 4.0, random.Random(8))

"""Retries with exponential backoff and jitter, for requests that are safe to repeat.

Only the retryable venue errors (timeouts, lost connections, 5xx, rate limits) are retried, and
only for idempotent requests — reads, and cancels by client id. An order submission is never
retried here: after a lost answer the order may exist, and the gateway settles that by asking the
venue by client order id (a blind resend is how a bot buys twice). Fatal errors (authentication,
a refusal) are raised at once: repeating them only burns the rate budget.

Jitter spreads the retries of several callers (poller, reconciler) that failed on the same
outage, so they do not hit the recovering venue in lockstep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from bastion.venues.base import VenueError

T = TypeVar("T")
log = structlog.get_logger(__name__)


def backoff_delays(attempts: int, base_s: float, max_s: float, rng: random.Random) -> list[float]:
    """The waits between ``attempts`` tries: ``base·2^k`` capped at ``max_s``, each scaled by a
    random factor in [0.5, 1.0] ("equal jitter")."""
    return [min(max_s, base_s * 2**k) * (0.5 + rng.random() / 2) for k in range(max(0, attempts - 1))]


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 3,
    base_s: float = 0.2,
    max_s: float = 2.0,
    what: str = "venue request",
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn``; on a retryable :class:`VenueError` wait and try again, up to ``attempts``."""
    delays = backoff_delays(attempts, base_s, max_s, rng or random.Random())
    for k in range(attempts):
        try:
            return fn()
        except VenueError as exc:
            if not exc.retryable or k == attempts - 1:
                raise
            log.warning("venue_retry", what=what, attempt=k + 1, error=repr(exc), wait_s=round(delays[k], 3))
            sleep(delays[k])
    raise AssertionError("unreachable")  # pragma: no cover

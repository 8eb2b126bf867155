"""Fault injection: the network and venue failures an order path must survive, on demand.

The dangerous failures are the ones after which the client cannot know what happened. So besides
failing *before* the request is processed (5xx, rate limit, dropped connection: nothing was done),
the exchange can fail *after* it processed and committed the request: the order exists, but the
client sees a dropped connection (``lost_answer``), a 502 (``http_5xx_after``, what Kraken's edge
returns when the engine is slow) or an answer that arrives too late for its timeout (``delay``).

Each request draws one number from a seeded generator, so a chaos run is reproducible from its
seed and the order of requests. ``force`` queues faults for the next matching requests, so a test
can say "the next AddOrder is processed and then not answered" without any probability.

Two faults are about the market rather than the request, and draw from their own generator so
adding them does not change which requests the others hit:

* ``stale_book``: the feed stalls. With this probability per public ``Depth`` request, and per
  second of websocket book feed (a client on the websocket book never asks for ``Depth``), a stall
  of ``stale_s`` seconds starts; until it ends every ``Depth`` answer repeats the book (levels and
  their timestamps) frozen at its start, and the websocket sends no book or trade frame (only
  heartbeats; a snapshot asked for meanwhile comes when the stall ends), as an exchange whose
  market-data path hangs does. The exchange counts new orders that arrive more than
  ``stale_grace_s`` into a stall: a client that watches its book's age should never send one.
* ``partial_fill``: with this probability per taking ``AddOrder`` only part of the order (a
  random whole number of lots) trades on arrival, as when someone else took the liquidity first;
  a market or IOC remainder is canceled, a good-till-canceled remainder rests.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

BEFORE = ("drop", "http_5xx", "rate_limit")
AFTER = ("lost_answer", "http_5xx_after", "delay")
KINDS = BEFORE + AFTER
FEED_ROLL_S = 1.0  # a websocket book feed draws for a stall once per this many seconds
MARKET_KINDS = ("stale_book", "partial_fill")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Probabilities per request (they add up; the rest of the requests are served normally)."""

    seed: int = 0
    drop: float = 0.0  # close the connection, nothing processed
    http_5xx: float = 0.0  # answer ``status_5xx``, nothing processed
    rate_limit: float = 0.0  # answer EAPI:Rate limit exceeded, nothing processed
    lost_answer: float = 0.0  # process and commit, then close the connection without answering
    http_5xx_after: float = 0.0  # process and commit, then answer ``status_5xx``
    delay: float = 0.0  # process and commit, then answer after ``delay_s``
    delay_s: float = 5.0
    status_5xx: int = 502
    # which endpoints (method names such as "AddOrder") are subject; empty = every private one
    endpoints: tuple[str, ...] = ()
    include_public: bool = False
    stale_book: float = 0.0  # per public Depth request: start a feed stall
    stale_s: float = 4.0
    stale_grace_s: float = 3.5
    partial_fill: float = 0.0  # per taking AddOrder: trade only part of it on arrival

    def __post_init__(self) -> None:
        total = sum(getattr(self, k) for k in KINDS)
        if any(getattr(self, k) < 0 for k in KINDS) or total > 1.0:
            raise ValueError(f"fault probabilities must be >= 0 and add up to at most 1 (got {total})")
        for k in MARKET_KINDS:
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be a probability in [0, 1], got {getattr(self, k)}")
        if self.stale_s <= 0 or self.stale_grace_s <= 0:
            raise ValueError("stale_s and stale_grace_s must be positive")
        if not 500 <= self.status_5xx <= 599:
            raise ValueError(f"status_5xx must be a 5xx code, got {self.status_5xx}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaultConfig:
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise ValueError(f"unknown fault options {sorted(bad)}; known: {sorted(known)}")
        args = dict(d)
        if "endpoints" in args:
            args["endpoints"] = tuple(args["endpoints"])
        return cls(**args)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["endpoints"] = list(self.endpoints)
        return out


class FaultInjector:
    """Decides, per request, which fault (if any) to inject."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.config = config or FaultConfig()
        self._rng = random.Random(self.config.seed)
        self._forced: deque[tuple[str, str | None]] = deque()
        self.injected: dict[str, int] = dict.fromkeys((*KINDS, *MARKET_KINDS, "orders_in_stall"), 0)
        self._market_rng = random.Random(self.config.seed ^ 0x5EED)
        self.stall_started = 0.0
        self.stall_until = 0.0
        self.stall_doc: Any = None
        self._next_feed_roll = 0.0

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._market_rng = random.Random(config.seed ^ 0x5EED)
            self.stall_until = 0.0
            self._next_feed_roll = 0.0

    # --- market faults ------------------------------------------------------------------------------
    def stalled(self, now: float) -> tuple[bool, bool]:
        """For a Depth request at ``now`` (monotonic s): (in a stall, the stall starts now)."""
        with self._lock:
            if now < self.stall_until:
                return True, False
            if self._roll_stall(now):
                return True, True
            return False, False

    def feed_stalled(self, now: float) -> bool:
        """For the websocket feed at ``now``: is the market-data path hung? Draws once a second."""
        with self._lock:
            if now < self.stall_until:
                return True
            if now < self._next_feed_roll:
                return False
            self._next_feed_roll = now + FEED_ROLL_S
            if self._roll_stall(now):
                self.stall_doc = None  # Depth freezes the book at its first request in this stall
                return True
            return False

    def _roll_stall(self, now: float) -> bool:
        if self.config.stale_book and self._market_rng.random() < self.config.stale_book:
            self.stall_started, self.stall_until = now, now + self.config.stale_s
            self.injected["stale_book"] += 1
            return True
        return False

    def note_new_order(self, now: float) -> None:
        """Count a new order that arrives well into a stall (the client should have seen it)."""
        with self._lock:
            if now < self.stall_until and now - self.stall_started > self.config.stale_grace_s:
                self.injected["orders_in_stall"] += 1

    def take_cap(self, volume: int) -> int | None:
        """How much of a taking order may trade on arrival (None: all of it)."""
        with self._lock:
            p = self.config.partial_fill
            if volume < 2 or not p or self._market_rng.random() >= p:
                return None
            self.injected["partial_fill"] += 1
            return self._market_rng.randint(1, volume - 1)

    def force(self, kind: str, endpoint: str | None = None, times: int = 1) -> None:
        """Inject ``kind`` into the next ``times`` requests to ``endpoint`` (any private one if None)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {KINDS}")
        with self._lock:
            self._forced.extend([(kind, endpoint)] * times)

    def clear(self) -> None:
        with self._lock:
            self._forced.clear()
            self.config = FaultConfig(seed=self.config.seed)

    def decide(self, endpoint: str, private: bool) -> str | None:
        with self._lock:
            for i, (kind, ep) in enumerate(self._forced):
                if ep == endpoint or (ep is None and private):
                    del self._forced[i]
                    self.injected[kind] += 1
                    return kind
            c = self.config
            if not private and not c.include_public:
                return None
            if c.endpoints and endpoint not in c.endpoints:
                return None
            u = self._rng.random()
            acc = 0.0
            for kind in KINDS:
                acc += getattr(c, kind)
                if u < acc:
                    self.injected[kind] += 1
                    return kind
            return None

"""An in-process message bus: topics, synchronous delivery, no loss where loss would cost money.

Synchronous delivery is the default because it keeps a backtest deterministic (handlers run in
subscription order, at the moment of publishing) and because a risk or order event must have
been *handled* before the publisher moves on: a kill switch that is queued is not a kill switch.
So critical topics (``risk.*``, ``system.critical``, ``order.*``, ``fill.*``, ``portfolio.*``)
are always delivered synchronously, to every handler, and never dropped.

Observers that may fall behind (metrics, a UI) subscribe with a bounded ``queue``: publishing
only appends, :meth:`MessageBus.drain` delivers later, and a full queue drops its *oldest*
message with a counted, logged overflow. The trading path therefore never blocks on, nor runs
the code of, a slow observer. Such queues are refused on critical topics (at subscribe time).

A handler that raises does not stop delivery to the others (a broken metrics hook must not keep
the ledger from hearing of a fill); the error is re-raised to the publisher afterwards, so bugs
stay loud. A multi-process bus (:mod:`bastion.engine.bus_redis`) carries the same messages.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

Handler = Callable[[Any], None]

log = structlog.get_logger(__name__)

CRITICAL_PREFIXES: tuple[str, ...] = ("risk.", "order.", "fill.", "portfolio.", "system.critical")


def is_critical(topic: str) -> bool:
    """Whether ``topic`` (exact, not a pattern) must be delivered synchronously and losslessly."""
    if topic == "system.critical" or topic.startswith("system.critical."):
        return True
    return topic.startswith(CRITICAL_PREFIXES[:-1])


def _may_match_critical(pattern: str) -> bool:
    """Whether a subscription pattern (exact or ``prefix*``) can receive a critical topic."""
    if not pattern.endswith("*"):
        return is_critical(pattern)
    prefix = pattern[:-1]
    return any(c.startswith(prefix) or prefix.startswith(c) for c in CRITICAL_PREFIXES)


@dataclass(slots=True)
class _Queued:
    """A bounded mailbox for one slow subscriber."""

    pattern: str
    handler: Handler
    limit: int
    items: deque[tuple[str, Any]] = field(default_factory=deque)
    dropped: int = 0


@dataclass(slots=True)
class TopicStats:
    published: int = 0
    dropped: int = 0


class MessageBus:
    def __init__(self) -> None:
        # copy-on-write lists: publishing iterates a snapshot without holding a lock
        self._subs: dict[str, list[Handler]] = {}
        self._wild: list[tuple[str, Handler]] = []
        self._qsubs: dict[str, list[_Queued]] = {}
        self._qwild: list[_Queued] = []
        self._queues: list[_Queued] = []
        self._stats: dict[str, TopicStats] = {}
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, topic: str, handler: Handler, *, queue: int | None = None) -> None:
        """Subscribe to an exact topic, or to a prefix with a trailing ``*`` (``order.*``).

        ``queue=N`` makes delivery deferred (see :meth:`drain`) through a mailbox of at most N
        messages; it is refused for any pattern that can match a critical topic.
        """
        with self._lock:
            if queue is None:
                if topic.endswith("*"):
                    self._wild = [*self._wild, (topic[:-1], handler)]
                else:
                    self._subs[topic] = [*self._subs.get(topic, ()), handler]
                return
            if type(queue) is not int or queue <= 0:
                raise ValueError(f"queue must be a positive int, got {queue!r}")
            if _may_match_critical(topic):
                raise ValueError(
                    f"{topic!r} can carry critical messages (risk.*, order.*, fill.*, portfolio.*, "
                    "system.critical), which are always delivered synchronously: subscribe without queue="
                )
            q = _Queued(topic, handler, queue)
            self._queues = [*self._queues, q]
            if topic.endswith("*"):
                self._qwild = [*self._qwild, q]
            else:
                self._qsubs[topic] = [*self._qsubs.get(topic, ()), q]

    def publish(self, topic: str, message: Any) -> None:
        self.published += 1
        st = self._stats.get(topic)
        if st is None:
            st = self._stats.setdefault(topic, TopicStats())
        st.published += 1
        subs = self._subs.get(topic)
        if not subs and not self._wild and not self._queues:
            return  # nobody listens (the common case in a backtest): nothing more to do
        errors: list[Exception] = []
        for h in subs or ():
            try:
                h(message)
            except Exception as exc:
                errors.append(exc)
        for prefix, h in self._wild:
            if topic.startswith(prefix):
                try:
                    h(message)
                except Exception as exc:
                    errors.append(exc)
        if self._queues and not is_critical(topic):
            self._enqueue(topic, message, st)
        if errors:
            if len(errors) == 1:
                raise errors[0]
            raise ExceptionGroup(f"{len(errors)} handlers of {topic!r} failed", errors)

    def _enqueue(self, topic: str, message: Any, st: TopicStats) -> None:
        targets = [*self._qsubs.get(topic, ()), *(q for q in self._qwild if topic.startswith(q.pattern[:-1]))]
        if not targets:
            return
        with self._lock:
            for q in targets:
                if len(q.items) >= q.limit:
                    q.items.popleft()
                    q.dropped += 1
                    st.dropped += 1
                    # log the 1st, 10th, 100th, ... drop: a flood of log lines would itself be
                    # the kind of slowdown the queue exists to keep off the trading path
                    n = q.dropped
                    if n == 1 or (n % 10 == 0 and str(n).rstrip("0") == "1"):
                        log.warning(
                            "bus.queue_overflow", pattern=q.pattern, topic=topic, limit=q.limit, dropped=n
                        )
                q.items.append((topic, message))

    def drain(self, max_messages: int | None = None) -> int:
        """Deliver queued messages (oldest first, per subscriber); returns how many were delivered.

        Called by whoever owns the slow consumers (a UI loop, a metrics thread). A handler that
        raises is logged and skipped: an observer's bug must not wedge its queue.
        """
        delivered = 0
        while max_messages is None or delivered < max_messages:
            progressed = False
            for q in self._queues:
                with self._lock:
                    if not q.items:
                        continue
                    topic, message = q.items.popleft()
                progressed = True
                delivered += 1
                try:
                    q.handler(message)
                except Exception:
                    log.exception("bus.queued_handler_failed", pattern=q.pattern, topic=topic)
                if max_messages is not None and delivered >= max_messages:
                    break
            if not progressed:
                break
        return delivered

    def pending(self) -> int:
        """Messages waiting in bounded queues."""
        return sum(len(q.items) for q in self._queues)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per topic: messages published and messages dropped by overflowing queues."""
        with self._lock:
            return {
                t: {"published": s.published, "dropped": s.dropped} for t, s in sorted(self._stats.items())
            }

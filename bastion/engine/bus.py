"""An in-process message bus: topics, synchronous delivery, no loss.

Synchronous delivery keeps a backtest deterministic (handlers run in subscription order, at the
moment of publishing). A multi-process bus (Redis Streams) plugs in behind the same two calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], None]


class MessageBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[Handler]] = defaultdict(list)
        self._wild: list[tuple[str, Handler]] = []
        self.published = 0

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Subscribe to an exact topic, or to a prefix with a trailing ``*`` (``order.*``)."""
        if topic.endswith("*"):
            self._wild.append((topic[:-1], handler))
        else:
            self._subs[topic].append(handler)

    def publish(self, topic: str, message: Any) -> None:
        self.published += 1
        for h in self._subs.get(topic, ()):
            h(message)
        for prefix, h in self._wild:
            if topic.startswith(prefix):
                h(message)

"""A message bus between processes on Redis Streams, lossless for critical topics.

Why streams and not pub/sub: pub/sub forgets a message the moment no one is listening, so a
risk process that restarts misses the kill switch it most needed. A stream keeps every entry; a
*consumer group* hands each entry to one consumer and keeps it in the group's pending list until
that consumer acknowledges it. If the consumer dies first, the entry stays pending and another
consumer of the group claims it once it has been idle for ``claim_idle_ms`` (``XAUTOCLAIM``), and
a consumer restarted under the same name first re-reads its own pending entries. Delivery is
therefore at-least-once: handlers must be idempotent (the store's keyed writes are).

One stream per topic, key ``<prefix>:<topic>``; the entry holds the message as codec JSON
(:mod:`bastion.model.codec`), so orders and events arrive as the same objects. ``maxlen`` trims
only non-critical streams (metrics, ui): trimming a critical stream could delete an entry nobody
has acknowledged yet. An entry that cannot be decoded is moved to ``<prefix>:dead-letter`` and
acknowledged, rather than being redelivered forever and blocking the consumer behind it.

Redis itself must persist for this to survive a Redis restart (``appendonly yes``, ideally
``appendfsync always`` for critical topics); a warning is logged when it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import redis
import structlog

from bastion.engine.bus import is_critical
from bastion.model.codec import CodecError, dumps, loads

__all__ = ["Delivery", "RedisBusError", "RedisStreamBus", "StreamConsumer", "StreamId"]

log = structlog.get_logger(__name__)

_FIELD = b"m"


class RedisBusError(RuntimeError):
    """Redis is unreachable or misbehaving; critical messages cannot be carried."""


class StreamId(NamedTuple):
    """Where an entry lives: entry ids are only unique within one topic's stream."""

    topic: str
    entry: str


class Delivery(NamedTuple):
    id: StreamId
    topic: str
    message: Any


class RedisStreamBus:
    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "bastion", maxlen: int | None = None
    ) -> None:
        if maxlen is not None and maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {maxlen}")
        self.prefix = prefix
        self.maxlen = maxlen
        self.redis: redis.Redis = redis.Redis.from_url(url, socket_connect_timeout=5)
        self._r: Any = self.redis  # redis-py's sync/async union return types, narrowed here once
        try:
            self._r.ping()
        except redis.RedisError as exc:
            raise RedisBusError(f"Redis at {url} is not reachable: {exc}") from exc
        self._warn_if_volatile()

    def _warn_if_volatile(self) -> None:
        try:
            aof = self._r.config_get("appendonly").get(b"appendonly", b"")
        except redis.RedisError:
            return  # CONFIG may be disabled on managed Redis; nothing to say then
        if aof != b"yes":
            log.warning("bus_redis.not_persistent", detail="appendonly is off: a Redis restart loses streams")

    def key(self, topic: str) -> str:
        return f"{self.prefix}:{topic}"

    def topic_of(self, key: bytes | str) -> str:
        k = key.decode() if isinstance(key, bytes) else key
        return k[len(self.prefix) + 1 :]

    def publish(self, topic: str, message: Any) -> str:
        """Append to the topic's stream; returns the entry id. Raises if Redis did not take it."""
        data = dumps(message).encode()
        trim = None if is_critical(topic) else self.maxlen
        try:
            entry = self._r.xadd(self.key(topic), {_FIELD: data}, maxlen=trim, approximate=True)
        except redis.RedisError as exc:
            raise RedisBusError(f"publish to {topic!r} failed: {exc}") from exc
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def consumer(
        self,
        group: str,
        name: str,
        topics: Sequence[str],
        *,
        claim_idle_ms: int | None = 30_000,
        start_id: str = "0",
    ) -> StreamConsumer:
        """A member ``name`` of consumer ``group`` on ``topics`` (created if missing).

        ``start_id="0"`` makes a new group see everything already in the streams (lossless);
        ``"$"`` only what is published from now on. ``claim_idle_ms=None`` disables taking over
        a dead consumer's entries.
        """
        return StreamConsumer(self, group, name, topics, claim_idle_ms=claim_idle_ms, start_id=start_id)

    def close(self) -> None:
        self.redis.close()


class StreamConsumer:
    def __init__(
        self,
        bus: RedisStreamBus,
        group: str,
        name: str,
        topics: Sequence[str],
        *,
        claim_idle_ms: int | None,
        start_id: str,
    ) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        if any(t.endswith("*") for t in topics):
            raise ValueError("Redis stream consumers take exact topics, not patterns")
        self.bus, self.group, self.name = bus, group, name
        self.topics = list(dict.fromkeys(topics))
        self.claim_idle_ms = claim_idle_ms
        self._r = bus._r
        self._keys = [bus.key(t) for t in self.topics]
        for key in self._keys:
            try:
                self._r.xgroup_create(key, group, id=start_id, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        # entries this name received before a restart and never acknowledged come first
        self._history: dict[str, str] = {k: "0" for k in self._keys}

    def read(self, count: int = 100, block_ms: int = 0) -> list[Delivery]:
        """Own unacknowledged entries first, then stale ones of dead consumers, then new ones
        (waiting up to ``block_ms`` for those; 0 = do not wait).

        ``count`` bounds each topic's share (Redis applies COUNT per stream), so a consumer of
        several topics may get up to ``count`` × topics entries.
        """
        if count <= 0:
            raise ValueError("count must be positive")
        try:
            if self._history:
                out = self._read_history(count)
                if out:
                    return out
            if self.claim_idle_ms is not None:
                out = self.claim_stale(self.claim_idle_ms, count)
                if out:
                    return out
            resp = self._r.xreadgroup(
                self.group,
                self.name,
                {k: ">" for k in self._keys},
                count=count,
                block=block_ms if block_ms > 0 else None,
            )
        except redis.RedisError as exc:
            raise RedisBusError(f"read of {self.topics} for group {self.group!r} failed: {exc}") from exc
        return self._decode_streams(resp)

    def _read_history(self, count: int) -> list[Delivery]:
        resp = self._r.xreadgroup(self.group, self.name, dict(self._history), count=count)
        seen: set[str] = set()
        for key, entries in resp or []:
            k = key.decode() if isinstance(key, bytes) else key
            if entries:
                seen.add(k)
                last = entries[-1][0]
                self._history[k] = last.decode() if isinstance(last, bytes) else last
        for k in list(self._history):
            if k not in seen:
                del self._history[k]  # this stream's backlog is done
        return self._decode_streams(resp)

    def claim_stale(self, min_idle_ms: int, count: int = 100) -> list[Delivery]:
        """Take over entries another consumer of the group received but did not acknowledge."""
        out: list[Delivery] = []
        for key in self._keys:
            cursor: Any = "0-0"
            while len(out) < count:
                resp = self._r.xautoclaim(
                    key, self.group, self.name, min_idle_ms, cursor, count=count - len(out)
                )
                cursor, entries = resp[0], resp[1]
                out.extend(self._decode(key, entries))
                if cursor in (b"0-0", "0-0"):
                    break
        if out:
            log.info("bus_redis.claimed", group=self.group, consumer=self.name, entries=len(out))
        return out

    def _decode_streams(self, resp: Iterable[Any] | None) -> list[Delivery]:
        out: list[Delivery] = []
        for key, entries in resp or []:
            out.extend(self._decode(key, entries))
        return out

    def _decode(self, key: bytes | str, entries: Iterable[Any]) -> list[Delivery]:
        topic = self.bus.topic_of(key)
        out = []
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            sid = StreamId(topic, eid)
            if not fields:  # the entry was trimmed or deleted while pending
                self.ack(sid)
                continue
            try:
                out.append(Delivery(sid, topic, loads(fields[_FIELD])))
            except (CodecError, KeyError, UnicodeDecodeError) as exc:
                self._dead_letter(sid, fields, exc)
        return out

    def _dead_letter(self, sid: StreamId, fields: dict[bytes, bytes], exc: Exception) -> None:
        log.error("bus_redis.dead_letter", topic=sid.topic, entry=sid.entry, error=str(exc))
        self._r.xadd(
            f"{self.bus.prefix}:dead-letter",
            {
                b"topic": sid.topic.encode(),
                b"entry": sid.entry.encode(),
                b"group": self.group.encode(),
                b"error": str(exc).encode(),
                _FIELD: fields.get(_FIELD, b""),
            },
        )
        self.ack(sid)

    def ack(self, *ids: StreamId) -> int:
        """Acknowledge handled entries; until then they stay pending and will be redelivered."""
        by_key: dict[str, list[str]] = {}
        for sid in ids:
            if not isinstance(sid, StreamId):
                raise TypeError(f"ack takes StreamId values from read(), got {sid!r}")
            by_key.setdefault(self.bus.key(sid.topic), []).append(sid.entry)
        n = 0
        try:
            for key, entries in by_key.items():
                n += int(self._r.xack(key, self.group, *entries))
        except redis.RedisError as exc:
            raise RedisBusError(f"ack failed: {exc}") from exc
        return n

    def pending(self) -> int:
        """Entries of this group, all consumers, delivered but not acknowledged."""
        total = 0
        for key in self._keys:
            info = self._r.xpending(key, self.group)
            total += int(info["pending"])
        return total

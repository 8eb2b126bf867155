"""A :class:`~bastion.venues.kraken_ws.KrakenBookClient` on its own thread, for a synchronous runtime.

The client runs on a private event loop (like :class:`~bastion.venues.kraken_executions.ExecutionsThread`);
after every frame and every state change a publisher task on that loop copies the top ``levels``
of each side (raw ints at the instrument's precisions), the book's state and reason and the
counters into an immutable :class:`BookSnapshot`. The runtime reads :meth:`KrakenBookThread.snapshot`
from its own thread: one reference read, never a half-applied frame (frames are applied
synchronously on the loop, and the publisher only runs between them).

``version`` grows whenever the published top levels change, so a reader knows cheaply whether
there is anything new since it last looked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace

from bastion.venues.kraken_ws import KrakenBookClient
from bastion.venues.ws_book import BookState, RawLevel, StaleReason
from bastion.venues.ws_reconnect import ClientThread

DEFAULT_LEVELS = 20


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """What the websocket book looked like at ``published_at`` (``time.time()``)."""

    state: BookState
    reason: str | None  # why the book last went STALE (kept while SYNCING back), None when LIVE
    detail: str
    bids: tuple[RawLevel, ...]  # best first, (raw price, raw size)
    asks: tuple[RawLevel, ...]
    version: int  # bumped whenever bids/asks change
    published_at: float
    connected: bool
    # counters
    snapshots: int = 0
    updates: int = 0
    checksums_ok: int = 0
    checksum_failures: int = 0
    resyncs: int = 0  # a snapshot brought a STALE book back to LIVE
    resubscribes: int = 0
    connects: int = 0
    reconnects: int = 0
    errors: int = 0

    @property
    def live(self) -> bool:
        return self.state is BookState.LIVE

    def counters(self) -> dict[str, int]:
        return {
            "snapshots": self.snapshots,
            "updates": self.updates,
            "checksums_ok": self.checksums_ok,
            "checksum_failures": self.checksum_failures,
            "resyncs": self.resyncs,
            "resubscribes": self.resubscribes,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "errors": self.errors,
        }


class KrakenBookThread(ClientThread):
    """Runs a :class:`KrakenBookClient` on its own event loop thread: ``start()``, then
    ``snapshot()`` from any thread, ``stop()`` at shutdown."""

    client: KrakenBookClient

    def __init__(self, client: KrakenBookClient, *, levels: int = DEFAULT_LEVELS) -> None:
        if levels <= 0:
            raise ValueError("levels must be positive")
        super().__init__(client, f"kraken-book-{client.symbol}")
        self.levels = levels
        self._snapshot = self._take(0)

    def snapshot(self) -> BookSnapshot:
        """The newest published state (any thread). A dead thread reads as a disconnected book."""
        snap = self._snapshot
        if snap.live and not self.alive:
            return BookSnapshot(
                BookState.STALE, str(StaleReason.DISCONNECT), "book thread stopped", (), (),
                snap.version + 1, snap.published_at, False,
            )  # fmt: skip
        return snap

    # --- the loop thread -------------------------------------------------------------------------
    async def _body(self) -> None:
        publisher = asyncio.create_task(self._publisher(), name="kraken-book-publisher")
        try:
            await self.client.run()
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            self._publish()

    async def _publisher(self) -> None:
        while True:
            seen = self._marker()
            self._publish()
            await self.client.wait_until(lambda seen=seen: self._marker() != seen)  # type: ignore[misc]

    def _marker(self) -> tuple[object, ...]:
        c = self.client
        return (c.counters.frames, c.book.state, c.book.reason, c.connected)

    def _publish(self) -> None:
        prev = self._snapshot
        snap = self._take(prev.version)
        if snap.bids != prev.bids or snap.asks != prev.asks:
            snap = replace(snap, version=prev.version + 1)
        self._snapshot = snap  # one reference assignment: atomic for readers on other threads

    def _take(self, version: int) -> BookSnapshot:
        c, book = self.client, self.client.book
        bc = book.counters
        return BookSnapshot(
            state=book.state,
            reason=None if book.reason is None else str(book.reason),
            detail=book.detail,
            bids=tuple(book.bid_levels(self.levels)),
            asks=tuple(book.ask_levels(self.levels)),
            version=version,
            published_at=time.time(),
            connected=c.connected,
            snapshots=bc.snapshots,
            updates=bc.deltas,
            checksums_ok=bc.checksums_ok,
            checksum_failures=bc.stale[StaleReason.CHECKSUM],
            resyncs=bc.resyncs,
            resubscribes=c.counters.resubscribes,
            connects=c.counters.connects,
            reconnects=c.counters.reconnects,
            errors=c.counters.errors,
        )

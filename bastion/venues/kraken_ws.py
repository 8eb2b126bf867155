"""Kraken spot websocket v2 order book client: one symbol, kept exact and checked.

The client speaks Kraken's v2 protocol directly with the ``websockets`` library (no ccxt in
the data path) and feeds a :class:`~bastion.venues.ws_book.SyncedBook` that verifies Kraken's
CRC32 checksum after every snapshot and update. What it does when the book cannot be trusted:

* checksum mismatch / bad level  -> unsubscribe + subscribe on the same connection (a fresh
  snapshot); after ``max_resubscribes`` failed attempts in a row it reconnects instead;
* nothing received for ``stale_after_s`` (the injectable ``clock``; Kraken heartbeats count as
  "alive") or no snapshot that long after subscribing -> close and reconnect;
* connection dropped -> book STALE ("disconnect"), reconnect with exponential backoff, each
  reconnect logged.

Frames::

    -> {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}, "req_id": 1}
    <- {"channel": "book", "type": "snapshot"|"update",
        "data": [{"symbol", "bids": [{"price", "qty"}], "asks": [...], "checksum", "timestamp"}]}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect

from bastion.model.instruments import Instrument
from bastion.venues.ws_book import (
    BookState,
    Level,
    StaleReason,
    SyncedBook,
    kraken_v2_checksum,
    loads_exact,
)
from bastion.venues.ws_reconnect import ReconnectingClient

log = structlog.get_logger(__name__)

DEFAULT_URL = "wss://ws.kraken.com/v2"
VALID_DEPTHS = (10, 25, 100, 500, 1000)


@dataclass
class ClientCounters:
    connects: int = 0  # successful websocket handshakes
    reconnects: int = 0  # connection attempts after the first (successful or not)
    resubscribes: int = 0  # unsubscribe + subscribe on a live connection
    frames: int = 0  # frames received
    errors: int = 0  # error frames, failed subscriptions, unparseable frames


class KrakenBookClient(ReconnectingClient[ClientCounters]):
    """Keeps ``self.book`` in sync with Kraken's v2 ``book`` channel for one symbol.

    ``symbol`` is Kraken's v2 name (``"BTC/USD"``, the same as ccxt's unified symbol for
    spot). ``price_precision`` / ``size_precision`` are the pair's decimals (AssetPairs
    ``pair_decimals`` / ``lot_decimals``); the checksum is computed at exactly these.
    """

    reconnect_event = "kraken_ws.reconnect"

    def __init__(
        self,
        symbol: str,
        *,
        price_precision: int,
        size_precision: int,
        depth: int = 10,
        url: str = DEFAULT_URL,
        stale_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        watchdog_interval_s: float = 0.5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_resubscribes: int = 3,
        heartbeat_is_alive: bool = True,
        open_timeout_s: float = 10.0,
    ) -> None:
        if depth not in VALID_DEPTHS:
            raise ValueError(f"Kraken book depth must be one of {VALID_DEPTHS}, got {depth}")
        self.symbol = symbol
        self.depth = depth
        self.url = url
        self.watchdog_interval_s = watchdog_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_resubscribes = max_resubscribes
        self.heartbeat_is_alive = heartbeat_is_alive
        self.open_timeout_s = open_timeout_s
        self.counters = ClientCounters()
        self.book = SyncedBook(
            symbol,
            price_precision,
            size_precision,
            depth=depth,
            checksum_fn=kraken_v2_checksum,
            stale_after_s=stale_after_s,
            clock=clock,
            on_change=self._on_book_change,
        )
        self._req_id = 0
        self._init_reconnect(f"kraken-book-{symbol}")  # attempts count since the book was last LIVE
        self._resubscribes_since_live = 0

    @classmethod
    def for_instrument(cls, instrument: Instrument, **kwargs: Any) -> KrakenBookClient:
        """A client at the instrument's precisions (its symbol must be Kraken's v2 name)."""
        return cls(
            instrument.symbol,
            price_precision=instrument.price_precision,
            size_precision=instrument.size_precision,
            **kwargs,
        )

    # ----------------------------------------------------------------------------- public
    @property
    def is_tradeable(self) -> bool:
        return self.book.is_tradeable

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # ----------------------------------------------------------------------------- internals
    def _before_retry(self) -> None:
        self.book.mark_disconnected()
        self._notify()

    def _log_context(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "book_reason": str(self.book.reason)}

    def _on_book_change(self, book: SyncedBook) -> None:
        if book.state is BookState.LIVE:
            self._attempt = 0
            self._resubscribes_since_live = 0
        self._notify()

    def _request(self, method: str) -> dict[str, Any]:
        self._req_id += 1
        return {
            "method": method,
            "params": {"channel": "book", "symbol": [self.symbol], "depth": self.depth},
            "req_id": self._req_id,
        }

    async def _send(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        await ws.send(json.dumps(frame, separators=(",", ":")))

    async def _session(self) -> None:
        async with connect(self.url, open_timeout=self.open_timeout_s, max_size=2**24) as ws:
            self._ws = ws
            self.counters.connects += 1
            log.info("kraken_ws.connected", symbol=self.symbol, url=self.url)
            await self._send(ws, self._request("subscribe"))
            await self._subscribe_more(ws)
            self.book.begin_resync()
            self._notify()
            watchdog = asyncio.create_task(self._watchdog(ws))
            try:
                async for raw in ws:
                    self._on_frame(raw)
                    if self.book.needs_resync:
                        await self._resync(ws)
                    self._notify()
            finally:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog

    async def _subscribe_more(self, ws: ClientConnection) -> None:
        """Other channels a session needs next to the book (once per connection; none here)."""

    def _on_channel(self, channel: str, msg: dict[str, Any]) -> None:
        """A frame of a channel other than book, heartbeat and status (ignored here)."""

    async def _resync(self, ws: ClientConnection) -> None:
        if self._resubscribes_since_live >= self.max_resubscribes:
            log.warning(
                "kraken_ws.resync_by_reconnect",
                symbol=self.symbol,
                attempts=self._resubscribes_since_live,
                reason=str(self.book.reason),
            )
            await ws.close()
            return
        self._resubscribes_since_live += 1
        self.counters.resubscribes += 1
        log.warning(
            "kraken_ws.resubscribe",
            symbol=self.symbol,
            reason=str(self.book.reason),
            detail=self.book.detail,
        )
        await self._send(ws, self._request("unsubscribe"))
        await self._send(ws, self._request("subscribe"))
        self.book.begin_resync()

    async def _watchdog(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.watchdog_interval_s)
            if self.book.check_stale():
                # silence on an open socket: the connection itself is suspect, start afresh
                log.warning("kraken_ws.stale", symbol=self.symbol, detail=self.book.detail)
                await ws.close()
                return

    def _on_frame(self, raw: str | bytes) -> None:
        self.counters.frames += 1
        try:
            msg = loads_exact(raw)
        except ValueError as exc:
            self.counters.errors += 1
            log.warning("kraken_ws.bad_frame", symbol=self.symbol, error=str(exc))
            self.book.mark_stale(StaleReason.INVALID, "unparseable frame")
            return
        if not isinstance(msg, dict):
            return
        channel = msg.get("channel")
        if channel == "book":
            self._on_book(msg)
        elif channel == "heartbeat":
            if self.heartbeat_is_alive:
                self.book.touch()
        elif channel == "status":
            data = msg.get("data")
            first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
            log.info("kraken_ws.status", system=first.get("system"), version=first.get("version"))
        elif isinstance(channel, str):
            self._on_channel(channel, msg)
        elif msg.get("method") in ("subscribe", "unsubscribe"):
            if not msg.get("success", False):
                self.counters.errors += 1
                log.error("kraken_ws.request_failed", method=msg.get("method"), error=msg.get("error"))
        elif "error" in msg:
            self.counters.errors += 1
            log.error("kraken_ws.error", error=msg.get("error"))

    def _on_book(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        for item in msg.get("data") or []:
            if item.get("symbol") != self.symbol:
                continue
            try:
                bids = _levels(item.get("bids"))
                asks = _levels(item.get("asks"))
            except (KeyError, TypeError) as exc:
                self.book.mark_stale(StaleReason.INVALID, f"malformed level: {exc!r}")
                return
            checksum = item.get("checksum")
            if checksum is not None and not isinstance(checksum, int):
                self.book.mark_stale(StaleReason.INVALID, f"checksum {checksum!r}")
                return
            if kind == "snapshot":
                self.book.apply_snapshot(bids, asks, checksum=checksum)
            elif kind == "update":
                self.book.apply_delta(bids, asks, checksum=checksum)


def _levels(raw: Any) -> list[Level]:
    if raw is None:
        return []
    return [(lvl["price"], lvl["qty"]) for lvl in raw]

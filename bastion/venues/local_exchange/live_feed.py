"""Kraken's public websocket v2 as the local exchange's market: the live half of paper trading.

A recording replays a market that is over; paper trading is most honest against the one that is
happening. A :class:`LiveFeed` keeps one websocket v2 connection (Kraken's, or anything that
speaks its protocol) on its own thread, subscribed to one pair's ``book`` — through
:class:`~bastion.venues.kraken_ws.KrakenBookClient`, so every frame is checksummed and a bad one
resyncs — and ``trade`` channels, and turns what it sees into the exchange's market rows
(:data:`~bastion.venues.local_exchange.replay.MarketRow`, the codes a recording replays). The
exchange drains them and applies them through the same code as a replay, so resting paper orders
fill against live prints and crossing live levels with the same queue rules.

What makes the rows trustworthy:

* only a book the :class:`~bastion.venues.ws_book.SyncedBook` holds as LIVE (snapshot plus every
  update since, checksums matching) is ever turned into rows; while it is STALE or SYNCING the
  exchange keeps the last verified book rather than a guess;
* book rows are the difference between the verified top-``depth`` book and what was last emitted:
  the exchange's book has no window to truncate to, so a level that leaves the subscribed depth
  must be deleted explicitly;
* after any loss of sync (a checksum mismatch, a reconnect, an overflowing buffer) the next
  verified book is emitted whole, after a KIND_CLEAR: a diff against a book the exchange may not
  have would be wrong;
* trades come from the ``trade`` channel's ``update`` messages only (its ``snapshot`` is history,
  already reflected in the book), with the taker's side as the aggressor;
* rows carry the wall-clock time their frame arrived (ns) and raw integers at the pair's
  precisions, parsed from the frame's decimal text: no float ever touches a price.

``BASTION_OFFLINE=1`` (tests and CI) makes :meth:`LiveFeed.start` refuse any URL that is not on
this machine (:func:`check_offline`), whoever asks.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.client import ClientConnection

from bastion.model.fixed import raw_from_decimal
from bastion.venues.kraken_ws import DEFAULT_URL, KrakenBookClient
from bastion.venues.local_exchange.replay import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    KIND_CLEAR,
    KIND_LEVEL,
    KIND_TRADE,
    SIDE_ASK,
    SIDE_BID,
    MarketRow,
)
from bastion.venues.ws_book import BookState, RawLevel, StaleReason, SyncedBook
from bastion.venues.ws_reconnect import ClientThread

log = structlog.get_logger(__name__)

OFFLINE_ENV = "BASTION_OFFLINE"
DEFAULT_DEPTH = 25  # Kraken's v2 depths are 10, 25, 100, ...; 25 covers the runner's top 20
DEFAULT_MAX_ROWS = 500_000  # undrained rows kept before the buffer resets (and the book resyncs)
_AGGRESSOR = {"buy": AGGRESSOR_BUY, "sell": AGGRESSOR_SELL}


# --- the offline guard ---------------------------------------------------------------------------
class OfflineRefused(ValueError):
    """``BASTION_OFFLINE`` is set and the URL is not on this machine."""


def offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``BASTION_OFFLINE`` asks that nothing leave this machine (any value but 0/false/no)."""
    value = (os.environ if environ is None else environ).get(OFFLINE_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no")


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_offline(url: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse ``url`` while offline unless it is a loopback address."""
    if offline(environ) and not is_loopback_url(url):
        raise OfflineRefused(
            f"{OFFLINE_ENV}=1: refusing to connect to {url} (only 127.0.0.1, ::1 or localhost while offline)"
        )


# --- rows ------------------------------------------------------------------------------------------
class RowBuffer:
    """Rows between the feed's thread (appends) and the exchange (drains), behind one lock.

    Bounded: an exchange that stops draining must not grow memory without end. On overflow the
    buffer is emptied and the writer told, so it can restart the book with a full emission.
    """

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if max_rows <= 0:
            raise ValueError("max_rows must be positive")
        self.max_rows = max_rows
        self.rows = 0  # accepted in total
        self.dropped = 0  # thrown away by overflows
        self._lock = threading.Lock()
        self._rows: list[MarketRow] = []

    def extend(self, rows: list[MarketRow]) -> bool:
        """Append ``rows`` as one unit; False when the buffer overflowed and was emptied instead."""
        with self._lock:
            if len(self._rows) + len(rows) > self.max_rows:
                self.dropped += len(self._rows) + len(rows)
                self._rows = []
                return False
            self._rows.extend(rows)
            self.rows += len(rows)
            return True

    def drain(self) -> list[MarketRow]:
        with self._lock:
            out, self._rows = self._rows, []
        return out


class EmittedBook:
    """The top of book the exchange has been given, and the rows that take it to a newer one."""

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.whole = True  # the next rows must rebuild the exchange's book from nothing

    def invalidate(self) -> None:
        self.whole = True

    def rows_to(self, bids: list[RawLevel], asks: list[RawLevel], ts_ns: int) -> list[MarketRow]:
        out: list[MarketRow] = []
        if self.whole:
            out.append((ts_ns, KIND_CLEAR, 0, 0, 0))
            self.bids, self.asks = {}, {}
            self.whole = False
        new_bids, new_asks = dict(bids), dict(asks)
        out.extend(_side_rows(SIDE_BID, self.bids, new_bids, ts_ns))
        out.extend(_side_rows(SIDE_ASK, self.asks, new_asks, ts_ns))
        self.bids, self.asks = new_bids, new_asks
        return out


def _side_rows(side: int, old: dict[int, int], new: dict[int, int], ts_ns: int) -> list[MarketRow]:
    rows = [(ts_ns, KIND_LEVEL, side, p, 0) for p in old if p not in new]
    rows.extend((ts_ns, KIND_LEVEL, side, p, q) for p, q in new.items() if old.get(p) != q)
    return rows


# --- the websocket client ----------------------------------------------------------------------------
class FeedClient(KrakenBookClient):
    """The book client plus the ``trade`` channel on the same connection, writing rows.

    One connection for both keeps Kraken's own order between prints and book changes, which is
    the order matching must see them in.
    """

    def __init__(
        self,
        symbol: str,
        *,
        out: RowBuffer,
        price_precision: int,
        size_precision: int,
        wall_ns: Callable[[], int] = time.time_ns,
        **options: Any,
    ) -> None:
        self._out = out
        self._wall_ns = wall_ns
        self._emitted = EmittedBook()  # before super(): the book reports state changes to it
        self._frame_ns = 0
        self.live_once = threading.Event()  # set by the first verified book emitted
        self.full_books = 0  # CLEAR + whole book emissions (the first one, then every resync)
        self.trades = 0
        self.last_error: str | None = None  # why the last session ended
        super().__init__(symbol, price_precision=price_precision, size_precision=size_precision, **options)

    # --- hooks of KrakenBookClient / ReconnectingClient -------------------------------------------
    def _on_frame(self, raw: str | bytes) -> None:
        self._frame_ns = self._wall_ns()
        super()._on_frame(raw)

    def _reason(self, exc: BaseException) -> str:
        self.last_error = super()._reason(exc)
        return self.last_error

    def _on_book_change(self, book: SyncedBook) -> None:
        if book.state is not BookState.LIVE:
            self._emitted.invalidate()
        super()._on_book_change(book)

    def _on_book(self, msg: dict[str, Any]) -> None:
        super()._on_book(msg)
        if self.book.state is BookState.LIVE:
            self._emit_book()

    async def _subscribe_more(self, ws: ClientConnection) -> None:
        self._req_id += 1
        params = {"channel": "trade", "symbol": [self.symbol], "snapshot": False}
        await self._send(ws, {"method": "subscribe", "params": params, "req_id": self._req_id})

    def _on_channel(self, channel: str, msg: dict[str, Any]) -> None:
        if channel != "trade" or msg.get("type") != "update":
            return
        rows: list[MarketRow] = []
        for item in msg.get("data") or []:
            if not isinstance(item, dict) or item.get("symbol") != self.symbol:
                continue
            try:
                rows.append(self._trade_row(item))
            except (KeyError, TypeError, ValueError) as exc:
                self.counters.errors += 1
                log.warning("live_feed.bad_trade", symbol=self.symbol, error=repr(exc))
        if rows:
            if self._out.extend(rows):
                self.trades += len(rows)
            else:
                self._overflowed()

    # --- rows ---------------------------------------------------------------------------------------
    def _emit_book(self) -> None:
        whole = self._emitted.whole
        rows = self._emitted.rows_to(self.book.bid_levels(), self.book.ask_levels(), self._frame_ns)
        if not rows:
            return
        if not self._out.extend(rows):
            self._overflowed()
            return
        if whole:
            self.full_books += 1
            self.live_once.set()

    def _overflowed(self) -> None:
        self._emitted.invalidate()
        log.warning("live_feed.overflow", symbol=self.symbol, dropped=self._out.dropped, risk_level="medium")

    def _trade_row(self, item: dict[str, Any]) -> MarketRow:
        side = _AGGRESSOR[item["side"]]
        price, qty = item["price"], item["qty"]
        if isinstance(price, float) or isinstance(qty, float):
            raise ValueError("float in a trade (frames must be parsed with loads_exact)")
        p = raw_from_decimal(price, self.book.price_precision)
        q = raw_from_decimal(qty, self.book.size_precision)
        if p <= 0 or q <= 0:
            raise ValueError(f"trade price {price} / qty {qty} not positive")
        return (self._frame_ns, KIND_TRADE, side, p, q)


# --- the feed ------------------------------------------------------------------------------------------
class LiveFeed:
    """One pair's live market for the exchange: ``start()``, ``drain()`` from any thread, ``stop()``.

    ``price_precision`` / ``size_precision`` must be the pair's (AssetPairs ``pair_decimals`` /
    ``lot_decimals``): Kraken's checksum is computed at them and the rows are raw at them.
    ``options`` go to :class:`~bastion.venues.kraken_ws.KrakenBookClient` (``stale_after_s``,
    backoff, ``clock``...).
    """

    def __init__(
        self,
        symbol: str,
        *,
        price_precision: int,
        size_precision: int,
        url: str = DEFAULT_URL,
        depth: int = DEFAULT_DEPTH,
        max_rows: int = DEFAULT_MAX_ROWS,
        wall_ns: Callable[[], int] = time.time_ns,
        **options: Any,
    ) -> None:
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise ValueError(f"a live market URL must be ws:// or wss://, got {url!r}")
        self.symbol = symbol
        self.url = url
        self.price_precision = price_precision
        self.size_precision = size_precision
        self._buffer = RowBuffer(max_rows)
        self.client = FeedClient(
            symbol, out=self._buffer, price_precision=price_precision, size_precision=size_precision,
            wall_ns=wall_ns, depth=depth, url=url, **options,
        )  # fmt: skip
        self._thread = ClientThread(self.client, f"live-feed-{symbol}")
        self._started = False

    @property
    def source(self) -> str:
        return f"live {self.url}"

    def start(self) -> LiveFeed:
        check_offline(self.url)
        self._thread.start()
        self._started = True
        log.info("live_feed.started", symbol=self.symbol, url=self.url)
        return self

    def wait_live(self, timeout_s: float) -> bool:
        """Whether a verified book was emitted within ``timeout_s`` (at once if one already was)."""
        return self.client.live_once.wait(timeout_s)

    @property
    def live(self) -> bool:
        return self._started and self._thread.alive and self.client.book.state is BookState.LIVE

    def drain(self) -> list[MarketRow]:
        """Every row since the last drain, in arrival order."""
        return self._buffer.drain()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._thread.stop(timeout_s)

    @property
    def state(self) -> str:
        if not self._started:
            return "idle"
        if not self._thread.alive:
            return "stopped"
        book, c = self.client.book, self.client
        reason = None if book.reason is None else str(book.reason)
        if book.state is BookState.LIVE:
            return "live"
        if not c.connected:
            return "connecting" if reason is None else f"reconnecting ({reason})"
        if book.state is BookState.SYNCING:
            return "syncing" if reason is None else f"resyncing ({reason})"
        return f"stale ({reason})"

    def status(self) -> dict[str, Any]:
        """State and counters for the exchange's status endpoint (plain JSON values)."""
        c = self.client
        return {
            "url": self.url,
            "symbol": self.symbol,
            "state": self.state,
            "frames": c.counters.frames,
            "rows": self._buffer.rows,
            "trades": c.trades,
            "resyncs": max(0, c.full_books - 1),
            "reconnects": c.counters.reconnects,
            "checksum_failures": c.book.counters.stale[StaleReason.CHECKSUM],
            "errors": c.counters.errors,
            "dropped_rows": self._buffer.dropped,
            "last_error": c.last_error,
        }

"""HTTP front of the local exchange: Kraken's REST paths, fault injection, loopback only.

Routes are Kraken's (``/0/public/<Method>``, GET or POST; ``/0/private/<Method>``, POST, signed),
answers are ``{"error": [], "result": ...}`` with HTTP 200 even for errors, as Kraken does. The
order of events per request is what makes the fault tests meaningful: a "before" fault returns
before the exchange sees the request; otherwise the exchange processes it and commits; only then
may an "after" fault swallow, break or delay the answer.

Kraken's websocket v2 (``book``, ``trade``, our own ``executions``) is served on the same port at
``/v2`` (public) and ``/v2-auth`` (authenticated): see :mod:`bastion.venues.local_exchange.ws`.

``/_bastion/faults`` and ``/_bastion/advance`` let a chaos harness that runs the exchange as a
separate process change faults and step the market; ``GET /_bastion/market`` says where the
market comes from (a replayed file or a live feed, with the feed's counters, and why when a live
market was asked for and not used), so a runner can show it. All require the configured
``API-Key`` header. The server refuses to bind anything but a loopback address: it holds dummy keys and
answers without rate limits, and is not meant to be reachable from anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from bastion.venues.local_exchange.auth import KrakenError, parse_body
from bastion.venues.local_exchange.exchange import (
    DEFAULT_BALANCES,
    E_INTERNAL,
    E_UNKNOWN_METHOD,
    Exchange,
    ExchangeConfig,
    LiveMarket,
)
from bastion.venues.local_exchange.faults import FaultConfig, FaultInjector
from bastion.venues.local_exchange.pairs import DEFAULT_PAIRS
from bastion.venues.local_exchange.replay import MarketEvents
from bastion.venues.local_exchange.ws import PRIVATE_PATH, PUBLIC_PATH, KrakenWsHub

log = logging.getLogger(__name__)

RATE_LIMIT = "EAPI:Rate limit exceeded"
_BAD_GATEWAY = "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"


def check_loopback(host: str) -> None:
    """Refuse to serve on anything but this machine."""
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"the local exchange binds to loopback addresses only (127.0.0.1, ::1), not {host!r}"
        )


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(doc), status=status, content_type="application/json")


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the client sees a disconnect)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


class ExchangeServer:
    """The aiohttp application around one :class:`Exchange`."""

    def __init__(
        self,
        exchange: Exchange,
        faults: FaultInjector | None = None,
        *,
        tick_s: float = 0.1,
        market_note: Mapping[str, Any] | None = None,
    ) -> None:
        self.exchange = exchange
        self.faults = faults or FaultInjector()
        exchange.take_cap = self.faults.take_cap
        self.tick_s = tick_s
        # how the market source was chosen (requested / used / reason), for /_bastion/market
        self.market_note = dict(market_note or {})
        self.ws = KrakenWsHub(exchange)
        self.ws.market_stalled = self._market_stalled
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    def _market_stalled(self) -> bool:
        """No book or trade frames while the market is not current (under the exchange lock)."""
        return self.exchange.market_down() is not None or self.faults.feed_stalled(time.monotonic())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/0/{api:public|private}/{method}", self._handle)
        app.router.add_route("GET", "/_bastion/faults", self._get_faults)
        app.router.add_route("POST", "/_bastion/faults", self._set_faults)
        app.router.add_route("POST", "/_bastion/advance", self._advance)
        app.router.add_route("GET", "/_bastion/market", self._market)
        self.ws.add_routes(app)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        check_loopback(host)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if self.exchange.config.speed > 0 or self.exchange.live:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return self.port

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.ws.shutdown()  # open websockets would otherwise hold the shutdown up
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _tick(self) -> None:
        """Let resting orders fill while no client is asking (the market does not wait)."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.exchange.tick()
            except Exception:
                log.exception("market tick failed")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        api = request.match_info["api"]
        method = request.match_info["method"]
        private = api == "private"
        fault = self.faults.decide(method, private)
        cfg = self.faults.config
        if fault == "drop":
            return _drop(request)
        if fault == "http_5xx":
            return web.Response(status=cfg.status_5xx, text=_BAD_GATEWAY, content_type="text/html")
        if fault == "rate_limit":
            return _json({"error": [RATE_LIMIT]})
        body = await request.text()
        status = 200
        try:
            if private:
                if request.method != "POST":
                    raise KrakenError(E_UNKNOWN_METHOD)
                params = parse_body(body, request.content_type)
                if method == "AddOrder":
                    self.faults.note_new_order(time.monotonic())
                result = self.exchange.private(method, body, params, request.headers)
            else:
                params = dict(request.query)
                if request.method == "POST" and body:
                    params.update(parse_body(body, request.content_type))
                result = self._public(method, params)
            doc: dict[str, Any] = {"error": [], "result": result}
        except KrakenError as exc:
            doc = {"error": [exc.code]}
            if exc.code == E_UNKNOWN_METHOD:
                status = 404
            elif exc.code == E_INTERNAL:
                status = 500
        # the request is processed and committed; what the client gets may still go wrong
        if fault == "lost_answer":
            return _drop(request)
        if fault == "http_5xx_after":
            return web.Response(status=cfg.status_5xx, text=_BAD_GATEWAY, content_type="text/html")
        if fault == "delay":
            await asyncio.sleep(cfg.delay_s)
        return _json(doc, status)

    def _public(self, method: str, params: dict[str, str]) -> Any:
        """Public answers, except that a stalled feed repeats the book frozen at the stall's start."""
        if method != "Depth":
            return self.exchange.public(method, params)
        stalled, starts = self.faults.stalled(time.monotonic())
        if not stalled:
            return self.exchange.public(method, params)
        frozen: dict[str, Any] = self.faults.stall_doc if isinstance(self.faults.stall_doc, dict) else {}
        if starts:
            frozen = {}
        key = params.get("pair", "")
        if key not in frozen:  # the first request for a pair in this stall fixes its book
            frozen[key] = self.exchange.public(method, {**params, "count": "500"})
        self.faults.stall_doc = frozen
        count = int(params.get("count", "100") or 100)
        return {
            pair: {side: rows[:count] for side, rows in book.items()} for pair, book in frozen[key].items()
        }

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("API-Key") == self.exchange.config.api_key

    async def _get_faults(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json({"error": ["EAPI:Invalid key"]}, 403)
        return _json({"config": self.faults.config.to_dict(), "injected": self.faults.injected})

    async def _set_faults(self, request: web.Request) -> web.Response:
        """Body: FaultConfig fields, plus optional ``force: [[kind, endpoint|null, times], ...]``."""
        if not self._authorized(request):
            return _json({"error": ["EAPI:Invalid key"]}, 403)
        try:
            doc = await request.json()
            force = doc.pop("force", [])
            self.faults.configure(FaultConfig.from_dict(doc))
            for kind, endpoint, times in force:
                self.faults.force(kind, endpoint, int(times))
        except (ValueError, TypeError) as exc:
            return _json({"error": [f"EGeneral:Invalid arguments:{exc}"]}, 400)
        return _json({"config": self.faults.config.to_dict()})

    async def _market(self, request: web.Request) -> web.Response:
        """``?levels=N`` adds each pair's best N buckets (see ``Exchange.market_status``)."""
        if not self._authorized(request):
            return _json({"error": ["EAPI:Invalid key"]}, 403)
        try:
            levels = int(request.query.get("levels", "0"))
        except ValueError:
            return _json({"error": ["EGeneral:Invalid arguments:levels"]}, 400)
        pairs = self.exchange.market_status(max(0, min(levels, 500)))
        used = "live" if any(p["source"] == "live" for p in pairs.values()) else "replay"
        doc = {"requested": used, "used": used, "reason": None, **self.market_note, "pairs": pairs}
        return _json(doc)

    async def _advance(self, request: web.Request) -> web.Response:
        """Body: ``{"pair": optional, "events": optional int}`` (all remaining events if omitted)."""
        if not self._authorized(request):
            return _json({"error": ["EAPI:Invalid key"]}, 403)
        try:
            doc = await request.json() if request.can_read_body else {}
            events = doc.get("events")
            n = self.exchange.advance_market(doc.get("pair"), events=None if events is None else int(events))
        except KrakenError as exc:
            return _json({"error": [exc.code]})
        except (ValueError, TypeError, AttributeError) as exc:
            return _json({"error": [f"EGeneral:Invalid arguments:{exc}"]}, 400)
        return _json({"error": [], "result": {"applied": n}})


class ServerThread:
    """Runs an :class:`ExchangeServer` on its own event loop thread (for tests and sync callers)."""

    def __init__(
        self,
        exchange: Exchange,
        faults: FaultInjector | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        check_loopback(host)
        self.server = ExchangeServer(exchange, faults)
        self.host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def exchange(self) -> Exchange:
        return self.server.exchange

    @property
    def faults(self) -> FaultInjector:
        return self.server.faults

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """Kraken's ``wss://ws.kraken.com/v2`` here (ccxt: ``urls['api']['ws']['publicV2']``)."""
        return f"ws://{self.host}:{self.port}{PUBLIC_PATH}"

    @property
    def ws_auth_url(self) -> str:
        """Kraken's ``wss://ws-auth.kraken.com/v2`` here (ccxt: ``urls['api']['ws']['privateV2']``)."""
        return f"ws://{self.host}:{self.port}{PRIVATE_PATH}"

    def drop_websockets(self, *, private_only: bool = False) -> int:
        """Close the open websocket connections from the server side (a forced disconnect)."""
        return self.server.ws.drop_connections(private_only=private_only)

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="local-exchange", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError("local exchange failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.server.start(self.host, self._port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self.server.stop())
        loop.close()

    def stop(self, *, close_exchange: bool = True) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if close_exchange:
            self.exchange.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    host: str,
    port: int,
    api_key: str,
    api_secret: str,
    state_dir: str | Path,
    market: Mapping[str, MarketEvents] | None = None,
    speed: float = 1.0,
    *,
    feeds: Mapping[str, LiveMarket] | None = None,
    market_note: Mapping[str, Any] | None = None,
    faults: FaultConfig | None = None,
    pairs: tuple[str, ...] = DEFAULT_PAIRS,
    initial_balances: Mapping[str, str] | None = None,
    clordid_scope: str = "all",
) -> None:
    """Run the exchange until SIGINT/SIGTERM (the body of ``bastion exchange``).

    ``market`` maps Kraken pair ids (``XBTUSDT``, ``XXBTZUSD``) to recorded events and ``feeds``
    to live markets (started and stopped by the caller); a pair without either is listed with an
    empty book (limit orders rest, market orders find no liquidity). ``market_note`` is how the
    caller chose the market, reported by ``/_bastion/market``.
    """
    check_loopback(host)
    config = ExchangeConfig(
        api_key=api_key,
        api_secret=api_secret,
        state_dir=Path(state_dir),
        pairs=pairs,
        initial_balances=dict(initial_balances if initial_balances is not None else DEFAULT_BALANCES),
        speed=speed,
        clordid_scope=clordid_scope,
    )
    exchange = Exchange(config, market, feeds=feeds)

    async def main() -> None:
        server = ExchangeServer(exchange, FaultInjector(faults), market_note=market_note)
        bound = await server.start(host, port)
        log.info(
            "local exchange listening on http://%s:%d, websocket v2 at %s and %s (state %s)",
            host,
            bound,
            PUBLIC_PATH,
            PRIVATE_PATH,
            config.state_dir,
        )
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, done.set)
        await done.wait()
        await server.stop()

    try:
        asyncio.run(main())
    finally:
        exchange.close()

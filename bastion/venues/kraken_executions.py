"""Kraken spot websocket v2 ``executions``: our own orders' acks, fills and ends as Bastion events.

The client holds one authenticated connection (``wss://ws-auth.kraken.com/v2``), subscribes to
``executions`` with a token from REST ``GetWebSocketsToken`` (fetched through a callable, e.g.
:func:`ccxt_token_fn` around ccxt's signed ``private_post_getwebsocketstoken``) and turns the
execution reports into :class:`~bastion.model.events.OrderEvent`s that a synchronous runtime
takes with :meth:`KrakenExecutionsClient.drain` (thread-safe).

Reports -> events:

* ``new`` (and an open order in a snapshot) -> :class:`OrderAccepted`, once per order;
* ``trade`` -> :class:`OrderFilled` with an exact :class:`Fill`: price, quantity and fee from the
  frame's digits (frames are parsed with ``parse_float=Decimal``), ``trade_id`` = ``exec_id``
  (the key REST ``TradesHistory`` uses, so a fill seen here and by polling is one fill);
  each ``exec_id`` is delivered once;
* ``canceled`` -> :class:`OrderCanceled`, ``expired`` -> :class:`OrderExpired`, ``rejected``
  -> :class:`OrderRejected` (Kraken's spot documentation lists no ``rejected`` exec type; it is
  mapped in case one comes), once per order;
* ``pending_new``, ``filled`` (the fills already carry it), ``amended``, ``restated``,
  ``status``, ``iceberg_refill`` -> nothing, but ``pending_new`` teaches the order's symbol and
  side.

``cl_ord_id`` is mapped back to our client id with ``client_id_of`` (ids longer than Kraken's 18
characters go out as a UUID, see :func:`~bastion.venues.ccxt_venue.venue_client_id`;
:class:`ClientIdMap` undoes that). Reports of orders that are not ours (``client_id_of`` says
None, or no ``cl_ord_id`` ever seen) are counted and dropped. A report without ``symbol`` (Kraken's
``canceled`` has none) is attributed through what earlier reports of the same ``order_id`` said,
or to the only instrument when there is one.

Reconnects: a dropped connection, an error answer to the subscription (an invalid or expired
token: ``ESession:Invalid session``) or a hole in the ``sequence`` numbers closes the
connection; the client fetches a fresh token and reconnects with exponential backoff, logging
every attempt (``kraken_executions.reconnect``). It subscribes with ``snap_trades`` so the
snapshot after a reconnect carries the last 50 fills: a fill that happened while the client was
away is delivered then (duplicates are dropped by ``exec_id``). A cancel or an order that both
opened and ended while it was away is in no snapshot: the runtime must keep polling the venue
by client id as the backup (``CcxtVenue.query`` / ``poll_events``), as it does for REST-only
venues.

Fields this client relies on that are not in a recorded message (only in Kraken's documentation
or our reading of it): ``cl_ord_id`` on every report of an order that has one, ``timestamp`` on
trade reports, ``sequence`` contiguous per connection starting at 1 with the snapshot.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from websockets.asyncio.client import connect

from bastion.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from bastion.model.fixed import Money, Price, Quantity
from bastion.model.instruments import Instrument
from bastion.model.orders import Fill, Liquidity, Side
from bastion.venues.ccxt_venue import venue_client_id
from bastion.venues.ws_book import loads_exact
from bastion.venues.ws_reconnect import NETWORK_ERRORS, ClientThread, ReconnectingClient

log = structlog.get_logger(__name__)

DEFAULT_URL = "wss://ws-auth.kraken.com/v2"
TokenFn = Callable[[], "str | Awaitable[str]"]

_NS = 1_000_000_000
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)
_TS = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(?:Z|\+00:00)$")
_SILENT = frozenset({"pending_new", "filled", "amended", "restated", "status", "iceberg_refill"})


def parse_rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of a Kraken v2 timestamp (UTC, up to 9 fraction digits)."""
    m = _TS.match(text)
    if m is None:
        raise ValueError(f"not a UTC RFC 3339 timestamp: {text!r}")
    sec = int(datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    frac = (m.group(2) or "").ljust(9, "0")
    return sec * _NS + int(frac)


def token_from_response(doc: Any) -> str:
    """The token of a ``GetWebSocketsToken`` answer ``{"error": [], "result": {"token", "expires"}}``."""
    result = doc.get("result") if isinstance(doc, dict) else None
    token = result.get("token") if isinstance(result, dict) else None
    if not isinstance(token, str) or not token:
        raise RuntimeError(f"GetWebSocketsToken returned no token: {doc!r}")
    return token


def ccxt_token_fn(exchange: Any) -> TokenFn:
    """A token fetcher over a ccxt Kraken instance (sync or async_support), signed by ccxt."""
    method = exchange.private_post_getwebsocketstoken

    def fetch() -> str | Awaitable[str]:
        res = method()
        if inspect.isawaitable(res):
            pending = res

            async def later() -> str:
                return token_from_response(await pending)

            return later()
        return token_from_response(res)

    return fetch


def _uuid_key(cl_ord_id: str) -> str:
    """A cl_ord_id as Kraken compares it: a UUID in either spelling is one id."""
    return cl_ord_id.replace("-", "").lower() if _UUID.fullmatch(cl_ord_id) else cl_ord_id


class ClientIdMap:
    """Our client order ids from the ``cl_ord_id`` Kraken echoes.

    :meth:`register` each client id before (or when) it is sent; it returns what goes out as
    ``cl_ord_id``. An id Kraken accepts as it is maps to itself even unregistered (after a restart
    the short ids still resolve); with ``strict`` an unregistered id maps to None (not ours).
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._ours: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, client_order_id: str) -> str:
        vid = venue_client_id(client_order_id)
        with self._lock:
            self._ours[_uuid_key(vid)] = client_order_id
        return vid

    def __call__(self, cl_ord_id: str) -> str | None:
        with self._lock:
            ours = self._ours.get(_uuid_key(cl_ord_id))
        if ours is not None:
            return ours
        if self.strict or venue_client_id(cl_ord_id) != cl_ord_id:
            return None
        return cl_ord_id


@dataclass
class ExecCounters:
    connects: int = 0  # successful websocket handshakes
    reconnects: int = 0  # connection attempts after the first
    tokens: int = 0  # tokens fetched
    subscribed: int = 0  # successful executions subscriptions
    frames: int = 0
    reports: int = 0  # execution reports read (snapshot items included)
    events: int = 0  # events queued
    duplicates: int = 0  # fills already delivered (same exec_id), e.g. in a snapshot
    unmapped: int = 0  # reports of orders whose client id or instrument is unknown
    gaps: int = 0  # holes in the sequence numbers (each forces a reconnect)
    errors: int = 0  # error frames, unparseable frames, failed subscriptions
    auth_errors: int = 0  # subscriptions refused for the token


@dataclass(slots=True)
class _OrderInfo:
    symbol: str | None = None
    side: str | None = None
    cid: str | None = None
    foreign: bool = False
    acked: bool = False
    done: bool = False


class _Resync(Exception):
    """Close this connection and start afresh (token, connect, snapshot)."""


class KrakenExecutionsClient(ReconnectingClient[ExecCounters]):
    """Streams our order events from Kraken's v2 ``executions`` channel; see the module docstring.

    ``instruments`` maps Kraken v2 symbols (``BTC/USD``) to Bastion instruments (the events'
    ``instrument_id`` and the fills' precisions). ``token`` returns a fresh websockets token (a
    string, or an awaitable of one); a synchronous callable is run in a worker thread.
    """

    retry_on = (Exception,)  # network trouble, a failed token fetch and forced resyncs alike
    reconnect_event = "kraken_executions.reconnect"

    def __init__(
        self,
        token: TokenFn,
        instruments: Mapping[str, Instrument],
        *,
        url: str = DEFAULT_URL,
        client_id_of: Callable[[str], str | None] | None = None,
        snap_trades: bool = True,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        max_remembered: int = 100_000,
    ) -> None:
        if not instruments:
            raise ValueError("at least one instrument")
        self.url = url
        self.instruments = dict(instruments)
        self.client_id_of: Callable[[str], str | None] = client_id_of or (lambda cl: cl)
        self.snap_trades = snap_trades
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.max_remembered = max_remembered
        self.counters = ExecCounters()
        self.last_error: str | None = None
        self._token = token
        self._events: deque[OrderEvent] = deque()
        self._events_lock = threading.Lock()
        self._orders: dict[str, _OrderInfo] = {}
        self._order_ids: deque[str] = deque()
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._subscribed = False
        self._sequence: int | None = None
        self._req_id = 0
        self._init_reconnect("kraken-executions")

    # --- public -------------------------------------------------------------------------------------
    @property
    def subscribed(self) -> bool:
        """True while the current connection has a live executions subscription."""
        return self._subscribed

    def drain(self) -> list[OrderEvent]:
        """Every event queued since the last call, in arrival order (any thread)."""
        with self._events_lock:
            out = list(self._events)
            self._events.clear()
        return out

    # --- the connection -------------------------------------------------------------------------------
    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, _Resync):
            return str(exc)
        reason = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, NETWORK_ERRORS):  # the token fetch (REST) failed: retried like a drop
            self.last_error = reason
        return reason

    def _on_session_end(self) -> None:
        self._subscribed = False
        self._notify()

    async def _fetch_token(self) -> str:
        res = await asyncio.to_thread(self._token)
        if inspect.isawaitable(res):
            res = await res
        if not isinstance(res, str) or not res:
            raise RuntimeError("the token callable returned no token")
        self.counters.tokens += 1
        return res

    async def _session(self) -> None:
        token = await self._fetch_token()
        async with connect(self.url, open_timeout=self.open_timeout_s, max_size=2**24) as ws:
            self._ws = ws
            self._sequence = None
            self.counters.connects += 1
            log.info("kraken_executions.connected", url=self.url)
            self._req_id += 1
            frame = {
                "method": "subscribe",
                "params": {
                    "channel": "executions",
                    "token": token,
                    "snap_orders": True,
                    "snap_trades": self.snap_trades,
                },
                "req_id": self._req_id,
            }
            await ws.send(json.dumps(frame, separators=(",", ":")))
            self._notify()
            async for raw in ws:
                self._on_frame(raw)
                self._notify()

    def _on_frame(self, raw: str | bytes) -> None:
        self.counters.frames += 1
        try:
            msg = loads_exact(raw)
        except ValueError as exc:
            self.counters.errors += 1
            raise _Resync(f"unparseable frame: {exc}") from exc
        if not isinstance(msg, dict):
            return
        channel = msg.get("channel")
        if channel == "executions":
            self._on_executions(msg)
        elif channel in ("heartbeat", "status"):
            return
        elif msg.get("method") == "subscribe":
            self._on_ack(msg)
        elif "error" in msg:
            self.counters.errors += 1
            self.last_error = str(msg.get("error"))
            log.error("kraken_executions.error", error=msg.get("error"), method=msg.get("method"))

    def _on_ack(self, msg: dict[str, Any]) -> None:
        if msg.get("success"):
            self._subscribed = True
            self._attempt = 0
            self.counters.subscribed += 1
            log.info("kraken_executions.subscribed", url=self.url)
            return
        error = str(msg.get("error"))
        self.counters.errors += 1
        self.last_error = error
        if "session" in error.lower() or "token" in error.lower():
            self.counters.auth_errors += 1
        log.error("kraken_executions.subscribe_failed", error=error)
        raise _Resync(f"subscription refused: {error}")

    def _on_executions(self, msg: dict[str, Any]) -> None:
        seq = msg.get("sequence")
        if isinstance(seq, int):
            if self._sequence is not None and seq != self._sequence + 1:
                self.counters.gaps += 1
                log.warning("kraken_executions.gap", expected=self._sequence + 1, got=seq)
                raise _Resync(f"sequence gap: expected {self._sequence + 1}, got {seq}")
            self._sequence = seq
        snapshot = msg.get("type") == "snapshot"
        data = msg.get("data") or []
        items = [d for d in data if isinstance(d, dict)]
        if snapshot:  # learn every order first: snapshot fills may precede their orders
            for item in items:
                if item.get("exec_type") != "trade":
                    self._learn(item)
        for item in items:
            self.counters.reports += 1
            try:
                self._on_report(item, snapshot=snapshot)
            except (KeyError, TypeError, ValueError) as exc:
                self.counters.errors += 1
                log.error("kraken_executions.bad_report", error=repr(exc), order_id=item.get("order_id"))

    # --- reports -> events ----------------------------------------------------------------------------
    def _learn(self, item: dict[str, Any]) -> _OrderInfo | None:
        order_id = item.get("order_id")
        if not isinstance(order_id, str):
            return None
        info = self._orders.get(order_id)
        if info is None:
            info = self._orders[order_id] = _OrderInfo()
            self._order_ids.append(order_id)
            if len(self._order_ids) > self.max_remembered:
                self._orders.pop(self._order_ids.popleft(), None)
        if isinstance(item.get("symbol"), str):
            info.symbol = item["symbol"]
        if isinstance(item.get("side"), str):
            info.side = item["side"]
        cl = item.get("cl_ord_id")
        if isinstance(cl, str) and cl and info.cid is None and not info.foreign:
            cid = self.client_id_of(cl)
            if cid is None:
                info.foreign = True
            else:
                info.cid = cid
        return info

    def _instrument(self, info: _OrderInfo) -> Instrument | None:
        if info.symbol is not None:
            return self.instruments.get(info.symbol)
        if len(self.instruments) == 1:
            return next(iter(self.instruments.values()))
        return None

    def _emit(self, event: OrderEvent) -> None:
        with self._events_lock:
            self._events.append(event)
        self.counters.events += 1

    def _on_report(self, item: dict[str, Any], *, snapshot: bool) -> None:
        info = self._learn(item)
        exec_type = item.get("exec_type")
        if info is None or info.foreign:
            return
        inst = self._instrument(info)
        if info.cid is None or inst is None:
            self.counters.unmapped += 1
            log.info("kraken_executions.unmapped", order_id=item.get("order_id"), exec_type=exec_type)
            return
        cid, iid = info.cid, inst.id
        ts = parse_rfc3339_ns(item["timestamp"]) if isinstance(item.get("timestamp"), str) else time.time_ns()
        if exec_type == "trade":
            fill = self._fill(item, info, inst, cid, ts)
            if fill is not None:
                self._emit(OrderFilled(cid, iid, ts, fill))
            return
        status = item.get("order_status")
        if exec_type == "new" or (snapshot and status in ("new", "partially_filled")):
            if not info.acked:
                info.acked = True
                self._emit(OrderAccepted(cid, iid, ts))
            return
        if exec_type in _SILENT:
            if exec_type == "filled":
                info.done = True
            return
        if info.done:
            return
        if exec_type == "canceled":
            info.done = True
            self._emit(OrderCanceled(cid, iid, ts))
        elif exec_type == "expired":
            info.done = True
            self._emit(OrderExpired(cid, iid, ts))
        elif exec_type == "rejected":
            info.done = True
            self._emit(OrderRejected(cid, iid, ts, str(item.get("reason") or "")))
        else:
            log.info(
                "kraken_executions.unknown_exec_type", exec_type=exec_type, order_id=item.get("order_id")
            )

    def _fill(
        self, item: dict[str, Any], info: _OrderInfo, inst: Instrument, cid: str, ts: int
    ) -> Fill | None:
        exec_id = str(item["exec_id"])
        if exec_id in self._seen:
            self.counters.duplicates += 1
            return None
        side = item.get("side") or info.side
        if side not in ("buy", "sell"):
            raise ValueError(f"fill {exec_id} without a side")
        fee = Money.zero(inst.money_precision, inst.quote)
        fees = item.get("fees")
        if isinstance(fees, list) and fees:
            first = fees[0]
            fee = Money.from_str(
                _dec(first["qty"]), inst.money_precision, str(first.get("asset") or inst.quote)
            )
        fill = Fill(
            client_order_id=cid,
            instrument_id=inst.id,
            side=Side.BUY if side == "buy" else Side.SELL,
            price=Price.from_str(_dec(item["last_price"]), inst.price_precision),
            quantity=Quantity.from_str(_dec(item["last_qty"]), inst.size_precision),
            fee=fee,
            liquidity=Liquidity.MAKER if item.get("liquidity_ind") == "m" else Liquidity.TAKER,
            ts_event=ts,
            trade_id=exec_id,
        )
        self._seen.add(exec_id)
        self._seen_order.append(exec_id)
        if len(self._seen_order) > self.max_remembered:
            self._seen.discard(self._seen_order.popleft())
        return fill


class ExecutionsThread(ClientThread):
    """Runs a :class:`KrakenExecutionsClient` on its own event loop thread, for a synchronous
    runtime: ``start()``, then ``drain()`` from the runtime's loop, ``stop()`` at shutdown."""

    client: KrakenExecutionsClient

    def __init__(self, client: KrakenExecutionsClient) -> None:
        super().__init__(client, "kraken-executions")

    def drain(self) -> list[OrderEvent]:
        return self.client.drain()

    @property
    def subscribed(self) -> bool:
        return self.client.subscribed


def _dec(value: Any) -> Decimal | int | str:
    """A frame number as exact text/Decimal; a float here means the frame was not parsed exactly."""
    if isinstance(value, float):
        raise ValueError(f"float {value!r} in an execution report (parse frames with loads_exact)")
    if isinstance(value, Decimal | int | str):
        return value
    raise TypeError(f"not a number: {value!r}")

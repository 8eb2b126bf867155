"""Kraken's websocket v2 on the local exchange: ``book``, ``trade`` and our own ``executions``.

Kraken serves v2 at ``wss://ws.kraken.com/v2`` (public channels) and ``wss://ws-auth.kraken.com/v2``
(private channels, authenticated by a token from the REST method ``GetWebSocketsToken``). The
local exchange serves the same protocol next to its REST paths: public at :data:`PUBLIC_PATH`
(``/v2``) and authenticated at :data:`PRIVATE_PATH` (``/v2-auth``, which also serves the public
channels). Point ccxt at them with ``urls['api']['ws']['publicV2']`` / ``['privateV2']``.

**How changes reach the sockets.** :class:`KrakenWsHub` is a commit listener of the
:class:`~bastion.venues.local_exchange.exchange.Exchange`: after every commit (a REST request, a
market tick, ``advance_market``, a test's ``counterparty_fill``) it runs in the committing
thread, under the exchange lock, and turns what changed into frames for every subscriber:

* ``book``: the pair's current top ``depth`` levels (the replayed market plus our own resting
  orders, the same levels REST ``Depth`` shows) are diffed against what that subscriber was last
  sent; changed and new levels are sent, and ``qty: 0`` only for a level that left the book.
  A level pushed out of the window by a better one gets no delete, as on Kraken: clients
  truncate to their depth after every message. Every snapshot and update carries Kraken's CRC32
  checksum of the top 10 (:func:`~bastion.venues.ws_book.kraken_v2_checksum`, the same function
  clients verify with), so what the socket says is what the book is;
* ``trade``: the public prints of that commit (ours included), one message per commit;
* ``executions``: reports for our orders, one message each (see :func:`execution_reports`).

Frames are queued per connection in commit order and written by one task per connection, so
a subscriber sees every commit, in order, and never a state ahead of the disk. A connection
that falls more than ``max_outbox`` frames behind is closed (the client reconnects and gets a
fresh snapshot) rather than growing memory without bound.

Numbers are written exactly: prices at the pair's ``pair_decimals``, quantities at
``lot_decimals``, costs and quote fees at ``cost_decimals``, as JSON numbers with all their
digits (``0.50000000``), so a client parsing with ``parse_float=Decimal`` gets the exact value
and the checksum digits. Kraken's recorded frames (``shared/fixtures/ccxt/ws/kraken.json``) only
survive as parsed floats, so the on-the-wire digit count is our choice, not a recording's.

What is verified against recordings (the ccxt ws fixtures) and what is Kraken's documentation or
our reading of it is listed per frame type in the docstrings below and in ``docs/venues.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bastion.model.fixed import format_raw
from bastion.venues.local_exchange.book import ASK, BID
from bastion.venues.local_exchange.exchange import Committed, Exchange, OrderRec, PairVenue, TradeRec
from bastion.venues.local_exchange.pairs import ASSETS, PairSpec
from bastion.venues.ws_book import SyncedBook, kraken_v2_checksum

log = logging.getLogger(__name__)

PUBLIC_PATH = "/v2"
PRIVATE_PATH = "/v2-auth"
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
TRADE_SNAPSHOT = 50  # Kraken: a trade snapshot holds the last 50 trades
EXEC_SNAPSHOT_TRADES = 50  # Kraken: snap_trades gives the last 50 fills
STATUS_VERSION = "2.0.10"  # what the recorded status frames say

# error texts: the first three are in ccxt's Kraken error table (what clients match on); the
# session error is what third-party Kraken clients' tests show for a bad token; the others are ours
E_PAIR = "Currency pair not supported"
E_DEPTH = "Subscription depth not supported"
E_MALFORMED = "Malformed request"
E_SESSION = "ESession:Invalid session"
E_ALREADY = "Already subscribed"
E_NOT_SUBSCRIBED = "Subscription Not Found"
E_CHANNEL = "Channel not supported by the local exchange"
E_METHOD = "Method not supported by the local exchange"
E_PRIVATE = "EGeneral:Permission denied:private channel on the public endpoint"

_NS = 1_000_000_000
_V2_ASSET = {"XBT": "BTC", "XDG": "DOGE"}  # v1/REST altnames that v2 spells differently


# --- encoding ---------------------------------------------------------------------------------------
class Num(str):
    """Decimal text that goes into a frame as a JSON number, digit for digit."""

    __slots__ = ()


def dumps(obj: Any) -> str:
    """JSON text of a frame; :class:`Num` values are written as numbers, unchanged."""
    if isinstance(obj, Num):
        return str.__str__(obj)
    if isinstance(obj, str):
        return json.dumps(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    return json.dumps(obj)


def rfc3339(ns: int) -> str:
    """Kraken v2 timestamps: RFC 3339, UTC, microseconds (``2026-08-12T19:28:08.631028Z``)."""
    sec, rem = divmod(ns, _NS)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem // 1000:06d}Z"


def v2_symbol(spec: PairSpec) -> str:
    """The v2 name of a pair (``BTC/USD``): its wsname with v2's asset spellings."""
    base, _, quote = spec.wsname.partition("/")
    return f"{_V2_ASSET.get(base, base)}/{_V2_ASSET.get(quote, quote)}"


def v2_asset(asset: str) -> str:
    """The v2 name of a Kraken asset id (``XXBT`` -> ``BTC``, ``ZUSD`` -> ``USD``)."""
    alt = str(ASSETS.get(asset, {}).get("altname", asset))
    return _V2_ASSET.get(alt, alt)


def _num(raw: int, decimals: int) -> Num:
    return Num(format_raw(raw, decimals))


def _round_div(num: int, den: int) -> int:
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q


# --- the book ----------------------------------------------------------------------------------------
RawLevels = list[tuple[int, int]]


def top_levels(v: PairVenue, side: int, n: int) -> RawLevels:
    """The best ``n`` levels of one side, our own resting orders included (as REST ``Depth``)."""
    market = v.book.side(side)
    best = heapq.nlargest(n, market) if side == BID else heapq.nsmallest(n, market)
    own: dict[int, int] = {}
    for r in v.engine.resting.values():
        if r.side == side:
            own[r.price] = own.get(r.price, 0) + r.remaining
    rows = [(p, market.get(p, 0) + own.get(p, 0)) for p in set(best) | set(own)]
    rows.sort(reverse=side == BID)
    return [(p, q) for p, q in rows[:n] if q > 0]


def _in_book(v: PairVenue, side: int, price: int) -> bool:
    if price in v.book.side(side):
        return True
    return any(r.side == side and r.price == price for r in v.engine.resting.values())


def book_changes(
    sent: dict[int, int], now: RawLevels, still_listed: Callable[[int], bool]
) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """Levels to send so that ``sent`` becomes ``now`` after the client truncates to its depth.

    Deletions (``qty`` 0) first, only for levels that left the book (``still_listed(price)`` is
    false); a level that is still listed but no longer in the window is left to the client's
    truncation, as Kraken does. Then every level that is new or changed.
    """
    current = dict(now)
    out = [(p, 0) for p in sent if p not in current and not still_listed(p)]
    out.extend((p, q) for p, q in now if sent.get(p) != q)
    return out, current


@dataclass(slots=True)
class _BookSub:
    key: str
    symbol: str
    depth: int
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    pending: bool = False  # subscribed during a feed stall: the snapshot comes when it ends


@dataclass(slots=True)
class _ExecSub:
    snap_orders: bool
    snap_trades: bool
    order_status: bool
    sequence: int = 0


@dataclass
class HubCounters:
    """What the hub sent (all connections); read by tests and monitoring."""

    connections: int = 0
    frames: int = 0  # frames written to sockets
    book_snapshots: int = 0
    book_updates: int = 0
    trade_messages: int = 0
    execution_messages: int = 0
    errors: int = 0  # error frames sent
    slow_closes: int = 0  # connections closed for falling behind
    dropped: int = 0  # connections closed by drop_connections()
    stalled_commits: int = 0  # commits whose book and trade frames a feed stall held back


class _Session:
    """One websocket connection: its subscriptions and its queue of frames to write.

    ``push`` may be called from any thread, but always with the exchange lock held: that lock
    orders the frames of concurrent commits and subscribe requests.
    """

    def __init__(self, ws: web.WebSocketResponse, private: bool, max_outbox: int) -> None:
        self.ws = ws
        self.private = private
        self.loop = asyncio.get_running_loop()
        self.max_outbox = max_outbox
        self.outbox: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self.books: dict[str, _BookSub] = {}
        self.trades: set[str] = set()
        self.executions: _ExecSub | None = None
        self.overflow = False
        self.closed = False

    @property
    def subscribed(self) -> bool:
        return bool(self.books or self.trades or self.executions)

    def push(self, frame: dict[str, Any]) -> None:
        if self.closed or self.overflow:
            return
        if len(self.outbox) >= self.max_outbox:
            self.overflow = True
            self.outbox.clear()
        else:
            self.outbox.append(frame)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the server is stopping
            self.loop.call_soon_threadsafe(self.wake.set)


# --- executions ---------------------------------------------------------------------------------------
def _order_status(o: OrderRec) -> str:
    if o.status == "open":
        return "partially_filled" if o.vol_exec else "new"
    return {"pending": "pending_new", "closed": "filled"}.get(o.status, o.status)


def _ids(o: OrderRec) -> dict[str, Any]:
    out: dict[str, Any] = {"order_id": o.txid}
    if o.cl_ord_id is not None:
        out["cl_ord_id"] = o.cl_ord_id
    out["order_userref"] = o.userref if o.userref is not None else 0
    return out


def _cum(spec: PairSpec, qty: int, cost: int) -> dict[str, Any]:
    if qty:
        avg = _round_div(cost * 10 ** (spec.lot_decimals + spec.pair_decimals), qty * 10**spec.cost_decimals)
    else:
        avg = 0
    return {
        "cum_qty": _num(qty, spec.lot_decimals),
        "cum_cost": _num(cost, spec.cost_decimals),
        "avg_price": _num(avg, spec.pair_decimals),
    }


def _usd_equiv(spec: PairSpec, fee: int, fee_in_base: bool) -> dict[str, Any]:
    """``fee_usd_equiv`` only where it is exact: a quote fee on a USD-quoted pair."""
    if spec.quote == "ZUSD" and not fee_in_base:
        return {"fee_usd_equiv": _num(fee, spec.cost_decimals)}
    return {}


def order_report(o: OrderRec, spec: PairSpec, exec_type: str, status: str, ts: int) -> dict[str, Any]:
    """A full order description (``pending_new``, and open orders in a snapshot).

    Field names follow Kraken's v2 executions documentation and the ``pending_new`` example in
    ccxt's source; ``post_only`` and ``cum_qty`` on this report are from the documentation's
    field list, not from a recorded message.
    """
    doc: dict[str, Any] = {**_ids(o), "symbol": v2_symbol(spec), "side": o.side, "order_type": o.ordertype}
    doc["order_qty"] = _num(o.vol, spec.lot_decimals)
    if o.ordertype == "limit":
        doc["limit_price_type"] = "static"
        doc["limit_price"] = _num(o.price, spec.pair_decimals)
    doc["time_in_force"] = o.timeinforce
    doc["post_only"] = o.post
    doc["fee_ccy_pref"] = "fcib" if o.fee_in_base else "fciq"
    qty, cost = (0, 0) if status == "pending_new" else (o.vol_exec, o.cost)
    doc.update(_cum(spec, qty, cost))
    doc.update(_usd_equiv(spec, 0 if status == "pending_new" else o.fee, o.fee_in_base))
    doc.update({"exec_type": exec_type, "order_status": status, "timestamp": rfc3339(ts)})
    return doc


def status_report(
    o: OrderRec, spec: PairSpec, exec_type: str, status: str, ts: int, *, cum: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A state change without the order's description (``new``, ``filled``, ``canceled``, ``expired``).

    The ``canceled`` layout (no symbol or side; ``cum_*``, ``avg_price``, ``reason`` and
    ``cancel_reason``) is the real canceled message quoted in ccxt's source; ``new`` and
    ``filled`` are assumed to be as terse, and ``cl_ord_id`` is assumed to be echoed on every
    report of an order that has one.
    """
    qty, cost = cum if cum is not None else (o.vol_exec, o.cost)
    doc: dict[str, Any] = {"timestamp": rfc3339(ts), "order_status": status, "exec_type": exec_type}
    doc.update(_ids(o))
    if exec_type != "new":
        doc.update(_cum(spec, qty, cost))
        doc.update(_usd_equiv(spec, o.fee, o.fee_in_base))
    if exec_type in ("canceled", "expired") and o.reason:
        doc["cancel_reason"] = o.reason
        doc["reason"] = o.reason
    return doc


def trade_report(
    o: OrderRec, t: TradeRec, spec: PairSpec, status: str, cum: tuple[int, int] | None
) -> dict[str, Any]:
    """One fill of one of our orders (``exec_type: trade``).

    As the real trade message quoted in ccxt's source: ``exec_id`` (the fill's id, the key of
    REST ``TradesHistory``), ``trade_id`` (the public print's id), ``last_qty``, ``last_price``,
    ``liquidity_ind`` (``m``/``t``), ``cost``, ``fees`` ``[{asset, qty}]``, ``order_status``.
    ``cl_ord_id``, ``timestamp`` and the running ``cum_qty``/``cum_cost``/``avg_price`` are from
    the documentation's field list, not from that message (left out in snapshot fills).
    """
    fee_dec = spec.lot_decimals if t.fee_in_base else spec.cost_decimals
    doc: dict[str, Any] = {**_ids(o), "exec_id": t.txid, "exec_type": "trade", "trade_id": t.trade_id}
    doc.update({"symbol": v2_symbol(spec), "side": t.side, "order_type": t.ordertype})
    doc["last_qty"] = _num(t.vol, spec.lot_decimals)
    doc["last_price"] = _num(t.price, spec.pair_decimals)
    doc["liquidity_ind"] = "m" if t.maker else "t"
    doc["cost"] = _num(t.cost, spec.cost_decimals)
    doc["fees"] = [
        {"asset": v2_asset(spec.base if t.fee_in_base else spec.quote), "qty": _num(t.fee, fee_dec)}
    ]
    doc.update(_usd_equiv(spec, t.fee, t.fee_in_base))
    if cum is not None:
        doc.update(_cum(spec, *cum))
    doc.update({"order_status": status, "timestamp": rfc3339(t.time)})
    return doc


def execution_reports(exchange: Exchange, done: Committed) -> list[dict[str, Any]]:
    """The v2 execution reports of one commit, in order, per order:

    ``pending_new`` then ``new`` for an order created by the commit, one ``trade`` per fill, then
    ``filled`` / ``canceled`` / ``expired`` if the order closed. A trade's ``order_status`` is
    ``filled`` on the fill that completes the order (ccxt's quoted message shows that; Kraken's
    documentation says it may also say ``partially_filled`` there, which is why completion is
    reported separately by ``filled``).
    """
    fills: dict[str, list[TradeRec]] = {}
    for t in done.trades:
        fills.setdefault(t.ordertxid, []).append(t)
    out: list[dict[str, Any]] = []
    for o in done.orders:
        mine = fills.get(o.txid, [])
        new = o.txid in done.new_orders
        if not (new or mine or not o.is_open):
            continue  # touched without a state change (its queue position moved)
        spec = exchange.specs[o.pair]
        qty = o.vol_exec - sum(t.vol for t in mine)
        cost = o.cost - sum(t.cost for t in mine)
        if new:
            out.append(order_report(o, spec, "pending_new", "pending_new", o.opentm))
            out.append(status_report(o, spec, "new", "new", o.opentm))
        for t in mine:
            qty += t.vol
            cost += t.cost
            status = "filled" if qty == o.vol else "partially_filled"
            out.append(trade_report(o, t, spec, status, (qty, cost)))
        if not o.is_open:
            kind = _order_status(o)
            out.append(status_report(o, spec, kind, kind, o.closetm or exchange.clock()))
    return out


def executions_snapshot(exchange: Exchange, sub: _ExecSub) -> list[dict[str, Any]]:
    """The last fills (``snap_trades``, oldest first) then the open orders (``snap_orders``)."""
    out: list[dict[str, Any]] = []
    if sub.snap_trades:
        recent = sorted(exchange.trades.values(), key=lambda t: t.seq)[-EXEC_SNAPSHOT_TRADES:]
        for t in recent:
            o = exchange.orders[t.ordertxid]
            out.append(trade_report(o, t, exchange.specs[o.pair], _order_status(o), None))
    if sub.snap_orders:
        for o in sorted((o for o in exchange.orders.values() if o.is_open), key=lambda o: o.seq):
            status = _order_status(o)
            out.append(order_report(o, exchange.specs[o.pair], "new", status, o.opentm))
    return out


# --- the hub ------------------------------------------------------------------------------------------
class KrakenWsHub:
    """The websocket side of one exchange: connections, subscriptions and the commit listener."""

    def __init__(self, exchange: Exchange, *, heartbeat_s: float = 1.0, max_outbox: int = 100_000) -> None:
        self.exchange = exchange
        self.heartbeat_s = heartbeat_s
        self.max_outbox = max_outbox
        self.counters = HubCounters()
        self._sessions: set[_Session] = set()  # guarded by exchange.lock
        self._keys = {v2_symbol(s): k for k, s in exchange.specs.items()}
        self._symbols = {k: sym for sym, k in self._keys.items()}
        self._checkbooks: dict[str, SyncedBook] = {}
        # the fault injector's feed stall (called under the exchange lock): while it says so, no
        # book or trade frame goes out, as from a venue whose market-data path hangs
        self.market_stalled: Callable[[], bool] = lambda: False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PUBLIC_PATH, self._public)
        app.router.add_get(PRIVATE_PATH, self._private)

    @property
    def connections(self) -> int:
        with self.exchange.lock:
            return len(self._sessions)

    def subscriptions(self, channel: str) -> int:
        """How many live subscriptions to ``channel`` (``book``, ``trade``, ``executions``) exist."""
        with self.exchange.lock:
            if channel == "book":
                return sum(len(s.books) for s in self._sessions)
            if channel == "trade":
                return sum(len(s.trades) for s in self._sessions)
            return sum(1 for s in self._sessions if s.executions is not None)

    def drop_connections(self, *, private_only: bool = False) -> int:
        """Close every connection (or every authenticated one) from the server side; any thread."""
        with self.exchange.lock:
            chosen = [s for s in self._sessions if s.private or not private_only]
        for s in chosen:
            self.counters.dropped += 1
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(
                    s.ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped by the exchange"), s.loop
                )
        return len(chosen)

    async def shutdown(self) -> None:
        """Close every connection (server stop); the handlers then unregister them."""
        with self.exchange.lock:
            sessions = list(self._sessions)
        for s in sessions:
            with contextlib.suppress(Exception):
                await s.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    # --- connections --------------------------------------------------------------------------------
    async def _public(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, private=False)

    async def _private(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve(request, private=True)

    async def _serve(self, request: web.Request, *, private: bool) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20, timeout=2.0)  # timeout: the close handshake
        await ws.prepare(request)
        s = _Session(ws, private, self.max_outbox)
        with self.exchange.lock:
            if not self._sessions:
                self.exchange.add_listener(self._on_commit)
            self._sessions.add(s)
            self.counters.connections += 1
            s.push(self._status())
        writer = asyncio.get_running_loop().create_task(self._writer(s))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(s, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    with self.exchange.lock:
                        self._error(s, None, None, E_MALFORMED, self._now())
        finally:
            with self.exchange.lock:
                s.closed = True
                self._sessions.discard(s)
                if not self._sessions:
                    self.exchange.remove_listener(self._on_commit)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _writer(self, s: _Session) -> None:
        """Write the session's frames in order; heartbeats while idle; close a slow consumer."""
        try:
            while not s.ws.closed:
                try:
                    await asyncio.wait_for(s.wake.wait(), self.heartbeat_s)
                except TimeoutError:
                    if s.subscribed:
                        await s.ws.send_str('{"channel":"heartbeat"}')
                    continue
                s.wake.clear()
                if s.overflow:
                    self.counters.slow_closes += 1
                    log.warning("websocket client fell %d frames behind: closing it", s.max_outbox)
                    await s.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                    return
                while s.outbox:
                    frame = s.outbox.popleft()
                    await s.ws.send_str(dumps(frame))
                    self.counters.frames += 1
        except (ConnectionError, RuntimeError) as exc:
            log.info("websocket writer stopped: %s", exc)
            with contextlib.suppress(Exception):
                await s.ws.close()

    def _now(self) -> int:
        return self.exchange.clock()

    @staticmethod
    def _status() -> dict[str, Any]:
        return {
            "channel": "status",
            "type": "update",
            "data": [
                {
                    "version": STATUS_VERSION,
                    "system": "online",
                    "api_version": "v2",
                    "connection_id": secrets.randbits(63),
                }
            ],
        }

    # --- requests -------------------------------------------------------------------------------------
    def _on_text(self, s: _Session, text: str) -> None:
        time_in = self._now()
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        with self.exchange.lock:
            if not isinstance(msg, dict):
                self._error(s, None, None, E_MALFORMED, time_in)
                return
            method = msg.get("method")
            req_id = msg.get("req_id")
            if method == "ping":
                pong: dict[str, Any] = {"method": "pong"}
                if req_id is not None:
                    pong["req_id"] = req_id
                pong.update({"time_in": rfc3339(time_in), "time_out": rfc3339(self._now())})
                s.push(pong)
            elif method in ("subscribe", "unsubscribe"):
                params = msg.get("params")
                if not isinstance(params, dict):
                    self._error(s, method, req_id, E_MALFORMED, time_in)
                else:
                    self._subscription(s, method, req_id, params, time_in)
            else:
                self._error(s, method if isinstance(method, str) else None, req_id, E_METHOD, time_in)

    def _error(
        self, s: _Session, method: str | None, req_id: Any, text: str, time_in: int, **extra: Any
    ) -> None:
        doc: dict[str, Any] = {"error": text}
        if method is not None:
            doc["method"] = method
        if req_id is not None:
            doc["req_id"] = req_id
        doc["success"] = False
        doc.update(extra)
        doc.update({"time_in": rfc3339(time_in), "time_out": rfc3339(self._now())})
        self.counters.errors += 1
        s.push(doc)

    def _ack(self, s: _Session, method: str, req_id: Any, result: dict[str, Any], time_in: int) -> None:
        doc: dict[str, Any] = {"method": method}
        if req_id is not None:
            doc["req_id"] = req_id
        doc.update(
            {"result": result, "success": True, "time_in": rfc3339(time_in), "time_out": rfc3339(self._now())}
        )
        s.push(doc)

    def _subscription(
        self, s: _Session, method: str, req_id: Any, params: dict[str, Any], time_in: int
    ) -> None:
        on = method == "subscribe"
        channel = params.get("channel")
        if channel == "executions":
            self._executions(s, on, req_id, params, time_in)
            return
        if channel not in ("book", "trade"):
            self._error(s, method, req_id, E_CHANNEL, time_in)
            return
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols or not all(isinstance(x, str) for x in symbols):
            self._error(s, method, req_id, E_MALFORMED, time_in)
            return
        depth = params.get("depth", 10)
        if channel == "book" and (type(depth) is not int or depth not in BOOK_DEPTHS):
            self._error(s, method, req_id, E_DEPTH, time_in)
            return
        snapshot = params.get("snapshot", channel == "book")  # book: snapshot by default, trade: not
        for sym in symbols:
            key = self._keys.get(sym)
            if key is None:
                self._error(s, method, req_id, f"{E_PAIR} {sym}", time_in, symbol=sym)
                continue
            subscribed = key in (s.books if channel == "book" else s.trades)
            if on and subscribed:
                self._error(s, method, req_id, E_ALREADY, time_in, symbol=sym)
                continue
            if not on and not subscribed:
                self._error(s, method, req_id, E_NOT_SUBSCRIBED, time_in, symbol=sym)
                continue
            if channel == "book":
                if on:
                    sub = _BookSub(key, sym, depth)
                    s.books[key] = sub
                    self._ack(
                        s,
                        method,
                        req_id,
                        {"channel": "book", "depth": depth, "snapshot": bool(snapshot), "symbol": sym},
                        time_in,
                    )
                    if snapshot and self.market_stalled():
                        sub.pending = True
                    else:
                        self._book_snapshot(s, sub, send=bool(snapshot))
                else:
                    sub = s.books.pop(key)
                    self._ack(
                        s, method, req_id, {"channel": "book", "depth": sub.depth, "symbol": sym}, time_in
                    )
            elif on:
                s.trades.add(key)
                self._ack(
                    s,
                    method,
                    req_id,
                    {"channel": "trade", "snapshot": bool(snapshot), "symbol": sym},
                    time_in,
                )
                if snapshot:
                    v = self.exchange.venues[key]
                    docs = list(v.public)[-TRADE_SNAPSHOT:]
                    s.push(self._trade_message(key, docs, "snapshot"))
            else:
                s.trades.discard(key)
                self._ack(s, method, req_id, {"channel": "trade", "symbol": sym}, time_in)

    def _executions(self, s: _Session, on: bool, req_id: Any, params: dict[str, Any], time_in: int) -> None:
        method = "subscribe" if on else "unsubscribe"
        if not s.private:
            self._error(s, method, req_id, E_PRIVATE, time_in)
            return
        token = params.get("token")
        if not isinstance(token, str) or not self.exchange.ws_token_valid(token):
            self._error(s, method, req_id, E_SESSION, time_in)
            return
        if not on:
            if s.executions is None:
                self._error(s, method, req_id, E_NOT_SUBSCRIBED, time_in)
                return
            s.executions = None
            self._ack(s, method, req_id, {"channel": "executions"}, time_in)
            return
        if s.executions is not None:
            self._error(s, method, req_id, E_ALREADY, time_in)
            return
        sub = _ExecSub(
            snap_orders=bool(params.get("snap_orders", True)),
            snap_trades=bool(params.get("snap_trades", False)),
            order_status=bool(params.get("order_status", True)),
        )
        s.executions = sub
        snapshot = sub.snap_orders or sub.snap_trades
        self._ack(s, method, req_id, {"channel": "executions", "snapshot": snapshot}, time_in)
        if snapshot:
            sub.sequence += 1
            data = executions_snapshot(self.exchange, sub)
            s.push({"channel": "executions", "type": "snapshot", "data": data, "sequence": sub.sequence})
            self.counters.execution_messages += 1

    # --- book frames ------------------------------------------------------------------------------------
    def _checksum(self, key: str, bids: RawLevels, asks: RawLevels) -> int:
        spec = self.exchange.specs[key]
        pd, ld = spec.pair_decimals, spec.lot_decimals
        book = self._checkbooks.get(key)
        if book is None:
            book = self._checkbooks[key] = SyncedBook(self._symbols[key], pd, ld, depth=10)
        book.apply_snapshot(
            [(format_raw(p, pd), format_raw(q, ld)) for p, q in bids[:10]],
            [(format_raw(p, pd), format_raw(q, ld)) for p, q in asks[:10]],
        )
        return kraken_v2_checksum(book)

    def _levels_doc(self, key: str, levels: list[tuple[int, int]]) -> list[dict[str, Any]]:
        spec = self.exchange.specs[key]
        pd, ld = spec.pair_decimals, spec.lot_decimals
        return [{"price": _num(p, pd), "qty": Num("0") if q == 0 else _num(q, ld)} for p, q in levels]

    def _book_snapshot(self, s: _Session, sub: _BookSub, *, send: bool) -> None:
        v = self.exchange.venues[sub.key]
        n = max(sub.depth, 10)
        bids, asks = top_levels(v, BID, n), top_levels(v, ASK, n)
        sub.bids, sub.asks = dict(bids[: sub.depth]), dict(asks[: sub.depth])
        if not send:
            return
        item = {
            "symbol": sub.symbol,
            "bids": self._levels_doc(sub.key, bids[: sub.depth]),
            "asks": self._levels_doc(sub.key, asks[: sub.depth]),
            "checksum": self._checksum(sub.key, bids, asks),
            "timestamp": rfc3339(self._now()),
        }
        s.push({"channel": "book", "type": "snapshot", "data": [item]})
        self.counters.book_snapshots += 1

    def _book_updates(self, key: str, subs: list[tuple[_Session, _BookSub]], ts: int) -> None:
        v = self.exchange.venues[key]
        n = max(10, max(sub.depth for _, sub in subs))
        bids, asks = top_levels(v, BID, n), top_levels(v, ASK, n)
        checksum: int | None = None
        for s, sub in subs:
            db, sub.bids = book_changes(sub.bids, bids[: sub.depth], lambda p: _in_book(v, BID, p))
            da, sub.asks = book_changes(sub.asks, asks[: sub.depth], lambda p: _in_book(v, ASK, p))
            if not (db or da):
                continue
            if checksum is None:
                checksum = self._checksum(key, bids, asks)
            item = {
                "symbol": sub.symbol,
                "bids": self._levels_doc(key, db),
                "asks": self._levels_doc(key, da),
                "checksum": checksum,
                "timestamp": rfc3339(ts),
            }
            s.push({"channel": "book", "type": "update", "data": [item]})
            self.counters.book_updates += 1

    def _trade_message(self, key: str, docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        """``trade`` as in ccxt's source comment and Kraken's documentation (not recorded here)."""
        spec = self.exchange.specs[key]
        sym = self._symbols[key]
        data = [
            {
                "symbol": sym,
                "side": "buy" if d["side"] == "b" else "sell",
                "price": _num(d["price"], spec.pair_decimals),
                "qty": _num(d["vol"], spec.lot_decimals),
                "ord_type": "market" if d["type"] == "m" else "limit",
                "trade_id": d["id"],
                "timestamp": rfc3339(d["time"]),
            }
            for d in docs
        ]
        return {"channel": "trade", "type": kind, "data": data}

    # --- the commit listener ------------------------------------------------------------------------------
    def _on_commit(self, exchange: Exchange, done: Committed) -> None:
        """Runs under the exchange lock, in the committing thread, after every commit."""
        if not self._sessions:
            return
        ts = exchange.clock()
        by_pair: dict[str, list[tuple[_Session, _BookSub]]] = {}
        for s in self._sessions:
            for key, sub in s.books.items():
                by_pair.setdefault(key, []).append((s, sub))
        market_subs = bool(by_pair) or any(s.trades for s in self._sessions)
        stalled = market_subs and self.market_stalled()
        if stalled:
            self.counters.stalled_commits += 1
        for key, subs in by_pair.items():
            if stalled:
                break
            for s, sub in subs:
                if sub.pending:
                    sub.pending = False
                    self._book_snapshot(s, sub, send=True)
            self._book_updates(key, subs, ts)
        for key, docs in done.public.items():
            trade_subs = [] if stalled else [s for s in self._sessions if key in s.trades]
            if trade_subs:
                msg = self._trade_message(key, list(docs), "update")
                for s in trade_subs:
                    s.push(msg)
                    self.counters.trade_messages += 1
        exec_subs = [s for s in self._sessions if s.executions is not None]
        if not exec_subs or not (done.orders or done.trades):
            return
        reports = execution_reports(exchange, done)
        for s in exec_subs:
            es = s.executions
            assert es is not None
            for r in reports:
                if r["exec_type"] == "pending_new" and not es.order_status:
                    continue
                es.sequence += 1
                s.push({"channel": "executions", "type": "update", "data": [r], "sequence": es.sequence})
                self.counters.execution_messages += 1

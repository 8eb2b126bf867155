"""The exchange itself: one account, Kraken's order semantics, exact balances, durable state.

Everything here is synchronous and transport-free so it can be driven by the HTTP server, by a
test directly, or by a chaos harness, with the same results. Each public method is one request:
it advances the replayed market to "now", does its work, commits every change in one SQLite
transaction and only then returns the Kraken ``result`` (or raises :class:`KrakenError`). The
HTTP layer writes the answer after that, so an answer is never ahead of the disk.

Amounts are integers throughout: prices at the pair's ``pair_decimals``, volumes at
``lot_decimals``, costs and quote fees at ``cost_decimals`` (rounded half-even per fill, as
Kraken shows them), balances at the finest of those per asset (see
:func:`~bastion.venues.local_exchange.pairs.balance_precisions`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bastion.model.fixed import format_raw
from bastion.venues.local_exchange.auth import INVALID_NONCE, KrakenError, decode_secret, verify
from bastion.venues.local_exchange.book import ASK, BID, Grid, MarketBook
from bastion.venues.local_exchange.matching import (
    STP_CANCEL_BOTH,
    STP_CANCEL_NEWEST,
    STP_CANCEL_OLDEST,
    Execution,
    PairEngine,
    Resting,
)
from bastion.venues.local_exchange.pairs import (
    ASSETS,
    DEFAULT_PAIRS,
    PairSpec,
    balance_precisions,
    pair_specs,
)
from bastion.venues.local_exchange.replay import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    KIND_CLEAR,
    KIND_LEVEL,
    KIND_TRADE,
    MarketEvents,
    MarketRow,
)
from bastion.venues.local_exchange.state import Store

log = logging.getLogger(__name__)

DEFAULT_BALANCES: dict[str, str] = {"XXBT": "1", "ZUSD": "100000", "USDT": "100000"}

# Kraken error strings. Not every one is attested by a recording: the duplicate-client-id text
# is in neither the fixtures nor the public docs (it is what other Kraken client code matches
# on), so an adapter should treat any AddOrder error naming its cl_ord_id as "look it up".
E_ARGS = "EGeneral:Invalid arguments"
E_UNKNOWN_PAIR = "EQuery:Unknown asset pair"
E_UNKNOWN_ASSET = "EQuery:Unknown asset"
E_UNKNOWN_ORDER = "EOrder:Unknown order"
E_INVALID_ORDER = "EOrder:Invalid order"
E_FUNDS = "EOrder:Insufficient funds"
E_ORDER_MIN = "EOrder:Order minimum not met"
E_COST_MIN = "EOrder:Cost minimum not met"
E_DUPLICATE = "EOrder:Duplicate order"
E_UNAVAILABLE = "EService:Unavailable"
E_INTERNAL = "EGeneral:Internal error"
E_UNKNOWN_METHOD = "EGeneral:Unknown method"

# cancel reasons: the first two are Kraken's (recorded / documented), the rest are descriptive
REASON_USER = "User requested"
REASON_POST_ONLY = "Post only order"
REASON_STP = "Self trade prevention"
REASON_IOC = "Immediate or cancel"
REASON_NO_LIQUIDITY = "Insufficient liquidity"

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$|^[0-9a-fA-F]{32}$"
)
_FREE_TEXT = re.compile(r"^[\x21-\x7e]{1,18}$")
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_NS = 1_000_000_000
_UNSUPPORTED_ADD = ("leverage", "close[ordertype]", "close[price]", "displayvol", "trigger", "price2")


def _round_div(num: int, den: int) -> int:
    """num / den rounded half-even (den > 0)."""
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q


def _ceil_div(num: int, den: int) -> int:
    return -((-num) // den)


def _rescale(raw: int, src: int, dst: int) -> int:
    """Exact move to more decimals (callers guarantee dst >= src)."""
    assert dst >= src
    return raw * int(10 ** (dst - src))


def _parse_raw(text: str | None, decimals: int, what: str) -> int:
    if text is None or text == "":
        raise KrakenError(f"{E_ARGS}:{what}")
    try:
        d = Decimal(text)
    except InvalidOperation as exc:
        raise KrakenError(f"{E_ARGS}:{what}") from exc
    if not d.is_finite():
        raise KrakenError(f"{E_ARGS}:{what}")
    scaled = d.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise KrakenError(f"{E_ARGS}:{what}")
    return int(scaled)


def _ts(ns: int) -> float:
    """Kraken's float seconds (it sends times as JSON numbers with sub-second digits)."""
    return float(Fraction(ns, _NS))


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("true", "1", "yes")


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    api_key: str
    api_secret: str  # base64, as Kraken issues them
    state_dir: Path
    pairs: tuple[str, ...] = DEFAULT_PAIRS
    # applied once, when the state directory is new; later starts keep the saved balances
    initial_balances: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    # data seconds per wall second; 0 = the market moves only when advance_market() is called
    speed: float = 1.0
    # "all": a cl_ord_id is never accepted twice (what an idempotent order path needs);
    # "open": Kraken's documented rule, unique among open orders only
    clordid_scope: str = "all"
    public_trades_kept: int = 1000

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0, got {self.speed}")
        if self.clordid_scope not in ("all", "open"):
            raise ValueError(f"clordid_scope must be 'all' or 'open', got {self.clordid_scope!r}")
        decode_secret(self.api_secret)


@dataclass(slots=True)
class OrderRec:
    """An order as the exchange keeps it; persisted whole (as JSON) whenever it changes."""

    txid: str
    seq: int
    pair: str
    side: str  # "buy" | "sell"
    ordertype: str  # "limit" | "market"
    price: int  # limit price at pair_decimals (0 for market)
    vol: int  # at lot_decimals
    opentm: int  # ns
    vol_exec: int = 0
    cost: int = 0  # at cost_decimals
    fee: int = 0  # at cost_decimals (fee in quote) or lot_decimals (fee in base)
    fee_in_base: bool = False
    post: bool = False
    timeinforce: str = "GTC"
    stptype: str = STP_CANCEL_NEWEST
    userref: int | None = None
    cl_ord_id: str | None = None
    status: str = "open"
    reason: str | None = None
    closetm: int | None = None
    hold: int = 0  # reserved, at the hold asset's balance decimals
    hold_asset: str = ""
    queue_ahead: int = 0
    trades: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.vol - self.vol_exec

    @property
    def is_open(self) -> bool:
        return self.status in ("pending", "open")


@dataclass(slots=True)
class TradeRec:
    """One fill of one of the client's orders (Kraken's TradesHistory entry), never changed."""

    txid: str
    seq: int
    ordertxid: str
    postxid: str
    pair: str
    side: str
    ordertype: str
    price: int
    vol: int
    cost: int
    fee: int
    fee_in_base: bool
    time: int  # ns
    maker: bool
    trade_id: int


class LiveMarket(Protocol):
    """A market that happens now (:class:`~bastion.venues.local_exchange.live_feed.LiveFeed`).

    Its rows are raw at the pair's own precisions and stamped with the time they were received.
    """

    @property
    def source(self) -> str: ...

    @property
    def price_precision(self) -> int: ...

    @property
    def size_precision(self) -> int: ...

    @property
    def live(self) -> bool:
        """Whether the book it emits is verified and current (not resyncing, reconnecting, stale)."""
        ...

    def drain(self) -> list[MarketRow]: ...

    def status(self) -> dict[str, Any]: ...


class PairVenue:
    """One listed pair: its market (recorded, or live), book and the client's resting orders."""

    def __init__(
        self, spec: PairSpec, events: MarketEvents, keep: int, feed: LiveMarket | None = None
    ) -> None:
        self.spec = spec
        self.feed = feed
        if feed is not None:
            if (feed.price_precision, feed.size_precision) != (spec.pair_decimals, spec.lot_decimals):
                raise ValueError(
                    f"live market for {spec.key} is at {feed.price_precision}/{feed.size_precision} "
                    f"decimals; the pair is at {spec.pair_decimals}/{spec.lot_decimals}"
                )
            events = MarketEvents.empty(feed.source)  # no recording: nothing to replay or resume
        self.events = events
        self.pos = 0
        self.live_ns = 0  # a live row is never dated before this (the last drain, or a print)
        grid = Grid(
            spec.pair_decimals if feed else events.price_precision,
            spec.lot_decimals if feed else events.size_precision,
            spec.pair_decimals,
            spec.lot_decimals,
            spec.tick_raw,
        )
        self.book = MarketBook(grid)
        self.engine = PairEngine(self.book)
        self.public: deque[dict[str, Any]] = deque(maxlen=keep)
        self.new_public: list[dict[str, Any]] = []
        self.next_trade_id = 1
        self.wall_anchor = 0
        self.data_anchor = 0
        self.ts = events.ts
        self.opening = self._opening_index()
        self.moved = False  # replay position or taken liquidity changed since the last commit

    def _opening_index(self) -> int:
        """Events up to the end of the first full snapshot: the market the exchange opens with.

        A capture may begin with a few trades before the first book snapshot arrives; opening
        on those would show an empty book, so the opening includes the first snapshot.
        """
        n = len(self.events)
        if not n:
            return 0
        clears = np.flatnonzero(self.events.kind == KIND_CLEAR)
        first_ts = self.ts[clears[0]] if len(clears) else self.ts[0]
        return int(np.searchsorted(self.ts, first_ts, side="right"))

    def anchor(self, wall_ns: int) -> None:
        self.wall_anchor = wall_ns
        if len(self.events):
            self.data_anchor = int(self.ts[max(self.pos, self.opening) - 1])

    def target(self, now_ns: int, speed: float) -> int:
        """How many events have happened by ``now_ns`` at ``speed``."""
        n = len(self.events)
        if not n:
            return 0
        if speed <= 0:
            return max(self.pos, self.opening)
        data_now = self.data_anchor + int((now_ns - self.wall_anchor) * speed)
        return max(self.pos, self.opening, int(np.searchsorted(self.ts, data_now, side="right")))

    def event_time(self, i: int, now_ns: int, speed: float) -> int:
        if speed <= 0:
            return now_ns
        return min(now_ns, self.wall_anchor + int((int(self.ts[i]) - self.data_anchor) / speed))

    def publish(self, price: int, vol: int, time_ns: int, aggressor: int, ordertype: str) -> int:
        tid = self.next_trade_id
        self.next_trade_id += 1
        self.live_ns = max(self.live_ns, time_ns)  # prints stay in time order (Trades' cursor)
        doc = {
            "id": tid,
            "price": price,
            "vol": vol,
            "time": time_ns,
            "side": "b" if aggressor == AGGRESSOR_BUY else "s",
            "type": ordertype,
        }
        self.public.append(doc)
        self.new_public.append(doc)
        return tid


WS_TOKEN_TTL_S = 900  # Kraken: a websockets token must be used within 15 minutes of its creation


@dataclass(frozen=True, slots=True)
class Committed:
    """What one commit changed, handed to the listeners right after it is durable.

    Listeners run synchronously, in the committing thread, under the exchange lock, so the live
    :class:`OrderRec` objects they are given are consistent; they must copy what they keep.
    ``orders`` are the orders this commit touched (by ``seq``), ``new_orders`` the txids of those
    it created, ``trades`` the client's new fills (by ``seq``) and ``public`` the new public
    prints per pair (``PairVenue.publish`` docs).
    """

    orders: tuple[OrderRec, ...]
    new_orders: frozenset[str]
    trades: tuple[TradeRec, ...]
    public: Mapping[str, tuple[dict[str, Any], ...]]


Listener = Callable[["Exchange", Committed], None]


class Exchange:
    """A single-account Kraken-compatible exchange over a replayed (or live) market.

    ``market`` maps pairs to recorded events, ``feeds`` pairs to live markets (a pair has one or
    the other, or neither: an empty book).
    """

    def __init__(
        self,
        config: ExchangeConfig,
        market: Mapping[str, MarketEvents] | None = None,
        *,
        feeds: Mapping[str, LiveMarket] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.specs = pair_specs(config.pairs)
        market = dict(market or {})
        feeds = dict(feeds or {})
        unknown = (set(market) | set(feeds)) - set(self.specs)
        if unknown:
            raise ValueError(f"market data for pairs that are not listed: {sorted(unknown)}")
        both = set(market) & set(feeds)
        if both:
            raise ValueError(f"pairs with both recorded and live market data: {sorted(both)}")
        self.bal_dec = balance_precisions(self.specs)
        self.keys = {config.api_key: decode_secret(config.api_secret)}
        self.venues = {
            k: PairVenue(s, market.get(k) or MarketEvents.empty(), config.public_trades_kept, feeds.get(k))
            for k, s in self.specs.items()
        }
        self._by_name: dict[str, str] = {}
        for k, s in self.specs.items():
            for name in (k, s.altname, s.wsname):
                self._by_name[name] = k
        self.balances: dict[str, int] = {}
        self.nonces: dict[str, int] = {}
        self.orders: dict[str, OrderRec] = {}
        self.trades: dict[str, TradeRec] = {}
        self._by_clordid: dict[str, list[str]] = {}
        self._seq = 0
        self._broken = False
        self._dirty_orders: set[str] = set()
        self._new_trades: list[TradeRec] = []
        self._dirty_bal: set[str] = set()
        self._dirty_nonces: set[str] = set()
        # fault injection: how much of a taking order may trade on arrival (None: all of it)
        self.take_cap: Callable[[int], int | None] | None = None
        # the websocket layer: tokens from GetWebSocketsToken (token -> expiry ns, memory only) and
        # the listeners told about every commit; orders with a seq above the mark are new to them
        self.ws_tokens: dict[str, int] = {}
        self._listeners: list[Listener] = []
        self._notified_seq: int | None = None  # None until the start-up commit: nothing is new
        self.store = Store(config.state_dir)
        self._load()

    # --- start-up --------------------------------------------------------------------------------
    def _load(self) -> None:
        snap = self.store.load()
        fresh = "salt" not in snap.meta
        self._salt = snap.meta.get("salt") or secrets.token_hex(16)
        self._seq = int(snap.meta.get("seq", "0"))
        self.nonces = dict(snap.nonces)
        for asset, (raw, dec) in snap.balances.items():
            want = self.bal_dec.get(asset, dec)
            self.balances[asset] = raw * 10 ** (want - dec) if want >= dec else raw // 10 ** (dec - want)
        for d in snap.orders:
            o = OrderRec(**d)
            self.orders[o.txid] = o
            if o.cl_ord_id is not None:
                self._by_clordid.setdefault(o.cl_ord_id, []).append(o.txid)
        for d in snap.trades:
            t = TradeRec(**d)
            self.trades[t.txid] = t
        now = self.clock()
        for key, v in self.venues.items():
            if v.feed is not None:
                # a live market has no position to resume: the book is whatever the feed's first
                # verified snapshot says, and liquidity taken before the restart is history
                log.info("%s follows %s: the book opens on its first verified snapshot", key, v.feed.source)
            else:
                fp = v.events.fingerprint()
                pos = int(snap.meta.get(f"replay:{key}:pos", "0"))
                if snap.meta.get(f"replay:{key}:fp", fp) != fp:
                    log.warning("market data for %s differs from the saved run; replay restarts at 0", key)
                    pos = 0
                pos = min(pos, len(v.events))
                self._replay(v, pos, match=False, now_ns=now)  # rebuild the book, no fills
                taken = json.loads(snap.meta.get(f"replay:{key}:taken", "[]")) if pos else []
                for side, price, qty in taken:
                    v.book.restore_taken(int(side), int(price), int(qty), now)
            v.next_trade_id = int(snap.meta.get(f"replay:{key}:next_trade_id", "1"))
            v.public.extend(snap.public_trades.get(key, []))
            v.new_public.clear()
            v.anchor(now)
            for o in self.orders.values():
                if o.pair == key and o.is_open and o.ordertype == "limit":
                    side = BID if o.side == "buy" else ASK
                    v.engine.add(Resting(o.txid, side, o.price, o.remaining, o.queue_ahead, o.seq))
        if fresh:
            for asset, amount in self.config.initial_balances.items():
                if asset not in self.bal_dec:
                    raise ValueError(f"initial balance for {asset}, which no listed pair uses")
                self.balances[asset] = _parse_raw(amount, self.bal_dec[asset], f"balance {asset}")
            self._dirty_bal.update(self.balances)
        for asset in self.bal_dec:
            self.balances.setdefault(asset, 0)
        with self.lock:
            self._sync(now)
            self._flush(force_meta=True)

    def close(self) -> None:
        with self.lock:
            self.store.close()

    # --- request plumbing ----------------------------------------------------------------------
    def public(self, method: str, params: Mapping[str, str]) -> Any:
        handler = _PUBLIC.get(method)
        if handler is None:
            raise KrakenError(E_UNKNOWN_METHOD)
        with self.lock:
            self._check_alive()
            self._sync(self.clock())
            try:
                return handler(self, params)
            finally:
                self._flush()

    def private(self, method: str, body: str, params: Mapping[str, str], headers: Mapping[str, str]) -> Any:
        """Authenticate, then run ``method``; the nonce is spent even when the method fails."""
        handler = _PRIVATE.get(method)
        if handler is None:
            raise KrakenError(E_UNKNOWN_METHOD)
        path = f"/0/private/{method}"
        with self.lock:
            self._check_alive()
            key, nonce = verify(path, body, params, headers, self.keys)
            if nonce <= self.nonces.get(key, 0):
                raise KrakenError(INVALID_NONCE)
            self.nonces[key] = nonce
            self._dirty_nonces.add(key)
            self._sync(self.clock())
            try:
                return handler(self, params)
            finally:
                self._flush()

    def tick(self) -> None:
        """Advance the market to now and commit; the server calls this between requests."""
        with self.lock:
            if self._broken:
                return
            self._sync(self.clock())
            self._flush()

    def advance_market(self, pair: str | None = None, *, events: int | None = None) -> int:
        """Replay the next ``events`` recorded events (all if None) of one pair or of every pair.

        Meant for ``speed=0``, where the market moves only when told to: tests and chaos runs
        step it deterministically instead of racing a clock.
        """
        with self.lock:
            self._check_alive()
            now = self.clock()
            n = 0
            for key, v in self.venues.items():
                if pair is not None and key != self._pair_key(pair):
                    continue
                stop = len(v.events) if events is None else min(len(v.events), v.pos + events)
                n += stop - v.pos
                self._replay(v, stop, match=True, now_ns=now)
                v.anchor(now)
            self._flush()
            return n

    def _check_alive(self) -> None:
        if self._broken:
            raise KrakenError(E_UNAVAILABLE)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new_id(self, prefix: str) -> str:
        seq = self._next_seq()
        h = hashlib.sha256(f"{self._salt}:{prefix}:{seq}".encode()).digest()
        n = int.from_bytes(h[:11], "big")
        chars = []
        for _ in range(17):
            n, r = divmod(n, 32)
            chars.append(_ID_ALPHABET[r])
        s = prefix + "".join(chars)
        return f"{s[:6]}-{s[6:11]}-{s[11:17]}"

    def _flush(self, *, force_meta: bool = False) -> None:
        """Commit everything this request changed, in one transaction, before it is answered."""
        moved = [v for v in self.venues.values() if v.moved or v.new_public]
        for v in moved:
            for r in v.engine.resting.values():
                o = self.orders[r.txid]
                if o.queue_ahead != r.queue_ahead:
                    o.queue_ahead = r.queue_ahead
                    self._dirty_orders.add(o.txid)
        if not (
            force_meta
            or moved
            or self._dirty_orders
            or self._new_trades
            or self._dirty_bal
            or self._dirty_nonces
        ):
            return
        try:
            with self.store.transaction() as tx:
                tx.meta("salt", self._salt)
                tx.meta("seq", str(self._seq))
                for key in self._dirty_nonces:
                    tx.nonce(key, self.nonces[key])
                for asset in self._dirty_bal:
                    tx.balance(asset, self.balances[asset], self.bal_dec[asset])
                for txid in sorted(self._dirty_orders, key=lambda t: self.orders[t].seq):
                    tx.order(asdict(self.orders[txid]))
                for t in self._new_trades:
                    tx.trade(asdict(t))
                for key, v in self.venues.items():
                    if not (force_meta or v.moved or v.new_public):
                        continue
                    tx.meta(f"replay:{key}:pos", str(v.pos))
                    tx.meta(f"replay:{key}:fp", v.events.fingerprint())
                    tx.meta(f"replay:{key}:next_trade_id", str(v.next_trade_id))
                    taken = [[s, p, q] for (s, p), q in sorted(v.book.taken.items())]
                    tx.meta(f"replay:{key}:taken", json.dumps(taken))
                    tx.public_trades(key, v.new_public, self.config.public_trades_kept)
        except Exception:
            # memory is now ahead of the disk: answering anything from here on could promise a
            # state that a restart would not have, so the exchange stops serving instead
            self._broken = True
            log.exception("state commit failed; the exchange refuses further requests")
            raise KrakenError(E_INTERNAL) from None
        self._notify_committed()
        self._dirty_orders.clear()
        self._new_trades.clear()
        self._dirty_bal.clear()
        self._dirty_nonces.clear()
        for v in self.venues.values():
            v.moved = False
            v.new_public.clear()

    # --- commit listeners (the websocket feeds) ---------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(exchange, committed)`` after every commit, under the exchange lock."""
        with self.lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self.lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify_committed(self) -> None:
        """Tell the listeners what the commit that just succeeded changed (never raises)."""
        mark, self._notified_seq = self._notified_seq, self._seq
        if not self._listeners:
            return
        orders = tuple(sorted((self.orders[t] for t in self._dirty_orders), key=lambda o: o.seq))
        new = frozenset(o.txid for o in orders if mark is not None and o.seq > mark)
        public = {k: tuple(v.new_public) for k, v in self.venues.items() if v.new_public}
        done = Committed(orders, new, tuple(self._new_trades), public)
        for listener in list(self._listeners):
            try:
                listener(self, done)
            except Exception:
                log.exception("commit listener failed")

    def ws_token_valid(self, token: str) -> bool:
        """Whether ``token`` came from GetWebSocketsToken and is still within its lifetime."""
        with self.lock:
            expiry = self.ws_tokens.get(token)
            return expiry is not None and self.clock() < expiry

    # --- the market: replayed or live ------------------------------------------------------------
    @property
    def live(self) -> bool:
        """Whether any pair follows a live market (it moves whatever the replay speed)."""
        return any(v.feed is not None for v in self.venues.values())

    def market_down(self) -> str | None:
        """Why the market behind some pair is not current (None: every pair's is), for the websocket.

        A live feed that is resyncing or reconnecting, or a replay that has run out (at a
        positive speed), leaves the book standing as it last was; a venue would then send no
        book frames, and neither must the websocket here, or a client that resubscribes would
        get that old book as a fresh snapshot. REST ``Depth`` needs no such care: its level
        timestamps already say how old the book is.
        """
        for key, v in self.venues.items():
            if v.feed is not None:
                if not v.feed.live:
                    return f"{key}: live market not current ({v.feed.status().get('state')})"
            elif self.config.speed > 0 and len(v.events) and v.pos >= len(v.events):
                return f"{key}: the recorded market has ended"
        return None

    def _sync(self, now_ns: int) -> None:
        for v in self.venues.values():
            if v.feed is not None:
                self._drain_live(v, v.feed, now_ns)
                continue
            stop = v.target(now_ns, self.config.speed)
            if stop > v.pos:
                self._replay(v, stop, match=True, now_ns=now_ns)

    def _drain_live(self, v: PairVenue, feed: LiveMarket, now_ns: int) -> None:
        """Apply what the feed received since the last drain, each row at its receipt time.

        Times are kept between the last drain (or print) and now: what the exchange has already
        answered for is not rewritten by a row that arrived a moment before it but was applied
        after, and public prints stay in time order.
        """
        rows = feed.drain()
        floor = v.live_ns
        for ts, kind, side, price, size in rows:
            floor = min(now_ns, max(ts, floor))
            self._apply_event(v, kind, side, price, size, floor, match=True)
        v.live_ns = max(floor, now_ns)
        if rows:
            v.moved = True

    def _replay(self, v: PairVenue, stop: int, *, match: bool, now_ns: int) -> None:
        ev = v.events
        speed = self.config.speed if match else 0.0
        for i in range(v.pos, stop):
            t = v.event_time(i, now_ns, speed)
            self._apply_event(
                v, int(ev.kind[i]), int(ev.side[i]), int(ev.price[i]), int(ev.size[i]), t, match=match
            )
        if stop != v.pos:
            v.pos = stop
            v.moved = True

    def _apply_event(
        self, v: PairVenue, kind: int, side: int, price: int, size: int, t: int, *, match: bool
    ) -> None:
        """One market event, recorded or live: the book changes, resting orders may fill.

        ``match`` False rebuilds the book only (a restart replaying up to its saved position).
        """
        book, engine = v.book, v.engine
        if kind == KIND_LEVEL:
            at, visible = book.apply_level(side, price, size, t)
            if match and engine.resting:
                book_side = BID if side == 1 else ASK
                # a market bid at or above our ask is a buyer that would have hit us first
                aggressor = AGGRESSOR_BUY if book_side == BID else AGGRESSOR_SELL
                for f in engine.on_level(book_side, at, visible, t):
                    self._fill(v, f, t, v.publish(f.price, f.qty, t, aggressor, "l"))
        elif kind == KIND_TRADE and match:  # a rebuild only restores the book
            at = book.trade_price(side, price)
            qty = book.grid.size(size)
            fills = engine.on_trade(side, at, qty) if engine.resting else []
            ours = sum(f.qty for f in fills)
            if qty > ours:
                v.publish(at, qty - ours, t, side, "l")
            for f in fills:
                self._fill(v, f, t, v.publish(f.price, f.qty, t, side, "l"))
        elif kind == KIND_CLEAR:
            book.clear()

    def market_status(self, levels: int = 0) -> dict[str, Any]:
        """Where each pair's market comes from and how it is doing (the ``/_bastion/market`` body).

        ``levels`` > 0 adds the best ``levels`` buckets per side as the market data has them
        (before our client took liquidity), so a test can compare them with the source.
        """
        with self.lock:
            out: dict[str, Any] = {}
            for key, v in self.venues.items():
                s = v.spec
                bid, ask = v.book.best(BID), v.book.best(ASK)
                doc: dict[str, Any] = {
                    "bid": None if bid is None else format_raw(bid, s.pair_decimals),
                    "ask": None if ask is None else format_raw(ask, s.pair_decimals),
                }
                if v.feed is not None:
                    doc.update({"source": "live", "feed": v.feed.status()})
                else:
                    ev = v.events
                    doc.update({"source": "replay", "data": ev.source, "events": len(ev), "position": v.pos})
                if levels > 0:
                    doc["levels"] = {
                        name: [
                            [format_raw(p, s.pair_decimals), format_raw(q, s.lot_decimals)]
                            for p, q in v.book.recorded_levels(side, levels)
                        ]
                        for name, side in (("bids", BID), ("asks", ASK))
                    }
                out[key] = doc
            return out

    # --- money -------------------------------------------------------------------------------------
    def _cost(self, s: PairSpec, price: int, vol: int) -> int:
        """price × vol at cost_decimals, rounded half-even (as Kraken shows a fill's cost)."""
        shift = s.pair_decimals + s.lot_decimals - s.cost_decimals
        return _round_div(price * vol, 10**shift) if shift >= 0 else price * vol * 10 ** (-shift)

    def _hold_for(self, o: OrderRec, s: PairSpec) -> tuple[str, int]:
        """What stays reserved for the unfilled part of an open order (taker fee, to be safe)."""
        rem = o.remaining
        if o.side == "buy":
            bd = self.bal_dec[s.quote]
            scale = 10 ** (s.pair_decimals + s.lot_decimals)
            notional = Fraction(o.price * rem, scale)
            fee = Fraction(0) if o.fee_in_base else notional * s.taker_rate
            return s.quote, _ceil_div_frac((notional + fee) * 10**bd)
        bd = self.bal_dec[s.base]
        amount = _rescale(rem, s.lot_decimals, bd)
        if o.fee_in_base:
            amount += _ceil_div_frac(Fraction(rem, 10**s.lot_decimals) * s.taker_rate * 10**bd)
        return s.base, amount

    def _held(self, asset: str) -> int:
        return sum(o.hold for o in self.orders.values() if o.is_open and o.hold_asset == asset)

    def _available(self, asset: str) -> int:
        return self.balances.get(asset, 0) - self._held(asset)

    def _set_hold(self, o: OrderRec) -> None:
        s = self.specs[o.pair]
        if o.is_open:
            o.hold_asset, o.hold = self._hold_for(o, s)
        else:
            o.hold = 0

    def _move(self, asset: str, delta: int) -> None:
        self.balances[asset] = self.balances.get(asset, 0) + delta
        self._dirty_bal.add(asset)

    def _fill(self, v: PairVenue, f: Execution, t: int, trade_id: int) -> None:
        o = self.orders[f.txid]
        s = v.spec
        rate = s.maker_rate if f.maker else s.taker_rate
        cost = self._cost(s, f.price, f.qty)
        qd, bdb = self.bal_dec[s.quote], self.bal_dec[s.base]
        if o.fee_in_base:
            fee = _round_frac(Fraction(f.qty) * rate)
            fee_asset, fee_bal = s.base, _rescale(fee, s.lot_decimals, bdb)
        else:
            fee = _round_frac(Fraction(cost) * rate)
            fee_asset, fee_bal = s.quote, _rescale(fee, s.cost_decimals, qd)
        cost_bal = _rescale(cost, s.cost_decimals, qd)
        qty_bal = _rescale(f.qty, s.lot_decimals, bdb)
        if o.side == "buy":
            self._move(s.quote, -cost_bal)
            self._move(s.base, qty_bal)
        else:
            self._move(s.base, -qty_bal)
            self._move(s.quote, cost_bal)
        self._move(fee_asset, -fee_bal)
        o.vol_exec += f.qty
        o.cost += cost
        o.fee += fee
        tr = TradeRec(
            txid=self._new_id("T"),
            seq=self._next_seq(),
            ordertxid=o.txid,
            postxid=self._new_id("T"),
            pair=o.pair,
            side=o.side,
            ordertype=o.ordertype,
            price=f.price,
            vol=f.qty,
            cost=cost,
            fee=fee,
            fee_in_base=o.fee_in_base,
            time=t,
            maker=f.maker,
            trade_id=trade_id,
        )
        self.trades[tr.txid] = tr
        self._new_trades.append(tr)
        o.trades.append(tr.txid)
        if o.remaining == 0:
            self._close(o, "closed", None, t)
        else:
            self._set_hold(o)
        self._dirty_orders.add(o.txid)

    def _close(self, o: OrderRec, status: str, reason: str | None, t: int) -> None:
        o.status = status
        o.reason = reason
        o.closetm = t
        o.hold = 0
        self.venues[o.pair].engine.remove(o.txid)
        self._dirty_orders.add(o.txid)

    # --- lookups -----------------------------------------------------------------------------------
    def _pair_key(self, name: str | None) -> str:
        key = self._by_name.get(name or "")
        if key is None:
            raise KrakenError(E_UNKNOWN_PAIR)
        return key

    def _pairs_param(self, params: Mapping[str, str], *, required: bool) -> list[str]:
        text = params.get("pair", "")
        if not text:
            if required:
                raise KrakenError(f"{E_ARGS}:pair")
            return list(self.specs)
        return [self._pair_key(p.strip()) for p in text.split(",") if p.strip()]

    def order_by_clordid(self, cl_ord_id: str) -> OrderRec | None:
        """The most recent order carrying this client id (test and tooling helper)."""
        with self.lock:
            ids = self._by_clordid.get(cl_ord_id)
            return self.orders[ids[-1]] if ids else None

    def counterparty_fill(self, cl_ord_id: str, volume: str) -> None:
        """Test control: someone else trades ``volume`` against our resting order ``cl_ord_id``.

        The fill is what a counterparty taking our order would cause: a maker fill at the order's
        own limit price, booked through the same :meth:`_fill` path as a market-driven fill (a
        new trade id, fee, balances, order close when done), printed as a public trade and
        committed under the exchange lock before returning. It exists so conformance tests can
        produce exact partial and full fills without depending on the replayed market; the HTTP
        API does not expose it. ``volume`` is decimal text in the pair's lot decimals; it must be
        positive and at most what the order has left, and the order must be an open limit order.
        """
        with self.lock:
            self._check_alive()
            self._sync(self.clock())
            try:
                self._counterparty_fill(cl_ord_id, volume)
            finally:
                self._flush()  # whatever changed is committed before returning, as for a request

    def _counterparty_fill(self, cl_ord_id: str, volume: str) -> None:
        ids = self._by_clordid.get(cl_ord_id)
        o = self.orders[ids[-1]] if ids else None
        if o is None or not o.is_open or o.ordertype != "limit":
            raise ValueError(f"no open limit order with cl_ord_id {cl_ord_id!r}")
        v = self.venues[o.pair]
        resting = v.engine.resting.get(o.txid)
        if resting is None:
            raise ValueError(f"order {cl_ord_id!r} is not resting in the book")
        try:
            qty = _parse_raw(volume, v.spec.lot_decimals, "volume")
        except KrakenError as exc:
            raise ValueError(f"bad volume {volume!r}") from exc
        if not 0 < qty <= resting.remaining:
            left = format_raw(resting.remaining, v.spec.lot_decimals)
            raise ValueError(f"volume {volume} is not in (0, {left}]")
        resting.remaining -= qty  # what PairEngine does for its own maker fills
        if resting.remaining == 0:
            v.engine.remove(o.txid)
        v.moved = True
        now = self.clock()
        aggressor = AGGRESSOR_SELL if o.side == "buy" else AGGRESSOR_BUY
        f = Execution(o.txid, o.price, qty, maker=True)
        self._fill(v, f, now, v.publish(f.price, f.qty, now, aggressor, "l"))

    # --- formatting --------------------------------------------------------------------------------
    @staticmethod
    def _px(s: PairSpec, raw: int) -> str:
        """Public price text: Kraken shows at least 5 decimals in Ticker/Depth/Trades."""
        d = max(5, s.pair_decimals)
        return format_raw(_rescale(raw, s.pair_decimals, d), d)

    @staticmethod
    def _depth_vol(s: PairSpec, raw: int) -> str:
        text = format_raw(raw, s.lot_decimals)
        if "." in text:
            head, tail = text.split(".")
            tail = tail.rstrip("0")
            tail = tail + "0" * max(0, 3 - len(tail))
            text = f"{head}.{tail}"
        return text

    def _descr(self, o: OrderRec) -> str:
        s = self.specs[o.pair]
        vol = format_raw(o.vol, s.lot_decimals)
        if o.ordertype == "market":
            return f"{o.side} {vol} {s.altname} @ market"
        return f"{o.side} {vol} {s.altname} @ limit {format_raw(o.price, s.pair_decimals)}"

    def _order_info(self, o: OrderRec, *, where: str, trades: bool) -> dict[str, Any]:
        s = self.specs[o.pair]
        cd = s.cost_decimals
        fee_dec = s.lot_decimals if o.fee_in_base else cd
        if o.vol_exec:
            # average price = cost / executed volume, on the pair's price grid
            avg_raw = _round_frac(
                Fraction(o.cost * 10 ** (s.lot_decimals + s.pair_decimals), o.vol_exec * 10**cd)
            )
            avg = format_raw(avg_raw, s.pair_decimals)
        else:
            avg = format_raw(0, cd)
        flags = []
        if o.post:
            flags.append("post")
        flags.append("fcib" if o.fee_in_base else "fciq")
        userref: int | None = o.userref if o.userref is not None else (None if o.cl_ord_id else 0)
        info: dict[str, Any] = {"refid": None, "userref": userref}
        if o.cl_ord_id is not None:
            info["cl_ord_id"] = o.cl_ord_id
        info.update(
            {
                "status": o.status,
                "opentm": _ts(o.opentm),
                "starttm": 0,
                "expiretm": 0,
                "descr": {
                    "pair": s.altname,
                    "type": o.side,
                    "ordertype": o.ordertype,
                    "price": format_raw(o.price, s.pair_decimals) if o.ordertype == "limit" else "0",
                    "price2": "0",
                    "leverage": "none",
                    "order": self._descr(o),
                    "close": "",
                },
                "vol": format_raw(o.vol, s.lot_decimals),
                "vol_exec": format_raw(o.vol_exec, s.lot_decimals),
                "cost": format_raw(o.cost, cd),
                "fee": format_raw(o.fee, fee_dec),
                "price": avg,
                "stopprice": format_raw(0, cd),
                "limitprice": format_raw(0, cd),
                "misc": "",
                "oflags": ",".join(flags),
            }
        )
        if trades and o.trades:
            info["trades"] = list(o.trades)
        if where != "open":
            info["reason"] = o.reason
        if o.closetm is not None:
            info["closetm"] = _ts(o.closetm)
        return info

    def _trade_info(self, t: TradeRec) -> dict[str, Any]:
        s = self.specs[t.pair]
        return {
            "ordertxid": t.ordertxid,
            "postxid": t.postxid,
            "pair": t.pair,
            "time": _ts(t.time),
            "type": t.side,
            "ordertype": t.ordertype,
            "price": self._px(s, t.price),
            "cost": format_raw(t.cost, s.cost_decimals),
            "fee": format_raw(t.fee, s.lot_decimals if t.fee_in_base else s.cost_decimals),
            "vol": format_raw(t.vol, s.lot_decimals),
            "margin": format_raw(0, s.cost_decimals),
            "leverage": "0",
            "misc": "",
            "trade_id": t.trade_id,
            "maker": t.maker,
        }

    # --- public endpoints --------------------------------------------------------------------------
    def _time(self, params: Mapping[str, str]) -> dict[str, Any]:
        now = self.clock() // _NS
        dt = datetime.fromtimestamp(now, UTC)
        return {"unixtime": now, "rfc1123": dt.strftime("%a, %d %b %y %H:%M:%S +0000")}

    def _system_status(self, params: Mapping[str, str]) -> dict[str, Any]:
        dt = datetime.fromtimestamp(self.clock() // _NS, UTC)
        return {"status": "online", "timestamp": dt.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _asset_pairs(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {k: self.specs[k].record for k in self._pairs_param(params, required=False)}

    def _assets(self, params: Mapping[str, str]) -> dict[str, Any]:
        listed = sorted(self.bal_dec)
        by_alt = {ASSETS[a]["altname"]: a for a in listed if a in ASSETS}
        want = [a.strip() for a in params.get("asset", "").split(",") if a.strip()]
        out: dict[str, Any] = {}
        for a in want or listed:
            key = a if a in listed else by_alt.get(a)
            if key is None or key not in ASSETS:
                raise KrakenError(E_UNKNOWN_ASSET)
            out[key] = ASSETS[key]
        return out

    def _levels(self, v: PairVenue, side: int) -> list[tuple[int, int, int]]:
        """(price, volume, last update ns) with the client's own resting orders included."""
        levels = dict(v.book.side(side))
        stamps = {p: v.book.stamp_ns.get((side, p), 0) for p in levels}
        for o in v.engine.resting.values():
            if o.side == side:
                levels[o.price] = levels.get(o.price, 0) + o.remaining
                stamps[o.price] = max(stamps.get(o.price, 0), self.orders[o.txid].opentm)
        ordered = sorted(levels.items(), reverse=side == BID)
        return [(p, q, stamps[p]) for p, q in ordered]

    def _depth(self, params: Mapping[str, str]) -> dict[str, Any]:
        key = self._pair_key(params.get("pair"))
        count = _int_param(params, "count", 100)
        if not 1 <= count <= 500:
            raise KrakenError(f"{E_ARGS}:count")
        v, s = self.venues[key], self.specs[key]

        def rows(side: int) -> list[list[Any]]:
            return [
                [self._px(s, p), self._depth_vol(s, q), t // _NS] for p, q, t in self._levels(v, side)[:count]
            ]

        return {key: {"asks": rows(ASK), "bids": rows(BID)}}

    def _window(self, v: PairVenue, seconds: int) -> list[dict[str, Any]]:
        cut = self.clock() - seconds * _NS
        return [d for d in v.public if d["time"] >= cut]

    def _stats(self, s: PairSpec, rows: list[dict[str, Any]]) -> tuple[str, str, int, str, str]:
        """Volume, VWAP, count, low, high of some public trades, as Kraken's ticker shows them."""
        vol = sum(d["vol"] for d in rows)
        notional = sum(d["price"] * d["vol"] for d in rows)
        vwap = _round_div(notional, vol) if vol else 0
        lo = min((d["price"] for d in rows), default=0)
        hi = max((d["price"] for d in rows), default=0)
        return (
            format_raw(vol, s.lot_decimals),
            self._px(s, vwap),
            len(rows),
            self._px(s, lo),
            self._px(s, hi),
        )

    def _touch(self, s: PairSpec, levels: list[tuple[int, int, int]]) -> list[str]:
        """Ticker ``a``/``b``: [price, whole lot volume, lot volume (3 decimals)]."""
        if not levels:
            return [self._px(s, 0), "0", "0.000"]
        p, q, _ = levels[0]
        lot3 = (
            _round_div(q, 10 ** (s.lot_decimals - 3))
            if s.lot_decimals >= 3
            else q * 10 ** (3 - s.lot_decimals)
        )
        whole = max(1, _ceil_div(q, 10**s.lot_decimals))
        return [self._px(s, p), str(whole), format_raw(lot3, 3)]

    def _ticker(self, params: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        midnight = (self.clock() // (86_400 * _NS)) * 86_400 * _NS
        for key in self._pairs_param(params, required=False):
            v, s = self.venues[key], self.specs[key]
            day = self._window(v, 86_400)
            today = [d for d in day if d["time"] >= midnight]
            st, sd = self._stats(s, today), self._stats(s, day)
            last = v.public[-1] if v.public else {"price": 0, "vol": 0}
            first = today[0] if today else (day[0] if day else last)
            out[key] = {
                "a": self._touch(s, self._levels(v, ASK)[:1]),
                "b": self._touch(s, self._levels(v, BID)[:1]),
                "c": [self._px(s, last["price"]), format_raw(last["vol"], s.lot_decimals)],
                "v": [st[0], sd[0]],
                "p": [st[1], sd[1]],
                "t": [st[2], sd[2]],
                "l": [st[3], sd[3]],
                "h": [st[4], sd[4]],
                "o": self._px(s, first["price"]),
            }
        return out

    def _trades_public(self, params: Mapping[str, str]) -> dict[str, Any]:
        key = self._pair_key(params.get("pair"))
        v, s = self.venues[key], self.specs[key]
        count = _int_param(params, "count", 1000)
        rows = list(v.public)
        since_ns = _since_ns(params.get("since"))
        # from a cursor: the oldest ones after it; without one: the most recent ones
        rows = [d for d in rows if d["time"] > since_ns][:count] if since_ns is not None else rows[-count:]
        out = [
            [
                self._px(s, d["price"]),
                format_raw(d["vol"], s.lot_decimals),
                _ts(d["time"]),
                d["side"],
                d["type"],
                "",
                d["id"],
            ]
            for d in rows
        ]
        last = rows[-1]["time"] if rows else (since_ns or 0)
        return {key: out, "last": str(last)}

    def _ohlc(self, params: Mapping[str, str]) -> dict[str, Any]:
        key = self._pair_key(params.get("pair"))
        v, s = self.venues[key], self.specs[key]
        interval = _int_param(params, "interval", 1)
        if interval not in (1, 5, 15, 30, 60, 240, 1440, 10080, 21600):
            raise KrakenError(f"{E_ARGS}:interval")
        width = interval * 60 * _NS
        since = _int_param(params, "since", 0) * _NS
        bars: dict[int, list[dict[str, Any]]] = {}
        for d in v.public:
            start = d["time"] // width * width
            if start >= since:
                bars.setdefault(start, []).append(d)
        pd = s.pair_decimals
        rows: list[list[Any]] = []
        for start in sorted(bars):
            b = bars[start]
            vol = sum(d["vol"] for d in b)
            vwap = _round_div(sum(d["price"] * d["vol"] for d in b), vol) if vol else b[-1]["price"]
            prices = [
                b[0]["price"],
                max(d["price"] for d in b),
                min(d["price"] for d in b),
                b[-1]["price"],
                vwap,
            ]
            rows.append(
                [start // _NS, *(format_raw(p, pd) for p in prices), format_raw(vol, s.lot_decimals), len(b)]
            )
        last = rows[-2][0] if len(rows) > 1 else (rows[0][0] if rows else since // _NS)
        return {key: rows, "last": last}

    # --- private endpoints -------------------------------------------------------------------------
    def _balance(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {a: format_raw(self.balances[a], self.bal_dec[a]) for a in sorted(self.balances)}

    def _balance_ex(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {
            a: {
                "balance": format_raw(self.balances[a], self.bal_dec[a]),
                "hold_trade": format_raw(self._held(a), self.bal_dec[a]),
            }
            for a in sorted(self.balances)
        }

    def _add_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        key = self._pair_key(params.get("pair"))
        s = self.specs[key]
        v = self.venues[key]
        side = params.get("type", "")
        if side not in ("buy", "sell"):
            raise KrakenError(f"{E_ARGS}:type")
        ordertype = params.get("ordertype", "")
        if ordertype not in ("market", "limit"):
            raise KrakenError(f"{E_ARGS}:ordertype")
        for name in _UNSUPPORTED_ADD:
            if params.get(name) not in (None, "", "none", "0"):
                raise KrakenError(f"{E_ARGS}:{name}")
        if _truthy(params.get("reduce_only")):
            raise KrakenError(f"{E_ARGS}:reduce_only")
        if params.get("starttm") not in (None, "", "0") or params.get("expiretm") not in (None, "", "0"):
            raise KrakenError(f"{E_ARGS}:expiretm")
        vol = _parse_raw(params.get("volume"), s.lot_decimals, "volume")
        if vol <= 0:
            raise KrakenError(f"{E_ARGS}:volume")
        price = 0
        if ordertype == "limit":
            price = _parse_raw(params.get("price"), s.pair_decimals, "price")
            if price <= 0 or price % s.tick_raw:
                raise KrakenError(f"{E_ARGS}:price")
        flags = [f for f in params.get("oflags", "").split(",") if f]
        if set(flags) - {"post", "fcib", "fciq", "nompp"} or ("fcib" in flags and "fciq" in flags):
            raise KrakenError(f"{E_ARGS}:oflags")
        post = "post" in flags
        if post and ordertype != "limit":
            raise KrakenError(f"{E_ARGS}:oflags")
        tif = (params.get("timeinforce") or "GTC").upper()
        if tif not in ("GTC", "IOC") or (post and tif == "IOC"):
            raise KrakenError(f"{E_ARGS}:timeinforce")
        stptype = params.get("stptype") or STP_CANCEL_NEWEST
        if stptype not in (STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_CANCEL_BOTH):
            raise KrakenError(f"{E_ARGS}:stptype")
        userref: int | None = None
        if params.get("userref") not in (None, ""):
            try:
                userref = int(params["userref"])
            except ValueError as exc:
                raise KrakenError(f"{E_ARGS}:userref") from exc
            if not -(2**31) <= userref < 2**31:
                raise KrakenError(f"{E_ARGS}:userref")
        cl_ord_id = params.get("cl_ord_id") or None
        if cl_ord_id is not None and (
            userref is not None or not (_UUID.match(cl_ord_id) or _FREE_TEXT.match(cl_ord_id))
        ):
            raise KrakenError(f"{E_ARGS}:cl_ord_id")
        if vol < s.ordermin_raw:
            raise KrakenError(E_ORDER_MIN)
        if ordertype == "limit" and self._cost(s, price, vol) < s.costmin_raw:
            raise KrakenError(E_COST_MIN)
        if cl_ord_id is not None:
            for txid in self._by_clordid.get(cl_ord_id, []):
                if self.config.clordid_scope == "all" or self.orders[txid].is_open:
                    raise KrakenError(E_DUPLICATE)

        now = self.clock()
        o = OrderRec(
            txid="",
            seq=0,
            pair=key,
            side=side,
            ordertype=ordertype,
            price=price,
            vol=vol,
            opentm=now,
            fee_in_base="fcib" in flags,
            post=post,
            timeinforce=tif,
            stptype=stptype,
            userref=userref,
            cl_ord_id=cl_ord_id,
        )
        book_side = BID if side == "buy" else ASK
        limit = price if ordertype == "limit" else None
        # funds: what the whole order could need, before anything trades
        if ordertype == "limit":
            hold_asset, need = self._hold_for(o, s)
        elif side == "buy":
            est = v.engine.estimate(book_side, None, vol)
            notional = sum(Fraction(p * q, 10 ** (s.pair_decimals + s.lot_decimals)) for p, q in est)
            fee = Fraction(0) if o.fee_in_base else notional * s.taker_rate
            hold_asset, need = s.quote, _ceil_div_frac((notional + fee) * 10 ** self.bal_dec[s.quote])
        else:
            hold_asset, need = self._hold_for(o, s)
        if need > self._available(hold_asset):
            raise KrakenError(E_FUNDS)
        descr = {"order": self._descr(o)}
        if _truthy(params.get("validate")):
            return {"descr": descr}

        o.txid = self._new_id("O")
        o.seq = self._next_seq()
        self.orders[o.txid] = o
        if cl_ord_id is not None:
            self._by_clordid.setdefault(cl_ord_id, []).append(o.txid)
        self._dirty_orders.add(o.txid)
        self._set_hold(o)

        if post and v.engine.would_take(book_side, limit):
            self._close(o, "canceled", REASON_POST_ONLY, now)
            return {"txid": [o.txid], "descr": descr}
        takes = self.take_cap is not None and v.engine.would_take(book_side, limit)
        cap = self.take_cap(vol) if self.take_cap is not None and takes else None
        res = v.engine.take(o.txid, book_side, limit, vol if cap is None else cap, stptype, now)
        v.moved = v.moved or bool(res.fills)
        aggressor = AGGRESSOR_BUY if side == "buy" else AGGRESSOR_SELL
        for f in res.fills:
            self._fill(
                v, f, now, v.publish(f.price, f.qty, now, aggressor, "l" if ordertype == "limit" else "m")
            )
        for other in res.stp_canceled:
            self._close(self.orders[other], "canceled", REASON_STP, now)
        if o.is_open:
            stopped = res.stp_hit and stptype in (STP_CANCEL_NEWEST, STP_CANCEL_BOTH)
            if stopped:
                self._close(o, "canceled", REASON_STP, now)
            elif ordertype == "market":
                self._close(o, "canceled", REASON_NO_LIQUIDITY, now)
            elif tif == "IOC":
                self._close(o, "canceled", REASON_IOC, now)
            else:
                o.queue_ahead = v.engine.queue_at(book_side, price)
                v.engine.add(Resting(o.txid, book_side, price, o.remaining, o.queue_ahead, o.seq))
                self._set_hold(o)
        return {"txid": [o.txid], "descr": descr}

    def _ws_token(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GetWebSocketsToken: a token for the private websocket (memory only, lost on restart)."""
        now = self.clock()
        for token in [t for t, exp in self.ws_tokens.items() if exp <= now]:
            del self.ws_tokens[token]
        token = base64.b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
        self.ws_tokens[token] = now + WS_TOKEN_TTL_S * _NS
        return {"token": token, "expires": WS_TOKEN_TTL_S}

    def _find_open(self, params: Mapping[str, str]) -> list[OrderRec]:
        cl = params.get("cl_ord_id")
        txid = params.get("txid")
        if cl:
            found = [self.orders[t] for t in self._by_clordid.get(cl, [])]
        elif txid:
            if txid.lstrip("-").isdigit():  # Kraken: a userref cancels every order carrying it
                found = [o for o in self.orders.values() if o.userref == int(txid)]
            elif txid in self.orders:
                found = [self.orders[txid]]
            else:
                found = []
        else:
            raise KrakenError(f"{E_ARGS}:txid")
        return [o for o in found if o.is_open]

    def _cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        found = self._find_open(params)
        if not found:
            raise KrakenError(E_UNKNOWN_ORDER)
        now = self.clock()
        for o in found:
            self._close(o, "canceled", REASON_USER, now)
        return {"count": len(found)}

    def _cancel_all(self, params: Mapping[str, str]) -> dict[str, Any]:
        now = self.clock()
        open_orders = [o for o in self.orders.values() if o.is_open]
        for o in open_orders:
            self._close(o, "canceled", REASON_USER, now)
        return {"count": len(open_orders)}

    @staticmethod
    def _filter(orders: list[OrderRec], params: Mapping[str, str]) -> list[OrderRec]:
        if params.get("userref") not in (None, ""):
            try:
                ref = int(params["userref"])
            except ValueError as exc:
                raise KrakenError(f"{E_ARGS}:userref") from exc
            orders = [o for o in orders if o.userref == ref]
        if params.get("cl_ord_id"):
            orders = [o for o in orders if o.cl_ord_id == params["cl_ord_id"]]
        return orders

    def _query_orders(self, params: Mapping[str, str]) -> dict[str, Any]:
        ids = [t.strip() for t in params.get("txid", "").split(",") if t.strip()]
        if not ids or len(ids) > 50:
            raise KrakenError(f"{E_ARGS}:txid")
        if any(t not in self.orders for t in ids):
            raise KrakenError(E_INVALID_ORDER)
        chosen = self._filter([self.orders[t] for t in ids], params)
        trades = _truthy(params.get("trades"))
        return {o.txid: self._order_info(o, where="query", trades=trades) for o in chosen}

    def _open_orders(self, params: Mapping[str, str]) -> dict[str, Any]:
        chosen = self._filter([o for o in self.orders.values() if o.is_open], params)
        trades = _truthy(params.get("trades"))
        chosen.sort(key=lambda o: o.seq, reverse=True)
        return {"open": {o.txid: self._order_info(o, where="open", trades=trades) for o in chosen}}

    def _closed_orders(self, params: Mapping[str, str]) -> dict[str, Any]:
        chosen = self._filter([o for o in self.orders.values() if not o.is_open], params)
        start = params.get("start")
        end = params.get("end")
        if start:
            chosen = [o for o in chosen if o.opentm > self._when(start)]
        if end:
            chosen = [o for o in chosen if o.opentm <= self._when(end)]
        chosen.sort(key=lambda o: o.seq, reverse=True)
        ofs = _int_param(params, "ofs", 0)
        trades = _truthy(params.get("trades"))
        page = chosen[ofs : ofs + 50]
        return {
            "closed": {o.txid: self._order_info(o, where="closed", trades=trades) for o in page},
            "count": len(chosen),
        }

    def _when(self, text: str) -> int:
        """A Kraken start/end bound: seconds, or an order/trade id (its time)."""
        if text in self.orders:
            return self.orders[text].opentm
        if text in self.trades:
            return self.trades[text].time
        try:
            return int(Decimal(text) * _NS)
        except InvalidOperation as exc:
            raise KrakenError(f"{E_ARGS}:start") from exc

    def _trades_history(self, params: Mapping[str, str]) -> dict[str, Any]:
        rows = sorted(self.trades.values(), key=lambda t: t.seq, reverse=True)
        if params.get("start"):
            rows = [t for t in rows if t.time > self._when(params["start"])]
        if params.get("end"):
            rows = [t for t in rows if t.time <= self._when(params["end"])]
        ofs = _int_param(params, "ofs", 0)
        return {"trades": {t.txid: self._trade_info(t) for t in rows[ofs : ofs + 50]}, "count": len(rows)}

    def _query_trades(self, params: Mapping[str, str]) -> dict[str, Any]:
        ids = [t.strip() for t in params.get("txid", "").split(",") if t.strip()]
        if not ids or len(ids) > 20:
            raise KrakenError(f"{E_ARGS}:txid")
        if any(t not in self.trades for t in ids):
            raise KrakenError("EQuery:Invalid trade")
        return {t: self._trade_info(self.trades[t]) for t in ids}


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name)
    if text in (None, ""):
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise KrakenError(f"{E_ARGS}:{name}") from exc


def _since_ns(text: str | None) -> int | None:
    """Kraken's ``since``: seconds (what ccxt sends) or the nanosecond ``last`` cursor."""
    if not text:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation as exc:
        raise KrakenError(f"{E_ARGS}:since") from exc
    return int(d * _NS) if d < 10**12 else int(d)


def _ceil_div_frac(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def _round_frac(x: Fraction) -> int:
    return _round_div(x.numerator, x.denominator)


_PUBLIC: dict[str, Callable[[Exchange, Mapping[str, str]], Any]] = {
    "Time": Exchange._time,
    "SystemStatus": Exchange._system_status,
    "AssetPairs": Exchange._asset_pairs,
    "Assets": Exchange._assets,
    "Ticker": Exchange._ticker,
    "Depth": Exchange._depth,
    "Trades": Exchange._trades_public,
    "OHLC": Exchange._ohlc,
}

_PRIVATE: dict[str, Callable[[Exchange, Mapping[str, str]], Any]] = {
    "Balance": Exchange._balance,
    "BalanceEx": Exchange._balance_ex,
    "AddOrder": Exchange._add_order,
    "CancelOrder": Exchange._cancel_order,
    "CancelAll": Exchange._cancel_all,
    "QueryOrders": Exchange._query_orders,
    "OpenOrders": Exchange._open_orders,
    "ClosedOrders": Exchange._closed_orders,
    "TradesHistory": Exchange._trades_history,
    "QueryTrades": Exchange._query_trades,
    "GetWebSocketsToken": Exchange._ws_token,
}

PUBLIC_METHODS = tuple(_PUBLIC)
PRIVATE_METHODS = tuple(_PRIVATE)

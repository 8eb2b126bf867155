"""Kraken websocket v2 on the local exchange: book, trades and our own executions, end to end.

Markets are real recordings, as in ``test_local_exchange.py``: the BTC/USD book is Kraken's own
websocket book snapshot from the ccxt fixtures, BTC/USDT replays the Binance BTCUSDT L2 capture of
2024-08-08 re-gridded onto Kraken's 0.1 tick. Everything runs on 127.0.0.1.

(a) ccxt.pro kraken on the local ``/v2``: its book equals REST ``Depth`` (after our own orders
    too), and ``watch_trades`` sees the print of a crossing order; the snapshot frame for the
    recorded book is the recorded frame (levels, checksum, layout).
(b) ``KrakenBookClient`` (``SyncedBook`` + ``kraken_v2_checksum``) verifies every checksum the
    exchange sends while the Binance capture replays: thousands of updates, no failure.
(c) ``KrakenExecutionsClient`` on ``/v2-auth`` with tokens from ccxt's signed
    ``private_post_getwebsocketstoken``: new / trade / canceled for orders placed through
    ``CcxtVenue``, fills exactly equal to REST ``TradesHistory``; a server-side disconnect is
    reconnected with a new token and a fill made while away arrives in the snapshot (a cancel made
    while away does not: REST polling by client id finds it); a wrong or expired token gets
    Kraken's error frame.

No wall-clock thresholds: every wait is for a condition; ``asyncio.timeout`` only guards hangs.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import ccxt
import ccxt.pro
import pytest
from structlog.testing import capture_logs
from websockets.asyncio.client import ClientConnection, connect

from bastion.data.binance_ws import load_binance_ws
from bastion.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side
from bastion.venues.ccxt_venue import CcxtVenue
from bastion.venues.kraken_executions import (
    ClientIdMap,
    ExecutionsThread,
    KrakenExecutionsClient,
    ccxt_token_fn,
    parse_rfc3339_ns,
)
from bastion.venues.kraken_ws import KrakenBookClient
from bastion.venues.local_exchange import Exchange, ExchangeConfig, MarketEvents, ServerThread
from bastion.venues.local_exchange.book import ASK, BID
from bastion.venues.local_exchange.faults import FaultConfig
from bastion.venues.local_exchange.ws import top_levels
from bastion.venues.ws_book import BookState, loads_exact

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
SECRET = base64.b64encode(bytes(range(64))).decode()
KEY = "ws-test-key"
BALANCES = {"XXBT": "2", "ZUSD": "500000", "USDT": "100000"}
BINANCE_SPOT = "ticks_l2/binance_ws_hftbacktest/spot/btcusdt_20240808.gz"
GUARD_S = 60.0  # hang guard only, never an assertion about speed
BTCUSD = Instrument(
    symbol="BTCUSD", venue="KRAKEN", kind=InstrumentKind.SPOT, base="BTC", quote="USD",
    tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"),
    maker_fee=Decimal("0.0016"), taker_fee=Decimal("0.0026"),
)  # fmt: skip
Levels = list[tuple[Decimal, Decimal]]


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(GUARD_S):
            return await coro

    return asyncio.run(guarded())


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a condition that no event of ours signals (another thread's progress)."""
    while not predicate():
        await asyncio.sleep(0.01)


# --- markets --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorded_ws() -> dict[str, Any]:
    doc: dict[str, Any] = loads_exact((FIXTURES / "ccxt/ws/kraken.json").read_text())
    return doc


@pytest.fixture(scope="module")
def kraken_snapshot() -> dict[str, Any]:
    """Kraken's recorded BTC/USD book snapshot (websocket v2, depth 10), numbers exact."""
    doc = loads_exact((FIXTURES / "ccxt/extracts/ws_kraken_book_subset.json").read_text())
    snap: dict[str, Any] = doc["messages"][0]["data"][0]
    assert snap["symbol"] == "BTC/USD"
    return snap


@pytest.fixture(scope="module")
def usd_market(kraken_snapshot: dict[str, Any]) -> MarketEvents:
    s = kraken_snapshot
    return MarketEvents.from_levels(
        [(str(b["price"]), str(b["qty"])) for b in s["bids"]],
        [(str(a["price"]), str(a["qty"])) for a in s["asks"]],
        1_791_273_897_750_392_000,
        source="kraken ws book BTC/USD 2026-10-06",
    )


@pytest.fixture(scope="module")
def usdt_market(shared_data: Path) -> MarketEvents:
    book, trades = load_binance_ws(shared_data / BINANCE_SPOT)
    return MarketEvents.from_columns(
        book.columns, trades.columns, book.price_precision, book.size_precision, source=BINANCE_SPOT
    )


class OffsetClock:
    """The exchange's clock: wall time plus an offset a test can move forward (token expiry)."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def __call__(self) -> int:
        return time.time_ns() + self.offset_ns


def make_exchange(state: Path, markets: dict[str, MarketEvents], **kw: Any) -> Exchange:
    cfg = ExchangeConfig(KEY, SECRET, state, speed=0, initial_balances=BALANCES)
    return Exchange(cfg, markets, **kw)


@pytest.fixture()
def usd_server(tmp_path: Path, usd_market: MarketEvents) -> Iterator[ServerThread]:
    with ServerThread(make_exchange(tmp_path / "state", {"XXBTZUSD": usd_market})) as srv:
        yield srv


def rest_client(srv: ServerThread) -> ccxt.kraken:
    ex = ccxt.kraken({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "timeout": 5000})
    ex.urls["api"] = {**ex.urls["api"], "public": srv.url, "private": srv.url}
    return ex


def pro_client(srv: ServerThread) -> Any:
    ex = ccxt.pro.kraken({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "timeout": 5000})
    ws = {**ex.urls["api"]["ws"], "publicV2": srv.ws_url, "privateV2": srv.ws_auth_url}
    ex.urls["api"] = {**ex.urls["api"], "public": srv.url, "private": srv.url, "ws": ws}
    return ex


def rest_depth(srv: ServerThread, pair: str, count: int = 10) -> dict[str, Levels]:
    """REST ``Depth`` as exact Decimals, best first."""
    with urllib.request.urlopen(f"{srv.url}/0/public/Depth?pair={pair}&count={count}", timeout=5) as resp:
        body = json.loads(resp.read())
    (book,) = body["result"].values()
    return {side: [(Decimal(p), Decimal(q)) for p, q, _ in book[side]] for side in ("bids", "asks")}


def ccxt_levels(ob: Any) -> dict[str, Levels]:
    return {
        side: [(Decimal(repr(p)), Decimal(repr(q))) for p, q, *_ in ob[side]] for side in ("bids", "asks")
    }


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = loads_exact(await ws.recv())
        if msg.get("channel") != "heartbeat":
            return msg


# --- (a) the public channels ------------------------------------------------------------------------
def test_snapshot_frame_is_the_recorded_kraken_frame(
    usd_server: ServerThread, kraken_snapshot: dict[str, Any], recorded_ws: dict[str, Any]
) -> None:
    """The recorded Kraken book served back: same levels, same checksum, same frame layout."""
    case = recorded_ws["methods"]["watchOrderBook"][1]  # the case the snapshot extract comes from
    rec_status, rec_ack = case["messages"][0], case["messages"][1]
    rec_snap = next(m for m in case["messages"] if m.get("type") == "snapshot")

    async def go() -> tuple[dict[str, Any], ...]:
        async with connect(usd_server.ws_url) as ws:
            status = await recv_json(ws)
            await ws.send(json.dumps(case["sentMessages"][0]))  # the frame ccxt sent to Kraken
            ack = await recv_json(ws)
            snap = await recv_json(ws)
            await ws.send(json.dumps({"method": "ping", "req_id": 7}))
            pong = await recv_json(ws)
            return status, ack, snap, pong

    status, ack, snap, pong = run(go())
    assert set(rec_status["data"][0]) >= set(status["data"][0]) and status["channel"] == "status"
    assert list(ack) == list(rec_ack) and ack["result"] == rec_ack["result"] and ack["success"] is True
    assert list(snap) == list(rec_snap) and list(snap["data"][0]) == list(rec_snap["data"][0])
    item = snap["data"][0]
    for side in ("bids", "asks"):
        assert [(lv["price"], lv["qty"]) for lv in item[side]] == [
            (lv["price"], lv["qty"]) for lv in kraken_snapshot[side]
        ]
    assert item["checksum"] == kraken_snapshot["checksum"] == 817831036
    # every number carries the pair's decimals (the checksum's digits), not a float's repr
    assert str(item["bids"][3]["qty"]) == "0.00005000" and str(item["bids"][9]["price"]) == "85592.0"
    assert pong["method"] == "pong" and pong["req_id"] == 7 and {"time_in", "time_out"} <= set(pong)


def test_ccxt_pro_book_equals_rest_depth_and_sees_our_trade(usd_server: ServerThread) -> None:
    rest = rest_client(usd_server)
    rest.load_markets()
    hub = usd_server.server.ws

    async def go() -> None:
        ex = pro_client(usd_server)
        try:
            ob = await ex.watch_order_book("BTC/USD")
            assert ccxt_levels(ob) == rest_depth(usd_server, "XBTUSD")
            # our resting bid inside the top 10 shows on the socket and in REST alike
            await asyncio.to_thread(rest.create_order, "BTC/USD", "limit", "buy", 0.25, 85598.0)
            while (Decimal("85598.0"), Decimal("0.25")) not in ccxt_levels(ob)["bids"]:
                ob = await ex.watch_order_book("BTC/USD")
            assert ccxt_levels(ob) == rest_depth(usd_server, "XBTUSD")

            trades_task = asyncio.create_task(ex.watch_trades("BTC/USD"))
            await until(lambda: hub.subscriptions("trade") == 1)
            # a limit buy through the best ask: takes 0.5 of the 0.90679198 at 85600.5
            await asyncio.to_thread(rest.create_order, "BTC/USD", "limit", "buy", 0.5, 85602.0)
            trades = await trades_task
            assert [(t["price"], t["amount"], t["side"], t["type"]) for t in trades] == [
                (85600.5, 0.5, "buy", "limit")
            ]
            public = rest.fetch_trades("BTC/USD")
            assert trades[0]["id"] == public[-1]["id"] and trades[0]["price"] == public[-1]["price"]
            while ccxt_levels(ob)["asks"][0] != (Decimal("85600.5"), Decimal("0.40679198")):
                ob = await ex.watch_order_book("BTC/USD")
            assert ccxt_levels(ob) == rest_depth(usd_server, "XBTUSD")
        finally:
            await ex.close()

    run(go())


class DownFeed:
    """A live market that has not (re)gained a verified book: resyncing after a drop, say."""

    source = "live ws://127.0.0.1:9/v2"
    price_precision, size_precision, live = 1, 8, False

    def drain(self) -> list[tuple[int, int, int, int, int]]:
        return []

    def status(self) -> dict[str, Any]:
        return {"state": "resyncing (checksum)"}


def test_websocket_withholds_the_book_while_the_market_is_not_current(
    tmp_path: Path, usd_market: MarketEvents
) -> None:
    """A replay that has run out, or a live market that is resyncing, leaves the book standing as
    it last was: a subscriber must not get that as a fresh snapshot (REST Depth still answers,
    with the levels' own old timestamps)."""
    down = Exchange(
        ExchangeConfig(KEY, SECRET, tmp_path / "live", speed=0, initial_balances=BALANCES),
        feeds={"XXBTZUSD": DownFeed()},
    )
    assert "live market not current (resyncing (checksum))" in (down.market_down() or "")
    down.close()
    # Kraken's recorded snapshot, "replayed" at speed 1, has ended as soon as it has opened
    cfg = ExchangeConfig(KEY, SECRET, tmp_path / "s", speed=1.0, initial_balances=BALANCES)
    exch = Exchange(cfg, {"XXBTZUSD": usd_market})
    with ServerThread(exch) as srv:
        hub = srv.server.ws

        async def go() -> None:
            await until(lambda: exch.market_down() is not None)
            c = KrakenBookClient("BTC/USD", price_precision=1, size_precision=8, depth=10, url=srv.ws_url)
            c.start()
            try:
                await until(lambda: hub.subscriptions("book") == 1)
                rest_client(srv).create_order("BTC/USD", "limit", "buy", 0.01, 50000, {})  # a commit
                await until(lambda: hub.counters.stalled_commits >= 1)
                assert hub.counters.book_snapshots == 0 and hub.counters.book_updates == 0
                assert c.book.state is not BookState.LIVE
            finally:
                await c.stop()

        run(go())
        assert "ended" in (exch.market_down() or "")
        assert rest_depth(srv, "XXBTZUSD")["bids"]  # REST still shows the (old) book


def test_subscription_errors_and_unsubscribe(usd_server: ServerThread) -> None:
    async def go() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with connect(usd_server.ws_url) as ws:
            await recv_json(ws)  # status

            def book(method: str, req_id: int, **params: Any) -> dict[str, Any]:
                params = {"channel": "book", "symbol": ["BTC/USD"], **params}
                return {"method": method, "params": params, "req_id": req_id}

            requests: list[dict[str, Any]] = [
                book("subscribe", 1, symbol=["DOGE/EUR"]),
                book("subscribe", 2, depth=7),
                book("subscribe", 3, depth=25),
                book("subscribe", 4),
                book("unsubscribe", 5),
                {"method": "subscribe", "params": {"channel": "executions", "token": "x"}, "req_id": 6},
            ]
            for r in requests:
                await ws.send(json.dumps(r))
            while len(out) < 7:  # 6 answers and one snapshot
                out.append(await recv_json(ws))
        return out

    msgs = run(go())
    answers = [m for m in msgs if "req_id" in m]
    assert [(m["req_id"], m["success"], m.get("error")) for m in answers] == [
        (1, False, "Currency pair not supported DOGE/EUR"),
        (2, False, "Subscription depth not supported"),
        (3, True, None),
        (4, False, "Already subscribed"),
        (5, True, None),
        (6, False, "EGeneral:Permission denied:private channel on the public endpoint"),
    ]
    snaps = [m for m in msgs if m.get("channel") == "book"]
    assert len(snaps) == 1 and len(snaps[0]["data"][0]["bids"]) == 10  # the static book has 10 levels
    assert answers[4]["result"] == {"channel": "book", "depth": 25, "symbol": "BTC/USD"}


# --- (b) every checksum over a replayed market --------------------------------------------------------
def test_synced_book_verifies_every_checksum_while_the_market_replays(
    tmp_path: Path, usdt_market: MarketEvents
) -> None:
    """Binance BTCUSDT as XBTUSDT, stepped 10 events at a time: every update's checksum verified."""
    exch = make_exchange(tmp_path / "s", {"XBTUSDT": usdt_market})
    steps, per_step = 6000, 10
    with ServerThread(exch) as srv:
        hub = srv.server.ws

        async def go() -> tuple[KrakenBookClient, KrakenBookClient]:
            c10 = KrakenBookClient("BTC/USDT", price_precision=1, size_precision=8, depth=10, url=srv.ws_url)
            c100 = KrakenBookClient(
                "BTC/USDT", price_precision=1, size_precision=8, depth=100, url=srv.ws_url
            )
            clients = (c10, c100)
            for c in clients:
                c.start()
            try:
                for c in clients:
                    await c.wait_until(lambda c=c: c.book.state is BookState.LIVE)  # type: ignore[misc]
                for _ in range(steps):
                    await asyncio.to_thread(exch.advance_market, "XBTUSDT", events=per_step)

                # then wait for the books to be the exchange's (every frame sent has arrived)
                def at_server(depth: int) -> dict[str, list[tuple[int, int]]]:
                    with exch.lock:
                        v = exch.venues["XBTUSDT"]
                        return {"bids": top_levels(v, BID, depth), "asks": top_levels(v, ASK, depth)}

                for c in clients:
                    want = at_server(c.depth)
                    await until(
                        lambda c=c, want=want: (
                            {  # type: ignore[misc]
                                "bids": c.book.bid_levels(),
                                "asks": c.book.ask_levels(),
                            }
                            == want
                        )
                    )
            finally:
                for c in clients:
                    await c.stop()
            return c10, c100

        c10, c100 = run(go())
        assert hub.counters.slow_closes == 0
        assert rest_depth(srv, "XBTUSDT", 10) == c10.book.as_decimal()  # and REST agrees
    assert exch.venues["XBTUSDT"].pos > exch.venues["XBTUSDT"].opening + (steps - 1) * per_step
    for c in (c10, c100):
        counters = c.book.counters
        assert not counters.stale, counters.stale  # no checksum failure, gap or disconnect
        assert counters.snapshots == 1 and c.counters.reconnects == 0 and c.counters.errors == 0
        assert counters.checksums_ok == counters.snapshots + counters.deltas
    assert c10.book.counters.deltas >= 2000, c10.book.counters
    assert c100.book.counters.deltas >= c10.book.counters.deltas


def test_feed_stall_holds_websocket_book_and_trades_back_and_snapshots_after_it(
    tmp_path: Path, usdt_market: MarketEvents
) -> None:
    """The ``stale_book`` fault hangs the websocket feed too: while it lasts no book or trade frame
    goes out (a subscriber's snapshot waits), REST ``Depth`` is frozen; when it ends the books catch
    up with the market exactly."""
    exch = make_exchange(tmp_path / "s", {"XBTUSDT": usdt_market})
    with ServerThread(exch) as srv:
        hub = srv.server.ws

        def at_server() -> dict[str, list[tuple[int, int]]]:
            with exch.lock:
                v = exch.venues["XBTUSDT"]
                return {"bids": top_levels(v, BID, 10), "asks": top_levels(v, ASK, 10)}

        def book_of(c: KrakenBookClient) -> dict[str, list[tuple[int, int]]]:
            return {"bids": c.book.bid_levels(), "asks": c.book.ask_levels()}

        async def go() -> None:
            before = KrakenBookClient(
                "BTC/USDT", price_precision=1, size_precision=8, depth=10, url=srv.ws_url
            )
            before.start()
            late = KrakenBookClient("BTC/USDT", price_precision=1, size_precision=8, depth=10, url=srv.ws_url)
            try:
                await before.wait_until(lambda: before.book.state is BookState.LIVE)
                await asyncio.to_thread(exch.advance_market, "XBTUSDT", events=200)
                want = at_server()
                await until(lambda: book_of(before) == want)
                # the stall starts at the next commit and lasts until the test lifts it
                srv.faults.configure(FaultConfig(seed=1, stale_book=1.0, stale_s=3600.0))
                frozen_depth = rest_depth(srv, "XBTUSDT")
                sent = (hub.counters.book_updates, hub.counters.book_snapshots, hub.counters.trade_messages)
                held_book = book_of(before)
                late.start()
                await until(lambda: late.connected)
                for _ in range(50):
                    await asyncio.to_thread(exch.advance_market, "XBTUSDT", events=20)
                assert at_server() != held_book  # the market moved ...
                assert hub.counters.stalled_commits >= 50
                assert sent == (
                    hub.counters.book_updates,
                    hub.counters.book_snapshots,
                    hub.counters.trade_messages,
                )  # ... and nothing about it went out
                assert book_of(before) == held_book
                assert late.book.state is not BookState.LIVE  # its snapshot waits for the feed
                assert rest_depth(srv, "XBTUSDT") == frozen_depth
                srv.faults.configure(FaultConfig(seed=1))  # the feed comes back
                await asyncio.to_thread(exch.advance_market, "XBTUSDT", events=20)
                want = at_server()
                await late.wait_until(lambda: late.book.state is BookState.LIVE)
                await until(lambda: book_of(before) == want and book_of(late) == want)
                assert rest_depth(srv, "XBTUSDT") != frozen_depth
            finally:
                await before.stop()
                await late.stop()
            for c in (before, late):
                assert not c.book.counters.stale, c.book.counters.stale  # no checksum failure or gap
                assert c.book.counters.checksums_ok == c.book.counters.snapshots + c.book.counters.deltas

        run(go())
    assert srv.faults.injected["stale_book"] == 1


# --- (c) our own executions ---------------------------------------------------------------------------
class GatedToken:
    """ccxt's signed GetWebSocketsToken, with a gate that holds a fetch while the test acts."""

    def __init__(self, ex: ccxt.kraken) -> None:
        self._fetch = ccxt_token_fn(ex)
        self.tokens: list[str] = []
        self.calls = 0
        self.armed = False
        self.gate = threading.Event()

    def __call__(self) -> str:
        self.calls += 1
        if self.armed:
            assert self.gate.wait(GUARD_S), "gate never opened"
            self.armed = False
        token = self._fetch()
        assert isinstance(token, str)
        self.tokens.append(token)
        return token


def order(cid: str, side: Side, qty: str, price: str) -> Order:
    return Order(cid, BTCUSD.id, side, OrderType.LIMIT, Quantity.from_str(qty, 8), Price.from_str(price, 1))


async def events_until(
    client: KrakenExecutionsClient, got: list[OrderEvent], done: Callable[[list[OrderEvent]], bool]
) -> None:
    while True:
        got.extend(client.drain())
        if done(got):
            return
        mark = client.counters.events  # the client runs on this loop: nothing arrives until we await
        await client.wait_until(lambda mark=mark: client.counters.events > mark)  # type: ignore[misc]


def kinds(events: list[OrderEvent], cid: str) -> list[str]:
    return [type(e).__name__ for e in events if e.client_order_id == cid]


def test_executions_client_new_trade_canceled_exact_and_reconnect(usd_server: ServerThread) -> None:
    ex = rest_client(usd_server)
    ex.load_markets()
    venue = CcxtVenue(ex, BTCUSD, "BTC/USD", "kraken")  # sets the µs nonce the token calls share
    ids = ClientIdMap()
    token = GatedToken(ex)
    long_id = "mm-alpha-strategy-000001"  # 24 chars: goes out as a UUID
    assert ids.register(long_id) != long_id

    async def go() -> tuple[list[OrderEvent], list[OrderEvent], KrakenExecutionsClient, list[Any]]:
        client = KrakenExecutionsClient(
            token, {"BTC/USD": BTCUSD}, url=usd_server.ws_auth_url, client_id_of=ids, backoff_initial_s=0.05
        )
        client.start()
        got: list[OrderEvent] = []
        with capture_logs() as logs:
            try:
                await client.wait_until(lambda: client.subscribed)
                await asyncio.to_thread(venue.submit, order(long_id, Side.BUY, "0.01", "85000.0"))
                await asyncio.to_thread(venue.submit, order("cross-1", Side.BUY, "0.5", "85602.0"))
                await asyncio.to_thread(venue.submit, order("away-1", Side.SELL, "0.02", "85700.0"))
                await asyncio.to_thread(venue.submit, order("away-2", Side.SELL, "0.02", "85800.0"))
                await asyncio.to_thread(venue.cancel, order(long_id, Side.BUY, "0.01", "85000.0"))
                await events_until(
                    client,
                    got,
                    lambda ev: (
                        kinds(ev, long_id)[-1:] == ["OrderCanceled"]
                        and "OrderFilled" in kinds(ev, "cross-1")
                        and kinds(ev, "away-2") == ["OrderAccepted"]
                    ),
                )
                # --- forced disconnect; a fill and a cancel happen while the client is away
                token.armed = True
                assert usd_server.drop_websockets() == 1
                await until(lambda: token.calls == 2)  # reconnecting, held at the token fetch
                assert not client.subscribed
                usd_server.exchange.counterparty_fill("away-1", "0.005")
                await asyncio.to_thread(venue.cancel, order("away-2", Side.SELL, "0.02", "85800.0"))
                token.gate.set()
                after: list[OrderEvent] = []
                await events_until(client, after, lambda ev: "OrderFilled" in kinds(ev, "away-1"))
                await client.wait_until(lambda: client.subscribed)
                after.extend(client.drain())
            finally:
                await client.stop()
        return got, after, client, logs

    got, after, client, logs = run(go())
    assert kinds(got, long_id) == ["OrderAccepted", "OrderCanceled"]
    assert kinds(got, "cross-1")[0] == "OrderAccepted" and set(kinds(got, "cross-1")[1:]) == {"OrderFilled"}
    assert kinds(got, "away-1") == kinds(got, "away-2") == ["OrderAccepted"]
    assert all(e.instrument_id == BTCUSD.id for e in got + after)

    # fills: exactly the REST TradesHistory records, keyed by the same trade id
    rest = venue.trades()
    exch = usd_server.exchange
    fills = [e.fill for e in got + after if isinstance(e, OrderFilled)]
    assert sorted(f.trade_id for f in fills) == sorted(rest)
    for f in fills:
        t = rest[f.trade_id]
        want = venue.fill_of(f.trade_id, t, f.client_order_id)
        assert f == dataclasses.replace(want, ts_event=f.ts_event)  # the REST time is a float
        assert f.ts_event == exch.trades[f.trade_id].time // 1000 * 1000  # microseconds on the wire
    cross = [f for f in fills if f.client_order_id == "cross-1"]
    assert [(str(f.price), str(f.quantity), str(f.fee.to_decimal()), f.fee.currency) for f in cross] == [
        ("85600.5", "0.50000000", "111.28065000", "USD")
    ]

    # after the reconnect: a new token, the fill made while away (once), nothing repeated
    assert token.calls == 2 and len(set(token.tokens)) == 2
    assert kinds(after, "away-1") == ["OrderFilled"]
    assert [e for e in after if e.client_order_id != "away-1"] == []  # the cancel made while away is not
    assert client.counters.duplicates >= 1  # the earlier fill came again in the snapshot
    assert client.counters.connects == 2 and client.counters.subscribed == 2
    reconnects = [r for r in logs if r["event"] == "kraken_executions.reconnect"]
    assert len(reconnects) == 1 and reconnects[0]["log_level"] == "warning"
    # the backup: polling the venue by client id finds the cancel the socket missed
    report = venue.query("away-2")
    assert report is not None and report.status is OrderStatus.CANCELED


def test_executions_thread_feeds_a_synchronous_runtime(usd_server: ServerThread) -> None:
    """The client on its own loop thread; the runtime's thread places orders and drains events."""
    ex = rest_client(usd_server)
    ex.load_markets()
    venue = CcxtVenue(ex, BTCUSD, "BTC/USD", "kraken")
    nonce_lock = threading.Lock()  # token fetches and the runtime's REST calls share the key's nonces
    fetch = ccxt_token_fn(ex)

    def token() -> str:
        with nonce_lock:
            got = fetch()
        assert isinstance(got, str)
        return got

    def wait_for(predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + GUARD_S  # hang guard only
        while not predicate():
            assert time.monotonic() < deadline, "condition never held"
            time.sleep(0.01)

    client = KrakenExecutionsClient(token, {"BTC/USD": BTCUSD}, url=usd_server.ws_auth_url)
    thread = ExecutionsThread(client).start()
    events: list[OrderEvent] = []
    try:
        wait_for(lambda: thread.subscribed)
        with nonce_lock:
            venue.submit(order("sync-1", Side.BUY, "0.01", "85000.0"))
            venue.cancel(order("sync-1", Side.BUY, "0.01", "85000.0"))

        def drained_two() -> bool:
            events.extend(thread.drain())
            return len(events) >= 2

        wait_for(drained_two)
    finally:
        thread.stop()
    assert [(type(e), e.client_order_id) for e in events] == [
        (OrderAccepted, "sync-1"),
        (OrderCanceled, "sync-1"),
    ]


def test_wrong_or_expired_token_gets_krakens_error_frame(tmp_path: Path, usd_market: MarketEvents) -> None:
    clock = OffsetClock()
    exch = make_exchange(tmp_path / "s", {"XXBTZUSD": usd_market}, clock=clock)
    with ServerThread(exch) as srv:
        ex = rest_client(srv)
        doc = ex.private_post_getwebsocketstoken()
        assert set(doc) == {"error", "result"} and doc["error"] == []
        assert set(doc["result"]) == {"token", "expires"} and doc["result"]["expires"] == 900
        good = doc["result"]["token"]
        assert len(good) == 43  # 32 bytes, base64 without padding, like Kraken's

        async def subscribe(tok: str, req_id: int) -> list[dict[str, Any]]:
            async with connect(srv.ws_auth_url) as ws:
                await recv_json(ws)  # status
                frame = {
                    "method": "subscribe",
                    "params": {"channel": "executions", "token": tok},
                    "req_id": req_id,
                }
                await ws.send(json.dumps(frame))
                first = await recv_json(ws)
                return [first] if not first["success"] else [first, await recv_json(ws)]

        wrong = run(subscribe("not-a-token", 1))
        ok = run(subscribe(good, 2))
        clock.offset_ns = 901 * 10**9  # the token was never used within its 15 minutes
        expired = run(subscribe(good, 3))

        async def client_recovers() -> KrakenExecutionsClient:
            tokens = iter(["stale-token"])

            def fetch() -> str:
                return next(tokens, None) or ex.private_post_getwebsocketstoken()["result"]["token"]

            client = KrakenExecutionsClient(
                fetch, {"BTC/USD": BTCUSD}, url=srv.ws_auth_url, backoff_initial_s=0.05
            )
            client.start()
            try:
                await client.wait_until(lambda: client.subscribed)
            finally:
                await client.stop()
            return client

        with capture_logs() as logs:
            client = run(client_recovers())

    for frame, req_id in ((wrong[0], 1), (expired[0], 3)):
        assert list(frame) == ["error", "method", "req_id", "success", "time_in", "time_out"]
        assert (frame["error"], frame["method"], frame["req_id"], frame["success"]) == (
            "ESession:Invalid session",
            "subscribe",
            req_id,
            False,
        )
        parse_rfc3339_ns(frame["time_in"])
    ack, snap = ok
    assert ack["success"] is True and ack["result"] == {"channel": "executions", "snapshot": True}
    assert (snap["channel"], snap["type"], snap["data"], snap["sequence"]) == (
        "executions",
        "snapshot",
        [],
        1,
    )
    assert (
        client.counters.auth_errors == 1 and client.counters.tokens == 2 and client.counters.subscribed == 1
    )
    assert any(r["event"] == "kraken_executions.subscribe_failed" for r in logs)


# --- the report mapping, on Kraken's documented shapes ----------------------------------------------
def test_report_mapping_on_documented_shapes() -> None:
    """Frames shaped as the messages quoted in ccxt's source (canceled has no symbol or side)."""
    client = KrakenExecutionsClient(lambda: "t", {"BTC/USD": BTCUSD}, client_id_of=ClientIdMap(strict=True))
    ids = client.client_id_of
    assert isinstance(ids, ClientIdMap)
    ids.register("ours-1")
    ids.register("ours-2")
    ids.register("ours-3")

    def frame(seq: int, *items: dict[str, Any], kind: str = "update") -> str:
        return json.dumps({"channel": "executions", "type": kind, "data": list(items), "sequence": seq})

    pending = {
        "order_id": "OK4GJX-KSTLS-7DZZO5", "cl_ord_id": "ours-1", "order_userref": 0, "symbol": "BTC/USD",
        "order_qty": 0.005, "cum_cost": 0.0, "time_in_force": "GTC", "exec_type": "pending_new",
        "side": "sell", "order_type": "limit", "limit_price_type": "static", "limit_price": 26500.0,
        "stop_price": 0.0, "order_status": "pending_new", "fee_usd_equiv": 0.0, "fee_ccy_pref": "fciq",
        "timestamp": "2023-09-22T10:33:05.709950Z",
    }  # fmt: skip
    new = {"timestamp": "2023-09-22T10:33:05.709993Z", "order_status": "new", "exec_type": "new",
           "order_userref": 0, "order_id": "OK4GJX-KSTLS-7DZZO5", "cl_ord_id": "ours-1"}  # fmt: skip
    trade = {
        "order_id": "OK4GJX-KSTLS-7DZZO5", "cl_ord_id": "ours-1", "exec_id": "T5DIUI-5N4KO-Z5BPXK",
        "exec_type": "trade", "trade_id": 8253473, "symbol": "BTC/USD", "side": "sell", "last_qty": 0.0015,
        "last_price": 26500.0, "liquidity_ind": "m", "cost": 39.75, "order_userref": 0,
        "order_status": "partially_filled", "order_type": "limit", "fee_usd_equiv": 0.0636,
        "fees": [{"asset": "USD", "qty": 0.0636}], "timestamp": "2023-09-22T10:40:00.000001Z",
    }  # fmt: skip
    canceled = {
        "timestamp": "2025-10-11T15:11:47.695226Z", "order_status": "canceled", "exec_type": "canceled",
        "order_userref": 0, "order_id": "OK4GJX-KSTLS-7DZZO5", "cum_qty": 0.0015, "cum_cost": 39.75,
        "fee_usd_equiv": 0.0636, "avg_price": 26500.0, "cancel_reason": "User requested",
        "reason": "User requested",
    }  # fmt: skip
    expired = {
        **canceled,
        "order_id": "O2",
        "cl_ord_id": "ours-2",
        "exec_type": "expired",
        "order_status": "expired",
    }
    rejected = {**canceled, "order_id": "O3", "cl_ord_id": "ours-3", "exec_type": "rejected", "reason": "no"}
    foreign = {**new, "order_id": "O4", "cl_ord_id": "someone-else"}
    for i, item in enumerate((pending, new, trade, trade, canceled, expired, rejected, foreign), start=1):
        client._on_frame(frame(i, item))
    events = client.drain()
    assert [type(e) for e in events] == [
        OrderAccepted,
        OrderFilled,
        OrderCanceled,
        OrderExpired,
        OrderRejected,
    ]
    fill = events[1]
    assert isinstance(fill, OrderFilled)
    f = fill.fill
    assert (f.client_order_id, f.side, str(f.price), str(f.quantity), str(f.fee.to_decimal())) == (
        "ours-1", Side.SELL, "26500.0", "0.00150000", "0.06360000"
    )  # fmt: skip
    assert f.trade_id == "T5DIUI-5N4KO-Z5BPXK" and f.ts_event == 1_695_379_200_000_001_000
    assert isinstance(events[4], OrderRejected) and events[4].reason == "no"
    assert client.counters.duplicates == 1
    # a hole in the sequence forces a resync (reconnect with a fresh token and snapshot)
    with pytest.raises(Exception, match="sequence gap"):
        client._on_frame(frame(10, new))
    assert client.counters.gaps == 1

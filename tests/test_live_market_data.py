"""Paper trading on live market data: the feed, the exchange fed by it, the choice of source.

Nothing here leaves 127.0.0.1: "Kraken's public websocket" is a local replay of Kraken's own
recorded v2 frames (``tests/ws_replay.py``, the ccxt ws fixtures) or a first local exchange
serving its replayed market on ``/v2``; ``BASTION_OFFLINE=1`` (conftest) refuses anything else.
No wall-clock thresholds: every wait is for a condition, under a generous hang guard.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import numpy as np
import pytest
from ccxt_fixture_kit import fixtures_dir
from ws_replay import ReplayServer

from bastion.data.binance_ws import load_binance_ws
from bastion.ops import chaos
from bastion.ops import market_data as md
from bastion.ops.config import load_config
from bastion.ops.runtime import RunnerTiming, paper_strategy, run_paper
from bastion.risk.config import KillSwitchConfig, RiskConfig
from bastion.venues.local_exchange import Exchange, ExchangeConfig, MarketEvents, ServerThread, signed_request
from bastion.venues.local_exchange.book import ASK, BID, Grid, MarketBook
from bastion.venues.local_exchange.live_feed import (
    EmittedBook,
    LiveFeed,
    OfflineRefused,
    check_offline,
    is_loopback_url,
)
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
from bastion.venues.ws_book import SyncedBook, kraken_v2_checksum, loads_exact

T = TypeVar("T")
GUARD_S = 60.0  # hang guard only, never an assertion about speed
KEY = "live-test-key"
SECRET = chaos.SECRET
BALANCES = {"XXBT": "2", "ZUSD": "500000", "USDT": "100000"}


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + GUARD_S
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


async def await_for(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + GUARD_S
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- recorded Kraken frames ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kraken_ws() -> Any:
    path = fixtures_dir() / "ccxt" / "ws" / "kraken.json"
    if not path.is_file():
        pytest.fail(f"fixture not found: {path} (set BASTION_SHARED_DATA)", pytrace=False)
    return loads_exact(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def kraken_markets() -> Any:
    path = fixtures_dir() / "ccxt" / "markets" / "kraken.json"
    return loads_exact(path.read_text(encoding="utf-8"))


def precisions(markets: Any, symbol: str) -> tuple[int, int]:
    info = markets[symbol]["info"]
    return int(info["pair_decimals"]), int(info["lot_decimals"])


def book_frames(case: dict[str, Any]) -> list[int]:
    return [i for i, m in enumerate(case["messages"]) if m.get("channel") == "book"]


def is_book_request(frame: Any) -> bool:
    return isinstance(frame, dict) and (frame.get("params") or {}).get("channel") == "book"


def make_feed(url: str, symbol: str, markets: Any, **options: Any) -> LiveFeed:
    pp, sp = precisions(markets, symbol)
    return LiveFeed(
        symbol, price_precision=pp, size_precision=sp, url=url, depth=10, clock=FakeClock(),
        watchdog_interval_s=0.01, backoff_initial_s=0.01, backoff_max_s=0.05, **options,
    )  # fmt: skip


def verified_book(case: dict[str, Any], markets: Any, upto: int) -> SyncedBook:
    """The book after the recorded book frames up to index ``upto`` (all checksums verified)."""
    symbol = case["input"][0]
    pp, sp = precisions(markets, symbol)
    book = SyncedBook(symbol, pp, sp, depth=10, checksum_fn=kraken_v2_checksum, clock=FakeClock())
    for msg in case["messages"][: upto + 1]:
        if msg.get("channel") != "book":
            continue
        item = msg["data"][0]
        bids = [(x["price"], x["qty"]) for x in item["bids"]]
        asks = [(x["price"], x["qty"]) for x in item["asks"]]
        ok = (book.apply_snapshot if msg["type"] == "snapshot" else book.apply_delta)(
            bids, asks, checksum=item.get("checksum")
        )
        assert ok
    return book


def applied(rows: list[MarketRow], pp: int, sp: int) -> MarketBook:
    """The rows applied to an empty exchange book at the pair's own grid."""
    book = MarketBook(Grid(pp, sp, pp, sp, 1))
    for _, kind, side, price, size in rows:
        if kind == KIND_CLEAR:
            book.clear()
        elif kind == KIND_LEVEL:
            book.apply_level(side, price, size, 0)
    return book


def levels_of(book: MarketBook) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    return book.sorted_levels(BID), book.sorted_levels(ASK)


def synced(book: SyncedBook) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    return book.bid_levels(), book.ask_levels()


def segments(rows: list[MarketRow]) -> list[list[MarketRow]]:
    """Rows cut at every KIND_CLEAR (each segment starts with its CLEAR)."""
    out: list[list[MarketRow]] = []
    for r in rows:
        if r[1] == KIND_CLEAR:
            out.append([])
        assert out, "the first row must be a CLEAR"
        out[-1].append(r)
    return out


def book_rows(rows: list[MarketRow]) -> list[MarketRow]:
    return [r for r in rows if r[1] != KIND_TRADE]


@pytest.mark.parametrize("index", range(3), ids=["depth10", "repeated-snapshot", "thin-then-deep"])
def test_feed_rows_rebuild_the_synced_book_exactly(kraken_ws: Any, kraken_markets: Any, index: int) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][index]
    symbol = case["input"][0]
    pp, sp = precisions(kraken_markets, symbol)

    status: dict[str, Any] = {}

    async def scenario() -> tuple[LiveFeed, ReplayServer, list[MarketRow]]:
        async with ReplayServer(case["messages"], starts_pass=is_book_request) as server:
            feed = make_feed(server.url, symbol, kraken_markets).start()
            try:
                await await_for(
                    lambda: (
                        server.passes_completed >= 1 and feed.client.counters.frames >= len(case["messages"])
                    ),
                    "the whole recorded case to be read",
                )
                rows = feed.drain()
                status.update(feed.status())
            finally:
                await asyncio.to_thread(feed.stop)  # the server's loop must answer the close
            return feed, server, rows

    feed, server, rows = run(scenario())
    book = feed.client.book
    assert levels_of(applied(rows, pp, sp)) == synced(book)
    assert synced(book) == synced(verified_book(case, kraken_markets, len(case["messages"])))
    assert rows[0][1] == KIND_CLEAR and len(segments(rows)) == 1  # one whole book, then diffs only
    assert all(isinstance(v, int) for r in rows for v in r)  # integers only
    st = status
    assert (st["rows"], st["resyncs"], st["reconnects"], st["checksum_failures"]) == (len(rows), 0, 0, 0), st
    requests = [(f["method"], f["params"]) for f in server.received]
    assert requests == [
        ("subscribe", {"channel": "book", "symbol": [symbol], "depth": 10}),
        ("subscribe", {"channel": "trade", "symbol": [symbol], "snapshot": False}),
    ]


def test_a_level_pushed_out_of_the_depth_is_deleted() -> None:
    e = EmittedBook()
    first = e.rows_to([(100, 1), (99, 2)], [(101, 1)], 5)
    assert first == [
        (5, KIND_CLEAR, 0, 0, 0),
        (5, KIND_LEVEL, SIDE_BID, 100, 1),
        (5, KIND_LEVEL, SIDE_BID, 99, 2),
        (5, KIND_LEVEL, SIDE_ASK, 101, 1),
    ]
    # a better bid arrives and the depth-2 window drops 99 (Kraken sends no delete for it)
    assert e.rows_to([(101, 3), (100, 1)], [(102, 1)], 6) == [
        (6, KIND_LEVEL, SIDE_BID, 99, 0),
        (6, KIND_LEVEL, SIDE_BID, 101, 3),
        (6, KIND_LEVEL, SIDE_ASK, 101, 0),
        (6, KIND_LEVEL, SIDE_ASK, 102, 1),
    ]
    assert e.rows_to([(101, 3), (100, 1)], [(102, 1)], 7) == []  # nothing changed, nothing sent
    e.invalidate()
    assert e.rows_to([(101, 3)], [], 8) == [(8, KIND_CLEAR, 0, 0, 0), (8, KIND_LEVEL, SIDE_BID, 101, 3)]


@pytest.mark.parametrize("fault", ["corrupt", "disconnect"])
def test_after_a_resync_clear_and_the_whole_book_and_nothing_unverified(
    kraken_ws: Any, kraken_markets: Any, fault: str
) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][1 if fault == "corrupt" else 0]
    frames = book_frames(case)
    snapshot, first_update = frames[0], frames[1]
    pp, sp = precisions(kraken_markets, "BTC/USD")

    status: dict[str, Any] = {}

    async def scenario() -> tuple[LiveFeed, ReplayServer, list[MarketRow]]:
        async with ReplayServer(case["messages"], starts_pass=is_book_request) as server:
            if fault == "corrupt":
                server.corrupt_checksum(first_update)  # applied by the book, then caught: STALE
            else:
                server.drop_after(snapshot + 1)  # status, ack, snapshot, then the connection drops
            feed = make_feed(server.url, "BTC/USD", kraken_markets).start()
            try:
                await await_for(
                    lambda: (
                        server.passes_started >= 2
                        and server.latest_pass_done
                        and server.frames_sent == feed.client.counters.frames
                        and feed.state == "live"
                    ),
                    "the resynced book",
                )
                rows = feed.drain()
                status.update(feed.status())
            finally:
                await asyncio.to_thread(feed.stop)  # the server's loop must answer the close
            return feed, server, rows

    feed, server, rows = run(scenario())
    parts = segments(rows)
    assert len(parts) == 2, [len(p) for p in parts]
    # before the fault: exactly the verified snapshot; the corrupt update never became rows
    assert levels_of(applied(parts[0], pp, sp)) == synced(verified_book(case, kraken_markets, snapshot))
    # after it: CLEAR, the whole resynced book, then its diffs; the end state is the synced book
    assert levels_of(applied(parts[1], pp, sp)) == synced(feed.client.book)
    assert levels_of(applied(rows, pp, sp)) == synced(feed.client.book)
    assert synced(feed.client.book) == synced(verified_book(case, kraken_markets, len(case["messages"])))
    st = status
    assert st["resyncs"] == 1 and st["state"] == "live", st
    if fault == "corrupt":
        assert st["checksum_failures"] == 1 and st["reconnects"] == 0, st
    else:
        assert st["reconnects"] == 1 and server.connections == 2, st
        trade_subs = [f for f in server.received if f["params"]["channel"] == "trade"]
        assert len(trade_subs) == 2  # every connection subscribes to trades again


def test_trade_updates_become_trade_rows_and_snapshots_are_ignored(
    kraken_ws: Any, kraken_markets: Any
) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][0]

    def trade(side: str, price: str, qty: str, symbol: str = "BTC/USD") -> dict[str, Any]:
        return {"symbol": symbol, "side": side, "price": Decimal(price), "qty": Decimal(qty),
                "ord_type": "market", "trade_id": 1, "timestamp": "2026-01-01T00:00:00.000000Z"}  # fmt: skip

    async def scenario() -> tuple[LiveFeed, list[MarketRow]]:
        async with ReplayServer(case["messages"], starts_pass=is_book_request) as server:
            wall = iter(range(10**18, 10**18 + 1000))  # receipt times we can recognise
            feed = make_feed(server.url, "BTC/USD", kraken_markets, wall_ns=lambda: next(wall)).start()
            try:
                await await_for(lambda: server.passes_completed >= 1 and feed.state == "live", "a live book")
                await await_for(lambda: server.frames_sent == feed.client.counters.frames, "all frames read")
                feed.drain()
                await server.send(
                    {"channel": "trade", "type": "snapshot", "data": [trade("buy", "1.0", "1")]}
                )
                await server.send({"channel": "trade", "type": "update", "data": [
                    trade("buy", "64123.4", "0.00012345"), trade("sell", "64120.0", "2"),
                    trade("sell", "1.0", "1", symbol="ETH/USD"),
                ]})  # fmt: skip
                await await_for(lambda: feed.client.trades >= 2, "two trades")
                rows = feed.drain()
            finally:
                await asyncio.to_thread(feed.stop)
            return feed, rows

    feed, rows = run(scenario())
    assert len({r[0] for r in rows}) == 1 and rows[0][0] >= 10**18  # stamped with the frame's receipt
    assert [r[1:] for r in rows] == [
        (KIND_TRADE, AGGRESSOR_BUY, 641234, 12345),
        (KIND_TRADE, AGGRESSOR_SELL, 641200, 200000000),
    ]
    assert feed.status()["trades"] == 2


def test_offline_guard() -> None:
    assert is_loopback_url("ws://127.0.0.1:1/v2") and is_loopback_url("ws://[::1]:1/v2")
    assert is_loopback_url("ws://localhost:1/v2") and not is_loopback_url("wss://ws.kraken.com/v2")
    check_offline("wss://ws.kraken.com/v2", {})  # not offline: allowed
    check_offline("ws://127.0.0.1:9/v2", {"BASTION_OFFLINE": "1"})
    with pytest.raises(OfflineRefused, match=r"refusing to connect to wss://ws\.kraken\.com/v2"):
        check_offline("wss://ws.kraken.com/v2", {"BASTION_OFFLINE": "1"})
    feed = LiveFeed("BTC/USD", price_precision=1, size_precision=8, url="wss://ws.kraken.com/v2")
    with pytest.raises(OfflineRefused):  # this session is offline (conftest): the feed itself refuses
        feed.start()
    assert feed.state == "idle"


# --- the exchange fed by a live market ----------------------------------------------------------------
class FakeFeed:
    """A LiveMarket whose rows the test pushes (XXBTZUSD: 1 price and 8 lot decimals)."""

    source = "live ws://127.0.0.1:0/fake"
    price_precision = 1
    size_precision = 8

    def __init__(self) -> None:
        self.rows: list[MarketRow] = []

    def push(self, *rows: tuple[int, int, int, int]) -> None:
        self.rows.extend((0, *r) for r in rows)

    def drain(self) -> list[MarketRow]:
        out, self.rows = self.rows, []
        return out

    def status(self) -> dict[str, Any]:
        return {"url": "ws://127.0.0.1:0/fake", "state": "live"}


OPENING = [
    (KIND_CLEAR, 0, 0, 0),
    (KIND_LEVEL, SIDE_BID, 1000, 100_000_000),  # 100.0 x 1
    (KIND_LEVEL, SIDE_BID, 999, 200_000_000),
    (KIND_LEVEL, SIDE_ASK, 1002, 100_000_000),
    (KIND_LEVEL, SIDE_ASK, 1003, 300_000_000),
]
LATER = [
    (KIND_TRADE, AGGRESSOR_SELL, 1000, 120_000_000),  # eats the 1.0 ahead of us, then 0.2 of ours
    (KIND_LEVEL, SIDE_BID, 1000, 0),  # the bids at 100.0 are gone
    (KIND_LEVEL, SIDE_ASK, 1000, 50_000_000),  # a seller at our price: fills the rest (0.3)
    (KIND_LEVEL, SIDE_ASK, 1001, 100_000_000),
]


def _call(exch: Exchange, method: str, nonce: int, **params: str) -> Any:
    params = {"nonce": str(nonce), **params}
    body, headers = signed_request(f"/0/private/{method}", params, KEY, SECRET)
    return exch.private(method, body, dict(parse_qsl(body)), headers)


def _events(rows: list[tuple[int, int, int, int]], ts: list[int]) -> MarketEvents:
    cols = list(zip(*rows, strict=True))
    return MarketEvents(
        np.array(ts, np.int64), np.array(cols[0], np.uint8), np.array(cols[1], np.int8),
        np.array(cols[2], np.int64), np.array(cols[3], np.int64), 1, 8, "test rows",
    )  # fmt: skip


def _outcome(exch: Exchange) -> dict[str, Any]:
    with exch.lock:
        return {
            "trades": sorted((t.side, t.price, t.vol, t.cost, t.fee, t.maker) for t in exch.trades.values()),
            "orders": sorted((o.side, o.price, o.vol, o.vol_exec, o.status) for o in exch.orders.values()),
            "balances": dict(exch.balances),
            "book": levels_of(exch.venues["XXBTZUSD"].book),
            "public": [(d["price"], d["vol"], d["side"]) for d in exch.venues["XXBTZUSD"].public],
        }


def test_live_rows_match_exactly_as_the_same_events_replayed(tmp_path: Path) -> None:
    """One apply path: the same market events, recorded or live, give the same fills and books."""
    events = OPENING + LATER
    replayed = Exchange(
        ExchangeConfig(KEY, SECRET, tmp_path / "replay", speed=0, initial_balances=BALANCES),
        {"XXBTZUSD": _events(events, [1] * len(OPENING) + [2] * len(LATER))},
    )
    feed = FakeFeed()
    feed.push(*OPENING)
    live = Exchange(
        ExchangeConfig(KEY, SECRET, tmp_path / "live", speed=0, initial_balances=BALANCES),
        feeds={"XXBTZUSD": feed},
    )
    for exch in (replayed, live):
        assert levels_of(exch.venues["XXBTZUSD"].book) == (
            [(1000, 100_000_000), (999, 200_000_000)], [(1002, 100_000_000), (1003, 300_000_000)]
        )  # fmt: skip
        _call(exch, "AddOrder", 1, pair="XBTUSD", type="buy", ordertype="limit", price="100.0", volume="0.5")
        (o,) = exch.orders.values()
        assert o.queue_ahead == 100_000_000
    replayed.advance_market("XXBTZUSD", events=1)  # the trade
    feed.push(*LATER[:1])
    live.tick()
    assert _outcome(replayed) == _outcome(live)
    assert [t.vol for t in live.trades.values()] == [20_000_000]
    replayed.advance_market("XXBTZUSD")
    feed.push(*LATER[1:])
    live.tick()
    assert _outcome(replayed) == _outcome(live)
    assert sorted(t.vol for t in live.trades.values()) == [20_000_000, 30_000_000]
    assert all(t.maker for t in live.trades.values())
    (o,) = live.orders.values()
    assert o.status == "closed"
    status = live.market_status(levels=2)["XXBTZUSD"]
    assert status["source"] == "live" and status["feed"]["state"] == "live"
    assert status["bid"] == "99.9" and status["ask"] == "100.0"
    assert levels_of(live.venues["XXBTZUSD"].book)[1][0] == (1000, 20_000_000)  # we took 0.3 of it
    assert status["levels"]["asks"][0] == ["100.0", "0.50000000"]  # as the feed has it
    replayed.close()
    live.close()


def test_a_live_pair_restarts_on_a_fresh_snapshot(tmp_path: Path) -> None:
    feed = FakeFeed()
    feed.push(*OPENING)
    cfg = ExchangeConfig(KEY, SECRET, tmp_path / "live", speed=0, initial_balances=BALANCES)
    exch = Exchange(cfg, feeds={"XXBTZUSD": feed})
    _call(exch, "AddOrder", 1, pair="XBTUSD", type="buy", ordertype="limit", price="99.0", volume="0.5")
    feed.push((KIND_TRADE, AGGRESSOR_BUY, 1002, 10_000_000))
    exch.tick()
    next_id = exch.venues["XXBTZUSD"].next_trade_id
    exch.close()

    again = FakeFeed()
    reopened = Exchange(cfg, feeds={"XXBTZUSD": again})
    v = reopened.venues["XXBTZUSD"]
    assert levels_of(v.book) == ([], [])  # no replay position: nothing until the feed speaks
    assert v.next_trade_id == next_id and len(v.public) == 1  # prints and ids carry on
    assert [o.status for o in reopened.orders.values()] == ["open"] and len(v.engine.resting) == 1
    again.push(*OPENING)
    reopened.tick()
    assert levels_of(v.book)[0][0] == (1000, 100_000_000)
    reopened.close()

    # the same state directory back on a replay starts that replay from its beginning
    replay = Exchange(cfg, {"XXBTZUSD": _events(OPENING, [1] * len(OPENING))})
    assert replay.venues["XXBTZUSD"].pos == len(OPENING)
    replay.close()


def test_a_feed_at_other_precisions_is_refused(tmp_path: Path) -> None:
    feed = FakeFeed()
    feed.price_precision = 2
    with pytest.raises(ValueError, match="decimals"):
        Exchange(
            ExchangeConfig(KEY, SECRET, tmp_path / "x", initial_balances=BALANCES), feeds={"XXBTZUSD": feed}
        )


# --- choosing the source ----------------------------------------------------------------------------------
def _risk(tmp: Path) -> RiskConfig:
    ks = KillSwitchConfig(flag_path=str(tmp / "KILL"), audit_path=str(tmp / "kill_audit.jsonl"))
    return RiskConfig(state_dir=str(tmp / "risk"), kill_switch=ks)


@pytest.fixture()
def listener() -> Iterator[socket.socket]:
    """A loopback port that is listening, to see whether anyone knocks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.setblocking(False)
        yield s


def closed_port() -> int:
    return chaos.free_port()  # bound and released: nothing listens there


def test_a_market_url_that_is_not_a_websocket_is_refused_before_anything_starts() -> None:
    with pytest.raises(md.MarketDataError, match="must be ws:// or wss://"):
        md.check_request("auto", "https://ws.kraken.com/v2")
    with pytest.raises(md.MarketDataError, match="one of auto, replay, live"):
        md.check_request("sometimes", "wss://ws.kraken.com/v2")
    md.check_request("replay", "not a url")  # the replay never uses it


def test_config_paper_section() -> None:
    assert load_config(environ={}).paper.market_data == "auto"
    cfg = load_config(environ={"BASTION_PAPER__MARKET_DATA": "replay", "BASTION_PAPER__PROBE_S": "2"})
    assert (cfg.paper.market_data, cfg.paper.probe_s) == ("replay", 2.0)
    assert cfg.paper.market_url == "wss://ws.kraken.com/v2"
    with pytest.raises(ValueError, match=r"paper\.market_data"):
        load_config(environ={"BASTION_PAPER__MARKET_DATA": "sometimes"})


def test_offline_auto_is_the_replay_without_a_connection(listener: socket.socket) -> None:
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}/v2"
    made: list[str] = []

    def make(u: str) -> LiveFeed:
        made.append(u)
        raise AssertionError("no feed may be built while offline in auto")

    choice = md.choose("auto", url, 5.0, make)
    assert (choice.used, choice.feed) == ("replay", None) and "BASTION_OFFLINE=1" in str(choice.reason)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    assert made == []
    assert md.describe(md.summarize({**choice.note(), "pairs": {}}, "XBTUSDT")).startswith("replay")


def test_live_off_this_machine_is_refused_offline(tmp_path: Path) -> None:
    with pytest.raises(
        md.MarketDataError, match=r"BASTION_OFFLINE=1: refusing to connect to wss://ws\.kraken"
    ):
        run_paper(
            tmp_path / "state", paper_strategy("fixed_spread_mm"), _risk(tmp_path), seconds=1,
            market_data="live", market_url="wss://ws.kraken.com/v2",
        )  # fmt: skip
    assert not (tmp_path / "state").exists()  # refused before anything started


def test_live_that_cannot_connect_refuses_to_start(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{closed_port()}/v2"
    with pytest.raises(md.MarketDataError) as info:
        run_paper(
            tmp_path / "state", paper_strategy("fixed_spread_mm"), _risk(tmp_path), seconds=1,
            market_data="live", market_url=url, probe_s=1.0,
        )  # fmt: skip
    text = str(info.value)
    assert f"no verified book from {url} within 1s" in text and "not starting" in text, text
    assert "last error" in text, text  # the connection error itself, e.g. connection refused
    assert not (tmp_path / "state" / "engine.db").exists()  # nothing traded


def test_auto_falls_back_to_the_replay_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_OFFLINE", "0")  # the URL is loopback: allowed to try, and it fails
    url = f"ws://127.0.0.1:{closed_port()}/v2"
    (tmp_path / "exchange").mkdir()
    exch = chaos.ExchangeProcess(
        tmp_path / "exchange", market_data="auto", market_url=url, probe_s=1.0
    ).start()
    try:
        doc = exch.market()
    finally:
        exch.stop()
    assert (doc["requested"], doc["used"]) == ("auto", "replay"), doc
    assert f"no verified book from {url} within 1s" in doc["reason"], doc
    s = md.summarize(doc, chaos.PAIR)
    assert s["source"] == "replay" and s["data"].endswith(chaos.CAPTURE), s
    assert md.describe(s).startswith("replay ") and "auto: no verified book" in md.describe(s)
    said = [ln for ln in (tmp_path / "exchange.log").read_text().splitlines() if "using the replay" in ln]
    assert said == [f"bastion exchange: market data auto: using the replay: {doc['reason']}"]


# --- end to end: a paper run on a live market ------------------------------------------------------------
@pytest.fixture(scope="module")
def usdt_market(shared_data: Path) -> MarketEvents:
    book, trades = load_binance_ws(shared_data / chaos.CAPTURE)
    return MarketEvents.from_columns(
        book.columns, trades.columns, book.price_precision, book.size_precision, source=chaos.CAPTURE
    )


class Driver:
    """Moves the upstream market (a speed-0 replay) from a thread; pausable, so the test can look
    at the upstream and the paper exchange while nothing changes upstream."""

    def __init__(self, upstream: Exchange, step: int = 20, every_s: float = 0.025) -> None:
        self.upstream, self.step, self.every_s = upstream, step, every_s
        self.go = threading.Event()
        self.go.set()
        self.idle = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            if not self.go.is_set():
                self.idle.set()
                self.go.wait(0.1)
                continue
            self.idle.clear()
            self.upstream.advance_market(chaos.PAIR, events=self.step)
            time.sleep(self.every_s)

    def pause(self) -> None:
        self.go.clear()
        wait_for(self.idle.is_set, "the driver to pause")

    def resume(self) -> None:
        self.go.set()


def _dec(rows: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q, *_ in rows]


def test_a_paper_run_trades_the_live_book(tmp_path: Path, usdt_market: MarketEvents) -> None:
    chaos.quiet_logs()
    up_cfg = ExchangeConfig(
        chaos.KEY, SECRET, tmp_path / "upstream", speed=0, initial_balances=chaos.BALANCES
    )
    port = chaos.free_port()
    paper_url = f"http://127.0.0.1:{port}"
    samples: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []

    with ServerThread(Exchange(up_cfg, {chaos.PAIR: usdt_market})) as upstream:
        driver = Driver(upstream.exchange)
        driver.thread.start()

        def paper_market(levels: int) -> dict[str, Any]:
            req = urllib.request.Request(
                f"{paper_url}/_bastion/market?levels={levels}", headers={"API-Key": chaos.KEY}
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                pair: dict[str, Any] = json.loads(resp.read())["pairs"][chaos.PAIR]
            return pair

        def on_status(s: dict[str, Any]) -> None:
            statuses.append(s)
            if len(statuses) not in (2, 4):
                return
            driver.pause()  # the upstream holds still; the paper book must converge on it
            try:
                depth = upstream.exchange.public("Depth", {"pair": chaos.PAIR, "count": "25"})[chaos.PAIR]
                want = (_dec(depth["bids"]), _dec(depth["asks"]))

                def same() -> bool:
                    got = paper_market(25)["levels"]
                    return (_dec(got["bids"]), _dec(got["asks"])) == want

                wait_for(same, "the paper exchange's book to equal the upstream book")
                samples.append({"upstream": want, "paper": paper_market(0)})
            finally:
                driver.resume()

        try:
            out = run_paper(
                tmp_path / "state", paper_strategy("fixed_spread_mm", {"order_qty": "0.0001",
                "max_position": "0.001"}), _risk(tmp_path), seconds=8.0,
                timing=RunnerTiming(reconcile_s=2.0), on_status=on_status,
                market_data="live", market_url=upstream.ws_url, probe_s=30.0, exchange_port=port,
            )  # fmt: skip
        finally:
            driver.done.set()
            driver.thread.join(5)
        hub = upstream.server.ws.counters

    assert len(samples) == 2, (len(statuses), samples)
    for sample in samples:  # the best bid/ask upstream is the paper exchange's, unless we took it
        bids, asks = sample["upstream"]
        assert Decimal(sample["paper"]["bid"]) <= bids[0][0] and Decimal(sample["paper"]["ask"]) >= asks[0][0]
    market = out["market"]
    assert market["source"] == "live" and market["url"] == upstream.ws_url, market
    assert market["requested"] == "live" and market["reason"] is None, market
    assert market["state"] == "live" and market["frames"] > 0 and market["rows"] > 0, market
    assert market["trades"] > 0 and market["checksum_failures"] == 0, market  # upstream prints arrived
    assert any(str(s.get("market", "")).startswith(f"live {upstream.ws_url} (live;") for s in statuses)
    assert hub.book_updates > 0 and hub.trade_messages > 0
    assert out["orders"] > 0, out
    assert out["reconciliation"]["ok"] and out["parity"]["ok"], out  # any fills are consistent
    assert out["open_orders"] == 0 and out["breaker"] == "closed", out

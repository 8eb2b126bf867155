"""Websocket tier (tier C): recorded ccxt ws frames replayed by a local server on 127.0.0.1.

(a) ccxt.pro kraken against the replay equals the fixture's parsed book and sends the recorded
    subscribe frame; (b) SyncedBook on every recorded frame: every Kraken checksum matches;
(c) KrakenBookClient against the replay: same book as ccxt, a lost or corrupt frame is caught
    by the checksum and resynced, a dropped connection is reconnected, silence (on an injected
    clock) makes the book stale; (d) the Polymarket perpetuals book through ccxt.pro.

No wall-clock thresholds: every wait is for a condition; ``asyncio.timeout`` only guards against
a hang. Staleness is driven by a fake clock.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Coroutine, MutableMapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import ccxt.pro
import pytest
from ccxt_fixture_kit import fixtures_dir
from structlog.testing import capture_logs
from ws_replay import ReplayServer, dumps_exact

from bastion.venues.kraken_ws import KrakenBookClient
from bastion.venues.ws_book import (
    BookState,
    StaleReason,
    SyncedBook,
    kraken_v2_checksum,
    loads_exact,
)

T = TypeVar("T")
GUARD_S = 10.0  # hang guard only, never an assertion about speed
DecLevels = list[tuple[Decimal, Decimal]]


def _fixture(*parts: str) -> Path:
    path = fixtures_dir().joinpath("ccxt", *parts)
    if not path.is_file():
        pytest.fail(f"fixture not found: {path} (set BASTION_SHARED_DATA)", pytrace=False)
    return path


def _exact(*parts: str) -> Any:
    return loads_exact(_fixture(*parts).read_text(encoding="utf-8"))


def _plain(*parts: str) -> Any:
    return json.loads(_fixture(*parts).read_text(encoding="utf-8"))


KRAKEN_BOOK_IDS = ["depth10-snapshot-update", "repeated-snapshot", "thin-then-deep"]


@pytest.fixture(scope="module")
def kraken_ws() -> Any:
    data = _exact("ws", "kraken.json")
    assert len(data["methods"]["watchOrderBook"]) == 3
    return data


@pytest.fixture(scope="module")
def kraken_markets() -> Any:
    return _plain("markets", "kraken.json")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(GUARD_S):
            return await coro

    return asyncio.run(guarded())


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def precisions(markets: Any, symbol: str) -> tuple[int, int]:
    """Kraken's pair_decimals / lot_decimals from the recorded AssetPairs record."""
    info = markets[symbol]["info"]
    return int(info["pair_decimals"]), int(info["lot_decimals"])


def dec_levels(levels: list[list[Any]]) -> DecLevels:
    """Fixture or ccxt levels as exact Decimals (a float goes through its shortest repr)."""
    out = []
    for price, size, *_ in levels:
        out.append(tuple(Decimal(repr(v)) if isinstance(v, float) else Decimal(v) for v in (price, size)))
    return out  # type: ignore[return-value]


def book_levels(book: SyncedBook) -> dict[str, DecLevels]:
    return {k: list(v) for k, v in book.as_decimal().items()}


def expected_of(case: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(expected book, whether it is the state after all frames).

    ``parsedResponses`` (plural) holds one result per resolved watch call: the case resolves
    once, on the first snapshot. ``parsedResponse`` is the book after every frame.
    """
    if "parsedResponse" in case:
        return case["parsedResponse"], True
    responses = case["parsedResponses"]
    assert len(responses) == 1
    return responses[0], False


def book_frames(case: dict[str, Any]) -> list[int]:
    return [i for i, m in enumerate(case["messages"]) if m.get("channel") == "book"]


# ----------------------------------------------------------------------------------- (a) ccxt


def _ccxt_view(ob: Any) -> dict[str, Any]:
    return {k: copy.deepcopy(ob[k]) for k in ("bids", "asks", "timestamp", "datetime", "nonce", "symbol")}


async def ccxt_kraken_books(
    case: dict[str, Any], markets: Any
) -> tuple[dict[str, Any], dict[str, Any], ReplayServer]:
    """Run ccxt.pro kraken's watch_order_book against a replay of ``case``.

    Returns the book as the first watch call resolved it (the server holds the frames after
    the first snapshot until it is copied), the book after every frame, and the server. The
    "after every frame" point is a barrier: once the server has sent all frames it sends a
    heartbeat that ccxt resolves (``watch_heartbeat``); frames are handled in order, so by
    then all book frames have been applied.
    """
    first_book = book_frames(case)[0]
    async with ReplayServer(case["messages"]) as server:
        server.hold_at(first_book + 1)
        ex = ccxt.pro.kraken({"enableRateLimit": False})
        try:
            ex.set_markets(markets)
            ex.urls["api"]["ws"]["publicV2"] = server.url
            ob = await ex.watch_order_book(*case["input"])
            first = _ccxt_view(ob)
            server.release()
            await server.wait_until(lambda: server.passes_completed >= 1)
            heartbeat = asyncio.ensure_future(ex.watch_heartbeat())
            client = ex.clients[server.url]
            while "heartbeat" not in client.futures:
                await asyncio.sleep(0)
            # v2 heartbeat shape plus the "event" key through which ccxt dispatches heartbeats
            await server.send({"channel": "heartbeat", "event": "heartbeat"})
            await heartbeat
            final = _ccxt_view(ex.orderbooks[case["input"][0]])
        finally:
            await ex.close()
    return first, final, server


def _floatify(obj: Any) -> Any:
    return json.loads(dumps_exact(obj))


@pytest.mark.parametrize("index", range(3), ids=KRAKEN_BOOK_IDS)
def test_a_ccxt_pro_kraken_matches_fixture(kraken_ws: Any, kraken_markets: Any, index: int) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][index]
    first, final, server = run(ccxt_kraken_books(case, kraken_markets))
    expected, is_final = expected_of(case)
    got = final if is_final else first
    assert got == _floatify(expected)  # bids, asks, timestamp, datetime, nonce, symbol
    if not is_final:
        assert final != got  # the later update frame did change ccxt's book
    skip = tuple(case.get("sentSkipKeys", []))
    assert server.sent_by_client(skip_keys=skip) == [
        {k: v for k, v in m.items() if k not in skip} for m in case["sentMessages"]
    ]
    assert server.connections == 1


# ----------------------------------------------------------------------------------- (b) SyncedBook


def replay_into(book: SyncedBook, messages: list[Any], skip: frozenset[int] = frozenset()) -> list[BookState]:
    """Feed the recorded book frames to ``book`` as the Kraken client does; state after each."""
    states = []
    for i, msg in enumerate(messages):
        if msg.get("channel") != "book" or i in skip:
            continue
        item = msg["data"][0]
        bids = [(lvl["price"], lvl["qty"]) for lvl in item["bids"]]
        asks = [(lvl["price"], lvl["qty"]) for lvl in item["asks"]]
        if msg["type"] == "snapshot":
            book.apply_snapshot(bids, asks, checksum=item.get("checksum"))
        else:
            book.apply_delta(bids, asks, checksum=item.get("checksum"))
        states.append(book.state)
    return states


def kraken_book(markets: Any, symbol: str, clock: FakeClock | None = None) -> SyncedBook:
    pp, sp = precisions(markets, symbol)
    return SyncedBook(
        symbol,
        pp,
        sp,
        depth=10,
        checksum_fn=kraken_v2_checksum,
        stale_after_s=5.0,
        clock=clock or FakeClock(),
    )


@pytest.mark.parametrize("index", range(3), ids=KRAKEN_BOOK_IDS)
def test_b_every_recorded_checksum_matches(kraken_ws: Any, kraken_markets: Any, index: int) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][index]
    symbol = case["input"][0]
    book = kraken_book(kraken_markets, symbol)
    states = replay_into(book, case["messages"])
    with_checksum = [m for m in case["messages"] if m.get("channel") == "book" and "checksum" in m["data"][0]]
    assert with_checksum, "the case carries checksums"
    assert all(s is BookState.LIVE for s in states)
    assert book.counters.checksums_ok == len(with_checksum)
    assert not book.counters.stale
    assert [s for s, _ in book.history] == [BookState.SYNCING, BookState.LIVE]

    expected, is_final = expected_of(case)
    if is_final:
        assert book_levels(book) == {
            "bids": dec_levels(expected["bids"]),
            "asks": dec_levels(expected["asks"]),
        }
    else:  # the fixture's book is the one after the first snapshot
        first = kraken_book(kraken_markets, symbol)
        replay_into(first, case["messages"][: book_frames(case)[0] + 1])
        assert book_levels(first) == {
            "bids": dec_levels(expected["bids"]),
            "asks": dec_levels(expected["asks"]),
        }


def test_b_repeated_snapshot_resets_the_book(kraken_ws: Any, kraken_markets: Any) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][1]
    frames = book_frames(case)
    snapshots = [i for i in frames if case["messages"][i]["type"] == "snapshot"]
    assert len(snapshots) == 2
    book = kraken_book(kraken_markets, "BTC/USD")
    # the recorded updates bring the book back to the first snapshot before the second one
    # arrives, so stop after the first update to see the reset
    replay_into(book, case["messages"][: snapshots[0] + 2])
    before = book_levels(book)
    replay_into(book, case["messages"][snapshots[1] : snapshots[1] + 1])
    item = case["messages"][snapshots[1]]["data"][0]
    snap = {
        "bids": [(Decimal(x["price"]), Decimal(x["qty"])) for x in item["bids"]],
        "asks": [(Decimal(x["price"]), Decimal(x["qty"])) for x in item["asks"]],
    }
    assert before != snap and book_levels(book) == snap
    assert book.counters.snapshots == 2 and book.is_tradeable


def test_b_thin_snapshot_then_deeper_one(kraken_ws: Any, kraken_markets: Any) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][2]
    msgs = case["messages"]
    frames = book_frames(case)
    thin, deep = frames[0], frames[1]
    assert "checksum" not in msgs[thin]["data"][0]  # the thin snapshot carries none
    book = kraken_book(kraken_markets, "DOGE/USDT")
    replay_into(book, msgs[: thin + 1])
    assert (len(book.bid_levels()), len(book.ask_levels())) == (4, 4) and book.is_tradeable
    replay_into(book, msgs[thin + 1 : deep + 1])
    assert (len(book.bid_levels()), len(book.ask_levels())) == (10, 10)
    replay_into(book, msgs[deep + 1 :])
    assert book.counters.checksums_ok == 3 and book.is_tradeable
    assert len(book.ask_levels()) == 10  # depth 10 kept after inserts pushed levels out


def test_b_lost_frame_is_caught_by_checksum_and_a_snapshot_recovers(
    kraken_ws: Any, kraken_markets: Any
) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][1]
    frames = book_frames(case)
    book = kraken_book(kraken_markets, "BTC/USD")
    lost = frames[1]  # the first update
    second_snapshot = [i for i in frames if case["messages"][i]["type"] == "snapshot"][1]
    states = replay_into(book, case["messages"][:second_snapshot], skip=frozenset({lost}))
    assert states == [BookState.LIVE, BookState.STALE, BookState.STALE, BookState.STALE]
    assert book.reason is StaleReason.CHECKSUM and not book.is_tradeable and book.needs_resync
    assert book.counters.ignored_deltas == 2  # the updates until the next snapshot
    states = replay_into(book, case["messages"][second_snapshot:])
    # the recorded second snapshot (a "resync") makes it LIVE, and later checksums match again
    assert states[-1] is BookState.LIVE and book.counters.resyncs == 1
    assert book.counters.stale == {StaleReason.CHECKSUM: 1}
    expected, _ = expected_of(case)
    assert book_levels(book) == {"bids": dec_levels(expected["bids"]), "asks": dec_levels(expected["asks"])}


def test_b_checksum_covers_price_and_size_digits(kraken_ws: Any, kraken_markets: Any) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][0]
    snap = case["messages"][book_frames(case)[0]]["data"][0]
    bids = [(x["price"], x["qty"]) for x in snap["bids"]]
    asks = [(x["price"], x["qty"]) for x in snap["asks"]]
    book = kraken_book(kraken_markets, "BTC/USD")
    assert book.apply_snapshot(bids, asks, checksum=snap["checksum"])
    # one satoshi more on the 10th bid: the checksum must see it
    p, q = bids[9]
    tampered = [*bids[:9], (p, q + Decimal("0.00000001"))]
    other = kraken_book(kraken_markets, "BTC/USD")
    assert not other.apply_snapshot(tampered, asks, checksum=snap["checksum"])
    assert other.reason is StaleReason.CHECKSUM and other.counters.stale[StaleReason.CHECKSUM] == 1


def test_b_sequence_gap_duplicates_and_buffering() -> None:
    clock = FakeClock()
    book = SyncedBook("X/USD", 2, 3, clock=clock)
    book.begin_resync()
    # deltas that arrive before the snapshot are buffered (venues with sequenced diffs)
    assert not book.apply_delta([("100.00", "1.000")], [], sequence=11)
    assert not book.apply_delta([("99.00", "2.000")], [], sequence=12, first_sequence=12)
    assert book.apply_snapshot([("100.00", "5.000")], [("101.00", "1.000")], sequence=11)
    assert book.bid_levels() == [(10000, 5000), (9900, 2000)]  # 11 dropped (in snapshot), 12 applied
    assert book.sequence == 12
    assert book.apply_delta([("100.00", "0")], [], sequence=12)  # duplicate: ignored
    assert book.counters.old_deltas == 1 and book.bid_levels()[0] == (10000, 5000)
    assert book.apply_delta([], [("101.00", "0")], sequence=15, first_sequence=13)  # a range
    assert book.ask_levels() == []
    assert not book.apply_delta([], [("102.00", "1.000")], sequence=17)  # 16 is missing
    assert book.state is BookState.STALE and book.reason is StaleReason.GAP
    assert "expected 16" in book.detail and book.needs_resync
    book.begin_resync()
    assert history_of(book)[-2:] == [("stale", "gap"), ("syncing", "gap")] and not book.is_tradeable
    assert book.apply_snapshot([("100.00", "1.000")], [], sequence=20)
    assert history_of(book)[-1] == ("live", None)
    assert book.counters.resyncs == 1 and book.counters.stale == {StaleReason.GAP: 1}


def test_b_invalid_levels_make_the_book_stale() -> None:
    for bad in [(100.5, "1"), ("100.005", "1"), ("100", "-1")]:
        book = SyncedBook("X/USD", 2, 3, clock=FakeClock())
        assert book.apply_snapshot([("100.00", "1")], [])
        assert not book.apply_delta([bad], [])  # type: ignore[list-item]
        assert book.reason is StaleReason.INVALID, bad


def test_b_depth_truncation_and_typed_levels() -> None:
    book = SyncedBook("X/USD", 1, 2, depth=3, clock=FakeClock())
    book.apply_snapshot([("10.0", "1"), ("9.9", "1"), ("9.8", "1")], [("10.2", "1")])
    book.apply_delta([("10.1", "3")], [])
    assert book.bid_levels() == [(101, 300), (100, 100), (99, 100)]  # 9.8 pushed out of the window
    book.apply_delta([("10.1", "0")], [])
    assert book.bid_levels() == [(100, 100), (99, 100)]  # not resurrected: the venue sends it
    best = book.best_bid()
    assert best is not None and (str(best[0]), str(best[1])) == ("10.0", "1.00")
    assert [(str(p), str(q)) for p, q in book.asks()] == [("10.2", "1.00")]


def test_b_stale_on_injected_clock() -> None:
    clock = FakeClock(50.0)
    book = SyncedBook("X/USD", 2, 3, stale_after_s=5.0, clock=clock)
    book.begin_resync()
    clock.t = 54.9
    assert not book.check_stale()  # still waiting for the snapshot, within the limit
    book.apply_snapshot([("1.00", "1")], [("1.01", "1")])
    clock.t = 59.8
    assert not book.check_stale()
    book.touch()  # a heartbeat: alive, nothing new
    clock.t = 64.7
    assert not book.check_stale() and book.is_tradeable
    clock.t = 64.8
    assert book.check_stale() and book.reason is StaleReason.STALE and not book.is_tradeable
    assert not book.check_stale()  # counted once
    book.begin_resync()
    clock.t = 69.8
    assert book.state is BookState.SYNCING and book.check_stale()  # no snapshot after resubscribing
    assert book.counters.stale == {StaleReason.STALE: 2}
    book.mark_disconnected()  # already STALE: not counted again
    assert book.counters.stale == {StaleReason.STALE: 2}


# ----------------------------------------------------------------------------------- (c) client


def make_client(url: str, markets: Any, symbol: str, clock: FakeClock) -> KrakenBookClient:
    pp, sp = precisions(markets, symbol)
    return KrakenBookClient(
        symbol,
        price_precision=pp,
        size_precision=sp,
        depth=10,
        url=url,
        stale_after_s=5.0,
        clock=clock,
        watchdog_interval_s=0.01,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )


def history_of(book: SyncedBook) -> list[tuple[str, str | None]]:
    return [(s.value, r.value if r else None) for s, r in book.history]


def history(client: KrakenBookClient) -> list[tuple[str, str | None]]:
    return history_of(client.book)


def kraken_subscribe(symbol: str) -> dict[str, Any]:
    return {"method": "subscribe", "params": {"channel": "book", "symbol": [symbol], "depth": 10}}


@pytest.mark.parametrize("index", range(3), ids=KRAKEN_BOOK_IDS)
def test_c_client_reaches_live_with_the_same_book_as_ccxt(
    kraken_ws: Any, kraken_markets: Any, index: int
) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][index]
    symbol = case["input"][0]

    async def scenario() -> tuple[dict[str, DecLevels], dict[str, Any], list[Any]]:
        _, ccxt_final, _ = await ccxt_kraken_books(case, kraken_markets)
        async with ReplayServer(case["messages"]) as server:
            client = make_client(server.url, kraken_markets, symbol, FakeClock())
            client.start()
            try:
                await client.wait_until(
                    lambda: server.passes_completed >= 1 and client.counters.frames >= len(case["messages"])
                )
                assert client.book.state is BookState.LIVE and client.is_tradeable
                mine = book_levels(client.book)
            finally:
                await client.stop()
            return mine, ccxt_final, server.sent_by_client(skip_keys=("req_id",))

    mine, ccxt_final, sent = run(scenario())
    assert mine == {"bids": dec_levels(ccxt_final["bids"]), "asks": dec_levels(ccxt_final["asks"])}
    assert sent == [kraken_subscribe(symbol)]  # the same frame ccxt sends (and the recording)


@pytest.mark.parametrize("fault", ["skip", "corrupt"])
def test_c_lost_or_corrupt_frame_resyncs(kraken_ws: Any, kraken_markets: Any, fault: str) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][1]
    first_update = book_frames(case)[1]
    expected, _ = expected_of(case)

    async def scenario() -> tuple[KrakenBookClient, ReplayServer]:
        async with ReplayServer(case["messages"]) as server:
            if fault == "skip":
                server.skip_frame(first_update)  # a gap: the next update's checksum disagrees
            else:
                server.corrupt_checksum(first_update)
            client = make_client(server.url, kraken_markets, "BTC/USD", FakeClock())
            client.start()
            try:
                await client.wait_until(
                    lambda: (
                        server.passes_started >= 2  # the resubscribe's pass ...
                        and server.latest_pass_done  # ... has sent everything ...
                        and server.frames_sent == client.counters.frames  # ... and it was all read
                        and client.is_tradeable
                    )
                )
            finally:
                await client.stop()
            return client, server

    client, server = run(scenario())
    h = history(client)
    assert h[:5] == [
        ("syncing", None),
        ("live", None),
        ("stale", "checksum"),
        ("syncing", "checksum"),
        ("live", None),
    ]
    assert client.book.counters.stale == {StaleReason.CHECKSUM: 1}
    assert client.book.counters.resyncs == 1 and client.counters.resubscribes == 1
    assert client.counters.connects == 1 and client.counters.reconnects == 0
    sent = server.sent_by_client(skip_keys=("req_id",))
    unsubscribe = {**kraken_subscribe("BTC/USD"), "method": "unsubscribe"}
    assert sent == [kraken_subscribe("BTC/USD"), unsubscribe, kraken_subscribe("BTC/USD")]
    assert [f["req_id"] for f in server.received] == [1, 2, 3]
    assert book_levels(client.book) == {
        "bids": dec_levels(expected["bids"]),
        "asks": dec_levels(expected["asks"]),
    }


def test_c_resync_that_keeps_failing_escalates_to_reconnect(kraken_ws: Any, kraken_markets: Any) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][0]
    snapshot = book_frames(case)[0]

    async def scenario() -> tuple[KrakenBookClient, ReplayServer]:
        async with ReplayServer(case["messages"]) as server:
            server.corrupt_checksum(snapshot, times=2)  # the first subscribe and the resubscribe
            client = make_client(server.url, kraken_markets, "BTC/USD", FakeClock())
            client.max_resubscribes = 1
            client.start()
            try:
                await client.wait_until(
                    lambda: (
                        server.connections >= 2
                        and server.latest_pass_done
                        and client.book.counters.deltas >= 1
                    )
                )
            finally:
                await client.stop()
            return client, server

    client, server = run(scenario())
    assert client.is_tradeable
    assert client.book.counters.stale == {StaleReason.CHECKSUM: 2} and client.book.counters.resyncs == 1
    assert client.counters.resubscribes == 1 and client.counters.reconnects == 1
    assert [f["method"] for f in server.received] == ["subscribe", "unsubscribe", "subscribe", "subscribe"]


def test_c_dropped_connection_reconnects(kraken_ws: Any, kraken_markets: Any) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][0]
    snapshot = book_frames(case)[0]

    async def scenario() -> tuple[KrakenBookClient, ReplayServer, list[MutableMapping[str, Any]]]:
        async with ReplayServer(case["messages"]) as server:
            server.drop_after(snapshot + 1)  # status, ack, snapshot, then the connection drops
            client = make_client(server.url, kraken_markets, "BTC/USD", FakeClock())
            with capture_logs() as logs:
                client.start()
                try:
                    await client.wait_until(
                        lambda: (
                            server.connections >= 2
                            and server.passes_completed >= 1
                            and client.is_tradeable
                            and client.book.counters.deltas >= 1
                        )
                    )
                finally:
                    await client.stop()
            return client, server, logs

    client, server, logs = run(scenario())
    assert history(client) == [
        ("syncing", None),
        ("live", None),
        ("stale", "disconnect"),
        ("syncing", "disconnect"),
        ("live", None),
    ]
    assert client.counters.connects == 2 and client.counters.reconnects == 1
    assert client.book.counters.stale == {StaleReason.DISCONNECT: 1} and client.book.counters.resyncs == 1
    reconnects = [e for e in logs if e["event"] == "kraken_ws.reconnect"]
    assert len(reconnects) == 1 and reconnects[0]["log_level"] == "warning"
    assert reconnects[0]["attempt"] == 1 and reconnects[0]["url"] == server.url
    assert server.sent_by_client(skip_keys=("req_id",)) == [kraken_subscribe("BTC/USD")] * 2
    # the book after the whole replay on the second connection (snapshot + update)
    offline = SyncedBook("BTC/USD", 1, 8, depth=10, checksum_fn=kraken_v2_checksum, clock=FakeClock())
    replay_into(offline, case["messages"])
    assert book_levels(client.book) == book_levels(offline)


def test_c_silence_on_injected_clock_makes_the_book_stale(kraken_ws: Any, kraken_markets: Any) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][0]
    clock = FakeClock(0.0)

    async def scenario() -> tuple[KrakenBookClient, ReplayServer]:
        async with ReplayServer(case["messages"]) as server:
            client = make_client(server.url, kraken_markets, "BTC/USD", clock)
            client.start()
            try:
                await client.wait_until(
                    lambda: server.passes_completed >= 1 and client.book.counters.deltas >= 1
                )
                assert client.is_tradeable
                # the feed stays open and silent; on the injected clock 5 s pass
                clock.t = 4.999
                await asyncio.sleep(0.05)  # several watchdog rounds: still fresh
                assert client.is_tradeable and client.counters.connects == 1
                clock.t = 5.0
                await client.wait_until(
                    lambda: (
                        client.counters.connects >= 2 and server.passes_completed >= 2 and client.is_tradeable
                    )
                )
            finally:
                await client.stop()
            return client, server

    client, server = run(scenario())
    assert history(client) == [
        ("syncing", None),
        ("live", None),
        ("stale", "stale"),
        ("syncing", "stale"),
        ("live", None),
    ]
    assert client.book.counters.stale == {StaleReason.STALE: 1}
    assert client.counters.reconnects == 1 and server.connections == 2


# ----------------------------------------------------------------------------------- (d) polymarket


def test_d_polymarket_perpetuals_book_through_ccxt_pro() -> None:
    """ccxt.pro polymarket (perpetuals ws, ``urls['api']['ws']``) against the replayed book frames.

    Every frame is a full top-20 snapshot with a global sequence ``sq`` (not contiguous per
    channel, so only used as the nonce). The market is rebuilt from what the case itself
    shows: id 1 (``book::1``), SP500-USD, 1 price and 5 size decimals.
    """
    data = _exact("ws", "polymarket.json")
    case = data["methods"]["watchOrderBook"][0]
    symbol = case["input"][0]
    last_sq = case["messages"][-1]["sq"]

    async def scenario() -> tuple[dict[str, Any], list[Any]]:
        async with ReplayServer(case["messages"], path="/v1/ws", id_key="id") as server:
            ex = ccxt.pro.polymarket({"enableRateLimit": False})
            try:
                market = ex.parse_market(
                    {
                        "instrument_id": 1,
                        "instrument_type": "perpetual",
                        "symbol": "SP500-USD",
                        "base_asset": "SP500",
                        "quote_asset": "pUSD",
                        "quantity_decimals": 5,
                        "price_decimals": 1,
                    }
                )
                assert market["symbol"] == symbol
                ex.set_markets([market])
                ex.urls["api"]["ws"] = server.url
                await ex.watch_order_book(symbol)
                await server.wait_until(lambda: server.passes_completed >= 1)
                # every frame is a snapshot; ccxt has applied the last one when its nonce is
                # the last frame's sequence
                while ex.orderbooks[symbol]["nonce"] != last_sq:
                    await asyncio.sleep(0.001)
                view = _ccxt_view(ex.orderbooks[symbol])
            finally:
                await ex.close()
            return view, server.sent_by_client()

    view, sent = run(scenario())
    assert view == _floatify(case["parsedResponse"])
    assert sent == _floatify(case["sentMessages"])

    book = SyncedBook(symbol, 1, 5, clock=FakeClock())
    for msg in case["messages"]:
        if str(msg.get("ch", "")).startswith("book::"):
            assert book.apply_snapshot(msg["data"]["b"], msg["data"]["a"], sequence=msg["sq"])
    expected = case["parsedResponse"]
    assert book_levels(book) == {"bids": dec_levels(expected["bids"]), "asks": dec_levels(expected["asks"])}
    assert book.sequence == last_sq and book.counters.snapshots == 2


def test_replay_server_records_and_round_trips_exact_numbers(kraken_ws: Any) -> None:
    case = kraken_ws["methods"]["watchOrderBook"][0]
    snap = case["messages"][book_frames(case)[0]]
    text = dumps_exact(snap)
    assert loads_exact(text) == snap  # no float on the way
    assert '"qty":0.000051}' in text  # the recorded 5.1e-05, exact
    assert server_free_of_floats(snap)


def server_free_of_floats(obj: Any) -> bool:
    if isinstance(obj, float):
        return False
    if isinstance(obj, dict):
        return all(server_free_of_floats(v) for v in obj.values())
    if isinstance(obj, list):
        return all(server_free_of_floats(v) for v in obj)
    return True

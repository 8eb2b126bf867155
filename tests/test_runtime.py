"""``bastion run`` in paper mode: the backtest's strategy code trading the local exchange for real.

The run is checked against the venue, not against the engine's own opinion: after the runner
stops, :func:`bastion.ops.chaos.audit` compares every order and trade the exchange has with
what the engine's store recorded (the runner keeps the chaos engine's state layout on purpose).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.data.binance_ws import load_binance_ws
from bastion.model.fixed import Price, Quantity
from bastion.ops import chaos
from bastion.ops.runtime import (
    BOOK_LEVELS,
    LiveRunner,
    RunnerTiming,
    paper_strategy,
    run_paper,
    runner_book_client,
)
from bastion.risk.config import KillSwitchConfig, RiskConfig
from bastion.venues.ccxt_venue import CcxtVenue
from bastion.venues.kraken_book_thread import KrakenBookThread
from bastion.venues.kraken_ws import KrakenBookClient
from bastion.venues.local_exchange import Exchange, ExchangeConfig, MarketEvents, ServerThread
from bastion.venues.local_exchange.faults import FaultConfig

PARAMS = {"order_qty": "0.0001", "max_position": "0.001"}  # Kraken's XBTUSDT ordermin is 0.0001


def _risk(tmp: Path) -> RiskConfig:
    """The default limits, with the kill switch in the test's own directory (never ~/.bastion)."""
    ks = KillSwitchConfig(flag_path=str(tmp / "KILL"), audit_path=str(tmp / "kill_audit.jsonl"))
    return RiskConfig(state_dir=str(tmp / "risk"), kill_switch=ks)


def _run(tmp: Path, seconds: float, *, ws_book: bool = True) -> dict[str, Any]:
    chaos.quiet_logs()
    st = paper_strategy("fixed_spread_mm", PARAMS)
    statuses: list[dict[str, Any]] = []
    out = run_paper(
        tmp / "state", st, _risk(tmp), seconds=seconds, speed=20.0, timing=RunnerTiming(reconcile_s=2.0),
        on_status=statuses.append, ws_book=ws_book,
    )  # fmt: skip
    out["statuses"] = statuses
    return out


def _audit(tmp: Path) -> tuple[chaos.Audit, list[dict[str, Any]]]:
    """Restart the same exchange state and compare it with the engine's store."""
    exch = chaos.ExchangeProcess(tmp / "state" / "exchange").start()
    try:
        engine = chaos.Engine(tmp / "state", exch.url)
        try:
            found = chaos.audit(engine)
            resting = list(engine.venue.open_orders_info().values())
        finally:
            engine.close()
    finally:
        exch.stop()
    return found, resting


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("paper")
    first = _run(tmp, 8.0)  # the book from the websocket
    second = _run(tmp, 3.0, ws_book=False)  # same state dir: recovery, then trading on REST Depth
    return tmp, first, second


def test_paper_run_trades_and_stops_clean(two_runs: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    _, first, _ = two_runs
    assert first["orders"] > 0, first
    assert first["recovery"]["ok"] and first["recovery"]["in_flight"] == 0, first
    assert first["reconciliation"]["ok"], first
    assert first["parity"]["ok"], first  # the ledger equals the recorded fills, exactly
    # the private executions stream (websocket v2) fed the run; REST polling backed it up
    stream = first["executions_stream"]
    assert stream["events"] > 0 and stream["subscribed"], stream
    assert first["reconciliations"] >= 2, first  # periodic, not only at start and stop
    assert first["open_orders"] == 0, first
    assert first["breaker"] == "closed", first


def test_paper_run_takes_its_book_from_the_websocket(
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    _, first, _ = two_runs
    book = first["book"]
    assert book["source"] == "ws", book
    assert first["statuses"] and all(s["book"] == "live (ws)" for s in first["statuses"]), first["statuses"]
    assert book["changes"]["ws"] > 0, book  # on_book was driven by the websocket
    # REST Depth only before the websocket book was LIVE (the runner's first read): far fewer
    # requests than top-of-book changes, where REST alone polls every book_s
    assert book["rest_polls"] < book["changes"]["ws"], book
    ws = book["ws"]
    assert ws["state"] == "live" and ws["snapshots"] >= 1 and ws["updates"] > 0, ws
    assert ws["checksums_ok"] >= ws["snapshots"] + ws["updates"], ws  # every frame was verified
    assert (ws["checksum_failures"], ws["resyncs"], ws["reconnects"], ws["errors"]) == (0, 0, 0, 0), ws
    assert first["book_stale_episodes"] == 0, first


def test_rest_depth_run_without_the_websocket_book(
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    _, _, second = two_runs
    book = second["book"]
    assert book["source"] == "rest" and book["ws"] is None, book
    assert book["rest_polls"] > 1 and book["changes"]["ws"] == 0, book
    assert all(s["book"] == "live (rest)" and s["ws_book"] is None for s in second["statuses"]), second
    assert second["reconciliation"]["ok"] and second["parity"]["ok"], second


def test_second_run_recovers_on_the_same_state(
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    _, _, second = two_runs
    rec = second["recovery"]
    assert rec["ok"] and rec["unknown"] == 0 and rec["resumed"] == 0, second
    assert second["reconciliation"]["ok"], second
    assert second["orders"] > 0 and second["open_orders"] == 0, second


def test_venue_and_engine_agree_after_both_runs(
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    tmp, first, second = two_runs
    found, resting = _audit(tmp)
    assert found.duplicates == [], found.duplicates  # every venue order is a journaled intent
    assert found.lost_fills == [], found.lost_fills  # recorded fills == venue trades, exactly
    assert found.leaked_reservations == [], found.leaked_reservations
    assert found.ledger_mismatches == [], found.ledger_mismatches
    assert resting == []  # the clean stops left nothing working at the venue
    # intents the venue refused (a post-only that would cross) never became venue orders
    assert 0 < found.orders <= first["orders"] + second["orders"], (found, first, second)
    assert found.fills == first["fills"] + second["fills"], (found, first, second)


# --- the book source, step by step, against an in-process exchange ----------------------------------
GUARD_S = 30.0  # hang guard only, never an assertion about speed


def _wait(predicate: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + GUARD_S
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def usdt_market(shared_data: Path) -> MarketEvents:
    book, trades = load_binance_ws(shared_data / chaos.CAPTURE)
    return MarketEvents.from_columns(
        book.columns, trades.columns, book.price_precision, book.size_precision, source=chaos.CAPTURE
    )


def test_book_source_follows_the_websocket_state(tmp_path: Path, usdt_market: MarketEvents) -> None:
    """LIVE websocket book: used, REST not asked; dropped: REST Depth takes over (and the stale rule
    with it); back LIVE: the websocket again; its thread gone: REST again, held when REST is stale."""
    chaos.quiet_logs()
    cfg = ExchangeConfig(
        chaos.KEY, chaos.SECRET, tmp_path / "exchange", speed=0, initial_balances=chaos.BALANCES
    )
    with ServerThread(Exchange(cfg, {chaos.PAIR: usdt_market})) as srv:
        venue = CcxtVenue(chaos.make_client(srv.url), chaos.INSTRUMENT, chaos.SYMBOL, chaos.VENUE)
        inst = chaos.INSTRUMENT
        client = KrakenBookClient(
            chaos.SYMBOL, price_precision=inst.price_precision, size_precision=inst.size_precision,
            depth=25, url=srv.ws_url, backoff_initial_s=3.0,  # a reconnect window the test can see
        )  # fmt: skip
        thread = KrakenBookThread(client, levels=BOOK_LEVELS).start()
        runner = LiveRunner(
            venue, paper_strategy("fixed_spread_mm", PARAMS), tmp_path / "state", _risk(tmp_path),
            ws_book=thread, timing=RunnerTiming(book_stale_s=3600.0),
        )  # fmt: skip
        try:
            assert runner.rest_polls == 1  # the first read, before anything else
            _wait(lambda: thread.snapshot().live, "the websocket book to be LIVE")
            runner.update_book(poll=True)  # the same top as the first REST read: no change
            assert runner.book_source == "ws" and runner.rest_polls == 1
            assert runner.status()["book"] == "live (ws)" and runner.status()["ws_book"] == "live"
            # the websocket book is the venue's book, level for level (top 20, exact)
            ws_bids, ws_asks = list(runner.book.bids), list(runner.book.asks)
            doc = venue.call(venue.exchange.public_get_depth, {"pair": chaos.PAIR, "count": BOOK_LEVELS})
            (side,) = doc["result"].values()

            def raw(rows: list[list[Any]]) -> list[tuple[int, int]]:
                return [
                    (Price.from_str(str(r[0]), inst.price_precision).raw,
                     Quantity.from_str(str(r[1]), inst.size_precision).raw)
                    for r in rows
                ]  # fmt: skip

            assert (ws_bids, ws_asks) == (raw(side["bids"]), raw(side["asks"]))
            assert len(ws_bids) == len(ws_asks) == BOOK_LEVELS
            assert not runner.update_book(poll=True) and runner.rest_polls == 1  # nothing new, no REST

            # a forced disconnect: the websocket book is STALE, REST Depth is the source meanwhile
            assert srv.drop_websockets() >= 1
            _wait(lambda: not thread.snapshot().live, "the websocket book to go STALE")
            runner.update_book(poll=False)
            assert runner.rest_polls == 1  # REST only when a poll is due
            runner.update_book(poll=True)
            assert runner.book_source == "rest" and runner.rest_polls == 2
            runner.check_book_fresh()
            st = runner.status()
            assert st["book"] == "live (rest)" and st["ws_book"].startswith("stale (disconnect)"), st
            assert (runner.book.bids, runner.book.asks) == (ws_bids, ws_asks)

            # reconnected: back on the websocket, with the reconnect counted
            _wait(lambda: thread.snapshot().live, "the websocket book to be LIVE again")
            runner.update_book(poll=True)
            assert runner.book_source == "ws" and runner.rest_polls == 2
            ws = runner.book_summary()["ws"]
            assert ws["reconnects"] >= 1 and ws["connects"] >= 2 and ws["checksum_failures"] == 0, ws

            # the thread stops and REST Depth is frozen: the stale rule holds orders on REST's age
            thread.stop()
            assert not thread.snapshot().live
            srv.faults.configure(FaultConfig(stale_book=1.0, stale_s=3600.0))
            runner.timing.book_stale_s = 0.5
            runner.update_book(poll=True)  # the freeze starts with this read
            runner.book_read_at -= 1.0  # as if this read were a second old (no sleeping)
            runner.book_ts -= 1.0
            runner.update_book(poll=True)
            assert runner.book_source == "rest" and runner.rest_polls == 4
            runner.check_book_fresh()
            st = runner.status()
            assert st["book"].startswith("STALE (") and st["book"].endswith("; rest)"), st
            assert runner.order_path.hold is not None and runner.stale_episodes == 1
            assert st["ws_book"].startswith("down"), st
        finally:
            thread.stop()
            runner.close()


def test_a_hung_feed_behind_live_heartbeats_holds_quotes(tmp_path: Path, usdt_market: MarketEvents) -> None:
    """The venue's market-data path hangs while its websocket stays open (heartbeats only, REST
    frozen) and the market moves on: the runner's websocket book goes STALE (heartbeats are not
    book updates), REST is as old as the stall, and quotes are held; when the feed comes back the
    websocket book is LIVE again and the hold lifts."""
    chaos.quiet_logs()
    cfg = ExchangeConfig(
        chaos.KEY, chaos.SECRET, tmp_path / "exchange", speed=0, initial_balances=chaos.BALANCES
    )
    exch = Exchange(cfg, {chaos.PAIR: usdt_market})
    moving = threading.Event()
    moving.set()
    done = threading.Event()

    def market() -> None:  # the market keeps moving, stall or not
        while not done.is_set():
            if moving.is_set():
                exch.advance_market(chaos.PAIR, events=5)
            time.sleep(0.02)

    with ServerThread(exch) as srv:
        venue = CcxtVenue(chaos.make_client(srv.url), chaos.INSTRUMENT, chaos.SYMBOL, chaos.VENUE)
        # 2 s: longer than the exchange's 1 s heartbeat, so only book frames can keep it LIVE
        client = runner_book_client(chaos.SYMBOL, chaos.INSTRUMENT, srv.ws_url, 2.0)
        thread = KrakenBookThread(client, levels=BOOK_LEVELS).start()
        mover = threading.Thread(target=market, daemon=True)
        mover.start()
        runner = LiveRunner(
            venue, paper_strategy("fixed_spread_mm", PARAMS), tmp_path / "state", _risk(tmp_path),
            ws_book=thread, timing=RunnerTiming(book_stale_s=2.0),
        )  # fmt: skip

        def step() -> bool:
            runner.update_book(poll=True)
            runner.check_book_fresh()
            time.sleep(0.02)
            return True

        try:
            _wait(lambda: thread.snapshot().live, "the websocket book to be LIVE")
            _wait(lambda: step() and runner.book_source == "ws" and runner.order_path.hold is None, "ws")
            srv.faults.configure(FaultConfig(seed=1, stale_book=1.0, stale_s=3600.0))  # the feed hangs
            _wait(lambda: step() and runner.order_path.hold is not None, "quotes to be held")
            st = runner.status()
            assert runner.book_source == "rest" and not thread.snapshot().live, st
            assert "unchanged" in str(runner.book_stale), runner.book_stale
            assert srv.server.ws.counters.stalled_commits > 0
            with exch.lock:
                top = (exch.venues[chaos.PAIR].book.best(1), exch.venues[chaos.PAIR].book.best(2))
            assert top != (runner.book.bid_raw, runner.book.ask_raw)  # the market moved without us
            srv.faults.configure(FaultConfig(seed=1))  # the feed is back
            _wait(lambda: step() and runner.order_path.hold is None, "the hold to lift")
            _wait(lambda: step() and runner.book_source == "ws", "the websocket book again")
            assert runner.stale_episodes == 1
            assert client.book.counters.stale, client.book.counters  # it did go STALE on silence
        finally:
            done.set()
            mover.join(5)
            thread.stop()
            runner.close()

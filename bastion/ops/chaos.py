"""``bastion chaos kill``: the proof that killing the engine at any step cannot lose money.

The promise under test is the first one of docs/safety.md: a crash must not make the system
trade in ways nobody asked for, lose a fill, or leave money promised to orders that are done.
So the run is adversarial and checked against the venue, not against the engine's own opinion:

* the local Kraken-compatible exchange runs as a separate process with persisted state, over a
  real recorded market (the Binance BTCUSDT spot capture from ``shared/data``, replayed as
  Kraken's XBTUSDT), so resting orders fill while the engine is dead;
* an engine process trades an order-heavy deterministic strategy through the real path
  (``OrderGateway`` → ``DurableJournal`` (fsynced WAL + SQLite) → ``CcxtVenue`` → HTTP) and is
  SIGKILLed by itself at the n-th hit of a named gateway step (``BASTION_CHAOS_KILL_AT``), or by
  the harness at a random wall-clock moment (mostly inside venue I/O, where the engine spends
  its time); the exchange also loses answers to some orders after processing them;
* every start is recovery (:func:`bastion.ops.recovery.recover`) before any new order;
* at the end, a last recovery and full sync, then the venue's records are compared with the
  engine's: duplicate orders, lost fills, leaked reservations, ledger mismatches must all be 0.

Intent ``k`` comes from the store's durable sequence and its client id is ``chaos-{k}``: a crash
can never make the engine send the same intent under a new id, and the venue refuses a reused
id, so an intent can become at most one venue order.

Engines are forked from the harness after the heavy imports (ccxt alone takes ~2 s to import),
so an iteration costs a fork instead of an interpreter start; each engine is still a separate
process with nothing shared but the files it opens itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ccxt
import sqlalchemy as sa
import structlog

from bastion.engine.clock import WallClock
from bastion.execution.gateway import FAULT_POINTS, OrderGateway
from bastion.execution.reservations import Reservations
from bastion.model.events import OrderEvent, OrderFilled
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.ops import market_data as md
from bastion.ops.recovery import recover
from bastion.risk.breaker import BreakerConfig, CircuitBreaker
from bastion.risk.persistence import MemoryPersistence
from bastion.store import schema as S
from bastion.store.journal import DurableJournal
from bastion.store.sql import Store
from bastion.store.wal import WriteAheadLog
from bastion.venues.base import VenueTimeout, VenueUnavailable
from bastion.venues.ccxt_venue import CcxtVenue
from bastion.venues.local_exchange.faults import FaultConfig

if TYPE_CHECKING:
    from bastion.venues.local_exchange.live_feed import LiveFeed
    from bastion.venues.local_exchange.replay import MarketEvents

KEY = "chaos-key"
SECRET = base64.b64encode(bytes(range(64))).decode()
PAIR = "XBTUSDT"
SYMBOL = "BTC/USDT"
VENUE = "kraken"
BALANCES = {"XXBT": "1", "USDT": "100000"}
START_BASE = Fraction(1)
START_QUOTE = Fraction(100000)
CAPTURE = "ticks_l2/binance_ws_hftbacktest/spot/btcusdt_20240808.gz"
SEQ_NAME = "chaos.intent"
CURSOR_KEY = "chaos.trade_cursor"
CURSOR_MARGIN_NS = 5_000_000_000  # trades are re-read this far back; record_fill dedupes them
KILL_ENV = "BASTION_CHAOS_KILL_AT"

# Kraken's XBTUSDT as the engine trades it (tick 0.1, lot 1e-8, base-tier fees, from AssetPairs)
INSTRUMENT = Instrument(
    symbol="BTCUSDT",
    venue="KRAKEN",
    kind=InstrumentKind.SPOT,
    base="BTC",
    quote="USDT",
    tick_size=Decimal("0.1"),
    lot_size=Decimal("0.00000001"),
    min_notional=Decimal("0.5"),
    maker_fee=Decimal("0.0016"),
    taker_fee=Decimal("0.0026"),
)
_RES_PRECISION = 8


# --- the exchange process --------------------------------------------------------------------------
def exchange_main(argv: Sequence[str]) -> None:
    """Run the local exchange (``python -m bastion.ops.chaos exchange``, ``bastion exchange``).

    Its market is the recorded capture (``--market-data replay``, the default here), Kraken's
    live book (``live``), or live when reachable (``auto``): see :mod:`bastion.ops.market_data`.
    """
    from bastion.ops.paths import shared_data_dir
    from bastion.venues.local_exchange.__main__ import build_parser, parse_common
    from bastion.venues.local_exchange.server import serve

    p = build_parser()
    p.add_argument("--data", default=str(shared_data_dir() / CAPTURE))
    p.add_argument(
        "--market-data",
        choices=md.MODES,
        default="replay",
        help="the recorded capture, Kraken's live book, or live when reachable",
    )
    p.add_argument("--market-url", default=md.DEFAULT_MARKET_URL, help="Kraken websocket v2 (public)")
    p.add_argument("--probe-s", type=float, default=md.DEFAULT_PROBE_S,
                   help="how long to wait for a verified live book before giving up on it")  # fmt: skip
    args = p.parse_args(list(argv))
    try:
        choice = md.choose(args.market_data, args.market_url, args.probe_s, _live_feed)
    except md.MarketDataError as exc:
        print(f"bastion exchange: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(md.EXIT_MARKET_REFUSED) from None
    if choice.reason is not None:
        print(
            f"bastion exchange: market data {choice.requested}: using the replay: {choice.reason}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    market = {} if choice.feed is not None else {PAIR: _recorded_market(Path(args.data))}
    feeds = {} if choice.feed is None else {PAIR: choice.feed}
    try:
        serve(market=market, feeds=feeds, market_note=choice.note(), **parse_common(args))
    finally:
        if choice.feed is not None:
            choice.feed.stop()


def _recorded_market(path: Path) -> MarketEvents:
    from bastion.data.binance_ws import load_binance_ws  # only this process needs the data layer
    from bastion.venues.local_exchange.replay import MarketEvents

    book, trades = load_binance_ws(path)
    return MarketEvents.from_columns(
        book.columns, trades.columns, book.price_precision, book.size_precision, source=str(path)
    )


LIVE_FEED_STALE_S = 5.0


def _live_feed(url: str) -> LiveFeed:
    """The live market of PAIR at Kraken's own precisions for it (AssetPairs)."""
    from bastion.venues.local_exchange.live_feed import LiveFeed
    from bastion.venues.local_exchange.pairs import pair_specs
    from bastion.venues.local_exchange.ws import v2_symbol

    spec = pair_specs((PAIR,))[PAIR]
    pp, lp = spec.pair_decimals, spec.lot_decimals
    # stale (and resubscribed) after LIVE_FEED_STALE_S without a book frame, heartbeats or not, and
    # before a runner's own book would be (10 s): the exchange then withholds its websocket book
    return LiveFeed(
        v2_symbol(spec), price_precision=pp, size_precision=lp, url=url,
        stale_after_s=LIVE_FEED_STALE_S, heartbeat_is_alive=False,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ExchangeProcess:
    """The exchange as its own OS process, with its own persisted state directory."""

    state_dir: Path
    speed: float = 20.0
    faults: FaultConfig | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    market_data: str = "replay"  # replay | live | auto (bastion.ops.market_data)
    market_url: str = md.DEFAULT_MARKET_URL
    probe_s: float = md.DEFAULT_PROBE_S

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExchangeProcess:
        self.port = self.port or free_port()
        cmd = [
            sys.executable, "-m", "bastion.ops.chaos", "exchange", "--host", "127.0.0.1",
            "--port", str(self.port), "--api-key", KEY, "--api-secret", SECRET,
            "--state-dir", str(self.state_dir), "--speed", str(self.speed), "--pairs", PAIR,
        ]  # fmt: skip
        for asset, amount in BALANCES.items():
            cmd += ["--balance", f"{asset}={amount}"]
        if self.faults is not None:
            cmd += ["--faults", json.dumps(self.faults.to_dict())]
        if self.market_data != "replay":
            cmd += ["--market-data", self.market_data, "--market-url", self.market_url,
                    "--probe-s", str(self.probe_s)]  # fmt: skip
        log_path = self.state_dir.parent / "exchange.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        start = log.tell()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        wait_s = 60 + (self.probe_s if self.market_data != "replay" else 0)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._exited(log_path, start)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"local exchange did not start listening within {wait_s:g} s")

    def _exited(self, log_path: Path, start: int) -> None:
        """The exchange died before listening: say why, in its own words when it gave them."""
        assert self.proc is not None
        with open(log_path, "rb") as fh:
            fh.seek(start)
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
        said = [ln for ln in lines if ln.startswith("bastion exchange: ")]
        if self.proc.returncode == md.EXIT_MARKET_REFUSED and said:
            raise md.MarketDataError(said[-1].removeprefix("bastion exchange: "))
        tail = lines[-1] if lines else ""
        raise RuntimeError(f"local exchange exited with {self.proc.returncode}: {tail} (see {log_path})")

    def market(self, levels: int = 0, timeout_s: float = 5.0) -> dict[str, Any]:
        """The exchange's ``/_bastion/market``: where its market comes from, and the feed's counters."""
        url = f"{self.url}/_bastion/market" + (f"?levels={levels}" if levels else "")
        req = urllib.request.Request(url, headers={"API-Key": KEY})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc

    def set_faults(self, config: FaultConfig) -> None:
        req = urllib.request.Request(
            f"{self.url}/_bastion/faults",
            data=json.dumps(config.to_dict()).encode(),
            headers={"API-Key": KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def injected(self) -> dict[str, int]:
        """How many faults of each kind the exchange has injected so far."""
        req = urllib.request.Request(f"{self.url}/_bastion/faults", headers={"API-Key": KEY})
        with urllib.request.urlopen(req, timeout=5) as resp:
            doc = json.loads(resp.read())
        return {str(k): int(v) for k, v in doc.get("injected", {}).items()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- the engine ------------------------------------------------------------------------------------
_MARKETS: dict[str, Any] | None = None  # loaded once by the harness; forked engines inherit it


def make_client(url: str, timeout_ms: int = 3000) -> ccxt.kraken:
    ex = ccxt.kraken({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "timeout": timeout_ms})
    ex.urls["api"] = {**ex.urls["api"], "public": url, "private": url}
    if _MARKETS is not None:
        ex.set_markets(_MARKETS["markets"], _MARKETS["currencies"])
    else:
        ex.load_markets()
    return ex


def _raw8(x: Fraction) -> int:
    return int(x * 10**_RES_PRECISION)


STALE_AFTER_S = 2.0  # Kraken level times are whole seconds: a fresh book reads up to ~1 s old


class BookStale(Exception):
    """The venue's book has not changed for longer than the engine trusts it."""


class Engine:
    """One engine process's state: the gateway over the durable journal and the ccxt venue."""

    def __init__(
        self,
        state_dir: Path,
        url: str,
        fault_point: Callable[[str], None] | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        timeout_ms: int = 3000,
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.breaker = breaker
        self.venue = CcxtVenue(make_client(url, timeout_ms), INSTRUMENT, SYMBOL, VENUE)
        self.store = Store(f"sqlite:///{state_dir}/engine.db")
        self.journal = DurableJournal(WriteAheadLog(state_dir / "wal"), self.store, VENUE)
        self.balances = self.venue.balances()
        self.position_raw = 0
        self.touch: tuple[int, int] = (0, 0)  # best bid, best ask (raw price)
        self.gateway = OrderGateway(
            self.venue, INSTRUMENT, clock=WallClock(), journal=self.journal,
            reservations=Reservations(lambda c: _raw8(self.balances.get(c, Fraction(0))), _RES_PRECISION),
            on_event=self._on_event, position_of=lambda: self.position_raw,
            reference_price=lambda side: self.touch[1] if side is Side.BUY else self.touch[0],
            fault_point=fault_point, breaker=breaker,
        )  # fmt: skip
        cur = self.store.kv_get(CURSOR_KEY)
        self.cursor = int(cur["ns"]) if cur else 0
        self.stale_after_s = STALE_AFTER_S
        self.stale_skips = 0  # intents not sent because the book was stale

    def _on_event(self, event: OrderEvent) -> None:
        """The strategy's view; this one keeps nothing beyond what the store holds."""

    # --- start-up ---------------------------------------------------------------------------------
    def prepare_store(self) -> None:
        """Checkpoint the WAL once the store holds all of it (recovery repairs the rest)."""
        self.journal.replay_into_store()
        self.journal.wal.checkpoint(self.journal.wal.last_seq)

    def recorded_position(self) -> int:
        with self.store.reading() as tx:
            rows = tx.conn.execute(sa.select(S.fills.c.side, S.fills.c.quantity)).all()
        return sum(Side[side].value * Quantity.from_str(q, INSTRUMENT.size_precision).raw for side, q in rows)

    def start(self) -> None:
        """Recovery before anything else: no new order until every in-flight one is verified."""
        self.prepare_store()
        recover(self.journal, self.gateway, self.venue, attempts=3)
        self.position_raw = self.recorded_position()
        self.settle()

    def settle(self, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while True:
            self.sync()
            self.gateway.verify_pending()
            if not self.gateway.pending_verification:
                return
            if time.monotonic() > end:
                raise RuntimeError(f"orders still unverified: {sorted(self.gateway.pending_verification)}")
            time.sleep(0.05)

    # --- the loop ---------------------------------------------------------------------------------
    def sync(self) -> int:
        """Record the venue's fills exactly once and let the gateway release what is done."""
        events = self.venue.poll_events(max(0, self.cursor - CURSOR_MARGIN_NS))
        newest = self.cursor
        tracked = self.gateway.open_orders
        for ev in events:
            if isinstance(ev, OrderFilled):
                newest = max(newest, ev.fill.ts_event)
                if self.store.record_fill(ev.fill, VENUE):
                    self.position_raw += ev.fill.side.value * ev.fill.quantity.raw
                    self.gateway.on_venue_event(ev)
            elif ev.client_order_id in tracked:
                self.gateway.on_venue_event(ev)
        if newest > self.cursor:
            self.cursor = newest
            self.store.kv_put(CURSOR_KEY, {"ns": newest})
        return len(events)

    def refresh_touch(self) -> None:
        """Read the touch; refuse a book whose newest level is older than ``stale_after_s``.

        Kraken's REST book has no sequence number, only a per-level update time (whole seconds),
        so the book's age is measured from its newest level over the top ten; a feed that stalls
        shows up as that age growing. Pricing an order off a stalled book is how a market maker
        quotes into a market that has already moved, so the engine sends nothing new instead.
        """
        doc = self.venue.call(self.venue.exchange.public_get_depth, {"pair": PAIR, "count": 10})
        res = doc["result"]
        book = next(iter(res.values()))
        newest = max(int(row[2]) for row in (*book["bids"], *book["asks"]))
        age = time.time() - newest
        if age > self.stale_after_s:
            raise BookStale(f"book for {PAIR} last changed {age:.1f}s ago (> {self.stale_after_s}s)")
        bid = Price.from_str(str(book["bids"][0][0]), INSTRUMENT.price_precision).raw
        ask = Price.from_str(str(book["asks"][0][0]), INSTRUMENT.price_precision).raw
        self.touch = (bid, ask)

    def step(self) -> None:
        """One intent: k from the durable sequence, its client id a pure function of k."""
        k = self.store.next_sequence(SEQ_NAME)
        kind = k % 4
        if kind == 3:  # cancel the oldest resting order (cancels carry no new client id)
            resting = [o for o in self.gateway.open_orders.values() if o.order_type is OrderType.LIMIT]
            if resting:
                self.gateway.cancel(min(resting, key=lambda o: int(o.client_order_id.split("-")[1])))
            return
        try:
            self.refresh_touch()
        except BookStale:
            self.stale_skips += 1
            return
        bid, ask = self.touch
        qty = Quantity(10_000 * (1 + k % 5), INSTRUMENT.size_precision)  # 0.0001 .. 0.0005 BTC
        side = Side.BUY if (k // 4) % 2 == 0 else Side.SELL
        if side is Side.SELL and self.position_raw < qty.raw * 4:
            side = Side.BUY  # stay long enough that sells are covered by what we bought
        cid = f"chaos-{k}"
        if kind == 0:  # post-only near the touch: may rest, may fill later from the replay
            px = bid - 10 if side is Side.BUY else ask + 10
            order = Order(cid, INSTRUMENT.id, side, OrderType.LIMIT, qty, Price(px, 1), TimeInForce.POST_ONLY)
        elif kind == 1:  # crossing limit, good till canceled: fills now (taker)
            px = ask + 20 if side is Side.BUY else bid - 20
            order = Order(cid, INSTRUMENT.id, side, OrderType.LIMIT, qty, Price(px, 1), TimeInForce.GTC)
        else:  # market
            order = Order(cid, INSTRUMENT.id, side, OrderType.MARKET, qty)
        order.strategy_id = "chaos"
        order.ts_init = time.time_ns()
        self.gateway.submit(order)

    def run(self, seconds: float, pause_s: float = 0.01) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.sync()
                self.gateway.verify_pending()
                if not self.gateway.pending_verification:
                    self.step()
            except (VenueTimeout, VenueUnavailable):
                if self.breaker is not None:  # a failed sync is a venue failure like any other
                    self.breaker.on_venue_result(VENUE, False)
                time.sleep(0.1)  # the venue is unsure or away: ask again, never guess
            time.sleep(pause_s)

    def close(self) -> None:
        self.journal.wal.close()
        self.store.close()


def kill_hook(spec: str) -> Callable[[str], None] | None:
    """``point:n`` → a fault hook that SIGKILLs this process at the n-th hit of ``point``."""
    if not spec:
        return None
    point, _, n_text = spec.partition(":")
    if point not in FAULT_POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {FAULT_POINTS}")
    n = int(n_text or "1")
    hits = Counter[str]()

    def hook(name: str) -> None:
        hits[name] += 1
        if name == point and hits[name] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def engine_main(state_dir: Path, url: str, seconds: float, kill_at: str = "") -> None:
    """One engine life: recovery, then trade until killed (or ``seconds`` pass)."""
    engine = Engine(state_dir, url, kill_hook(kill_at or os.environ.get(KILL_ENV, "")))
    engine.start()
    engine.run(seconds)
    engine.close()


def quiet_logs() -> None:
    """Engines log recovery at INFO on every start; a chaos run keeps only warnings."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _engine_child(state_dir: str, url: str, seconds: float, kill_at: str) -> None:
    os.environ[KILL_ENV] = kill_at
    quiet_logs()
    engine_main(Path(state_dir), url, seconds, kill_at)


# --- the check -------------------------------------------------------------------------------------
@dataclass
class Audit:
    duplicates: list[str] = field(default_factory=list)
    lost_fills: list[str] = field(default_factory=list)
    leaked_reservations: list[str] = field(default_factory=list)
    ledger_mismatches: list[str] = field(default_factory=list)
    orders: int = 0
    fills: int = 0
    partially_filled: int = 0  # venue orders that ended (or rest) with only part of them traded


def audit(engine: Engine) -> Audit:
    """Compare the venue's records with the engine's after a final recovery and sync."""
    out = Audit()
    venue = engine.venue
    orders = venue.all_orders()
    trades = venue.trades(0)
    out.orders, out.fills = len(orders), len(trades)
    with engine.store.reading() as tx:
        ev = S.order_events
        intents = {
            str(r[0])
            for r in tx.conn.execute(sa.select(ev.c.client_order_id).where(ev.c.event_type == "intent"))
        }
        fills = {str(r._mapping["trade_id"]): dict(r._mapping) for r in tx.conn.execute(sa.select(S.fills))}
        rows = {
            str(r._mapping["client_order_id"]): dict(r._mapping) for r in tx.conn.execute(sa.select(S.orders))
        }
    per_cid = Counter(str(info.get("cl_ord_id")) for info in orders.values())
    for cid, n in sorted(per_cid.items()):
        if n > 1:
            out.duplicates.append(f"{cid}: {n} venue orders")
        if cid not in intents:
            out.duplicates.append(f"{cid}: at the venue, never journaled as an intent")
    status_of = {str(i.get("cl_ord_id")): str(i.get("status")) for i in orders.values()}
    cid_of = {t: str(i.get("cl_ord_id")) for t, i in orders.items()}
    base = quote = Fraction(0)
    for trade_id, t in trades.items():
        mine = fills.get(trade_id)
        want = venue.fill_of(trade_id, t, cid_of.get(str(t["ordertxid"]), "?"))
        if mine is None:
            out.lost_fills.append(f"{trade_id} of {want.client_order_id}")
            continue
        if (
            mine["client_order_id"] != want.client_order_id
            or Decimal(mine["quantity"]) != want.quantity.to_decimal()
            or Decimal(mine["price"]) != want.price.to_decimal()
            or Decimal(mine["fee"]) != want.fee.to_decimal()
        ):
            out.lost_fills.append(f"{trade_id}: recorded as {mine}, venue says {t}")
    for trade_id in sorted(set(fills) - set(trades)):
        out.lost_fills.append(f"{trade_id}: recorded but unknown to the venue")
    for f in fills.values():
        sign = 1 if f["side"] == "BUY" else -1
        q, p = Fraction(Decimal(f["quantity"])), Fraction(Decimal(f["price"]))
        base += sign * q
        quote += -sign * p * q - Fraction(Decimal(f["fee"]))
    for r in engine.gateway.reservations.active():
        if status_of.get(r.client_order_id, "") not in ("open", "pending"):
            out.leaked_reservations.append(
                f"reservation of {r.client_order_id} ({status_of.get(r.client_order_id)})"
            )
    for row in engine.store.open_orders():
        cid = row["client_order_id"]
        if status_of.get(cid, "") not in ("open", "pending"):
            out.leaked_reservations.append(f"store row {cid} {row['status']} (venue {status_of.get(cid)})")
    for cid in engine.gateway.open_orders:
        if status_of.get(cid, "") not in ("open", "pending"):
            out.leaked_reservations.append(f"gateway tracks {cid} (venue {status_of.get(cid)})")
    for info in orders.values():
        cid, vol_exec = str(info.get("cl_ord_id")), Decimal(str(info.get("vol_exec", "0")))
        if 0 < vol_exec < Decimal(str(info.get("vol", "0"))):
            out.partially_filled += 1
        rec = rows.get(cid)
        if rec is None or str(info.get("status")) not in ("closed", "canceled", "expired"):
            continue
        # a finished order: the engine's row must be finished too and agree on how much traded
        st = str(rec["status"])
        if OrderStatus[st].is_open:
            out.leaked_reservations.append(f"store row {cid} {st} (venue {info.get('status')})")
        elif Decimal(rec["filled"]) != vol_exec:
            out.ledger_mismatches.append(f"{cid}: {st}, filled {rec['filled']} in store, {vol_exec} at venue")
    bal = venue.balances()
    tol = Fraction(len(trades), 10**5)  # the venue rounds each fill's cost to 5 decimals (half-even)
    d_base = bal.get("BTC", Fraction(0)) - START_BASE
    d_quote = bal.get("USDT", Fraction(0)) - START_QUOTE
    if d_base != base:
        out.ledger_mismatches.append(f"BTC: fills say {float(base):.8f}, venue moved {float(d_base):.8f}")
    if abs(d_quote - quote) > tol:
        out.ledger_mismatches.append(f"USDT: fills say {float(quote):.8f}, venue moved {float(d_quote):.8f}")
    return out


# --- the harness -----------------------------------------------------------------------------------
def run_kill(
    iterations: int,
    seed: int,
    state_dir: Path,
    *,
    speed: float = 20.0,
    fault_rate: float = 0.03,
    run_seconds: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Kill and restart the engine ``iterations`` times, then audit against the venue."""
    global _MARKETS
    t0 = time.monotonic()
    rng = random.Random(seed)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "exchange").mkdir(exist_ok=True)
    faults = FaultConfig(
        seed=seed,
        lost_answer=fault_rate,
        http_5xx_after=fault_rate / 3,
        endpoints=("AddOrder", "CancelOrder"),
    )
    exch = ExchangeProcess(state_dir / "exchange", speed=speed, faults=faults).start()
    kills: Counter[str] = Counter()
    ctx = multiprocessing.get_context("fork")
    engine_dir = state_dir / "engine"
    try:
        probe = ccxt.kraken({"enableRateLimit": False, "timeout": 5000})
        probe.urls["api"] = {**probe.urls["api"], "public": exch.url, "private": exch.url}
        probe.load_markets()
        _MARKETS = {"markets": probe.markets, "currencies": probe.currencies}
        for i in range(iterations):
            wall = i % 10 == 9
            point = FAULT_POINTS[(i - i // 10) % len(FAULT_POINTS)]
            kill_at = "" if wall else f"{point}:{rng.randint(1, 6)}"
            p = ctx.Process(target=_engine_child, args=(str(engine_dir), exch.url, run_seconds, kill_at))
            p.start()
            if wall:
                p.join(rng.uniform(0.3, 1.2))
                if p.is_alive():
                    p.kill()
                    kills["wall_clock"] += 1
            p.join(run_seconds + 30)
            if p.is_alive():
                p.kill()
                p.join()
                raise RuntimeError(f"iteration {i}: engine hung")
            if not wall:
                if p.exitcode == -signal.SIGKILL:
                    kills[point] += 1
                elif p.exitcode == 0:
                    kills["not_reached"] += 1
                else:
                    raise RuntimeError(f"iteration {i}: engine failed with exit code {p.exitcode}")
            elif p.exitcode not in (0, -signal.SIGKILL):
                raise RuntimeError(f"iteration {i}: engine failed with exit code {p.exitcode}")
            if log is not None:
                log(f"iteration {i + 1}/{iterations}: {kill_at or 'wall clock'} -> exit {p.exitcode}")
        exch.set_faults(FaultConfig(seed=seed))  # the check must not be disturbed by faults
        final = Engine(engine_dir, exch.url)
        try:
            final.start()
            time.sleep(0.2)
            final.settle()
            result = audit(final)
        finally:
            final.close()
    finally:
        exch.stop()
    return {
        "iterations": iterations,
        "duplicates": len(result.duplicates),
        "lost_fills": len(result.lost_fills),
        "leaked_reservations": len(result.leaked_reservations),
        "ledger_mismatches": len(result.ledger_mismatches),
        "orders": result.orders,
        "fills": result.fills,
        "kills_by_point": dict(sorted(kills.items())),
        "seconds": round(time.monotonic() - t0, 1),
        "details": {
            "duplicates": result.duplicates[:20],
            "lost_fills": result.lost_fills[:20],
            "leaked_reservations": result.leaked_reservations[:20],
            "ledger_mismatches": result.ledger_mismatches[:20],
        },
    }


def run_faults(
    seconds: float,
    seed: int,
    state_dir: Path,
    *,
    fault_rate: float = 0.2,
    speed: float = 20.0,
    breaker_failures: int = 5,
) -> dict[str, Any]:
    """Trade through a venue that misbehaves, then check that nothing was lost and the breaker works.

    Phase 1: ``fault_rate`` of private requests fail, spread over every kind the exchange injects
    (dropped connections, 5xx and rate limits before processing; lost answers, 5xx and slow
    answers (client timeouts) after processing). Phase 2: the venue fails every request; the
    breaker must trip on consecutive failures and stop new orders. Phase 3: the venue recovers;
    after recovery every order must be settled and the audit clean.
    """
    global _MARKETS
    t0 = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "exchange").mkdir(exist_ok=True)
    share = fault_rate / 6
    faults = FaultConfig(
        seed=seed, drop=share, http_5xx=share, rate_limit=share, lost_answer=share,
        http_5xx_after=share, delay=share, delay_s=1.5,
        # market faults: feed stalls (a few per run at ~50 book reads/s) and partial fills
        stale_book=fault_rate / 20, stale_s=4.0, stale_grace_s=STALE_AFTER_S + 1.5,
        partial_fill=fault_rate,
    )  # fmt: skip
    exch = ExchangeProcess(state_dir / "exchange", speed=speed, faults=faults).start()
    try:
        probe = ccxt.kraken({"enableRateLimit": False, "timeout": 5000})
        probe.urls["api"] = {**probe.urls["api"], "public": exch.url, "private": exch.url}
        probe.load_markets()
        _MARKETS = {"markets": probe.markets, "currencies": probe.currencies}
        breaker = CircuitBreaker(
            BreakerConfig(max_consecutive_venue_failures=breaker_failures), MemoryPersistence(), WallClock()
        )
        engine = Engine(state_dir / "engine", exch.url, breaker=breaker, timeout_ms=1000)
        try:
            engine.start()
            engine.run(seconds)
            orders_phase1 = engine.store.next_sequence(SEQ_NAME)
            stale_skips = engine.stale_skips
            injected = exch.injected()
            exch.set_faults(FaultConfig(seed=seed, drop=1.0))  # the venue is gone
            engine.run(3.0)
            tripped = breaker.state.value
            denied_after_trip = breaker.allow("new", reduce_only=False, notional=None).ok is False
        finally:
            engine.close()
        exch.set_faults(FaultConfig(seed=seed))
        final = Engine(state_dir / "engine", exch.url)
        try:
            final.start()
            time.sleep(0.2)
            final.settle()
            result = audit(final)
            unsettled = [r["client_order_id"] for r in final.store.open_orders()
                         if r["status"] == OrderStatus.PENDING_VERIFICATION.name]  # fmt: skip
        finally:
            final.close()
    finally:
        exch.stop()
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "fault_rate": fault_rate,
        "intents": orders_phase1,
        "orders": result.orders,
        "fills": result.fills,
        "duplicates": len(result.duplicates),
        "lost_fills": len(result.lost_fills),
        "leaked_reservations": len(result.leaked_reservations),
        "ledger_mismatches": len(result.ledger_mismatches),
        "unsettled_orders": len(unsettled),
        "partial_fills_injected": injected.get("partial_fill", 0),
        "partially_filled_orders": result.partially_filled,
        "book_stalls_injected": injected.get("stale_book", 0),
        "intents_skipped_on_stale_book": stale_skips,
        "orders_sent_into_stale_book": injected.get("orders_in_stall", 0),
        "breaker_state_when_venue_down": tripped,
        "breaker_stopped_new_orders": denied_after_trip,
    }


COUNTERS = ("duplicates", "lost_fills", "leaked_reservations", "ledger_mismatches")


def failed(result: dict[str, Any]) -> bool:
    return any(result[k] for k in COUNTERS)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "exchange":
        exchange_main(args[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bastion.ops.chaos")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("engine", help="one engine life (recovery, then trading until killed)")
    e.add_argument("--state-dir", type=Path, required=True)
    e.add_argument("--url", required=True)
    e.add_argument("--seconds", type=float, default=5.0)
    k = sub.add_parser("kill", help="the kill test")
    k.add_argument("--iterations", type=int, default=100)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--state-dir", type=Path, default=None)
    ns = p.parse_args(args)
    if ns.cmd == "engine":
        engine_main(ns.state_dir, ns.url, ns.seconds)
        return 0
    import tempfile

    state = ns.state_dir or Path(tempfile.mkdtemp(prefix="bastion-chaos-"))
    result = run_kill(ns.iterations, ns.seed, state)
    print(json.dumps(result))
    return 1 if failed(result) else 0


if __name__ == "__main__":
    raise SystemExit(main())

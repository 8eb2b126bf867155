"""``bastion run``: the same strategy code as a backtest, trading a live venue on the wall clock.

A strategy never learns which mode it runs in, so paper trading must give it exactly what a
backtest gives it — a :class:`~bastion.engine.strategy.Context` with a book, a position, timers
and one order path — while everything around it is the production path of docs/safety.md:

* start-up is recovery (:func:`bastion.ops.recovery.recover`): every order the store still
  thinks is working is verified with the venue, fills missed while we were down are recorded,
  and the base and quote balances are reconciled against the ledger's recorded fills. No order
  is sent before that report is ``ok``;
* every order goes through :class:`~bastion.execution.gateway.OrderGateway` over the durable
  journal (fsynced WAL + SQLite store), with the kill switch from the config, a circuit breaker
  whose state survives restarts (a JSON file in the state directory) and the compliance/limits
  policy; client ids come from the store's persisted sequence, so a restart never reuses one;
* fills are recorded idempotently in the store (keyed by the venue's trade id) *before* the
  gateway, the ledger or the strategy hear of them: a crash in between can only make a fill be
  delivered again, and the store refuses it the second time;
* events reach the ledger and the strategy one at a time after the strategy's callback returns
  (:class:`~bastion.research.backtest.Deferred`), as in a backtest;
* positions and balances are reconciled with the venue every few seconds; a mismatch feeds the
  breaker, which stops new orders;
* a stop (signal or ``--seconds``) refuses new orders, cancels every working order and waits,
  bounded, for the venue to confirm, so a clean stop leaves nothing resting at the venue.

Market data: the top 20 levels of the venue's book come from Kraken's websocket v2 ``book``
channel (:class:`~bastion.venues.kraken_book_thread.KrakenBookThread`: checksummed after every
frame, resynced on a mismatch, reconnected on a drop) while that book is LIVE; REST ``Depth`` is
then not polled at all (a retail account has about one public REST request a second). While the
websocket book is STALE or SYNCING, or its thread is down, the runner polls REST ``Depth`` every
``book_s`` instead, and the stale-book rule applies to whichever source is in use.

Paper mode here means: a real venue protocol with real market data and no real money — the
local Kraken-protocol exchange from :mod:`bastion.ops.chaos` with locally generated keys, whose
market is Kraken's live book where reachable or the recorded replay (``paper.market_data``,
:mod:`bastion.ops.market_data`); its matching engine fills our orders against that book.
Live mode (:func:`run_live`) is the same runner over the operator's Kraken account, behind the
gate in :mod:`bastion.ops.live` (``mode: live`` + ``--confirm-live LIVE`` + policy + keys).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import structlog
from rich.table import Table

from bastion.engine.clock import Clock, WallClock
from bastion.engine.strategy import SUB_TRADES, Context, Strategy, TimerService, TradeView
from bastion.execution.gateway import OrderGateway
from bastion.execution.reservations import Reservations
from bastion.model.events import OrderAccepted, OrderDenied, OrderFilled
from bastion.model.fixed import Money, Price, Quantity, format_raw
from bastion.model.instruments import Instrument
from bastion.model.orders import Order, Side
from bastion.ops import market_data as md
from bastion.ops.alerts import Alerter, Level
from bastion.ops.config import BastionConfig
from bastion.ops.parity import ParityResult, compare, totals_from_fills
from bastion.ops.recovery import RecoveryReport, recover
from bastion.ops.secrets import Secrets
from bastion.research.backtest import Deferred
from bastion.research.ledger import RunLedger
from bastion.research.safety import SinglePositionExposure
from bastion.risk.breaker import BreakerState, CircuitBreaker, Transition
from bastion.risk.config import RiskConfig
from bastion.risk.kill_switch import KillSwitch
from bastion.risk.persistence import JsonFilePersistence
from bastion.risk.policy import PolicyChecker, PolicyGate
from bastion.risk.reconciliation import ReconciliationResult, reconcile
from bastion.store import schema as S
from bastion.store.journal import DurableJournal
from bastion.store.sql import Store
from bastion.store.wal import WriteAheadLog
from bastion.venues.base import VenueTimeout, VenueUnavailable
from bastion.venues.ccxt_venue import CcxtVenue
from bastion.venues.kraken_book_thread import BookSnapshot, KrakenBookThread
from bastion.venues.kraken_executions import DEFAULT_URL as DEFAULT_EXECUTIONS_URL
from bastion.venues.kraken_executions import (
    ClientIdMap,
    ExecutionsThread,
    KrakenExecutionsClient,
    ccxt_token_fn,
)
from bastion.venues.kraken_ws import DEFAULT_URL as DEFAULT_BOOK_URL
from bastion.venues.kraken_ws import KrakenBookClient

log = structlog.get_logger(__name__)

CURSOR_KEY = "runtime.trade_cursor"
BASELINE_KEY = "runtime.baseline_balances"
CURSOR_MARGIN_NS = 5_000_000_000  # own trades are re-read this far back; record_fill dedupes them
BOOK_LEVELS = 20
WS_BOOK_DEPTH = 25  # Kraken's v2 depths are 10, 25, 100, ...: the smallest that covers BOOK_LEVELS
MAX_STRATEGY_ID = 6  # leaves 11 digits of sequence inside Kraken's 18-character cl_ord_id
_VENUE_ERRORS = (VenueTimeout, VenueUnavailable)


class StartupRefused(RuntimeError):
    """Recovery did not report ok: no order may be sent."""


def short_strategy_id(name: str) -> str:
    """``fixed_spread_mm`` → ``fsm``: Kraken takes at most 18 characters of client order id, and
    the id is ``<strategy id>-<sequence>``, so a long strategy name would run out of room (the
    venue refuses the order) after a hundred orders."""
    return "".join(part[:1] for part in name.split("_") if part) or "s"


def paper_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    from bastion.strategies import load_strategy

    return load_strategy(name, params, strategy_id=short_strategy_id(name))


# --- market data ---------------------------------------------------------------------------------
class PolledBook:
    """A :class:`~bastion.engine.strategy.BookView` over the last polled depth snapshot.

    Levels are (price raw, size raw), best first. The object is replaced in place on every poll,
    so a strategy holding the view sees the newest book, as it would in a backtest.
    """

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: list[tuple[int, int]] = []
        self.asks: list[tuple[int, int]] = []

    @property
    def bid_raw(self) -> int:
        return self.bids[0][0] if self.bids else 0

    @property
    def ask_raw(self) -> int:
        return self.asks[0][0] if self.asks else 0

    @property
    def bid_size_raw(self) -> int:
        return self.bids[0][1] if self.bids else 0

    @property
    def ask_size_raw(self) -> int:
        return self.asks[0][1] if self.asks else 0

    def is_valid(self) -> bool:
        return bool(self.bids and self.asks) and self.bids[0][0] < self.asks[0][0]

    def size_at_raw(self, is_bid: bool, price_raw: int) -> int:
        for px, sz in self.bids if is_bid else self.asks:
            if px == price_raw:
                return sz
        return 0

    def top(self) -> tuple[int, int, int, int]:
        return (self.bid_raw, self.bid_size_raw, self.ask_raw, self.ask_size_raw)

    def mid_raw(self) -> int:
        b, a = self.bid_raw, self.ask_raw
        return (b + a) // 2 if b and a else b or a


class StoppableOrderPath:
    """The gateway as the strategy's order path, with a door that closes at shutdown.

    Once stopping, a strategy reacting to a cancel confirmation must not quote again: new orders
    are refused with an ``OrderDenied`` (delivered after the callback, like any denial), cancels
    still pass — reducing risk is never blocked.
    """

    def __init__(self, gateway: OrderGateway, deliver: Callable[[OrderDenied], None], clock: Clock) -> None:
        self.gateway = gateway
        self._deliver = deliver
        self._clock = clock
        self.closed = False
        self.hold: str | None = None  # why new orders are held back for now (a stale book)

    def submit(self, order: Order) -> None:
        reason = "stopping" if self.closed else self.hold
        if reason is not None:
            self._deliver(
                OrderDenied(order.client_order_id, order.instrument_id, self._clock.now_ns(), reason)
            )
            return
        self.gateway.submit(order)

    def cancel(self, order: Order) -> None:
        self.gateway.cancel(order)


@dataclass(slots=True)
class RunnerTiming:
    loop_s: float = 0.05  # own orders and fills are polled every loop
    book_s: float = 0.2
    reconcile_s: float = 5.0
    status_s: float = 1.0
    stop_timeout_s: float = 15.0
    poll_backup_s: float = 1.0  # with an executions stream: REST polling of own orders as backup
    # a book whose newest level is older than this (or not read successfully for this long) is
    # stale: Kraken stamps levels in whole seconds, and a liquid top 20 moves every second
    book_stale_s: float = 10.0


class LiveRunner:
    """One strategy on one instrument of one venue, on the wall clock (see the module docstring)."""

    def __init__(
        self,
        venue: CcxtVenue,
        strategy: Strategy,
        state_dir: Path,
        risk: RiskConfig,
        *,
        kill_switch: Callable[[], bool] | None = None,
        timing: RunnerTiming | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        alerter: Alerter | None = None,
        mode: str = "paper",
        executions: ExecutionsThread | None = None,
        ws_book: KrakenBookThread | None = None,
        market: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        """``market``: where the venue's market data comes from (paper: the local exchange's
        answer, :func:`bastion.ops.market_data.summarize`), shown in the status and summary."""
        if len(strategy.id) > MAX_STRATEGY_ID:
            raise ValueError(
                f"strategy id {strategy.id!r} is longer than {MAX_STRATEGY_ID} characters: client ids "
                f"(<id>-<sequence>) must fit the venue's 18 (use short_strategy_id)"
            )
        state_dir.mkdir(parents=True, exist_ok=True)
        self.venue = venue
        self.strategy = strategy
        self.instrument = inst = venue.instrument
        self.timing = timing or RunnerTiming()
        self.on_status = on_status
        self.clock = WallClock()
        self.pair = str(venue.exchange.market(venue.symbol)["id"])
        # the layout of chaos.Engine (engine.db + wal/), so its audit can check a paper run too
        self.store = Store(f"sqlite:///{state_dir}/engine.db")
        self.journal = DurableJournal(WriteAheadLog(state_dir / "wal"), self.store, venue.name)
        now = self.clock.now_ns()
        self.ledger = RunLedger(inst, strategy, now, now + 3600 * 10**9, samples=1)
        self.deliver = Deferred(self.ledger.on_order_event)
        self.book = PolledBook()
        self.book_ts = self.book_read_at = time.time()  # newest level stamp; last successful read
        self.book_stale: str | None = None
        self.stale_episodes = 0
        self.ws_book = ws_book
        self.market = market
        self.book_source = "rest"  # where the book in use came from: "ws" or "rest"
        self.rest_polls = 0  # REST Depth requests
        self.book_changes = {"ws": 0, "rest": 0}  # top-of-book changes seen, by source
        self._ws_version = -1
        self.timers = TimerService()
        self.stop_requested = False
        self.refresh_book()
        self.venue_balances = venue.balances()
        capital = self._equity_of(self.venue_balances)
        self.breaker = CircuitBreaker(
            risk.breaker, JsonFilePersistence(state_dir / "risk"), self.clock, initial_capital=capital
        )
        self.alerter = alerter
        self.mode = mode
        if alerter is not None:
            self.breaker.listeners.append(self._alert_breaker)
        self.policy = PolicyChecker(risk, capital, self.clock)
        exposure = SinglePositionExposure(inst, self.ledger.position, self.book.mid_raw)
        account = self.ledger.account
        self.gateway = OrderGateway(
            venue, inst, clock=self.clock, journal=self.journal,
            reservations=Reservations(lambda c: account.raw.get(c, 0), account.precision),
            on_event=self.deliver, position_of=lambda: self.ledger.position.qty_raw,
            reference_price=self._reference_price, kill_switch=kill_switch, breaker=self.breaker,
            checks=[PolicyGate(self.policy, exposure)],
        )  # fmt: skip
        self.order_path = StoppableOrderPath(self.gateway, self.deliver, self.clock)
        cur = self.store.kv_get(CURSOR_KEY)
        self.cursor = int(cur["ns"]) if cur else 0
        self.trade_cursor: str | None = None
        self.recovery: RecoveryReport | None = None
        self.last_reconciliation: ReconciliationResult | None = None
        self.reconciliations = 0
        self.recent_fills: deque[str] = deque(maxlen=5)
        self.last_parity: ParityResult | None = None
        self.executions = executions
        self.stream_events = 0
        self._acked: set[str] = set()
        self._next_poll = 0.0
        self.fills_this_run = 0
        self.orders_at_start = 0
        self.started = False

    # --- helpers -----------------------------------------------------------------------------
    def alert(self, title: str, body: str, level: Level) -> None:
        """Tagged with mode, strategy and instrument: one operator may run several of these."""
        if self.alerter is not None:
            self.alerter.send(f"{self.mode} {self.strategy.id}@{self.instrument.id}: {title}", body, level)

    def _alert_breaker(self, t: Transition) -> None:
        level: Level = "critical" if t.to_state in (BreakerState.OPEN, BreakerState.DRAINING) else "warning"
        self.alert(
            f"breaker {t.from_state.value} -> {t.to_state.value}", f"{t.rule}: {t.detail} ({t.source})", level
        )

    def _reference_price(self, side: Side) -> int:
        b = self.book
        return (b.ask_raw or b.bid_raw) if side is Side.BUY else (b.bid_raw or b.ask_raw)

    def _equity_of(self, balances: dict[str, Fraction]) -> Fraction:
        inst = self.instrument
        mid = Fraction(self.book.mid_raw(), 10**inst.price_precision)
        return balances.get(inst.quote, Fraction(0)) + balances.get(inst.base, Fraction(0)) * mid

    def _ledger_balances(self) -> dict[str, Fraction]:
        acc, inst = self.ledger.account, self.instrument
        scale = 10**acc.precision
        return {c: Fraction(acc.raw.get(c, 0), scale) for c in (inst.base, inst.quote)}

    def _orders_sent(self) -> int:
        import sqlalchemy as sa

        with self.store.reading() as tx:
            ev = S.order_events
            q = sa.select(sa.func.count()).select_from(ev).where(ev.c.event_type == "intent")
            return int(tx.conn.execute(q).scalar_one())

    # --- market data ---------------------------------------------------------------------------
    def update_book(self, poll: bool) -> bool:
        """Take the book from the websocket while it is LIVE, else (when ``poll``) from REST Depth.

        True when the top of book changed. A LIVE websocket book is current by construction (its
        client goes STALE after ``stale_after_s`` of silence and on any checksum failure), so it
        stamps the book as read and fresh now; REST is not asked at all.
        """
        snap = self.ws_book.snapshot() if self.ws_book is not None else None
        if snap is not None and snap.live:
            self._use_source("ws", snap)
            now = time.time()
            self.book_ts = self.book_read_at = now
            if snap.version == self._ws_version:
                return False
            self._ws_version = snap.version
            before = self.book.top()
            self.book.bids = list(snap.bids[:BOOK_LEVELS])
            self.book.asks = list(snap.asks[:BOOK_LEVELS])
            changed = self.book.top() != before
            self.book_changes["ws"] += changed
            return changed
        if not poll:
            return False
        self._use_source("rest", snap)
        changed = self.refresh_book()
        self.book_changes["rest"] += changed
        return changed

    def _use_source(self, source: str, snap: BookSnapshot | None) -> None:
        if source != self.book_source:
            log.info(
                "book_source", source=source, previous=self.book_source, instrument=self.instrument.id,
                ws_state=None if snap is None else snap.state.value,
                ws_reason=None if snap is None else snap.reason, risk_level="low",
            )  # fmt: skip
            self.book_source = source
            self._ws_version = -1  # back on the websocket: take its book whatever its version

    def refresh_book(self) -> bool:
        """Poll the top levels over REST; True when the top of book changed."""
        inst = self.instrument
        self.rest_polls += 1
        doc = self.venue.call(self.venue.exchange.public_get_depth, {"pair": self.pair, "count": BOOK_LEVELS})
        side = next(iter(doc["result"].values()))
        stamps = [int(r[2]) for r in (*side["bids"], *side["asks"]) if len(r) > 2]
        if stamps:
            self.book_ts = float(max(stamps))
        self.book_read_at = time.time()
        pp, sp = inst.price_precision, inst.size_precision

        def levels(rows: list[list[Any]]) -> list[tuple[int, int]]:
            return [(Price.from_str(str(r[0]), pp).raw, Quantity.from_str(str(r[1]), sp).raw) for r in rows]

        before = self.book.top()
        self.book.bids = levels(side["bids"])
        self.book.asks = levels(side["asks"])
        return self.book.top() != before

    def poll_trades(self) -> list[TradeView]:
        """Public trades since the last poll (the first poll only sets the cursor: no history)."""
        params: dict[str, Any] = {"pair": self.pair}
        if self.trade_cursor is not None:
            params["since"] = self.trade_cursor
        doc = self.venue.call(self.venue.exchange.public_get_trades, params)
        res = doc["result"]
        first = self.trade_cursor is None
        self.trade_cursor = str(res.get("last", self.trade_cursor or ""))
        if first:
            return []
        rows: list[list[Any]] = next((v for k, v in res.items() if k != "last"), [])
        inst = self.instrument
        out = []
        for r in rows:
            agg = Side.BUY if r[3] == "b" else Side.SELL if r[3] == "s" else None
            out.append(
                TradeView(
                    int(Fraction(str(r[2])) * 10**9),
                    Price.from_str(str(r[0]), inst.price_precision).raw,
                    Quantity.from_str(str(r[1]), inst.size_precision).raw,
                    agg,
                )
            )
        return out

    # --- own orders and fills --------------------------------------------------------------------
    def _drain_stream(self) -> bool:
        """Take the private executions stream's events; True when the venue must be polled now.

        Acks go to the gateway at once (once per order). Fills and terminal states are not booked
        from the stream: they make the runner poll the venue immediately, and the poll books the
        venue's own records — fills exact to the nanosecond and keyed by trade id, and a fill
        always before its order's terminal state — so there is one source of truth for the ledger
        and the stream only removes the polling delay.
        """
        if self.executions is None:
            return False
        poll = False
        for ev in self.executions.drain():
            self.stream_events += 1
            cid = ev.client_order_id
            if isinstance(ev, OrderAccepted):
                if cid in self.gateway.open_orders and cid not in self._acked:
                    self._acked.add(cid)
                    self.gateway.on_venue_event(ev)
            else:
                poll = True
        return poll

    def sync(self, force: bool = True) -> int:
        """Record the venue's fills exactly once, then let gateway, ledger and strategy hear of them.

        Returns how many fills were new. The store write comes first: it is what makes a fill
        seen twice (the cursor re-reads a margin, a restart re-reads everything) count once.
        With a live executions stream the loop calls ``sync(force=False)``: the venue is polled
        when the stream reports a fill or a terminal state, and every ``poll_backup_s`` anyway
        (the stream can miss what happened while it was reconnecting).
        """
        force = self._drain_stream() or force
        now = time.monotonic()
        streaming = self.executions is not None and self.executions.subscribed
        if not force and streaming and now < self._next_poll:
            return 0
        self._next_poll = now + self.timing.poll_backup_s
        events = self.venue.poll_events(max(0, self.cursor - CURSOR_MARGIN_NS))
        newest = self.cursor
        new = 0
        for ev in events:
            if isinstance(ev, OrderFilled):
                newest = max(newest, ev.fill.ts_event)
                if self.store.record_fill(ev.fill, self.venue.name):
                    new += 1
                    self.fills_this_run += self.started
                    f = ev.fill
                    self.recent_fills.append(f"{f.side.name.lower()} {f.quantity} @ {f.price}")
                    self.gateway.on_venue_event(ev)
            elif ev.client_order_id in self.gateway.open_orders:
                if isinstance(ev, OrderAccepted):
                    if ev.client_order_id in self._acked:
                        continue
                    self._acked.add(ev.client_order_id)
                self.gateway.on_venue_event(ev)
        if newest > self.cursor:
            self.cursor = newest
            self.store.kv_put(CURSOR_KEY, {"ns": newest})
        return new

    def _load_recorded_fills(self) -> None:
        """Book every fill the store holds into the ledger: the position survives restarts.

        The strategy is not told (it has no orders yet), so it starts from the true inventory
        rather than from zero — its position limits mean the account's position, not this run's.
        """
        import sqlalchemy as sa

        inst = self.instrument
        with self.store.reading() as tx:
            rows = tx.conn.execute(sa.select(S.fills).order_by(S.fills.c.ts_ns, S.fills.c.id)).all()
        pos, acc = self.ledger.position, self.ledger.account
        for r in rows:
            m = r._mapping
            side = Side[str(m["side"])]
            px = Price.from_str(str(m["price"]), inst.price_precision).raw
            q = Quantity.from_str(str(m["quantity"]), inst.size_precision).raw
            fee = Money.from_str(str(m["fee"]), inst.money_precision, inst.settle).raw
            realized = pos.apply_fill(side, px, q, fee)
            acc.apply_fill(inst, side, px, q, fee, realized)

    # --- start-up --------------------------------------------------------------------------------
    def _settle_pending(self, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while self.gateway.pending_verification and time.monotonic() < end:
            self.sync()
            self.gateway.verify_pending()
            time.sleep(0.05)

    def _startup_reconcile(self) -> ReconciliationResult:
        """Inside recovery, after every in-flight order is verified: catch up on fills, fix the
        baseline once, then compare the ledger's balances with the venue's."""
        self.sync()
        self._settle_pending()
        stored = self.store.kv_get(BASELINE_KEY)
        if stored is None:
            # first run on this state dir: the balances before our recorded fills are the baseline
            bal = self._quiet_balances()
            delta = self._ledger_balances()
            base = {c: bal.get(c, Fraction(0)) - delta[c] for c in delta}
            self.store.kv_put(BASELINE_KEY, {c: f"{v.numerator}/{v.denominator}" for c, v in base.items()})
        else:
            base = {c: Fraction(str(v)) for c, v in stored.items()}
        acc = self.ledger.account
        for c, v in base.items():
            acc.deposit(Money.from_fraction(v, acc.precision, c))
        self.ledger.mark_initial_balances()
        result = self.reconcile_once()
        if result is None:
            return ReconciliationResult(False, mismatches=[])
        return result

    def _quiet_balances(self, attempts: int = 5) -> dict[str, Fraction]:
        """The venue's balances at a moment no new fill of ours came in (sync, read, sync)."""
        bal = self.venue.balances()
        for _ in range(attempts):
            self.sync()
            bal = self.venue.balances()
            if self.sync() == 0:
                break
        return bal

    def start(self) -> RecoveryReport:
        """Recovery before anything else; raises :class:`StartupRefused` unless it reports ok."""
        self.journal.replay_into_store()
        self.journal.wal.checkpoint(self.journal.wal.last_seq)
        self._load_recorded_fills()
        report = recover(
            self.journal, self.gateway, self.venue,
            reconcile=self._startup_reconcile, breaker=self.breaker, attempts=3,
        )  # fmt: skip
        self.recovery = report
        if not report.ok:
            detail = report.reconciliation.summary() if report.reconciliation else ""
            raise StartupRefused(f"recovery not ok: unknown orders {report.unknown}; {detail}")
        self._cancel_orphans()
        self.orders_at_start = self._orders_sent()
        st = self.strategy
        st.bind(
            Context(
                self.clock, self.instrument, self.book, self.ledger.position, self.order_path,
                self.timers, order_sequence=self.store.next_sequence,
            )
        )  # fmt: skip
        with self._callback():
            st.on_start()
        if SUB_TRADES in st.subscriptions:
            self.poll_trades()
        self.started = True
        log.info("paper_run_started", strategy_id=st.id, instrument=self.instrument.id, risk_level="low")
        return report

    def _cancel_orphans(self) -> None:
        """Orders recovery found still working belong to a previous life the strategy does not
        know: cancel them rather than leave unmanaged quotes at the venue."""
        orphans = list(self.gateway.open_orders.values())
        if orphans:
            log.warning("cancel_orphans", orders=[o.client_order_id for o in orphans], risk_level="medium")
            self._cancel_and_wait(orphans, self.timing.stop_timeout_s)

    # --- the loop ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _callback(self) -> Iterator[None]:
        """Run a strategy callback; events it causes are delivered after it returns."""
        self.deliver.busy = True
        try:
            yield
        finally:
            self.deliver.busy = False
        if self.deliver.queue:
            self.deliver.flush()

    def reconcile_once(self) -> ReconciliationResult | None:
        """Ledger balances (baseline + recorded fills) against the venue's, on a quiet snapshot.

        None when fills kept arriving while we looked (try again later rather than compare a
        ledger and a venue that describe different moments).
        """
        self.sync()
        bal = self.venue.balances()
        if self.sync():
            return None
        self.venue_balances = bal
        inst = self.instrument
        local = {f"balance:{c}": v for c, v in self._ledger_balances().items()}
        remote = {f"balance:{c}": bal.get(c, Fraction(0)) for c in (inst.base, inst.quote)}
        result = reconcile(local, remote)
        self.last_reconciliation = result
        self.reconciliations += 1
        if result.ok:
            self.breaker.on_reconciliation_ok()
        else:
            self.alert("reconciliation mismatch", result.summary(), "critical")
            self.breaker.on_reconciliation_mismatch(result.summary())
        self.check_parity()
        return result

    def check_parity(self) -> ParityResult | None:
        """The PnL parity watchdog: the ledger against the stored fills, exactly (see ops.parity).

        Runs outside strategy callbacks, when every recorded fill has reached the ledger. A
        divergence alerts and counts as a reconciliation mismatch: the breaker stops new orders.
        """
        import sqlalchemy as sa

        stored = self.store.kv_get(BASELINE_KEY)
        if stored is None or self.deliver.queue:
            return None
        baseline = {c: Fraction(str(v)) for c, v in stored.items()}
        with self.store.reading() as tx:
            rows = [dict(r._mapping) for r in tx.conn.execute(sa.select(S.fills))]
        totals = totals_from_fills(rows, self.instrument)
        res = compare(totals, self.ledger.position.qty_raw, self._ledger_balances(), baseline)
        if not res.ok and (self.last_parity is None or self.last_parity.ok):
            log.error("pnl_parity_diverged", detail=res.detail, risk_level="critical")
            self.alert("PnL parity diverged", res.detail, "critical")
            self.breaker.on_reconciliation_mismatch(f"ledger parity: {res.detail}")
        self.last_parity = res
        return res

    def run(self, seconds: float | None = None) -> None:
        """Trade until ``seconds`` pass or :meth:`request_stop`; venue trouble feeds the breaker."""
        t = self.timing
        end = None if seconds is None else time.monotonic() + seconds
        next_book = next_rec = next_status = 0.0
        st = self.strategy
        trades = SUB_TRADES in st.subscriptions
        while not self.stop_requested and (end is None or time.monotonic() < end):
            loop_start = time.monotonic()
            try:
                self.gateway.enforce_kill_switch()
                self.sync(force=False)
                self.gateway.verify_pending()
                now_m = time.monotonic()
                book_due = now_m >= next_book
                if book_due:
                    next_book = now_m + t.book_s
                changed = self.update_book(poll=book_due)  # the websocket book is read every loop
                if book_due or changed:
                    self.check_book_fresh()
                if changed and self.book_stale is None:
                    with self._callback():
                        st.on_book(self.book)
                if book_due and trades:
                    for tv in self.poll_trades():
                        with self._callback():
                            st.on_trade(tv)
                due = self.timers.pop_due(self.clock.now_ns())
                if due:
                    with self._callback():
                        for name, ts in due:
                            st.on_timer(name, ts)
                if now_m >= next_rec:
                    next_rec = now_m + t.reconcile_s
                    self.reconcile_once()
                if now_m >= next_status:
                    next_status = now_m + t.status_s
                    self._report_status()
            except _VENUE_ERRORS as exc:
                self.breaker.on_venue_result(self.venue.name, False)
                log.warning("venue_error", error=repr(exc), risk_level="medium")
                self.check_book_fresh()
                time.sleep(0.2)  # unsure or away: ask again, never guess
            time.sleep(max(0.0, t.loop_s - (time.monotonic() - loop_start)))

    def check_book_fresh(self) -> None:
        """Hold new orders and pull resting quotes while the book is stale; resume when fresh.

        A quote priced off a book that stopped moving is priced off a market that may have moved
        without us: it is the order most likely to be picked off. So while the venue's book is
        older than ``book_stale_s`` (or could not be read for that long) the strategy hears no
        book updates, its new orders are refused with the reason, and its working orders are
        cancelled; cancels always pass.

        The rule applies to the source in use: a LIVE websocket book stamps itself fresh on every
        loop, so once it goes STALE (checksum, gap, disconnect, silence) the clock runs from its
        last LIVE moment and REST Depth takes over; if REST cannot give a fresh book either
        within ``book_stale_s``, the book is stale exactly as with REST alone.
        """
        now = time.time()
        limit = self.timing.book_stale_s
        age, unread = now - self.book_ts, now - self.book_read_at
        reason = None
        if unread > limit:
            reason = f"book not read for {unread:.1f}s"
        elif age > limit:
            reason = f"book unchanged for {age:.1f}s"
        if reason is not None and self.book_stale is None:
            self.book_stale = reason
            self.stale_episodes += 1
            self.order_path.hold = f"book stale: {reason}"
            log.warning("book_stale", reason=reason, instrument=self.instrument.id, risk_level="medium")
            self.alert("book stale: quotes pulled", reason, "warning")
            for o in list(self.gateway.open_orders.values()):
                if o.client_order_id not in self.gateway.pending_verification and not o.cancel_pending:
                    self.gateway.cancel(o)
        elif reason is None and self.book_stale is not None:
            log.info("book_fresh", after=self.book_stale, instrument=self.instrument.id, risk_level="low")
            self.book_stale = None
            self.order_path.hold = None

    def request_stop(self) -> None:
        self.stop_requested = True

    def _report_status(self) -> None:
        if self.book.mid_raw() > 0:
            self.breaker.on_equity(self._equity_of(self._ledger_balances()), self.clock.now_ns())
        if self.on_status is not None:
            self.on_status(self.status())

    def status(self) -> dict[str, Any]:
        inst = self.instrument
        pos = self.ledger.position
        mid = self.book.mid_raw()
        net = pos.net_pnl(mid) if mid > 0 else pos.realized - pos.fees
        rec = self.last_reconciliation
        out = {
            "mode": self.mode,
            "balances": {c: str(inst.money(v).to_decimal()) for c, v in sorted(self.venue_balances.items())
                         if c in (inst.base, inst.quote)},
            "position": format_raw(pos.qty_raw, inst.size_precision),  # signed: a short is negative
            "open_orders": len(self.gateway.open_orders),
            "orders": self._orders_sent() - self.orders_at_start,
            "fills": self.fills_this_run,
            "recent_fills": list(self.recent_fills),
            "realized_pnl": format(inst.money(pos.realized).to_decimal(), "f"),
            "net_pnl": format(inst.money(net).to_decimal(), "f"),
            "mid": str(inst.price_from_raw(mid)) if mid else None,
            "breaker": self.breaker.state.value,
            "book": f"live ({self.book_source})" if self.book_stale is None
                    else f"STALE ({self.book_stale}; {self.book_source})",
            "ws_book": self._ws_book_state(),
            "reconciliation": None if rec is None else ("ok" if rec.ok else "MISMATCH"),
            "parity": None if self.last_parity is None else ("ok" if self.last_parity.ok else "DIVERGED"),
        }  # fmt: skip
        if self.market is not None:
            m = self.market()
            out["market"] = None if m is None else md.describe(m)
        return out

    def _ws_book_state(self) -> str | None:
        if self.ws_book is None:
            return None
        snap = self.ws_book.snapshot()
        state = snap.state.value if self.ws_book.alive else "down"
        return state if snap.reason is None else f"{state} ({snap.reason})"

    def book_summary(self) -> dict[str, Any]:
        """Where the book came from this run, and what the websocket book went through."""
        ws = None
        if self.ws_book is not None:
            snap = self.ws_book.snapshot()
            ws = {"state": self._ws_book_state(), **snap.counters()}
        return {
            "source": self.book_source,
            "changes": dict(self.book_changes),
            "rest_polls": self.rest_polls,
            "ws": ws,
        }

    # --- stopping -----------------------------------------------------------------------------------
    def _cancel_and_wait(self, orders: list[Order], timeout_s: float) -> None:
        """Cancel, then poll until the venue says every one is done (cancels re-sent every 2 s)."""
        end = time.monotonic() + timeout_s
        resend = 0.0
        while time.monotonic() < end:
            try:
                open_now = self.gateway.open_orders
                if not open_now:
                    return
                if time.monotonic() >= resend:
                    resend = time.monotonic() + 2.0
                    for o in orders:
                        if o.client_order_id in open_now and o.client_order_id not in (
                            self.gateway.pending_verification
                        ):
                            self.gateway.cancel(o)
                time.sleep(0.1)
                self.sync()
                self.gateway.verify_pending()
            except _VENUE_ERRORS as exc:
                log.warning("venue_error_while_cancelling", error=repr(exc), risk_level="medium")
                time.sleep(0.2)
        left = sorted(self.gateway.open_orders)
        if left:
            log.error("orders_left_working", orders=left, risk_level="high")

    def stop(self) -> dict[str, Any]:
        """Close the door, cancel everything still working, wait for the answers, reconcile."""
        self.order_path.closed = True
        if self.started:
            with self._callback():
                self.strategy.on_stop()
        self._cancel_and_wait(list(self.gateway.open_orders.values()), self.timing.stop_timeout_s)
        for _ in range(5):
            try:
                if self.reconcile_once() is not None:
                    break
            except _VENUE_ERRORS:
                time.sleep(0.2)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        s = self.status()
        rec = self.last_reconciliation
        rep = self.recovery
        return {
            "strategy": self.strategy.name,
            "instrument": self.instrument.id,
            "venue": self.venue.name,
            "orders": s["orders"],
            "fills": s["fills"],
            "open_orders": s["open_orders"],
            "position": s["position"],
            "realized_pnl": s["realized_pnl"],
            "net_pnl": s["net_pnl"],
            "balances": s["balances"],
            "breaker": s["breaker"],
            "denials": dict(self.ledger.denials),
            "recovery": None if rep is None else {
                "ok": rep.ok, "in_flight": rep.in_flight, "resumed": len(rep.resumed),
                "settled": len(rep.settled), "absent": len(rep.absent), "unknown": len(rep.unknown),
            },
            "reconciliation": None if rec is None else {"ok": rec.ok, "summary": rec.summary()},
            "reconciliations": self.reconciliations,
            "book_stale_episodes": self.stale_episodes,
            "book": self.book_summary(),
            "market": None if self.market is None else self.market(),
            "executions_stream": None if self.executions is None else {
                "events": self.stream_events, "subscribed": self.executions.subscribed,
                "reconnects": self.executions.client.counters.reconnects,
            },
            "parity": None if self.last_parity is None else {
                "ok": self.last_parity.ok, "detail": self.last_parity.detail
            },
        }  # fmt: skip

    def close(self) -> None:
        self.journal.wal.close()
        self.store.close()


# --- what an operator sees --------------------------------------------------------------------------
def status_line(s: dict[str, Any]) -> str:
    """One line per second for logs and pipes (no terminal control codes)."""
    bal = " ".join(f"{c}={v}" for c, v in s["balances"].items())
    last = s["recent_fills"][-1] if s["recent_fills"] else "-"
    market = s.get("market")
    source = f" market={market.split(' ', 1)[0]}" if market else ""
    return (
        f"mid={s['mid']} pos={s['position']} open={s['open_orders']} orders={s['orders']} "
        f"fills={s['fills']} last_fill=[{last}] realized={s['realized_pnl']} net={s['net_pnl']} "
        f"{bal} breaker={s['breaker']} recon={s['reconciliation']}{source}"
    )


def status_table(s: dict[str, Any]) -> Table:
    t = Table(show_header=False, title=f"bastion run ({s.get('mode', 'paper')})")
    for k, v in s.items():
        t.add_row(
            k, "\n".join(v) if isinstance(v, list) else json.dumps(v) if isinstance(v, dict) else str(v)
        )
    return t


# --- paper mode against the local exchange ---------------------------------------------------------
@contextlib.contextmanager
def _signals(runner_ref: list[LiveRunner]) -> Iterator[None]:
    """SIGINT/SIGTERM ask the runner to stop cleanly (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        for r in runner_ref:
            r.request_stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_paper(
    state_dir: Path,
    strategy: Strategy,
    risk: RiskConfig,
    *,
    seconds: float | None,
    speed: float = 1.0,
    timing: RunnerTiming | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    alerter: Alerter | None = None,
    stream: bool = True,
    ws_book: bool = True,
    market_data: str = "replay",
    market_url: str = md.DEFAULT_MARKET_URL,
    probe_s: float = md.DEFAULT_PROBE_S,
    exchange_port: int = 0,
) -> dict[str, Any]:
    """Start the local exchange (state kept in ``state_dir/exchange``), trade it, stop cleanly.

    ``market_data`` / ``market_url`` / ``probe_s``: the exchange's market (replay, live, auto;
    see :mod:`bastion.ops.market_data`); ``live`` without a verified live book raises
    :class:`~bastion.ops.market_data.MarketDataError` before anything trades. ``exchange_port``:
    0 picks a free one.
    """
    from bastion.ops import chaos  # ccxt is slow to import: only when a run starts

    md.check_request(market_data, market_url)  # before any process starts
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "exchange").mkdir(exist_ok=True)
    exch = chaos.ExchangeProcess(
        state_dir / "exchange", speed=speed, port=exchange_port,
        market_data=market_data, market_url=market_url, probe_s=probe_s,
    )  # fmt: skip
    # the exchange must outlive a Ctrl-C long enough to answer our cancels: it starts with
    # SIGINT ignored (inherited through exec) and is stopped by SIGTERM once we are done
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        exch.start()
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    try:
        # asked every status second: a short timeout, so a slow exchange costs freshness, not the loop
        market = md.MarketReport(lambda: md.summarize(exch.market(timeout_s=1.0), chaos.PAIR))
        first = market()
        if first is not None:
            log.info("paper_market", market=md.describe(first), risk_level="low")
            if first.get("reason"):
                log.warning("paper_market_fallback", requested=first["requested"], reason=first["reason"])
        client = chaos.make_client(exch.url)
        venue = CcxtVenue(client, chaos.INSTRUMENT, chaos.SYMBOL, chaos.VENUE)
        ws = (chaos.make_client(exch.url), f"ws://127.0.0.1:{exch.port}/v2-auth") if stream else None
        book_url = f"ws://127.0.0.1:{exch.port}/v2" if ws_book else None
        out = _trade(
            venue, strategy, state_dir, risk, seconds, timing, on_status, alerter, "paper", ws, book_url,
            market,
        )  # fmt: skip
        out["exchange_url"] = exch.url
        return out
    finally:
        exch.stop()


def runner_book_client(
    symbol: str, inst: Instrument, url: str, stale_after_s: float, **options: Any
) -> KrakenBookClient:
    """The websocket book a run trades on: stale after ``stale_after_s`` without a book frame.

    Heartbeats do not count: a venue whose market-data path hangs keeps its socket alive with
    them, and a book kept LIVE by heartbeats would be quoted on while frozen. Silence instead
    makes it STALE (the runner falls back to REST, whose level timestamps tell their age) and
    reconnects it for a fresh snapshot.
    """
    return KrakenBookClient(
        symbol, price_precision=inst.price_precision, size_precision=inst.size_precision,
        depth=WS_BOOK_DEPTH, url=url, stale_after_s=stale_after_s, heartbeat_is_alive=False, **options,
    )  # fmt: skip


def _trade(
    venue: CcxtVenue,
    strategy: Strategy,
    state_dir: Path,
    risk: RiskConfig,
    seconds: float | None,
    timing: RunnerTiming | None,
    on_status: Callable[[dict[str, Any]], None] | None,
    alerter: Alerter | None,
    mode: str,
    stream: tuple[Any, str] | None = None,
    book_url: str | None = None,
    market: Callable[[], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Recover, trade until stopped, stop cleanly: the one path paper and live share.

    ``stream`` = (a second ccxt client for websocket tokens, the private websocket URL): the
    venue's own-executions stream, run on its own thread (a separate client, because ccxt
    clients are not thread-safe).

    ``book_url``: the venue's public websocket v2 URL; the order book then comes from its ``book``
    channel (on its own thread), with REST ``Depth`` as the fallback while it is not LIVE.
    """
    kc = risk.kill_switch
    kill = KillSwitch(kc.resolved_flag_path(), kc.resolved_audit_path())
    runners: list[LiveRunner] = []
    executions = None
    if stream is not None:
        token_client, url = stream
        token_client.nonce = lambda: time.time_ns() // 1000  # the adapter's nonce: microseconds
        wsname = str(venue.symbol)
        client = KrakenExecutionsClient(
            ccxt_token_fn(token_client), {wsname: venue.instrument}, url=url, client_id_of=ClientIdMap()
        )
        executions = ExecutionsThread(client).start()
    book_thread = None
    if book_url is not None:
        inst = venue.instrument
        book_client = runner_book_client(
            str(venue.symbol), inst, book_url, (timing or RunnerTiming()).book_stale_s
        )  # Kraken's v2 name is ccxt's unified symbol ("BTC/USD")
        book_thread = KrakenBookThread(book_client, levels=BOOK_LEVELS).start()
    try:
        runner = LiveRunner(
            venue, strategy, state_dir, risk, kill_switch=kill, timing=timing, on_status=on_status,
            alerter=alerter, mode=mode, executions=executions, ws_book=book_thread, market=market,
        )  # fmt: skip
    except BaseException:
        if book_thread is not None:
            book_thread.stop()
        raise
    runners.append(runner)
    try:
        with _signals(runners):
            try:
                runner.start()
            except StartupRefused as exc:
                runner.alert("start-up refused", str(exc), "critical")
                raise
            try:
                runner.run(seconds)
            finally:  # whatever stopped the loop, leave nothing working at the venue
                out = runner.stop()
    finally:
        runner.close()
        if executions is not None:
            executions.stop()
        if book_thread is not None:
            book_thread.stop()
        if alerter is not None:
            alerter.flush()
    out["mode"] = mode
    out["state_dir"] = str(state_dir)
    return out


def run_live(
    state_dir: Path,
    strategy: Strategy,
    cfg: BastionConfig,
    secrets: Secrets,
    confirm: str | None,
    *,
    seconds: float | None,
    timing: RunnerTiming | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    alerter: Alerter | None = None,
    stream: bool = True,
    ws_book: bool = True,
) -> dict[str, Any]:
    """Trade the operator's account: refused (with every reason) unless the live gate passes."""
    from bastion.ops.live import check_live, instrument_from_market, live_kraken_client

    check_live(cfg, confirm, secrets)  # before anything connects
    state_dir.mkdir(parents=True, exist_ok=True)
    client = live_kraken_client(cfg, secrets)
    symbol = cfg.live.symbol
    if symbol not in client.markets:
        raise ValueError(f"{cfg.live.venue} has no market {symbol!r}")
    inst = instrument_from_market(client.market(symbol), cfg.live.venue)
    venue = CcxtVenue(client, inst, symbol, cfg.live.venue)
    ws = None
    api = cfg.live.api_url
    ws_base = None if api is None else api.replace("http", "ws", 1).rstrip("/")
    if stream:
        url = DEFAULT_EXECUTIONS_URL if ws_base is None else ws_base + "/v2-auth"
        ws = (live_kraken_client(cfg, secrets), url)
    book_url = None
    if ws_book:
        book_url = DEFAULT_BOOK_URL if ws_base is None else ws_base + "/v2"
    return _trade(
        venue, strategy, state_dir, cfg.risk, seconds, timing, on_status, alerter, "live", ws, book_url
    )

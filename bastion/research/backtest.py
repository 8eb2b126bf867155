"""Run one strategy over one instrument's recorded order-book events in the simulated venue.

This is the backtest wiring of the engine: the simulated venue's loop drives the clock, the
strategy is called only for what it subscribed to, every order goes through the order path the
strategy was given, and fills land in an exact position ledger. The result hash covers the
ordered fills and the final position so two runs can be compared byte for byte.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from bastion.engine.clock import Clock, SimClock
from bastion.engine.strategy import (
    SUB_BOOK_MESSAGES,
    SUB_FUNDING,
    SUB_TOP_OF_BOOK,
    SUB_TRADES,
    Context,
    Strategy,
    TimerService,
    TradeView,
)
from bastion.execution.gateway import BreakerGate, OrderGateway, PreTradeCheck
from bastion.execution.journal import Journal, MemoryJournal
from bastion.execution.reservations import Reservations
from bastion.model.events import OrderEvent
from bastion.model.fixed import Money
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, Side
from bastion.research.ledger import RunLedger
from bastion.research.result import BacktestResult
from bastion.research.safety import backtest_risk
from bastion.risk.breaker import CircuitBreaker
from bastion.risk.config import RiskConfig
from bastion.venues.base import VenueClient
from bastion.venues.sim import kernel
from bastion.venues.sim import layout as L
from bastion.venues.sim.replay import StreamSource
from bastion.venues.sim.venue import SimVenue, SimVenueConfig

_SUB_MASKS = {
    SUB_TOP_OF_BOOK: L.SUB_TOP_OF_BOOK,
    SUB_BOOK_MESSAGES: L.SUB_BOOK_MESSAGES,
    SUB_TRADES: L.SUB_TRADES,
    SUB_FUNDING: L.SUB_FUNDING,
}


class Deferred:
    """Delivers order events to the ledger and the strategy one at a time, never in the middle
    of a strategy callback: a denial raised while the strategy is submitting reaches it after the
    callback returns, so a strategy never re-enters itself (and cannot recurse without end)."""

    __slots__ = ("busy", "queue", "sink")

    def __init__(self, sink: Callable[[OrderEvent], None]) -> None:
        self.sink = sink
        self.queue: deque[OrderEvent] = deque()
        self.busy = False

    def __call__(self, event: OrderEvent) -> None:
        if self.busy:
            self.queue.append(event)
            return
        self.busy = True  # idle: deliver at once, then whatever the delivery itself queued
        try:
            self.sink(event)
            while self.queue:
                self.sink(self.queue.popleft())
        finally:
            self.busy = False

    def flush(self) -> None:
        self.busy = True
        try:
            while self.queue:
                self.sink(self.queue.popleft())
        finally:
            self.busy = False


class DirectOrderPath:
    """The bare order path: straight to the simulated venue, no safety checks.

    Only for measuring what the gateway costs; every normal run goes through ``OrderGateway``.
    """

    def __init__(self, venue: SimVenue, on_event: Callable[[OrderEvent], None]) -> None:
        self._venue = venue
        self._on_event = on_event

    def submit(self, order: Order) -> None:
        rejected = self._venue.submit(order)
        if rejected is not None:
            self._on_event(rejected)

    def cancel(self, order: Order) -> None:
        self._venue.cancel(order)

    def on_venue_event(self, event: OrderEvent) -> None:
        self._on_event(event)


@dataclass(slots=True)
class SafetySetup:
    """The gateway's collaborators in a backtest; all optional except the balances.

    ``balances`` are the starting balances (exact, per currency); by default the capital in the
    settlement (or quote) currency and, for spot, the same value again in the base currency at
    the data's reference price, so a spot market maker can sell as well as buy.
    """

    capital: Fraction = Fraction(10_000)
    balances: dict[str, Fraction] | None = None
    risk: RiskConfig | None = None  # breaker and compliance/limits policy (None: gateway without them)
    kill_switch: Callable[[], bool] | None = None
    breaker: BreakerGate | None = None
    checks: list[PreTradeCheck] = field(default_factory=list)
    journal: Journal | None = None
    bare: bool = False  # no gateway at all (benchmarks of the gateway's own cost)


def fund(ledger: RunLedger, balances: dict[str, Fraction]) -> None:
    """Deposit the starting balances; results report changes from here."""
    account = ledger.account
    for currency, amount in balances.items():
        account.deposit(Money.from_fraction(amount, account.precision, currency))
    ledger.mark_initial_balances()


def build_gateway(
    venue: VenueClient,
    instrument: Instrument,
    safety: SafetySetup,
    *,
    clock: Clock,
    ledger: RunLedger,
    deliver: Callable[[OrderEvent], None],
    reference_price: Callable[[Side], int],
    mark_raw: Callable[[], int],
) -> tuple[OrderGateway, CircuitBreaker | None]:
    """The order gateway of a backtest (L2 or bars), with the configured breaker and policy."""
    account = ledger.account
    position = ledger.position

    def balance_of(currency: str) -> int:
        return account.raw.get(currency, 0)

    breaker: BreakerGate | None = safety.breaker
    checks = list(safety.checks)
    own_breaker: CircuitBreaker | None = None
    if safety.risk is not None:
        own_breaker, gates = backtest_risk(
            safety.risk, capital=safety.capital, clock=clock, instrument=instrument,
            position=position, mark_raw=mark_raw,
        )  # fmt: skip
        breaker = breaker or own_breaker
        checks += gates
    gateway = OrderGateway(
        venue,
        instrument,
        clock=clock,
        journal=safety.journal or MemoryJournal(keep_entries=False),
        reservations=Reservations(balance_of, account.precision),
        on_event=deliver,
        position_of=lambda: position.qty_raw,
        reference_price=reference_price,
        kill_switch=safety.kill_switch,
        breaker=breaker,
        checks=checks,
    )
    return gateway, own_breaker


class BacktestRun:
    def __init__(
        self,
        stream: StreamSource,
        strategy: Strategy,
        config: SimVenueConfig | None = None,
        *,
        samples: int = 4000,
        progress: Callable[[int, int], None] | None = None,
        safety: SafetySetup | None = None,
    ) -> None:
        self.stream = stream
        self.strategy = strategy
        self.venue = SimVenue(stream, config)
        self.instrument = stream.instrument
        self.ledger = RunLedger(self.instrument, strategy, stream.start_ns, stream.end_ns, samples)
        self.position = self.ledger.position
        self.clock = SimClock(stream.start_ns)
        self.timers = TimerService()
        self._progress = progress
        self.safety = safety or SafetySetup()
        self.breaker: CircuitBreaker | None = None
        self.deliver = Deferred(self.ledger.on_order_event)
        self.order_path: OrderGateway | DirectOrderPath = self._order_path()

    def _initial_balances(self) -> dict[str, Fraction]:
        sf = self.safety
        if sf.balances is not None:
            return dict(sf.balances)
        inst = self.instrument
        if inst.kind is InstrumentKind.SPOT:
            rng = self.stream.book_range
            ref = Fraction(rng.lo_raw + rng.tick_raw * (rng.n_ticks // 2), 10**inst.price_precision)
            return {inst.quote: sf.capital, inst.base: sf.capital / ref}
        return {inst.settle: sf.capital}

    def _order_path(self) -> OrderGateway | DirectOrderPath:
        fund(self.ledger, self._initial_balances())
        if self.safety.bare:
            return DirectOrderPath(self.venue, self.deliver)

        def reference_price(side: Side) -> int:
            v = self.venue.view
            return (v.ask_raw or v.bid_raw) if side is Side.BUY else (v.bid_raw or v.ask_raw)

        gateway, self.breaker = build_gateway(
            self.venue, self.instrument, self.safety, clock=self.clock, ledger=self.ledger,
            deliver=self.deliver, reference_price=reference_price, mark_raw=self._mark_raw,
        )  # fmt: skip
        return gateway

    def _mark_raw(self) -> int:
        v = self.venue.view
        b, a = v.bid_raw, v.ask_raw
        if b and a:
            return (b + a) // 2
        return b or a

    def _apply_funding(self, i: int) -> None:
        rate = Fraction(int(self.venue._evi[L.EV_SIZE, i]), 10**12)
        mark = self._mark_raw()
        if mark > 0:
            self.ledger.apply_funding(rate, mark, self.clock.now_ns())
        if SUB_FUNDING in self.strategy.subscriptions:
            self.strategy.on_funding(str(rate.numerator / rate.denominator), self.clock.now_ns())

    def run(self) -> BacktestResult:
        t0 = time.perf_counter()
        st = self.strategy
        venue = self.venue
        view = venue.view
        clock = self.clock
        ledger = self.ledger
        st.bind(Context(clock, self.instrument, view, self.position, self.order_path, self.timers))
        self.deliver.busy = True
        st.on_start()
        self.deliver.busy = False
        mask = 0
        for sub in st.subscriptions:
            mask |= _SUB_MASKS[sub]
        venue.set_subscriptions(mask)
        on_book = st.on_book
        on_trade = st.on_trade
        on_event = self.order_path.on_venue_event
        deliver = self.deliver
        book, orders, act, notes, s = venue.book, venue.orders, venue.act, venue.notes, venue.s
        advance = kernel.advance
        sampler = ledger.sampler
        timers = self.timers
        n = len(self.stream)
        progress = self._progress
        next_progress = 0
        done_before = 0
        for chunk in self.stream.chunks():
            venue.load_chunk(chunk)
            evi, evk, price_raw = venue._evi, venue._evk, venue._price_raw
            while True:
                nt = timers.next_time()
                s[L.S_TIMER] = L.NO_TIME if nt is None else nt
                r = advance(evi, evk, book, orders, act, notes, s)
                now = int(s[L.S_NOW])
                clock.set(now)
                if r == L.R_BOOK:
                    deliver.busy = True
                    on_book(view)
                    deliver.busy = False
                    if deliver.queue:
                        deliver.flush()
                elif r == L.R_ORDER:
                    for ev in venue.drain(now):
                        on_event(ev)
                elif r == L.R_TRADE:
                    i = int(s[L.S_TRADE_IDX])
                    k = int(evk[L.EK_KIND, i])
                    agg = Side.BUY if k == L.KIND_TRADE_BUY else Side.SELL if k == L.KIND_TRADE_SELL else None
                    deliver.busy = True
                    on_trade(
                        TradeView(
                            int(evi[L.EV_TS_EVENT, i]) + chunk.ts_shift_ns,
                            int(price_raw[i]),
                            int(evi[L.EV_SIZE, i]),
                            agg,
                        )
                    )
                    deliver.busy = False
                    if deliver.queue:
                        deliver.flush()
                elif r == L.R_TIMER:
                    deliver.busy = True
                    for name, ts in timers.pop_due(now):
                        st.on_timer(name, ts)
                    deliver.busy = False
                    if deliver.queue:
                        deliver.flush()
                elif r == L.R_FUNDING:
                    self._apply_funding(int(s[L.S_FUNDING_IDX]))
                elif r == L.R_CHUNK_DONE:
                    break
                if now >= sampler.next_ns:
                    mark = self._mark_raw()
                    ledger.sample(now, mark)
                    if self.breaker is not None and mark > 0:
                        self.breaker.on_equity(self.safety.capital + self.position.net_pnl(mark), now)
                if progress is not None:
                    done = done_before + int(s[L.S_IDX])
                    if done >= next_progress:
                        progress(done, n)
                        next_progress = done + max(1, n // 100)
            done_before += len(chunk)
        # the data has ended: requests in flight still get their answers
        venue.finish()
        for ev in venue.drain(L.NO_TIME):
            clock.set(ev.ts_event)
            on_event(ev)
        st.on_stop()
        ledger.sample(clock.now_ns(), self._mark_raw(), force=True)
        if progress is not None:
            progress(n, n)
        notes_out = []
        crossed = int(s[L.S_CROSSED])
        if crossed:
            notes_out.append(f"book crossed after {crossed} messages of the replayed data")
        if self.stream.out_of_range:
            notes_out.append(
                f"{self.stream.out_of_range} book rows outside the simulated price range ignored"
            )
        return ledger.result(
            mark_raw=self._mark_raw(),
            data_source=", ".join(self.stream.sources),
            start_ns=self.stream.start_ns,
            end_ns=self.stream.end_ns,
            events=int(s[L.S_EVENTS]),
            orders=venue.orders_submitted,
            cancels=venue.cancels_submitted,
            seconds=time.perf_counter() - t0,
            notes=notes_out,
        )

"""Run one strategy over one instrument's recorded events in the simulated venue.

This is the backtest wiring of the engine: the simulated venue's loop drives the clock, the
strategy is called only for what it subscribed to, every order goes through the order path the
strategy was given, and fills land in an exact position ledger. The result hash covers the
ordered fills and the final position so two runs can be compared byte for byte.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from bastion.engine.clock import SimClock
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
from bastion.model.events import OrderEvent, OrderFilled, OrderRejected
from bastion.model.fixed import Money
from bastion.model.orders import Order, Side
from bastion.model.position import Position
from bastion.research.result import BacktestResult, FillRecord
from bastion.venues.sim import layout as L
from bastion.venues.sim.replay import EventStream
from bastion.venues.sim.venue import SimVenue, SimVenueConfig

_SUB_MASKS = {
    SUB_TOP_OF_BOOK: L.SUB_TOP_OF_BOOK,
    SUB_BOOK_MESSAGES: L.SUB_BOOK_MESSAGES,
    SUB_TRADES: L.SUB_TRADES,
    SUB_FUNDING: L.SUB_FUNDING,
}


class DirectOrderPath:
    """The bare order path of a backtest: straight to the simulated venue.

    The safety gateway replaces this object; nothing else in the run changes.
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


@dataclass(slots=True)
class _Sampler:
    """Keeps a few thousand evenly spaced points of equity, inventory and mid for reports."""

    every_ns: int
    next_ns: int
    ts: list[int] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    inventory: list[float] = field(default_factory=list)
    mid: list[float] = field(default_factory=list)


class BacktestRun:
    def __init__(
        self,
        stream: EventStream,
        strategy: Strategy,
        config: SimVenueConfig | None = None,
        *,
        samples: int = 4000,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.stream = stream
        self.strategy = strategy
        self.venue = SimVenue(stream, config)
        self.instrument = stream.instrument
        self.position = Position(self.instrument)
        self.clock = SimClock(stream.start_ns)
        self.timers = TimerService()
        self.fills: list[FillRecord] = []
        self._hash = hashlib.sha256()
        self._progress = progress
        span = max(1, stream.end_ns - stream.start_ns)
        self._sampler = _Sampler(every_ns=max(1, span // samples), next_ns=stream.start_ns)
        self.order_path = DirectOrderPath(self.venue, self._on_order_event)
        self.rejections: dict[str, int] = {}

    # --- event handling ------------------------------------------------------------------------
    def _on_order_event(self, event: OrderEvent) -> None:
        if isinstance(event, OrderFilled):
            f = event.fill
            fee = Fraction(f.fee.raw, 10**f.fee.precision)
            self.position.apply_fill(f.side, f.price.raw, f.quantity.raw, fee)
            rec = FillRecord(
                f.ts_event,
                f.client_order_id,
                "buy" if f.side is Side.BUY else "sell",
                str(f.price),
                str(f.quantity),
                str(f.fee.to_decimal()),
                f.liquidity.name.lower(),
            )
            self.fills.append(rec)
            self._hash.update(
                f"{rec.ts}|{rec.client_order_id}|{rec.side}|{rec.price}|{rec.qty}|{rec.fee}|{rec.liquidity}\n".encode()
            )
        elif isinstance(event, OrderRejected):
            self.rejections[event.reason] = self.rejections.get(event.reason, 0) + 1
        self.strategy.handle_order_event(event)

    def _mark_raw(self) -> int:
        v = self.venue.view
        b, a = v.bid_raw, v.ask_raw
        if b and a:
            return (b + a) // 2
        return b or a

    def _sample(self, now: int, force: bool = False) -> None:
        sp = self._sampler
        if now < sp.next_ns and not force:
            return
        sp.next_ns = now + sp.every_ns
        mark = self._mark_raw()
        if mark <= 0:
            return
        sp.ts.append(now)
        sp.equity.append(float(self.position.net_pnl(mark)))
        sp.inventory.append(self.position.qty_raw / 10**self.instrument.size_precision)
        sp.mid.append(mark / 10**self.instrument.price_precision)

    def _apply_funding(self, i: int) -> None:
        rate = Fraction(int(self.stream.evi[L.EV_SIZE, i]), 10**12)
        mark = self._mark_raw()
        if mark > 0:
            self.position.apply_funding(rate, mark)
        if SUB_FUNDING in self.strategy.subscriptions:
            self.strategy.on_funding(str(rate.numerator / rate.denominator), self.clock.now_ns())

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> BacktestResult:
        t0 = time.perf_counter()
        st = self.strategy
        venue = self.venue
        view = venue.view
        clock = self.clock
        st.bind(Context(clock, self.instrument, view, self.position, self.order_path, self.timers))
        st.on_start()
        mask = 0
        for sub in st.subscriptions:
            mask |= _SUB_MASKS[sub]
        venue.set_subscriptions(mask)
        on_book = st.on_book
        on_trade = st.on_trade
        evi = self.stream.evi
        n = len(self.stream)
        next_progress = 0
        sample = self._sample
        while True:
            venue.set_timer(self.timers.next_time())
            r = venue.advance()
            now = venue.now
            clock.set(now)
            if r == L.R_BOOK:
                on_book(view)
            elif r == L.R_ORDER:
                for ev in venue.drain(now):
                    self._on_order_event(ev)
            elif r == L.R_TRADE:
                i = int(venue.s[L.S_TRADE_IDX])
                k = int(venue._evk[L.EK_KIND, i])
                agg = Side.BUY if k == L.KIND_TRADE_BUY else Side.SELL if k == L.KIND_TRADE_SELL else None
                on_trade(TradeView(int(evi[L.EV_TS_EVENT, i]), int(self.stream.price_raw[i]),
                                   int(evi[L.EV_SIZE, i]), agg))
            elif r == L.R_TIMER:
                for name, ts in self.timers.pop_due(now):
                    st.on_timer(name, ts)
            elif r == L.R_FUNDING:
                self._apply_funding(int(venue.s[L.S_FUNDING_IDX]))
            elif r == L.R_CHUNK_DONE:
                break
            if now >= self._sampler.next_ns:
                sample(now)
            if self._progress is not None:
                done = int(venue.s[L.S_IDX])
                if done >= next_progress:
                    self._progress(done, n)
                    next_progress = done + max(1, n // 100)
        # the data has ended: requests in flight still get their answers
        venue.finish()
        for ev in venue.drain(L.NO_TIME):
            clock.set(ev.ts_event)
            self._on_order_event(ev)
        st.on_stop()
        self._sample(clock.now_ns(), force=True)
        if self._progress is not None:
            self._progress(n, n)
        return self._result(time.perf_counter() - t0)

    def _result(self, seconds: float) -> BacktestResult:
        pos = self.position
        inst = self.instrument
        mark = self._mark_raw()

        def money(x: Fraction) -> Money:
            return inst.money(x)

        net = pos.net_pnl(mark) if mark > 0 else pos.realized - pos.fees + pos.funding
        final_qty = inst.qty_from_raw(abs(pos.qty_raw))
        final = ("-" if pos.qty_raw < 0 else "") + str(final_qty)
        self._hash.update(f"position|{pos.qty_raw}|{pos.cost}|{pos.realized}|{pos.fees}|{pos.funding}".encode())
        sp = self._sampler
        params: dict[str, Any] = dict(self.strategy.config)
        notes = []
        if self.rejections:
            notes.append("rejections: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.rejections.items())))
        crossed = int(self.venue.s[L.S_CROSSED])
        if crossed:
            notes.append(f"book crossed after {crossed} messages of the replayed data")
        if self.stream.out_of_range:
            notes.append(f"{self.stream.out_of_range} book rows outside the simulated price range ignored")
        return BacktestResult(
            strategy=self.strategy.name,
            instrument_id=inst.id,
            settle_currency=inst.settle,
            data_source=", ".join(self.stream.sources),
            start_ns=self.stream.start_ns,
            end_ns=self.stream.end_ns,
            events=int(self.venue.s[L.S_EVENTS]),
            orders=self.venue.orders_submitted,
            cancels=self.venue.cancels_submitted,
            fills=self.fills,
            net_pnl=str(money(net).to_decimal()),
            fees=str(money(pos.fees).to_decimal()),
            funding=str(money(pos.funding).to_decimal()),
            realized_pnl=str(money(pos.realized).to_decimal()),
            final_position=final,
            ts=np.asarray(sp.ts, dtype=np.int64),
            equity=np.asarray(sp.equity, dtype=np.float64),
            inventory=np.asarray(sp.inventory, dtype=np.float64),
            mid=np.asarray(sp.mid, dtype=np.float64),
            result_hash=self._hash.hexdigest(),
            run_seconds=seconds,
            params=params,
            notes=notes,
        )

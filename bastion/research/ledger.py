"""The record of one run: exact position, fills in order, the result hash and sampled series.

Both runners (L2 replay and bars) hand their order events here, so fills are booked, hashed and
reported the same way whatever drove the simulation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from bastion.engine.bus import MessageBus
from bastion.engine.strategy import Strategy
from bastion.model.account import Account
from bastion.model.events import OrderDenied, OrderEvent, OrderFilled, OrderRejected
from bastion.model.fixed import format_raw
from bastion.model.instruments import Instrument
from bastion.model.orders import Side
from bastion.model.position import Position
from bastion.research.result import BacktestResult, FillRecord

_TOPICS: dict[type, str] = {}


def _topic(t: type) -> str:
    """``OrderFilled`` → ``order.filled`` (cached)."""
    name = t.__name__.removeprefix("Order")
    topic = "order." + "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    _TOPICS[t] = topic
    return topic


@dataclass(slots=True)
class Sampler:
    """Keeps a few thousand evenly spaced points of equity, inventory and mid for reports."""

    every_ns: int
    next_ns: int
    ts: list[int] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    inventory: list[float] = field(default_factory=list)
    mid: list[float] = field(default_factory=list)


class RunLedger:
    def __init__(
        self, instrument: Instrument, strategy: Strategy, start_ns: int, end_ns: int, samples: int = 4000
    ) -> None:
        self.instrument = instrument
        self.strategy = strategy
        self.position = Position(instrument)
        self.account = Account()
        self.bus = MessageBus()  # order events are published here (topic ``order.<Event>``)
        self._initial: dict[str, int] = {}
        self.fills: list[FillRecord] = []
        self.rejections: dict[str, int] = {}
        self.denials: dict[str, int] = {}
        self._hash = hashlib.sha256()
        self._money_scale = 10**instrument.money_precision
        span = max(1, end_ns - start_ns)
        self.sampler = Sampler(every_ns=max(1, span // samples), next_ns=start_ns)

    def mark_initial_balances(self) -> None:
        """Balances now are the starting point; results report the change from here."""
        self._initial = dict(self.account.raw)

    def on_order_event(self, event: OrderEvent) -> None:
        """Book the event, then let the strategy hear of it."""
        if type(event) is OrderFilled:
            f = event.fill
            realized = self.position.apply_fill(f.side, f.price.raw, f.quantity.raw, f.fee.raw)
            self.account.apply_fill(self.instrument, f.side, f.price.raw, f.quantity.raw, f.fee.raw, realized)
            rec = FillRecord(
                f.ts_event,
                f.client_order_id,
                "buy" if f.side is Side.BUY else "sell",
                str(f.price),
                str(f.quantity),
                format_raw(f.fee.raw, f.fee.precision),
                "maker" if f.liquidity == 1 else "taker",
            )
            self.fills.append(rec)
            self._hash.update(
                f"{rec.ts}|{rec.client_order_id}|{rec.side}|{rec.price}|{rec.qty}|{rec.fee}|{rec.liquidity}\n".encode()
            )
        elif type(event) is OrderRejected:
            self.rejections[event.reason] = self.rejections.get(event.reason, 0) + 1
        elif type(event) is OrderDenied:
            rule = event.reason.split(":", 1)[0]
            self.denials[rule] = self.denials.get(rule, 0) + 1
        self.bus.publish(_TOPICS.get(type(event)) or _topic(type(event)), event)
        self.strategy.handle_order_event(event)

    def apply_funding(self, rate: Fraction, mark_raw: int, ts: int) -> None:
        amount = self.position.apply_funding(rate, mark_raw)
        if amount:
            self.account.apply_funding(self.instrument, amount)
        self.bus.publish("portfolio.funding", (ts, rate, amount))

    def sample(self, now: int, mark_raw: int, force: bool = False) -> None:
        sp = self.sampler
        if now < sp.next_ns and not force:
            return
        sp.next_ns = now + sp.every_ns
        if mark_raw <= 0:
            return
        sp.ts.append(now)
        sp.equity.append(self.position.net_pnl_float(mark_raw))
        sp.inventory.append(self.position.qty_raw / 10**self.instrument.size_precision)
        sp.mid.append(mark_raw / 10**self.instrument.price_precision)

    def result(
        self,
        *,
        mark_raw: int,
        data_source: str,
        start_ns: int,
        end_ns: int,
        events: int,
        orders: int,
        cancels: int,
        seconds: float,
        notes: list[str],
    ) -> BacktestResult:
        pos = self.position
        inst = self.instrument
        net = pos.net_pnl(mark_raw) if mark_raw > 0 else pos.realized - pos.fees + pos.funding
        final_qty = inst.qty_from_raw(abs(pos.qty_raw))
        final = ("-" if pos.qty_raw < 0 else "") + str(final_qty)
        self._hash.update(
            f"position|{pos.qty_raw}|{pos.cost}|{pos.realized}|{pos.fees}|{pos.funding}".encode()
        )
        final_balances = self.account.snapshot()
        self._hash.update(f"balances|{sorted(final_balances.items())}".encode())
        balances = {
            c: format_raw(self.account.raw.get(c, 0) - self._initial.get(c, 0), self.account.precision)
            for c in sorted(set(self.account.raw) | set(self._initial))
        }
        sp = self.sampler
        params: dict[str, Any] = dict(self.strategy.config)
        notes = list(notes)
        if self.rejections:
            notes.append("rejections: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.rejections.items())))
        if self.denials:
            notes.append(
                "denied by the gateway: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.denials.items()))
            )

        def dec(x: Fraction) -> str:
            return format(inst.money(x).to_decimal(), "f")

        return BacktestResult(
            strategy=self.strategy.name,
            instrument_id=inst.id,
            settle_currency=inst.settle,
            data_source=data_source,
            start_ns=start_ns,
            end_ns=end_ns,
            events=events,
            orders=orders,
            cancels=cancels,
            fills=self.fills,
            net_pnl=dec(net),
            fees=dec(pos.fees),
            funding=dec(pos.funding),
            realized_pnl=dec(pos.realized),
            final_position=final,
            ts=np.asarray(sp.ts, dtype=np.int64),
            equity=np.asarray(sp.equity, dtype=np.float64),
            inventory=np.asarray(sp.inventory, dtype=np.float64),
            mid=np.asarray(sp.mid, dtype=np.float64),
            result_hash=self._hash.hexdigest(),
            balances=balances,
            run_seconds=seconds,
            params=params,
            notes=notes,
        )

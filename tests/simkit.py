"""Small hand-made event streams for matching-engine tests (generated here, not recorded data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.data.schema import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    FLAG_CLEAR,
    FLAG_LAST,
    FLAG_SNAPSHOT,
    SIDE_ASK,
    SIDE_BID,
    DataType,
    Table,
)
from bastion.engine.strategy import SUB_TOP_OF_BOOK, Strategy
from bastion.model import KNOWN_INSTRUMENTS
from bastion.model.events import OrderEvent
from bastion.model.orders import Fill
from bastion.research.backtest import BacktestRun
from bastion.research.result import BacktestResult
from bastion.research.streams import build_stream
from bastion.venues.sim.venue import LatencyModel, SimVenueConfig

INST = KNOWN_INSTRUMENTS["BTCUSDT-PERP.BINANCE"]  # tick 0.1 (raw 1), lot 0.001
MS = 1_000_000
T0 = 1_700_000_000_000_000_000


@dataclass
class Tape:
    """Build book deltas and trades in order; times in ms after T0, prices/sizes as text."""

    book: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # t, side, price, size, flags
    trades: list[tuple[int, int, int, int]] = field(default_factory=list)  # t, price, size, aggressor
    seq: list[int] = field(default_factory=list)
    tseq: list[int] = field(default_factory=list)
    n: int = 0

    def snapshot(self, t_ms: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> Tape:
        rows = [(SIDE_BID, p, q) for p, q in bids] + [(SIDE_ASK, p, q) for p, q in asks]
        for k, (side, p, q) in enumerate(rows):
            flags = FLAG_SNAPSHOT | (FLAG_CLEAR if k == 0 else 0) | (FLAG_LAST if k == len(rows) - 1 else 0)
            self._book(t_ms, side, p, q, flags)
        return self

    def level(self, t_ms: int, side: str, price: str, size: str, last: bool = True) -> Tape:
        self._book(t_ms, SIDE_BID if side == "bid" else SIDE_ASK, price, size, FLAG_LAST if last else 0)
        return self

    def trade(self, t_ms: int, price: str, size: str, aggressor: str) -> Tape:
        agg = AGGRESSOR_BUY if aggressor == "buy" else AGGRESSOR_SELL
        self.trades.append((T0 + t_ms * MS, INST.price(price).raw, INST.qty(size).raw, agg))
        self.tseq.append(self.n)
        self.n += 1
        return self

    def _book(self, t_ms: int, side: int, price: str, size: str, flags: int) -> None:
        self.book.append((T0 + t_ms * MS, side, INST.price(price).raw, INST.qty(size).raw, flags))
        self.seq.append(self.n)
        self.n += 1

    def tables(self) -> list[Table]:
        b = np.array(self.book, dtype=np.int64).reshape(-1, 5)
        tr = np.array(self.trades, dtype=np.int64).reshape(-1, 4)
        book = Table(
            DataType.BOOK_DELTA,
            INST.id,
            INST.price_precision,
            INST.size_precision,
            {
                "ts_event": b[:, 0].copy(),
                "ts_local": b[:, 0].copy(),
                "seq": np.array(self.seq, dtype=np.int64),
                "side": b[:, 1].astype(np.int8),
                "price": b[:, 2].copy(),
                "size": b[:, 3].copy(),
                "flags": b[:, 4].astype(np.uint8),
                "update_id": np.zeros(len(b), dtype=np.int64),
            },
            source="tape",
        )
        trades = Table(
            DataType.TRADE,
            INST.id,
            INST.price_precision,
            INST.size_precision,
            {
                "ts_event": tr[:, 0].copy(),
                "ts_local": tr[:, 0].copy(),
                "seq": np.array(self.tseq, dtype=np.int64),
                "price": tr[:, 1].copy(),
                "size": tr[:, 2].copy(),
                "aggressor": tr[:, 3].astype(np.int8),
                "trade_id": np.arange(len(tr), dtype=np.int64),
            },
            source="tape",
        )
        return [book, trades]


class Scripted(Strategy):
    """Runs ``actions[k](self)`` on the k-th top-of-book callback; records everything it hears."""

    name = "scripted"

    def __init__(self, actions: dict[int, Callable[[Scripted], Any]]) -> None:
        super().__init__("s")
        self.actions = actions
        self.calls = 0
        self.events: list[OrderEvent] = []
        self.fills: list[Fill] = []
        self.book_times: list[int] = []

    def on_start(self) -> None:
        self.subscribe(SUB_TOP_OF_BOOK)

    def on_book(self, book: Any) -> None:
        self.book_times.append(self.now)
        act = self.actions.get(self.calls)
        self.calls += 1
        if act is not None:
            act(self)

    def on_order(self, event: OrderEvent) -> None:
        self.events.append(event)

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)


def run(
    tape: Tape, strategy: Strategy, *, latency_ms: float = 1.0, partial: bool = True, safety: Any = None
) -> BacktestResult:
    stream = build_stream(tape.tables(), INST)
    lat = LatencyModel(order_ns=int(latency_ms * MS), response_ns=int(latency_ms * MS))
    cfg = SimVenueConfig(latency=lat, partial_fills=partial)
    return BacktestRun(stream, strategy, cfg, safety=safety).run()

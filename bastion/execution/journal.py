"""The gateway's memory: what was intended, what the venue said, which client ids were used.

Every critical step is written here *before* it is acted on, so after a crash the engine can
tell an order it never sent from one whose answer it never heard. ``MemoryJournal`` serves
backtests (nothing to survive); the durable journal (write-ahead log + SQL store) implements the
same protocol for paper and live trading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.model.orders import Order


class Journal(Protocol):
    @property
    def detailed(self) -> bool:
        """False when entries are discarded anyway (a backtest's journal): skip building them."""
        ...

    def claim_client_id(self, client_order_id: str) -> bool:
        """Record a client order id as used; False if it was used before (never send twice)."""
        ...

    def write(self, kind: str, client_order_id: str, ts_ns: int, detail: dict[str, Any]) -> None:
        """Durably record one step (intent, submission, ack, fill, cancel, denial ...)."""
        ...

    def save_order(self, order: Order) -> None:
        """The order's latest known state (status, filled), for recovery after a restart."""
        ...


@dataclass(slots=True)
class JournalEntry:
    kind: str
    client_order_id: str
    ts_ns: int
    detail: dict[str, Any]


@dataclass(slots=True)
class MemoryJournal:
    """In-process journal: the same bookkeeping, nothing written to disk."""

    used_ids: set[str] = field(default_factory=set)
    entries: list[JournalEntry] = field(default_factory=list)
    orders: dict[str, Order] = field(default_factory=dict)
    keep_entries: bool = True

    @property
    def detailed(self) -> bool:
        return self.keep_entries

    def claim_client_id(self, client_order_id: str) -> bool:
        if client_order_id in self.used_ids:
            return False
        self.used_ids.add(client_order_id)
        return True

    def write(self, kind: str, client_order_id: str, ts_ns: int, detail: dict[str, Any]) -> None:
        if self.keep_entries:
            self.entries.append(JournalEntry(kind, client_order_id, ts_ns, detail))

    def save_order(self, order: Order) -> None:
        self.orders[order.client_order_id] = order

    def trail(self, client_order_id: str) -> list[str]:
        return [e.kind for e in self.entries if e.client_order_id == client_order_id]

"""Balance reservations: money set aside for an order from the moment it is sent until its fate is known.

Without them two orders can spend the same balance, or a timed-out order that actually executed
can be forgotten and its funds spent twice. A reservation is taken atomically with the check that
the funds are there, shrinks as the order fills (the position now holds that value), and is
released exactly once, when the venue confirms the order is done. An order whose fate is unknown
keeps its reservation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Reservation:
    client_order_id: str
    currency: str
    amount: int  # still reserved, raw units of the account's precision
    original: int
    qty_raw: int  # order quantity the amount covers (shrinks pro rata with fills)
    used: int = 0


class InsufficientFunds(Exception):
    pass


class Reservations:
    """Exact, thread-safe reservations in raw integer units (``precision`` decimals).

    ``balance_of`` returns a currency's balance in the same raw units. Amounts are rounded up
    when they are computed (by the caller) and the reserved part of a partly filled order is
    released rounding down, so a reservation never understates what an order may still spend.
    """

    def __init__(self, balance_of: Callable[[str], int], precision: int = 8) -> None:
        self._balance_of = balance_of
        self.precision = precision
        self._lock = threading.Lock()
        self._by_order: dict[str, Reservation] = {}
        self._total: dict[str, int] = {}
        self.released_count = 0

    def reserved(self, currency: str) -> int:
        return self._total.get(currency, 0)

    def available(self, currency: str) -> int:
        return self._balance_of(currency) - self.reserved(currency)

    def reserve(
        self, client_order_id: str, currency: str, amount: int, qty_raw: int, *, force: bool = False
    ) -> None:
        """Set ``amount`` aside for the order, or raise InsufficientFunds naming the numbers.

        ``force`` re-takes a reservation for an order that already exists at the venue (recovery
        after a restart): it is recorded even if balances no longer cover it, because the money
        is committed either way.
        """
        with self._lock:
            if client_order_id in self._by_order:
                raise ValueError(f"{client_order_id}: already holds a reservation")
            avail = self._balance_of(currency) - self._total.get(currency, 0)
            if amount > avail and not force:
                scale = 10**self.precision
                raise InsufficientFunds(
                    f"needs {amount / scale:,.8f} {currency}, available {avail / scale:,.8f} {currency}"
                )
            self._by_order[client_order_id] = Reservation(client_order_id, currency, amount, amount, qty_raw)
            self._total[currency] = self._total.get(currency, 0) + amount

    def on_fill(self, client_order_id: str, fill_qty_raw: int) -> None:
        """The filled part is no longer reserved: it became a position or a balance change."""
        with self._lock:
            r = self._by_order.get(client_order_id)
            if r is None or r.qty_raw <= 0:
                return
            r.used = min(r.qty_raw, r.used + fill_qty_raw)
            # what the unfilled rest still needs, rounded up
            keep = -((-r.original * (r.qty_raw - r.used)) // r.qty_raw)
            self._total[r.currency] -= r.amount - keep
            r.amount = keep

    def release(self, client_order_id: str) -> bool:
        """Release what is left; True the first time, False ever after (exactly once)."""
        with self._lock:
            r = self._by_order.pop(client_order_id, None)
            if r is None:
                return False
            self._total[r.currency] -= r.amount
            self.released_count += 1
            return True

    def holds(self, client_order_id: str) -> bool:
        return client_order_id in self._by_order

    def active(self) -> list[Reservation]:
        with self._lock:
            return list(self._by_order.values())

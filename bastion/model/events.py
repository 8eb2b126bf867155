"""Events (what happened, past tense) and commands (what is asked, imperative).

Keeping the two apart makes the audit trail unambiguous: a ``SubmitOrder`` may still be refused,
an ``OrderAccepted`` is a fact reported by the venue.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.model.fixed import Price, Quantity
from bastion.model.orders import Fill, Order


@dataclass(frozen=True, slots=True)
class SubmitOrder:
    order: Order
    ts: int


@dataclass(frozen=True, slots=True)
class CancelOrder:
    client_order_id: str
    instrument_id: str
    ts: int


@dataclass(frozen=True, slots=True)
class ModifyOrder:
    client_order_id: str
    instrument_id: str
    ts: int
    price: Price | None = None
    quantity: Quantity | None = None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    client_order_id: str
    instrument_id: str
    ts_event: int


@dataclass(frozen=True, slots=True)
class OrderSubmitted(OrderEvent):
    pass


@dataclass(frozen=True, slots=True)
class OrderAccepted(OrderEvent):
    pass


@dataclass(frozen=True, slots=True)
class OrderRejected(OrderEvent):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderDenied(OrderEvent):
    """Refused before reaching a venue (by a local check); nothing was sent."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderCanceled(OrderEvent):
    pass


@dataclass(frozen=True, slots=True)
class OrderCancelRejected(OrderEvent):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OrderExpired(OrderEvent):
    pass


@dataclass(frozen=True, slots=True)
class OrderFilled(OrderEvent):
    fill: Fill


@dataclass(frozen=True, slots=True)
class FundingApplied:
    instrument_id: str
    ts_event: int
    rate: str  # exact decimal text
    amount: str  # exact decimal text, settlement currency (negative = paid)

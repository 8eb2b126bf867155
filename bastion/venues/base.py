"""What every venue adapter is to the order gateway: three calls and a small set of typed errors.

The errors carry the one distinction the safety layer cares about: whether the order may exist
at the venue. A rejection means it does not; a timeout or a lost connection means it may, so
the gateway keeps its reservation and asks again by client order id until the venue answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bastion.model.events import OrderEvent
from bastion.model.orders import Order, OrderStatus


class VenueError(Exception):
    """Base of the errors a venue adapter raises."""

    retryable = False


class VenueRejected(VenueError):
    """The venue refused the request: the order does not exist there."""


class VenueTimeout(VenueError):
    """No answer in time: the request may or may not have reached the venue."""

    retryable = True


class VenueUnavailable(VenueError):
    """Connection lost, 5xx, rate limited: the request may or may not have been processed."""

    retryable = True


class VenueAuthError(VenueError):
    """Credentials refused: nothing will work until an operator fixes them."""


@dataclass(frozen=True, slots=True)
class OrderStatusReport:
    """The venue's word on one order, looked up by client order id."""

    client_order_id: str
    status: OrderStatus
    filled_raw: int
    venue_order_id: str = ""


class VenueClient(Protocol):
    """The calls the gateway makes. ``submit`` may return an immediate local rejection."""

    name: str

    def submit(self, order: Order) -> OrderEvent | None: ...

    def cancel(self, order: Order) -> None: ...

    def query(self, client_order_id: str) -> OrderStatusReport | None: ...

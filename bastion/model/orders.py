"""Orders and fills.

An :class:`Order` is the trader's side of the story: what was asked for and what is known of its
fate. It changes only by applying events (:meth:`Order.apply_fill`, status moves), never by a venue
writing into it, so the same object works for the simulator and for a real exchange.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bastion.model.fixed import Money, Price, Quantity


class Side(enum.IntEnum):
    BUY = 1
    SELL = -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.IntEnum):
    MARKET = 0
    LIMIT = 1


class TimeInForce(enum.IntEnum):
    GTC = 0
    IOC = 1
    FOK = 2
    POST_ONLY = 3  # GTC that must rest: rejected if it would take liquidity


class OrderStatus(enum.IntEnum):
    INITIALIZED = 0
    SUBMITTED = 1  # sent, no answer yet
    ACCEPTED = 2  # resting at the venue
    PARTIALLY_FILLED = 3
    FILLED = 4
    CANCELED = 5
    REJECTED = 6
    EXPIRED = 7  # IOC/FOK remainder removed by the venue
    PENDING_VERIFICATION = 8  # fate unknown (timeout): reserved until the venue answers

    @property
    def is_open(self) -> bool:
        return self in (
            OrderStatus.SUBMITTED,
            OrderStatus.ACCEPTED,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.PENDING_VERIFICATION,
        )

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


class Liquidity(enum.IntEnum):
    MAKER = 1
    TAKER = 2


@dataclass(slots=True)
class Order:
    client_order_id: str
    instrument_id: str
    side: Side
    order_type: OrderType
    quantity: Quantity
    price: Price | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    strategy_id: str = ""
    status: OrderStatus = OrderStatus.INITIALIZED
    filled: Quantity | None = None
    venue_order_id: str = ""
    ts_init: int = 0
    ts_last: int = 0
    cancel_pending: bool = False

    def __post_init__(self) -> None:
        if self.quantity.raw <= 0:
            raise ValueError(f"{self.client_order_id}: quantity must be positive")
        if self.order_type is OrderType.LIMIT and self.price is None:
            raise ValueError(f"{self.client_order_id}: a limit order needs a price")
        if self.order_type is OrderType.MARKET and self.time_in_force in (
            TimeInForce.POST_ONLY,
            TimeInForce.GTC,
        ):
            # A market order never rests; treat it as IOC so its remainder cannot linger.
            self.time_in_force = TimeInForce.IOC
        if self.filled is None:
            self.filled = Quantity(0, self.quantity.precision)

    @property
    def filled_raw(self) -> int:
        return self.filled.raw if self.filled is not None else 0

    @property
    def remaining(self) -> Quantity:
        assert self.filled is not None
        return self.quantity - self.filled

    @property
    def is_post_only(self) -> bool:
        return self.time_in_force is TimeInForce.POST_ONLY

    def apply_fill(self, qty: Quantity, ts: int) -> None:
        """Record a fill; overfilling is a bug somewhere upstream and must not pass silently."""
        assert self.filled is not None
        if qty.raw <= 0 or qty.raw > self.remaining.raw:
            raise ValueError(f"{self.client_order_id}: fill {qty} does not fit remaining {self.remaining}")
        self.filled = self.filled + qty
        self.status = OrderStatus.FILLED if self.remaining.raw == 0 else OrderStatus.PARTIALLY_FILLED
        self.ts_last = ts


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution against an order; ``fee`` is in the settlement currency."""

    client_order_id: str
    instrument_id: str
    side: Side
    price: Price
    quantity: Quantity
    fee: Money
    liquidity: Liquidity
    ts_event: int
    trade_id: str = ""

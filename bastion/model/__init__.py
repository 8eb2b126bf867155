"""Value types: exact numbers, instruments, orders, fills, positions and events."""

from bastion.model.fixed import Money, PrecisionError, Price, Quantity
from bastion.model.instruments import KNOWN_INSTRUMENTS, Instrument, InstrumentKind, OptionRight
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.model.position import Position

__all__ = [
    "KNOWN_INSTRUMENTS",
    "Fill",
    "Instrument",
    "InstrumentKind",
    "Liquidity",
    "Money",
    "OptionRight",
    "Order",
    "OrderStatus",
    "OrderType",
    "Position",
    "PrecisionError",
    "Price",
    "Quantity",
    "Side",
    "TimeInForce",
]

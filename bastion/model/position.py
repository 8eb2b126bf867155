"""A position in one instrument, with exact cost basis and PnL.

The cost basis is a rational number, not a float average: a position built from a hundred fills
at different prices realizes exactly the PnL the venue will credit, to the last unit, and an
inverse contract (value ``contracts × size / price``) needs no rounding until it becomes Money.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from bastion.model.fixed import Money
from bastion.model.instruments import Instrument
from bastion.model.orders import Side


@dataclass(slots=True)
class Position:
    instrument: Instrument
    qty_raw: int = 0  # signed, in the instrument's size units
    cost: Fraction = field(default_factory=Fraction)  # |value| of the open position at entry
    realized: Fraction = field(default_factory=Fraction)  # settle currency, before fees
    fees: Fraction = field(default_factory=Fraction)  # settle currency, paid (>0) or rebated (<0)
    funding: Fraction = field(default_factory=Fraction)  # settle currency, received (>0) or paid
    buy_qty_raw: int = 0
    sell_qty_raw: int = 0

    @property
    def is_flat(self) -> bool:
        return self.qty_raw == 0

    def _value(self, price_raw: int, qty_raw: int) -> Fraction:
        return self.instrument.notional_value(price_raw, qty_raw)

    def avg_price(self) -> Fraction | None:
        """Volume-weighted entry price of the open position (exact), None when flat."""
        if self.qty_raw == 0:
            return None
        q = Fraction(abs(self.qty_raw), 10**self.instrument.size_precision)
        cs = Fraction(self.instrument.contract_size)
        if self.instrument.is_inverse:
            return q * cs / self.cost
        return self.cost / (q * cs)

    def _pnl_of_closing(self, closed_raw: int, price_raw: int, was_long: bool) -> Fraction:
        share = Fraction(closed_raw, abs(self.qty_raw))
        entry_value = self.cost * share
        exit_value = self._value(price_raw, closed_raw)
        gain = exit_value - entry_value
        if self.instrument.is_inverse:
            gain = -gain  # an inverse long gains base currency when the price rises
        return gain if was_long else -gain

    def apply_fill(self, side: Side, price_raw: int, qty_raw: int, fee: Fraction) -> Fraction:
        """Apply one fill; returns the PnL it realized (before fees)."""
        if qty_raw <= 0:
            raise ValueError("fill quantity must be positive")
        signed = qty_raw if side is Side.BUY else -qty_raw
        if side is Side.BUY:
            self.buy_qty_raw += qty_raw
        else:
            self.sell_qty_raw += qty_raw
        self.fees += fee
        realized = Fraction(0)
        if self.qty_raw == 0 or (self.qty_raw > 0) == (signed > 0):
            self.cost += self._value(price_raw, qty_raw)
            self.qty_raw += signed
            return realized
        closing = min(qty_raw, abs(self.qty_raw))
        was_long = self.qty_raw > 0
        realized = self._pnl_of_closing(closing, price_raw, was_long)
        self.realized += realized
        still_open = abs(self.qty_raw) - closing
        self.cost = self.cost * Fraction(still_open, abs(self.qty_raw))
        self.qty_raw = still_open if was_long else -still_open
        opening = qty_raw - closing
        if opening:  # the fill flipped the position: the rest opens the other way
            self.cost = self._value(price_raw, opening)
            self.qty_raw = opening if side is Side.BUY else -opening
        return realized

    def unrealized(self, mark_price_raw: int) -> Fraction:
        if self.qty_raw == 0:
            return Fraction(0)
        return self._pnl_of_closing(abs(self.qty_raw), mark_price_raw, self.qty_raw > 0)

    def apply_funding(self, rate: Fraction, mark_price_raw: int) -> Fraction:
        """Funding for one interval: longs pay shorts when the rate is positive."""
        if self.qty_raw == 0:
            return Fraction(0)
        value = self._value(mark_price_raw, abs(self.qty_raw))
        amount = -value * rate if self.qty_raw > 0 else value * rate
        self.funding += amount
        return amount

    def net_pnl(self, mark_price_raw: int) -> Fraction:
        return self.realized + self.unrealized(mark_price_raw) - self.fees + self.funding

    def money(self, value: Fraction) -> Money:
        return self.instrument.money(value)

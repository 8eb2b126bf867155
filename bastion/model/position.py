"""A position in one instrument, with exact cost basis and PnL.

The cost basis is exact, not a float average: a position built from a hundred fills at different
prices realizes exactly the PnL the venue will credit, to the last unit, and an inverse contract
(value ``contracts × size / price``) needs no rounding until it becomes Money.

Values are kept in *value units*: the settlement-currency value × 10^(price + size precision).
For a linear contract with an integer contract size that is a plain integer (``price_raw ×
qty_raw × size``), so the common path — open, add, close all — is integer arithmetic; only a
partial close or an inverse contract needs a rational. Fees and funding are kept in the raw
units of the settlement currency, as the venue charges them (already rounded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from bastion.model.instruments import Instrument
from bastion.model.orders import Side

Exact = int | Fraction


@dataclass(slots=True)
class Position:
    instrument: Instrument
    qty_raw: int = 0  # signed, in the instrument's size units
    cost_u: Exact = 0  # |value| of the open position at entry, value units
    realized_u: Exact = 0  # realized PnL before fees, value units
    fees_raw: int = 0  # settle currency raw units, paid (>0) or rebated (<0)
    funding_raw: int = 0  # settle currency raw units, received (>0) or paid (<0)
    buy_qty_raw: int = 0
    sell_qty_raw: int = 0
    _scale: int = field(init=False, repr=False, default=1)
    _money_scale: int = field(init=False, repr=False, default=1)
    _cs_int: int | None = field(init=False, repr=False, default=None)
    _inverse: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        inst = self.instrument
        self._scale = 10 ** (inst.price_precision + inst.size_precision)
        self._money_scale = 10**inst.money_precision
        cs = Fraction(inst.contract_size)
        self._cs_int = int(cs) if cs.denominator == 1 else None
        self._inverse = inst.is_inverse

    # --- exact values in the settlement currency ------------------------------------------------
    @property
    def cost(self) -> Fraction:
        return Fraction(self.cost_u, self._scale)

    @property
    def realized(self) -> Fraction:
        return Fraction(self.realized_u, self._scale)

    @property
    def fees(self) -> Fraction:
        return Fraction(self.fees_raw, self._money_scale)

    @property
    def funding(self) -> Fraction:
        return Fraction(self.funding_raw, self._money_scale)

    @property
    def is_flat(self) -> bool:
        return self.qty_raw == 0

    def _value_u(self, price_raw: int, qty_raw: int) -> Exact:
        if not self._inverse and self._cs_int is not None:
            return price_raw * qty_raw * self._cs_int
        return self.instrument.notional_value(price_raw, qty_raw) * self._scale

    def avg_price(self) -> Fraction | None:
        """Volume-weighted entry price of the open position (exact), None when flat."""
        if self.qty_raw == 0:
            return None
        inst = self.instrument
        q = Fraction(abs(self.qty_raw), 10**inst.size_precision)
        cs = Fraction(inst.contract_size)
        if self._inverse:
            return q * cs / self.cost
        return self.cost / (q * cs)

    def _gain_u(self, closed_raw: int, price_raw: int, was_long: bool) -> Exact:
        n = abs(self.qty_raw)
        entry = self.cost_u if closed_raw == n else Fraction(self.cost_u * closed_raw, n)
        gain = self._value_u(price_raw, closed_raw) - entry
        if self._inverse:
            gain = -gain  # an inverse long gains base currency when the price rises
        return gain if was_long else -gain

    def apply_fill(self, side: Side, price_raw: int, qty_raw: int, fee_raw: int = 0) -> Exact:
        """Apply one fill (fee in raw settlement units); returns the PnL it realized, before fees."""
        if qty_raw <= 0:
            raise ValueError("fill quantity must be positive")
        buy = side is Side.BUY
        if buy:
            self.buy_qty_raw += qty_raw
        else:
            self.sell_qty_raw += qty_raw
        self.fees_raw += fee_raw
        q = self.qty_raw
        if q == 0 or (q > 0) == buy:
            self.cost_u += self._value_u(price_raw, qty_raw)
            self.qty_raw = q + qty_raw if buy else q - qty_raw
            return 0
        n = abs(q)
        closing = qty_raw if qty_raw < n else n
        was_long = q > 0
        gain = self._gain_u(closing, price_raw, was_long)
        self.realized_u += gain
        still_open = n - closing
        if still_open == 0:
            self.cost_u = 0
        else:
            self.cost_u = Fraction(self.cost_u * still_open, n)
        self.qty_raw = still_open if was_long else -still_open
        opening = qty_raw - closing
        if opening:  # the fill flipped the position: the rest opens the other way
            self.cost_u = self._value_u(price_raw, opening)
            self.qty_raw = opening if buy else -opening
        return Fraction(gain, self._scale)

    def unrealized(self, mark_price_raw: int) -> Fraction:
        if self.qty_raw == 0:
            return Fraction(0)
        return Fraction(self._gain_u(abs(self.qty_raw), mark_price_raw, self.qty_raw > 0), self._scale)

    def apply_funding(self, rate: Fraction, mark_price_raw: int) -> Fraction:
        """Funding for one interval: longs pay shorts when the rate is positive.

        The amount is rounded to the settlement currency's unit, as a venue credits it.
        """
        if self.qty_raw == 0:
            return Fraction(0)
        value = Fraction(self._value_u(mark_price_raw, abs(self.qty_raw)), self._scale)
        amount = -value * rate if self.qty_raw > 0 else value * rate
        raw = round(amount * self._money_scale)
        self.funding_raw += raw
        return Fraction(raw, self._money_scale)

    def net_pnl_float(self, mark_price_raw: int) -> float:
        """The same figure as :meth:`net_pnl`, as a float, for sampled curves (plots, Sharpe):
        cheap enough to call thousands of times, never used for booking."""
        u = float(self.realized_u)
        if self.qty_raw:
            u += float(self._gain_u(abs(self.qty_raw), mark_price_raw, self.qty_raw > 0))
        return u / self._scale + (self.funding_raw - self.fees_raw) / self._money_scale

    def net_pnl(self, mark_price_raw: int) -> Fraction:
        return self.realized + self.unrealized(mark_price_raw) - self.fees + self.funding

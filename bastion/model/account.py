"""Account balances per currency, moved by fills, fees and funding exactly as a venue moves them.

Spot fills exchange base for quote; derivative fills change no balance until PnL is realized,
which is booked in the settlement currency. Keeping balances beside positions lets a run end
with the figures a venue statement would show, and lets reconciliation compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from bastion.model.fixed import Money
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Side


def _rescale(value: int, have: int, want: int) -> int:
    """An integer at ``have`` decimals carried to ``want`` decimals, rounded half-even."""
    if want >= have:
        return int(value * 10 ** (want - have))
    q, r = divmod(value, 10 ** (have - want))
    twice, den = 2 * r, 10 ** (have - want)
    if twice > den or (twice == den and q % 2):
        q += 1
    return int(q)


@dataclass(slots=True)
class Account:
    """Balances as raw integers at each currency's precision (default 8 decimals)."""

    precision: int = 8
    raw: dict[str, int] = field(default_factory=dict)

    def balance(self, currency: str) -> Money:
        return Money(self.raw.get(currency, 0), self.precision, currency)

    def deposit(self, amount: Money) -> None:
        if amount.precision != self.precision:
            raise ValueError(f"{amount.currency}: precision {amount.precision} != account's {self.precision}")
        self.raw[amount.currency] = self.raw.get(amount.currency, 0) + amount.raw

    def _add(self, currency: str, value: Fraction) -> None:
        self.raw[currency] = self.raw.get(currency, 0) + round(value * 10**self.precision)

    def apply_fill(
        self,
        inst: Instrument,
        side: Side,
        price_raw: int,
        qty_raw: int,
        fee_raw: int,
        realized: Fraction | int,
    ) -> None:
        """Book one fill: spot swaps base and quote; derivatives book realized PnL. Fees always."""
        raw = self.raw
        sign = 1 if side is Side.BUY else -1
        if inst.kind is InstrumentKind.SPOT:
            sp = inst.size_precision
            if sp <= self.precision:  # exact in integers
                raw[inst.base] = raw.get(inst.base, 0) + sign * qty_raw * 10 ** (self.precision - sp)
            else:
                self._add(inst.base, sign * Fraction(qty_raw, 10**sp))
            if inst.is_inverse or inst.contract_size != 1:
                self._add(inst.quote, -sign * inst.notional_value(price_raw, qty_raw))
            else:  # integer path: value units price_raw × qty_raw at 10^-(pp+sp)
                raw[inst.quote] = raw.get(inst.quote, 0) - sign * _rescale(
                    price_raw * qty_raw, inst.price_precision + sp, self.precision
                )
        elif realized:
            self._add(inst.settle, Fraction(realized))
        raw[inst.settle] = raw.get(inst.settle, 0) - fee_raw * 10 ** (self.precision - inst.money_precision)

    def apply_funding(self, inst: Instrument, amount: Fraction) -> None:
        self._add(inst.settle, amount)

    def snapshot(self) -> dict[str, str]:
        return {c: str(self.balance(c).to_decimal()) for c in sorted(self.raw)}

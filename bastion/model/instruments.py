"""Instrument definitions: what is traded, on which grid, and how it settles.

An instrument fixes the precision of every price and quantity that refers to it, so the same
definition is the contract between a data file, the matching engine and the ledger.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from bastion.model.fixed import Money, Price, Quantity, raw_from_decimal


class InstrumentKind(enum.StrEnum):
    SPOT = "spot"
    LINEAR_PERPETUAL = "linear_perpetual"
    INVERSE_PERPETUAL = "inverse_perpetual"
    OPTION = "option"
    BINARY_OUTCOME = "binary_outcome"


class OptionRight(enum.StrEnum):
    CALL = "call"
    PUT = "put"


def _precision_of(step: Decimal) -> int:
    exp = step.normalize().as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument on one venue.

    ``tick_size`` and ``lot_size`` are given as text (``"0.1"``, ``"0.001"``) and define the
    price and size precision. Fees are fractions of notional (``0.0002`` = 2 bp); a negative maker
    fee is a rebate. For inverse contracts ``contract_size`` is in the quote currency (100 USD per
    BTCUSD_PERP contract) and PnL settles in the base currency.
    """

    symbol: str
    venue: str
    kind: InstrumentKind
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    settle: str = ""
    min_notional: Decimal = Decimal(0)
    maker_fee: Decimal = Decimal(0)
    taker_fee: Decimal = Decimal(0)
    contract_size: Decimal = Decimal(1)
    money_precision: int = 8
    strike: Decimal | None = None
    expiry_ns: int | None = None
    right: OptionRight | None = None
    outcome: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # finer decimals than the tick/lot imply, when the venue's data carries them (book sizes
    # below the order lot, old history on a finer grid); orders still respect tick and lot
    price_decimals: int | None = None
    size_decimals: int | None = None
    # derived once (hot paths read them per fill): precisions and exact multipliers
    price_precision: int = field(init=False, repr=False, compare=False, default=0)
    size_precision: int = field(init=False, repr=False, compare=False, default=0)
    tick_raw: int = field(init=False, repr=False, compare=False, default=1)
    lot_raw: int = field(init=False, repr=False, compare=False, default=1)
    maker_rate: Fraction = field(init=False, repr=False, compare=False, default=Fraction(0))
    taker_rate: Fraction = field(init=False, repr=False, compare=False, default=Fraction(0))
    _value_scale: int = field(init=False, repr=False, compare=False, default=1)
    _cs: Fraction = field(init=False, repr=False, compare=False, default=Fraction(1))
    _iid: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size", "min_notional", "maker_fee", "taker_fee", "contract_size"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                object.__setattr__(self, name, Decimal(str(value)))
        if self.tick_size <= 0 or self.lot_size <= 0:
            raise ValueError(f"{self.symbol}: tick_size and lot_size must be positive")
        if self.contract_size <= 0:
            raise ValueError(f"{self.symbol}: contract_size must be positive")
        if not self.settle:
            settle = self.base if self.kind is InstrumentKind.INVERSE_PERPETUAL else self.quote
            object.__setattr__(self, "settle", settle)
        if self.kind is InstrumentKind.OPTION and (
            self.strike is None or self.expiry_ns is None or self.right is None
        ):
            raise ValueError(f"{self.symbol}: an option needs strike, expiry_ns and right")
        if self.kind is InstrumentKind.BINARY_OUTCOME and self.tick_size > 1:
            raise ValueError(f"{self.symbol}: a binary outcome is priced between 0 and 1")
        pp = max(_precision_of(self.tick_size), self.price_decimals or 0)
        sp = max(_precision_of(self.lot_size), self.size_decimals or 0)
        derived = {
            "price_precision": pp,
            "size_precision": sp,
            "tick_raw": raw_from_decimal(self.tick_size, pp),
            "lot_raw": raw_from_decimal(self.lot_size, sp),
            "maker_rate": Fraction(self.maker_fee),
            "taker_rate": Fraction(self.taker_fee),
            "_value_scale": 10 ** (pp + sp),
            "_cs": Fraction(self.contract_size),
            "_iid": f"{self.symbol}.{self.venue}",
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def id(self) -> str:
        return self._iid

    @property
    def is_inverse(self) -> bool:
        return self.kind is InstrumentKind.INVERSE_PERPETUAL

    def price(self, value: str | Decimal | int) -> Price:
        """Parse a price, refusing one that is off this instrument's tick grid."""
        p = Price.from_str(value, self.price_precision)
        if p.raw % self.tick_raw:
            raise ValueError(f"{self.id}: price {value} is not a multiple of tick {self.tick_size}")
        return p

    def qty(self, value: str | Decimal | int) -> Quantity:
        q = Quantity.from_str(value, self.size_precision)
        if q.raw % self.lot_raw:
            raise ValueError(f"{self.id}: quantity {value} is not a multiple of lot {self.lot_size}")
        return q

    def price_from_raw(self, raw: int) -> Price:
        return Price(int(raw), self.price_precision)

    def qty_from_raw(self, raw: int) -> Quantity:
        return Quantity(int(raw), self.size_precision)

    def money(self, value: Fraction | int = 0) -> Money:
        """An amount in the settlement currency, rounded to its precision."""
        return Money.from_fraction(Fraction(value), self.money_precision, self.settle)

    def notional_value(self, price_raw: int, qty_raw: int) -> Fraction:
        """Exact value of ``qty`` at ``price`` in the settlement currency.

        Linear and spot: ``qty × price × contract_size``. Inverse: ``qty × contract_size / price``
        (in the base currency), which is why it is kept as a rational until it becomes Money.
        """
        if self.is_inverse:
            if price_raw <= 0:
                raise ValueError(f"{self.id}: inverse value needs a positive price")
            # qty × cs / price with price = price_raw / 10^pp and qty = qty_raw / 10^sp
            return (
                Fraction(qty_raw * 10**self.price_precision, price_raw * 10**self.size_precision) * self._cs
            )
        if self._cs == 1:
            return Fraction(price_raw * qty_raw, self._value_scale)
        return Fraction(price_raw * qty_raw, self._value_scale) * self._cs

    def refined(self, price_precision: int, size_precision: int) -> Instrument:
        """The same instrument carried at (at least) the given precisions."""
        if price_precision <= self.price_precision and size_precision <= self.size_precision:
            return self
        return dataclasses.replace(
            self,
            price_decimals=max(price_precision, self.price_precision),
            size_decimals=max(size_precision, self.size_precision),
        )

    def fee_raw(self, price_raw: int, qty_raw: int, rate: Fraction) -> int:
        """The fee of a fill in raw settlement-currency units, rounded half-even like Money.

        Integer arithmetic for linear instruments (the per-fill hot path); the exact rational
        path for inverse ones.
        """
        if self.is_inverse or self._cs != 1:
            return self.money(self.notional_value(price_raw, qty_raw) * rate).raw
        num = price_raw * qty_raw * rate.numerator * 10**self.money_precision
        den = self._value_scale * rate.denominator
        q, r = divmod(num, den)
        twice = 2 * r
        if twice > den or (twice == den and q % 2):
            q += 1
        return int(q)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, f in self.__dataclass_fields__.items():
            if not f.init:
                continue
            v = getattr(self, name)
            out[name] = str(v) if isinstance(v, Decimal) else (v.value if isinstance(v, enum.Enum) else v)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instrument:
        args = dict(d)
        args["kind"] = InstrumentKind(args["kind"])
        if args.get("right") is not None:
            args["right"] = OptionRight(args["right"])
        for name in ("tick_size", "lot_size", "min_notional", "maker_fee", "taker_fee", "contract_size"):
            if name in args:
                args[name] = Decimal(str(args[name]))
        if args.get("strike") is not None:
            args["strike"] = Decimal(str(args["strike"]))
        return cls(**args)


# Known instruments of the data in shared/data, with the venues' published parameters at the time
# of capture. Fees are the venues' base-tier rates (not VIP) so results are not flattered.
KNOWN_INSTRUMENTS: dict[str, Instrument] = {
    i.id: i
    for i in (
        Instrument(
            "BTCUSDT-PERP",
            "BINANCE",
            InstrumentKind.LINEAR_PERPETUAL,
            "BTC",
            "USDT",
            Decimal("0.1"),
            Decimal("0.001"),
            min_notional=Decimal("100"),
            maker_fee=Decimal("0.0002"),
            taker_fee=Decimal("0.0005"),
        ),
        Instrument(
            "ETHUSDT-PERP",
            "BINANCE",
            InstrumentKind.LINEAR_PERPETUAL,
            "ETH",
            "USDT",
            Decimal("0.01"),
            Decimal("0.001"),
            min_notional=Decimal("20"),
            maker_fee=Decimal("0.0002"),
            taker_fee=Decimal("0.0005"),
        ),
        Instrument(
            "BTCUSDT",
            "BINANCE",
            InstrumentKind.SPOT,
            "BTC",
            "USDT",
            Decimal("0.01"),
            Decimal("0.00001"),
            min_notional=Decimal("5"),
            maker_fee=Decimal("0.001"),
            taker_fee=Decimal("0.001"),
            size_decimals=8,  # Binance spot reports sizes with 8 decimals, finer than the lot
        ),
        Instrument(
            "ETHUSDT",
            "BINANCE",
            InstrumentKind.SPOT,
            "ETH",
            "USDT",
            Decimal("0.01"),
            Decimal("0.0001"),
            min_notional=Decimal("5"),
            maker_fee=Decimal("0.001"),
            taker_fee=Decimal("0.001"),
            size_decimals=8,  # Binance spot reports sizes with 8 decimals, finer than the lot
        ),
        Instrument(
            "BTCUSD-PERP",
            "BINANCE",
            InstrumentKind.INVERSE_PERPETUAL,
            "BTC",
            "USD",
            Decimal("0.1"),
            Decimal("1"),
            contract_size=Decimal("100"),
            maker_fee=Decimal("0.0002"),
            taker_fee=Decimal("0.0005"),
        ),
        Instrument(
            "ETHUSD-PERP",
            "BINANCE",
            InstrumentKind.INVERSE_PERPETUAL,
            "ETH",
            "USD",
            Decimal("0.01"),
            Decimal("1"),
            contract_size=Decimal("10"),
            maker_fee=Decimal("0.0002"),
            taker_fee=Decimal("0.0005"),
        ),
    )
}

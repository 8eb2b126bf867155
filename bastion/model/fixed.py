"""Exact fixed-point numbers: an integer ``raw`` and a decimal ``precision``.

Floats cannot represent 0.1 exactly, so a ledger kept in floats drifts and two runs on two
machines can disagree in the last digit. Every price, quantity and amount of money in Bastion is
therefore an integer count of the smallest unit (``raw``) plus how many decimals that unit has
(``precision``). Arithmetic between values of the same kind and precision is exact integer
arithmetic; mixing precisions (or currencies, for :class:`Money`) raises instead of silently
rounding. ``Decimal`` appears only when converting from or to text.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from typing import Self

MAX_PRECISION = 18


class PrecisionError(ValueError):
    """Two fixed-point values of different precision (or currency) were mixed."""


def _pow10(precision: int) -> int:
    if not 0 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 0..{MAX_PRECISION}, got {precision}")
    return int(10**precision)


def raw_from_decimal(value: Decimal | str | int, precision: int, *, exact: bool = True) -> int:
    """Convert text or a Decimal to a raw integer at ``precision``.

    With ``exact`` (the default) a value that does not fit the precision is an error: a price of
    ``61800.305`` on a 0.01 grid is bad input, not something to round quietly.
    """
    try:
        d = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    scaled = d.scaleb(precision)
    rounded = scaled.to_integral_value(rounding=ROUND_HALF_EVEN)
    if exact and rounded != scaled:
        raise ValueError(f"{value} has more than {precision} decimals")
    return int(rounded)


_set = object.__setattr__


def format_raw(raw: int, precision: int) -> str:
    """Exact decimal text with exactly ``precision`` decimals (integer arithmetic, no Decimal)."""
    if precision == 0:
        return str(raw)
    q, r = divmod(-raw if raw < 0 else raw, 10**precision)
    return f"{'-' if raw < 0 else ''}{q}.{r:0{precision}d}"


def round_fraction(value: Fraction) -> int:
    """Round a rational to the nearest integer, ties to even (banker's rounding, no bias)."""
    return round(value)


class _Fixed:
    """Shared arithmetic of :class:`Price` and :class:`Quantity` (same kind, same precision)."""

    __slots__ = ("precision", "raw")

    raw: int
    precision: int

    def __init__(self, raw: int, precision: int) -> None:
        # hot path (every order and fill): plain type checks, no helper calls
        if type(raw) is not int:
            raise TypeError(f"raw must be int, got {type(raw).__name__}")
        if not 0 <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be in 0..{MAX_PRECISION}, got {precision}")
        _set(self, "raw", raw)
        _set(self, "precision", precision)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def from_str(cls, value: str | Decimal | int, precision: int) -> Self:
        return cls(raw_from_decimal(value, precision), precision)

    def to_decimal(self) -> Decimal:
        return Decimal(self.raw).scaleb(-self.precision)

    def as_float(self) -> float:
        """For numerical models and plots only; never feed the result back into the ledger."""
        return self.raw / _pow10(self.precision)

    def _check(self, other: object) -> _Fixed:
        if type(other) is not type(self):
            raise TypeError(f"cannot combine {type(self).__name__} with {type(other).__name__}")
        assert isinstance(other, _Fixed)
        if other.precision != self.precision:
            raise PrecisionError(
                f"{type(self).__name__} precision mismatch: {self.precision} vs {other.precision}"
            )
        return other

    def __add__(self, other: Self) -> Self:
        o = self._check(other)
        return type(self)(self.raw + o.raw, self.precision)

    def __sub__(self, other: Self) -> Self:
        o = self._check(other)
        return type(self)(self.raw - o.raw, self.precision)

    def __neg__(self) -> Self:
        return type(self)(-self.raw, self.precision)

    def __abs__(self) -> Self:
        return type(self)(abs(self.raw), self.precision)

    def __mul__(self, k: int) -> Self:
        if not isinstance(k, int) or isinstance(k, bool):
            raise TypeError(f"{type(self).__name__} can only be scaled by an int")
        return type(self)(self.raw * k, self.precision)

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Fixed)
        return self.raw == other.raw and self.precision == other.precision

    def __lt__(self, other: Self) -> bool:
        return self.raw < self._check(other).raw

    def __le__(self, other: Self) -> bool:
        return self.raw <= self._check(other).raw

    def __gt__(self, other: Self) -> bool:
        return self.raw > self._check(other).raw

    def __ge__(self, other: Self) -> bool:
        return self.raw >= self._check(other).raw

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.raw, self.precision))

    def __bool__(self) -> bool:
        return self.raw != 0

    def __str__(self) -> str:
        return format_raw(self.raw, self.precision)

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self}')"


class Price(_Fixed):
    """A price on an instrument's grid; may be negative (spreads, some options strategies)."""

    __slots__ = ()


class Quantity(_Fixed):
    """An amount of an instrument (base units or contracts); never negative."""

    __slots__ = ()

    def __init__(self, raw: int, precision: int) -> None:
        if type(raw) is not int:
            raise TypeError(f"raw must be int, got {type(raw).__name__}")
        if raw < 0:
            raise ValueError(f"Quantity cannot be negative: raw={raw}")
        if not 0 <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be in 0..{MAX_PRECISION}, got {precision}")
        _set(self, "raw", raw)
        _set(self, "precision", precision)

    def __sub__(self, other: Quantity) -> Quantity:
        o = self._check(other)
        if o.raw > self.raw:
            raise ValueError(f"Quantity would go negative: {self} - {o}")
        return Quantity(self.raw - o.raw, self.precision)


class Money:
    """An amount of one currency at that currency's precision (may be negative)."""

    __slots__ = ("currency", "precision", "raw")

    raw: int
    precision: int
    currency: str

    def __init__(self, raw: int, precision: int, currency: str) -> None:
        if type(raw) is not int:
            raise TypeError(f"raw must be int, got {type(raw).__name__}")
        if not 0 <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be in 0..{MAX_PRECISION}, got {precision}")
        if not currency:
            raise ValueError("Money needs a currency")
        _set(self, "raw", raw)
        _set(self, "precision", precision)
        _set(self, "currency", currency)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Money is immutable")

    @classmethod
    def from_str(cls, value: str | Decimal | int, precision: int, currency: str) -> Money:
        return cls(raw_from_decimal(value, precision), precision, currency)

    @classmethod
    def zero(cls, precision: int, currency: str) -> Money:
        return cls(0, precision, currency)

    @classmethod
    def from_fraction(cls, value: Fraction, precision: int, currency: str) -> Money:
        """Round an exact rational amount to the currency's precision (ties to even)."""
        return cls(round_fraction(value * _pow10(precision)), precision, currency)

    def to_decimal(self) -> Decimal:
        return Decimal(self.raw).scaleb(-self.precision)

    def as_float(self) -> float:
        return self.raw / _pow10(self.precision)

    def _check(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise PrecisionError(f"currency mismatch: {self.currency} vs {other.currency}")
        if other.precision != self.precision:
            raise PrecisionError(f"{self.currency} precision mismatch: {self.precision} vs {other.precision}")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.raw + self._check(other).raw, self.precision, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.raw - self._check(other).raw, self.precision, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.raw, self.precision, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.raw), self.precision, self.currency)

    def __mul__(self, k: int) -> Money:
        if not isinstance(k, int) or isinstance(k, bool):
            raise TypeError("Money can only be scaled by an int")
        return Money(self.raw * k, self.precision, self.currency)

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        return (self.raw, self.precision, self.currency) == (other.raw, other.precision, other.currency)

    def __lt__(self, other: Money) -> bool:
        return self.raw < self._check(other).raw

    def __le__(self, other: Money) -> bool:
        return self.raw <= self._check(other).raw

    def __gt__(self, other: Money) -> bool:
        return self.raw > self._check(other).raw

    def __ge__(self, other: Money) -> bool:
        return self.raw >= self._check(other).raw

    def __hash__(self) -> int:
        return hash((self.raw, self.precision, self.currency))

    def __bool__(self) -> bool:
        return self.raw != 0

    def __str__(self) -> str:
        return f"{format_raw(self.raw, self.precision)} {self.currency}"

    def __repr__(self) -> str:
        return f"Money('{self}')"

"""Exact fixed-point arithmetic: property tests against Python's exact Decimal/Fraction."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.model.fixed import Money, PrecisionError, Price, Quantity, raw_from_decimal

prec = st.integers(min_value=0, max_value=12)
raw = st.integers(min_value=-(10**15), max_value=10**15)


@given(raw, raw, prec)
def test_price_add_sub_exact(a: int, b: int, p: int) -> None:
    x, y = Price(a, p), Price(b, p)
    assert (x + y).to_decimal() == x.to_decimal() + y.to_decimal()
    assert (x - y).to_decimal() == x.to_decimal() - y.to_decimal()
    assert (x + y) - y == x


@given(raw, prec)
def test_text_round_trip(a: int, p: int) -> None:
    x = Price(a, p)
    assert Price.from_str(str(x), p) == x
    assert Decimal(str(x)) == x.to_decimal()


@given(raw, raw, prec)
def test_ordering_matches_decimal(a: int, b: int, p: int) -> None:
    x, y = Price(a, p), Price(b, p)
    assert (x < y) == (x.to_decimal() < y.to_decimal())
    assert (x == y) == (a == b)


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=-(10**6), max_value=10**6), prec)
def test_scale_by_int(a: int, k: int, p: int) -> None:
    assert (Price(a, p) * k).to_decimal() == Price(a, p).to_decimal() * k


def test_mixing_precisions_is_an_error() -> None:
    with pytest.raises(PrecisionError):
        Price(1, 2) + Price(1, 3)
    with pytest.raises(TypeError):
        Price(1, 2) + Quantity(1, 2)  # type: ignore[operator]
    with pytest.raises(PrecisionError):
        Money(1, 2, "USDT") + Money(1, 2, "USD")
    with pytest.raises(TypeError):
        Price(1, 2) * 1.5  # type: ignore[operator]


def test_no_silent_rounding_from_text() -> None:
    with pytest.raises(ValueError, match="more than 2 decimals"):
        Price.from_str("61800.305", 2)
    with pytest.raises(ValueError):
        raw_from_decimal("NaN", 2)
    with pytest.raises(ValueError):
        raw_from_decimal("inf", 2)
    with pytest.raises(ValueError):
        raw_from_decimal("abc", 2)
    assert Price.from_str("61800.30000000", 2).raw == 6180030


def test_quantity_never_negative() -> None:
    with pytest.raises(ValueError):
        Quantity(-1, 3)
    with pytest.raises(ValueError):
        Quantity(1, 3) - Quantity(2, 3)


@given(st.fractions(min_value=-(10**9), max_value=10**9), st.integers(min_value=0, max_value=10))
def test_money_from_fraction_rounds_half_even(v: Fraction, p: int) -> None:
    m = Money.from_fraction(v, p, "USDT")
    scaled = v * 10**p
    assert abs(Fraction(m.raw) - scaled) <= Fraction(1, 2)
    if abs(Fraction(m.raw) - scaled) == Fraction(1, 2):
        assert m.raw % 2 == 0


def test_immutable() -> None:
    p = Price(1, 1)
    with pytest.raises(AttributeError):
        p.raw = 2  # type: ignore[misc]

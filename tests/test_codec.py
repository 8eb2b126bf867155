"""The codec must give back exactly what it was given: the WAL, store and Redis bus rely on it."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import types
import typing
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.model import events
from bastion.model.codec import (
    CodecError,
    dumps,
    from_jsonable,
    loads,
    parse_exact,
    registered_types,
    to_jsonable,
)
from bastion.model.fixed import MAX_PRECISION, Money, Price, Quantity, format_raw
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, Side, TimeInForce

precisions = st.integers(0, MAX_PRECISION)
big_ints = st.integers(-(10**40), 10**40)
texts = st.text(max_size=12)
prices = st.builds(Price, big_ints, precisions)
quantities = st.builds(Quantity, st.integers(0, 10**40), precisions)
moneys = st.builds(Money, big_ints, precisions, st.text(min_size=1, max_size=6))


@st.composite
def orders(draw: st.DrawFn) -> Order:
    prec = draw(precisions)
    qty = draw(st.integers(1, 10**30))
    otype = draw(st.sampled_from(OrderType))
    price = draw(prices) if otype is OrderType.LIMIT else draw(st.none() | prices)
    return Order(
        client_order_id=draw(texts),
        instrument_id=draw(texts),
        side=draw(st.sampled_from(Side)),
        order_type=otype,
        quantity=Quantity(qty, prec),
        price=price,
        time_in_force=draw(st.sampled_from(TimeInForce)),
        reduce_only=draw(st.booleans()),
        strategy_id=draw(texts),
        status=draw(st.sampled_from(OrderStatus)),
        filled=Quantity(draw(st.integers(0, qty)), prec),
        venue_order_id=draw(texts),
        ts_init=draw(st.integers(0, 2**63 - 1)),
        ts_last=draw(st.integers(0, 2**63 - 1)),
        cancel_pending=draw(st.booleans()),
    )


fills = st.builds(
    Fill,
    texts,
    texts,
    st.sampled_from(Side),
    prices,
    quantities,
    moneys,
    st.sampled_from(Liquidity),
    st.integers(0, 2**63 - 1),
    texts,
)

_BY_TYPE: dict[Any, st.SearchStrategy[Any]] = {
    str: texts,
    int: st.integers(-(2**70), 2**70),
    bool: st.booleans(),
    Price: prices,
    Quantity: quantities,
    Money: moneys,
    Fill: fills,
    Order: orders(),
}


def _strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else _strategy_for(a) for a in typing.get_args(hint)])
    return _BY_TYPE[hint]


EVENT_CLASSES = sorted(
    (
        c
        for _, c in inspect.getmembers(events, inspect.isclass)
        if dataclasses.is_dataclass(c) and c.__module__ == events.__name__
    ),
    key=lambda c: c.__name__,
)


def _event_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _strategy_for(hints[f.name]) for f in dataclasses.fields(cls)})


any_event = st.one_of([_event_strategy(c) for c in EVENT_CLASSES])
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | texts
    | prices
    | quantities
    | moneys
    | st.sampled_from([*Side, *OrderType, *TimeInForce, *OrderStatus, *Liquidity])
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.fractions()
)
nested = st.recursive(
    leaves | orders() | fills | any_event,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.tuples(kids, kids)
        | st.dictionaries(st.sampled_from(["type", "a", "value", "items", "b"]) | texts, kids, max_size=4)
    ),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down (1 == True == 1.0 would hide bugs)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, Price | Quantity):
        return (a.raw, a.precision) == (b.raw, b.precision)
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())  # same digits and exponent, not merely equal value
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(nested)
def test_round_trip_is_exact(obj: Any) -> None:
    assert _same(from_jsonable(to_jsonable(obj)), obj)
    assert _same(loads(dumps(obj)), obj)


@settings(max_examples=100, deadline=None)
@given(any_event)
def test_every_event_round_trips_with_its_class_name(ev: Any) -> None:
    data = to_jsonable(ev)
    assert data["type"] == type(ev).__name__
    assert _same(loads(dumps(ev)), ev)


@given(prices)
def test_price_is_exact_text_with_its_precision(p: Price) -> None:
    data = to_jsonable(p)
    assert data == {"type": "Price", "value": format_raw(p.raw, p.precision)}
    assert parse_exact(data["value"]) == (p.raw, p.precision)


def test_every_model_event_class_is_registered() -> None:
    names = set(registered_types())
    for cls in EVENT_CLASSES:
        assert cls.__name__ in names
    for other in (Order, Fill, Side, OrderType, TimeInForce, OrderStatus, Liquidity):
        assert other.__name__ in names


def test_trailing_zeros_and_sign_survive() -> None:
    assert to_jsonable(Price(-50, 2))["value"] == "-0.50"
    assert from_jsonable({"type": "Price", "value": "-0.50"}) == Price(-50, 2)
    assert from_jsonable({"type": "Quantity", "value": "1.000"}).precision == 3
    m = from_jsonable({"type": "Money", "value": "0.00000001", "currency": "BTC"})
    assert (m.raw, m.precision, m.currency) == (1, 8, "BTC")


def test_enum_written_by_name() -> None:
    assert to_jsonable(Side.SELL) == {"type": "Side", "value": "SELL"}
    assert to_jsonable(OrderStatus.PENDING_VERIFICATION)["value"] == "PENDING_VERIFICATION"


def test_user_dict_with_type_key_is_not_mistaken_for_a_tagged_value() -> None:
    payload = {"type": "Price", "value": "1.0"}
    assert loads(dumps(payload)) == payload
    assert isinstance(loads(dumps(payload)), dict)


def test_non_finite_floats_are_tagged_and_json_stays_strict() -> None:
    text = dumps([math.inf, -math.inf, math.nan])
    assert "NaN" not in text and "Infinity" not in text
    a, b, c = loads(text)
    assert a == math.inf and b == -math.inf and math.isnan(c)
    with pytest.raises(CodecError):
        loads("[NaN]")


def test_dumps_is_canonical() -> None:
    assert dumps({"b": 1, "a": Fraction(1, 3)}) == dumps({"a": Fraction(1, 3), "b": 1})


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "Nope"},
        {"type": "Price", "value": "1e5"},
        {"type": "Price", "value": " 1.0"},
        {"type": "Price", "value": "+1"},
        {"type": "Price", "value": ".5"},
        {"type": "Price", "value": 5},
        {"type": "Quantity", "value": "-1"},
        {"type": "Price", "value": "1." + "0" * 19},
        {"type": "Money", "value": "1.0"},
        {"type": "Side", "value": "UP"},
        {"type": "Fraction", "value": "1/0"},
        {"type": "OrderAccepted", "client_order_id": "x", "instrument_id": "y", "ts_event": 1, "bogus": 1},
        {"type": "Order", "client_order_id": "x"},
    ],
)
def test_malformed_data_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        from_jsonable(bad)


def test_unknown_objects_are_refused_not_stringified() -> None:
    with pytest.raises(TypeError):
        to_jsonable(object())
    with pytest.raises(TypeError):
        to_jsonable({1: "int key"})
    with pytest.raises(TypeError):
        to_jsonable({1.5})

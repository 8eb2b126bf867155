"""Exact JSON for the model's values, orders, fills, events and commands.

The write-ahead log, the SQL store and the Redis bus all need to turn an order or an event into
text and back *without changing it*: a price that comes back one unit off, or a ``Side`` that
comes back as a bare ``1``, is a silent fault in exactly the place where recovery must be exact.
So every value type is written with its class name in ``"type"`` and decoded to the same class:

* ``Price`` / ``Quantity`` → ``{"type": "Price", "value": "61800.30"}``: the exact decimal text
  with exactly ``precision`` decimals (``format_raw``), so the precision travels with the digits.
  Text rather than a JSON number because raw integers at 18 decimals exceed 2**53 and would be
  rounded by any JSON reader that is not Python (a JavaScript dashboard, a ``jq`` filter).
* ``Money`` adds ``"currency"``.
* enums → ``{"type": "Side", "value": "BUY"}`` by *name*: readable in an audit trail and stable
  if the integer values are ever renumbered.
* ``Order``, ``Fill`` and every dataclass of :mod:`bastion.model.events` → their fields, tagged.
* ``Decimal`` and ``Fraction`` (funding rates travel as fractions) keep their exact text; tuples
  stay tuples; non-finite floats are tagged because strict JSON has no NaN.

A plain dict is written as itself unless it has a ``"type"`` key of its own, in which case it is
wrapped (``{"type": "dict", "items": ...}``) so no user payload can be mistaken for a tagged value.
Anything else is refused (``TypeError``) rather than stringified: an unknown object would not come
back as itself.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from bastion.model import events as _events
from bastion.model.fixed import MAX_PRECISION, Money, Price, Quantity, format_raw
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, Side, TimeInForce

__all__ = ["CodecError", "dumps", "from_jsonable", "loads", "parse_exact", "registered_types", "to_jsonable"]

TYPE = "type"


class CodecError(ValueError):
    """Data that claims to be an encoded value but is not a valid one (bad tag, bad digits)."""


def parse_exact(text: str) -> tuple[int, int]:
    """``"-12.50"`` → ``(-1250, 2)``: the inverse of ``format_raw``, integer arithmetic only.

    Strict on purpose (no exponent, no ``+``, no spaces, no bare ``.5``): the codec only ever reads
    what ``format_raw`` wrote, so anything else is corruption, not an alternative spelling.
    """
    neg = text.startswith("-")
    body = text[1:] if neg else text
    whole, dot, frac = body.partition(".")
    if not whole.isdigit() or not whole.isascii() or (dot and (not frac.isdigit() or not frac.isascii())):
        raise CodecError(f"not an exact decimal: {text!r}")
    precision = len(frac)
    if precision > MAX_PRECISION:
        raise CodecError(f"{text!r} has more than {MAX_PRECISION} decimals")
    raw = int(whole + frac)
    return (-raw if neg else raw), precision


_ENUMS: tuple[type[enum.Enum], ...] = (Side, OrderType, TimeInForce, OrderStatus, Liquidity)
_DATACLASSES: tuple[type[Any], ...] = (
    Order,
    Fill,
    *(
        obj
        for _, obj in sorted(inspect.getmembers(_events, inspect.isclass))
        if dataclasses.is_dataclass(obj) and obj.__module__ == _events.__name__
    ),
)
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _DATACLASSES
}
_BY_NAME: dict[str, type[Any]] = {cls.__name__: cls for cls in (*_ENUMS, *_DATACLASSES)}


def registered_types() -> tuple[str, ...]:
    """Names of every tagged type this codec round-trips (the tests check each one)."""
    return (
        "Price",
        "Quantity",
        "Money",
        "Decimal",
        "Fraction",
        "tuple",
        "float",
        "dict",
        *sorted(_BY_NAME),
    )


def _enc_fixed(obj: Any) -> dict[str, Any]:
    return {TYPE: type(obj).__name__, "value": format_raw(obj.raw, obj.precision)}


def _enc_money(obj: Any) -> dict[str, Any]:
    return {TYPE: "Money", "value": format_raw(obj.raw, obj.precision), "currency": obj.currency}


def _enc_enum(obj: Any) -> dict[str, Any]:
    return {TYPE: type(obj).__name__, "value": obj.name}


def _enc_dataclass(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {TYPE: type(obj).__name__}
    for name in _FIELDS[type(obj)]:
        out[name] = to_jsonable(getattr(obj, name))
    return out


def _enc_float(obj: Any) -> Any:
    if math.isfinite(obj):
        return obj
    return {TYPE: "float", "value": repr(obj)}


def _enc_dict(obj: Any) -> dict[str, Any]:
    items: dict[str, Any] = {}
    for k, v in obj.items():
        if type(k) is not str:
            raise TypeError(f"codec: dict keys must be str, got {type(k).__name__} ({k!r})")
        items[k] = to_jsonable(v)
    if TYPE in items:
        return {TYPE: "dict", "items": items}
    return items


_ENCODERS: dict[type[Any], Callable[[Any], Any]] = {
    Price: _enc_fixed,
    Quantity: _enc_fixed,
    Money: _enc_money,
    Decimal: lambda d: {TYPE: "Decimal", "value": str(d)},
    Fraction: lambda f: {TYPE: "Fraction", "value": f"{f.numerator}/{f.denominator}"},
    tuple: lambda t: {TYPE: "tuple", "items": [to_jsonable(v) for v in t]},
    list: lambda seq: [to_jsonable(v) for v in seq],
    dict: _enc_dict,
    float: _enc_float,
    **{e: _enc_enum for e in _ENUMS},
    **{c: _enc_dataclass for c in _DATACLASSES},
}


def to_jsonable(obj: Any) -> Any:
    """Turn ``obj`` into JSON-ready data (dict/list/str/int/float/bool/None) that decodes exactly."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:
        return obj
    enc = _ENCODERS.get(t)
    if enc is None:
        raise TypeError(f"codec cannot encode {t.__module__}.{t.__qualname__}: {obj!r}")
    return enc(obj)


def _dec_value(data: dict[str, Any], kind: str) -> str:
    v = data.get("value")
    if type(v) is not str:
        raise CodecError(f"{kind}: 'value' must be a string, got {v!r}")
    return v


def _dec_tagged(data: dict[str, Any]) -> Any:
    kind = data[TYPE]
    if kind == "Price" or kind == "Quantity":
        raw, precision = parse_exact(_dec_value(data, kind))
        try:
            return (Price if kind == "Price" else Quantity)(raw, precision)
        except ValueError as exc:
            raise CodecError(f"{kind}: {exc}") from exc
    if kind == "Money":
        raw, precision = parse_exact(_dec_value(data, kind))
        currency = data.get("currency")
        if type(currency) is not str:
            raise CodecError(f"Money: 'currency' must be a string, got {currency!r}")
        try:
            return Money(raw, precision, currency)
        except ValueError as exc:
            raise CodecError(f"Money: {exc}") from exc
    if kind == "Decimal":
        return Decimal(_dec_value(data, kind))
    if kind == "Fraction":
        num, _, den = _dec_value(data, kind).partition("/")
        try:
            return Fraction(int(num), int(den))
        except (ValueError, ZeroDivisionError) as exc:
            raise CodecError(f"Fraction: bad value {data.get('value')!r}") from exc
    if kind == "float":
        v = _dec_value(data, kind)
        if v not in ("nan", "inf", "-inf"):
            raise CodecError(f"float: only non-finite floats are tagged, got {v!r}")
        return float(v)
    if kind == "tuple":
        items = data.get("items")
        if not isinstance(items, list):
            raise CodecError("tuple: 'items' must be a list")
        return tuple(from_jsonable(v) for v in items)
    if kind == "dict":
        items = data.get("items")
        if not isinstance(items, dict):
            raise CodecError("dict: 'items' must be an object")
        return {k: from_jsonable(v) for k, v in items.items()}
    cls = _BY_NAME.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise CodecError(f"unknown type tag {kind!r}")
    if issubclass(cls, enum.Enum):
        name = _dec_value(data, kind)
        try:
            return cls[name]
        except KeyError:
            raise CodecError(f"{kind}: no member {name!r}") from None
    names = _FIELDS[cls]
    extra = set(data) - set(names) - {TYPE}
    if extra:
        raise CodecError(f"{kind}: unknown fields {sorted(extra)}")
    kwargs = {n: from_jsonable(data[n]) for n in names if n in data}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{kind}: {exc}") from exc


def from_jsonable(data: Any) -> Any:
    """Inverse of :func:`to_jsonable`; raises :class:`CodecError` on anything it did not write."""
    t = type(data)
    if t is dict:
        if TYPE in data:
            return _dec_tagged(data)
        return {k: from_jsonable(v) for k, v in data.items()}
    if t is list:
        return [from_jsonable(v) for v in data]
    if t is str or t is int or t is bool or t is float or data is None:
        return data
    raise CodecError(f"not JSON data: {t.__name__}")


def dumps(obj: Any) -> str:
    """Canonical compact JSON (sorted keys): equal objects give equal text, so it can be hashed."""
    return json.dumps(
        to_jsonable(obj), separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    )


def _reject_constant(name: str) -> Any:
    raise CodecError(f"non-standard JSON constant {name}")


def loads(text: str | bytes) -> Any:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise CodecError(f"not valid JSON: {exc}") from exc
    return from_jsonable(data)

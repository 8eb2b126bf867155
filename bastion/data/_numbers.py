"""Text and float values to exact raw integers.

Text sources are parsed digit by digit (never through a float), so ``"61800.20"`` at precision 1
is exactly ``618002`` and ``"0.1"`` never becomes ``0.1000000000000000055``. Float sources
(feather, parquet) are already binary, so the best we can do is find the decimal grid their
writer used and prove every value sits on it; a value that does not is reported, not rounded away.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import numpy as np
import numpy.typing as npt

from bastion.model.fixed import MAX_PRECISION, raw_from_decimal

INT64_MAX = 2**63 - 1
_POW10: list[int] = [10**i for i in range(MAX_PRECISION + 1)]
# What we accept as a number on the slow path: plain decimal or scientific notation. No NaN, no
# infinity, no underscores or spaces (Decimal would accept those; a venue never sends them).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class TooManyDecimals(ValueError):
    """A value needs more decimals than the precision it is parsed at."""


def text_decimals(text: str) -> int:
    """How many decimals ``text`` needs to be represented exactly ("1.50" needs 1)."""
    if type(text) is not str:
        raise ValueError(f"not a number: {text!r}")
    ip, _, fp = text.partition(".")
    if ip.isdigit() and ip.isascii() and (not fp or (fp.isdigit() and fp.isascii())):
        return len(fp.rstrip("0"))
    d = _slow_decimal(text)
    exp = d.normalize().as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


def _slow_decimal(text: str) -> Decimal:
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise ValueError(f"not a number: {text!r}") from exc


def parse_fixed(text: str, precision: int) -> int:
    """Exact raw value of decimal ``text`` at ``precision``; ValueError if it does not fit.

    The fast path handles the plain ``digits[.digits]`` form every venue in shared/data uses;
    anything else (sign, exponent, garbage) goes through Decimal with a strict grammar.
    """
    if type(text) is not str:
        raise ValueError(f"not a number: {text!r}")
    ip, _, fp = text.partition(".")
    if ip.isdigit() and ip.isascii() and (not fp or (fp.isdigit() and fp.isascii())):
        fp = fp.rstrip("0")
        n = len(fp)
        if n > precision:
            raise TooManyDecimals(f"{text} has more than {precision} decimals")
        raw = int(ip) * _POW10[precision]
        if n:
            raw += int(fp) * _POW10[precision - n]
    else:
        d = _slow_decimal(text)
        exp = d.normalize().as_tuple().exponent
        assert isinstance(exp, int)
        if -exp > precision:
            raise TooManyDecimals(f"{text} has more than {precision} decimals")
        raw = int(raw_from_decimal(d, precision))
    if raw > INT64_MAX or raw < -INT64_MAX:
        raise ValueError(f"{text} overflows int64 at precision {precision}")
    return raw


def seconds_to_ns(value: Decimal | int) -> int:
    """Exact integer nanoseconds of a timestamp in (fractional) seconds.

    Sub-nanosecond digits are an error: no real clock produces them, and dropping them quietly
    would break the promise that a parsed value equals its text.
    """
    return raw_from_decimal(Decimal(value), 9)


def infer_float_decimals(values: npt.NDArray[np.float64], cap: int) -> int | None:
    """Smallest number of decimals d <= cap such that every value is on the 10**-d grid.

    "On the grid" means the float is the nearest double to a d-decimal number: after scaling by
    10**d it lies within a few ulps of an integer. A relative tolerance would be too loose here
    (at 1e-9 a mark price of 7559.444182 would pass at 5 decimals and lose a digit). Returns None
    if no such d exists (float noise, or more decimals than ``cap``).
    """
    v = np.unique(values[np.isfinite(values)])
    if v.size == 0:
        return 0
    for d in range(cap + 1):
        s = v * float(10**d)
        err = np.abs(s - np.rint(s))
        if np.all(err <= 4.0 * np.spacing(np.abs(s))):
            return d
    return None


def floats_to_raw(
    values: npt.NDArray[np.float64], precision: int, *, rel_tol: float | None = 1e-9
) -> tuple[npt.NDArray[np.int64], int]:
    """Raw int64 values at ``precision`` (round half-even) and the index of the first value whose
    round trip is off by more than ``rel_tol`` relative (-1 when all are fine).

    NaN, infinities and values beyond int64 always count as failures; ``rel_tol=None`` accepts
    any rounding (for volumes deliberately rounded at a capped precision).
    """
    scale = float(10**precision)
    s = values * scale
    finite = np.isfinite(s) & (np.abs(s) < 9.2e18)
    r = np.rint(np.where(finite, s, 0.0))
    raw = r.astype(np.int64)
    back = raw.astype(np.float64) / scale
    bad = ~finite
    if rel_tol is not None:
        bad |= np.abs(back - values) > rel_tol * np.abs(values)
    idx = np.flatnonzero(bad)
    return raw, int(idx[0]) if idx.size else -1


def off_grid(values: npt.NDArray[np.float64], decimals: int) -> npt.NDArray[np.bool_]:
    """Mask of finite values that are not on the 10**-decimals grid (same test as the inference)."""
    s = values * float(10**decimals)
    return np.isfinite(s) & (np.abs(s - np.rint(s)) > 4.0 * np.spacing(np.abs(s)))

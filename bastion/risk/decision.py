"""The answer of every risk gate: allowed or not, which rule, and the numbers behind it.

A refusal that only says "denied" sends an operator digging through code at the worst moment;
naming the rule and quoting the figures (``gross 2.35x after order > limit 2.00x``) makes every
denial self-explanatory in the journal, the logs and the alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class Decision:
    ok: bool
    rule: str
    detail: str = ""

    @classmethod
    def allow(cls, rule: str, detail: str = "") -> Decision:
        return cls(True, rule, detail)

    @classmethod
    def refuse(cls, rule: str, detail: str) -> Decision:
        return cls(False, rule, detail)


def _to_decimal(value: Fraction, places: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        d = Decimal(value.numerator) / Decimal(value.denominator)
        return d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def fmt_number(value: Fraction | int, places: int = 2, *, max_places: int = 8) -> str:
    """Thousands separators; integers without decimals; more decimals only when they matter."""
    v = Fraction(value)
    if v.denominator == 1:
        return f"{v.numerator:,}"
    for p in range(places, max_places + 1):
        d = _to_decimal(v, p)
        if Fraction(d) == v or p == max_places:
            return f"{d:,.{p}f}"
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_pair(value: Fraction, limit: Fraction, places: int = 2) -> tuple[str, str]:
    """Format a value and its limit with enough decimals that unequal numbers never print equal.

    ``2.001x > 2.00x`` must not read ``2.00x > 2.00x`` in a refusal.
    """
    for p in range(places, 13):
        a, b = _to_decimal(value, p), _to_decimal(limit, p)
        if (a != b) == (value != limit):
            return f"{a:,.{p}f}", f"{b:,.{p}f}"
    return f"{_to_decimal(value, 12):,.12f}", f"{_to_decimal(limit, 12):,.12f}"

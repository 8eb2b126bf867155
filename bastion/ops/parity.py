"""PnL parity watchdog: the ledger must equal what the recorded fills say, at every moment.

The ledger (position, cost basis, balances) is updated incrementally as fill events arrive; the
store holds every fill exactly once, keyed by the venue's trade id. If the two ever disagree,
some event was applied twice, skipped, or applied with other numbers than were recorded — and
every figure the strategy, the breaker and the operator see from then on is wrong. Reconciling
with the venue would find it eventually (as a balance mismatch); this finds it at once and names
the cause, by recomputing position and balance changes from scratch out of the stored fills and
comparing them exactly (integers and fractions, no tolerance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from bastion.model.instruments import Instrument
from bastion.model.orders import Side


@dataclass(frozen=True, slots=True)
class FillTotals:
    position_raw: int
    balance_delta: dict[str, Fraction] = field(default_factory=dict)
    fills: int = 0


def totals_from_fills(rows: Iterable[Mapping[str, Any]], inst: Instrument) -> FillTotals:
    """Position and per-currency balance change implied by stored fill rows (spot)."""
    pos = 0
    delta: dict[str, Fraction] = {inst.base: Fraction(0), inst.quote: Fraction(0)}
    n = 0
    for r in rows:
        sign = Side[str(r["side"])].value
        q = Fraction(Decimal(str(r["quantity"])))
        p = Fraction(Decimal(str(r["price"])))
        fee = Fraction(Decimal(str(r["fee"])))
        pos += sign * inst.qty(str(r["quantity"])).raw
        delta[inst.base] += sign * q
        delta[inst.quote] -= sign * p * q
        cur = str(r.get("fee_currency") or inst.quote)
        delta[cur] = delta.get(cur, Fraction(0)) - fee
        n += 1
    return FillTotals(pos, delta, n)


@dataclass(frozen=True, slots=True)
class ParityResult:
    ok: bool
    detail: str
    fills: int


def compare(
    totals: FillTotals,
    ledger_position_raw: int,
    ledger_balances: Mapping[str, Fraction],
    baseline: Mapping[str, Fraction],
) -> ParityResult:
    """Exact comparison; ``detail`` names every figure that differs and by how much."""
    diffs = []
    if totals.position_raw != ledger_position_raw:
        diffs.append(f"position: fills say {totals.position_raw} raw, ledger {ledger_position_raw} raw")
    for cur, d in totals.balance_delta.items():
        want = baseline.get(cur, Fraction(0)) + d
        have = ledger_balances.get(cur, Fraction(0))
        if want != have:
            diffs.append(f"{cur}: fills say {float(want):.10f}, ledger {float(have):.10f}")
    if diffs:
        return ParityResult(False, "; ".join(diffs), totals.fills)
    return ParityResult(True, f"ledger equals {totals.fills} recorded fills", totals.fills)

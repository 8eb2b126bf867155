"""Reconciliation: does our ledger agree with the venue about positions and balances?

The venue is the source of truth for what we own; our ledger is the source of truth for why.
Small differences (a fee rounded differently, a funding payment we booked a moment late) are
adopted from the venue and logged. A large one means our picture of the world is wrong — a lost
fill, a duplicate order, a manual trade — and trading must stop until someone looks: the breaker
opens, and three mismatches in a row keep it open until an operator resets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Difference:
    key: str  # "position:BTCUSDT-PERP.KRAKEN" or "balance:USDT"
    local: Fraction
    venue: Fraction

    @property
    def relative(self) -> Fraction:
        """|venue − local| relative to the larger magnitude (0 when both are 0)."""
        scale = max(abs(self.local), abs(self.venue))
        return abs(self.venue - self.local) / scale if scale else Fraction(0)

    def describe(self) -> str:
        return (
            f"{self.key}: ledger {float(self.local):.8g}, venue {float(self.venue):.8g} "
            f"({float(self.relative) * 100:.3f}% apart)"
        )


@dataclass(frozen=True, slots=True)
class ReconciliationResult:
    ok: bool  # True when nothing beyond tolerance (small differences may have been adopted)
    adopted: list[Difference] = field(default_factory=list)
    mismatches: list[Difference] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok and not self.adopted:
            return "ledger and venue agree"
        parts = [f"adopted {d.describe()}" for d in self.adopted]
        parts += [f"MISMATCH {d.describe()}" for d in self.mismatches]
        return "; ".join(parts)


def reconcile(
    local: dict[str, Fraction],
    venue: dict[str, Fraction],
    *,
    tolerance: Fraction = Fraction(1, 100),
    absolute_floor: Fraction = Fraction(0),
) -> ReconciliationResult:
    """Compare two views key by key (a key missing on one side counts as zero there).

    A difference within ``tolerance`` (relative) or within ``absolute_floor`` (dust) is adopted;
    anything else is a mismatch. An exposure the ledger does not know about at all (local zero,
    venue non-zero beyond dust) is always a mismatch: adopting it would hide an unknown position.
    """
    adopted: list[Difference] = []
    mismatches: list[Difference] = []
    for key in sorted(set(local) | set(venue)):
        d = Difference(key, local.get(key, Fraction(0)), venue.get(key, Fraction(0)))
        if d.local == d.venue:
            continue
        gap = abs(d.venue - d.local)
        unknown_exposure = d.local == 0 and gap > absolute_floor
        if not unknown_exposure and (gap <= absolute_floor or d.relative <= tolerance):
            adopted.append(d)
            log.info("reconciliation_adopted", key=key, detail=d.describe(), risk_level="low")
        else:
            mismatches.append(d)
            log.warning("reconciliation_mismatch", key=key, detail=d.describe(), risk_level="high")
    return ReconciliationResult(not mismatches, adopted, mismatches)

"""Reconciliation rules: adopt small differences, refuse large or unknown ones."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from bastion.risk.reconciliation import reconcile

F = Fraction


def test_equal_views_agree() -> None:
    r = reconcile({"balance:USDT": F(100)}, {"balance:USDT": F(100)})
    assert r.ok and not r.adopted and r.summary() == "ledger and venue agree"


def test_within_one_percent_is_adopted_beyond_is_a_mismatch() -> None:
    r = reconcile({"balance:USDT": F(1000)}, {"balance:USDT": F(1009)})
    assert r.ok and [d.key for d in r.adopted] == ["balance:USDT"]
    r = reconcile({"balance:USDT": F(1000)}, {"balance:USDT": F(1011)})
    assert not r.ok and "MISMATCH balance:USDT" in r.summary() and "1.088%" in r.summary()


def test_unknown_position_is_never_adopted() -> None:
    r = reconcile({}, {"position:BTC": F(1, 1000)})
    assert not r.ok
    r = reconcile({}, {"position:BTC": F(1, 10**9)}, absolute_floor=F(1, 10**8))
    assert r.ok  # dust below the floor


@given(st.fractions(min_value=-1000, max_value=1000), st.fractions(min_value=-1000, max_value=1000))
def test_symmetric_and_total(a: Fraction, b: Fraction) -> None:
    r1 = reconcile({"k": a}, {"k": b})
    r2 = reconcile({"k": b}, {"k": a}) if a != 0 and b != 0 else r1
    assert r1.ok == r2.ok
    assert len(r1.adopted) + len(r1.mismatches) == (0 if a == b else 1)

"""Position ledger: exact PnL for linear and inverse contracts, checked against independent sums."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.model import KNOWN_INSTRUMENTS, Position, Side

LIN = KNOWN_INSTRUMENTS["BTCUSDT-PERP.BINANCE"]
INV = KNOWN_INSTRUMENTS["BTCUSD-PERP.BINANCE"]


def test_linear_round_trip() -> None:
    p = Position(LIN)
    p.apply_fill(Side.BUY, 600000, 2000)  # buy 2 @ 60000.0
    p.apply_fill(Side.BUY, 620000, 1000)  # buy 1 @ 62000.0
    assert p.avg_price() == Fraction(182000, 3)
    realized = p.apply_fill(Side.SELL, 610000, 3000)
    assert realized == Fraction(3 * 61000 - 2 * 60000 - 62000)
    assert p.is_flat and p.cost == 0


def test_flip_long_to_short() -> None:
    p = Position(LIN)
    p.apply_fill(Side.BUY, 600000, 1000)
    r = p.apply_fill(Side.SELL, 610000, 3000)
    assert r == 1000
    assert p.qty_raw == -2000
    assert p.avg_price() == 61000
    assert p.unrealized(600000) == 2 * 1000


def test_inverse_pnl_in_base() -> None:
    p = Position(INV)
    # long 10 contracts of 100 USD at 50,000 then sell at 60,000: pnl = 1000*(1/50000 - 1/60000) BTC
    p.apply_fill(Side.BUY, 500000, 10)
    r = p.apply_fill(Side.SELL, 600000, 10)
    assert r == Fraction(1000) * (Fraction(1, 50000) - Fraction(1, 60000))
    assert p.instrument.settle == "BTC"


def test_funding_sign() -> None:
    p = Position(LIN)
    p.apply_fill(Side.BUY, 600000, 1000)
    paid = p.apply_funding(Fraction(1, 10000), 600000)
    assert paid == -6  # long pays 1 bp of 60,000
    q = Position(LIN)
    q.apply_fill(Side.SELL, 600000, 1000)
    assert q.apply_funding(Fraction(1, 10000), 600000) == 6


fills = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(500000, 700000), st.integers(1, 5000)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200)
@given(fills, st.integers(500000, 700000))
def test_pnl_equals_cash_flow(seq: list[tuple[Side, int, int]], mark: int) -> None:
    """Realized + unrealized must equal the plain cash-flow view: -Σ signed cash + position × mark."""
    p = Position(LIN)
    cash = Fraction(0)
    for side, price, qty in seq:
        p.apply_fill(side, price, qty)
        value = Fraction(price * qty, 10 ** (LIN.price_precision + LIN.size_precision))
        cash += -value if side is Side.BUY else value
    pos_value = Fraction(p.qty_raw * mark, 10 ** (LIN.price_precision + LIN.size_precision))
    assert p.realized + p.unrealized(mark) == cash + pos_value
    assert p.qty_raw == p.buy_qty_raw - p.sell_qty_raw


@settings(max_examples=100)
@given(fills, st.integers(500000, 700000))
def test_inverse_pnl_equals_cash_flow(seq: list[tuple[Side, int, int]], mark: int) -> None:
    """Inverse: each contract is worth cs/price BTC; PnL in BTC = Σ signed value changes."""
    p = Position(INV)
    btc = Fraction(0)
    cs = Fraction(INV.contract_size)
    for side, price, qty in seq:
        p.apply_fill(side, price, qty)
        value = qty * cs / Fraction(price, 10)
        btc += value if side is Side.BUY else -value  # buying contracts = paying their BTC value
    mark_value = p.qty_raw * cs / Fraction(mark, 10)
    assert p.realized + p.unrealized(mark) == btc - mark_value


def test_money_rounding_of_pnl() -> None:
    m = LIN.money(Fraction(1, 3))
    assert m.to_decimal() == Decimal("0.33333333")


@given(
    st.integers(1, 10**9),
    st.integers(1, 10**7),
    st.sampled_from(["0.0002", "0.0005", "-0.0001", "0.001", "0.00035"]),
)
def test_fee_raw_matches_exact_rounding(price_raw: int, qty_raw: int, rate: str) -> None:
    r = Fraction(Decimal(rate))
    assert LIN.fee_raw(price_raw, qty_raw, r) == LIN.money(LIN.notional_value(price_raw, qty_raw) * r).raw
    assert INV.fee_raw(price_raw, qty_raw, r) == INV.money(INV.notional_value(price_raw, qty_raw) * r).raw


@settings(max_examples=100)
@given(fills, st.integers(500000, 700000))
def test_float_pnl_tracks_exact_pnl(seq: list[tuple[Side, int, int]], mark: int) -> None:
    p = Position(LIN)
    for side, price, qty in seq:
        p.apply_fill(side, price, qty, 7)
    exact = float(p.net_pnl(mark))
    assert abs(p.net_pnl_float(mark) - exact) <= 1e-9 * max(1.0, abs(exact))

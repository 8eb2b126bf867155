"""Metrics pinned on small hand-computed examples, so a refactor cannot quietly change a number."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal
from statistics import NormalDist, mean, stdev

import numpy as np
import pytest

from bastion.research.metrics import (
    NS_PER_DAY,
    NS_PER_HOUR,
    NS_PER_MINUTE,
    NS_PER_SECOND,
    auto_period_ns,
    deflated_sharpe,
    expected_max_sharpe,
    fill_counts,
    format_period,
    inventory_stats,
    iso_utc,
    maker_taker_share,
    max_drawdown,
    max_drawdown_pct,
    period_pnl,
    probabilistic_sharpe,
    sharpe,
    sharpe_statement,
    sharpe_stats,
    summarize,
    traded_volume,
)
from bastion.research.result import BacktestResult, FillRecord

T0 = 1_700_000_000 * NS_PER_SECOND


def _fill(ts: int, side: str, price: str, qty: str, liq: str, fee: str = "0.01") -> FillRecord:
    return FillRecord(ts, f"c{ts}", side, price, qty, fee, liq)


# ------------------------------------------------------------------------------ periods


def test_auto_period_thresholds() -> None:
    assert auto_period_ns(0) == NS_PER_SECOND
    assert auto_period_ns(29 * NS_PER_MINUTE) == NS_PER_SECOND
    assert auto_period_ns(30 * NS_PER_MINUTE) == NS_PER_MINUTE
    assert auto_period_ns(NS_PER_DAY - 1) == NS_PER_MINUTE
    assert auto_period_ns(NS_PER_DAY) == NS_PER_HOUR
    assert auto_period_ns(89 * NS_PER_DAY) == NS_PER_HOUR
    assert auto_period_ns(90 * NS_PER_DAY) == NS_PER_DAY


def test_format_period() -> None:
    assert format_period(NS_PER_SECOND) == "1s"
    assert format_period(NS_PER_MINUTE) == "1min"
    assert format_period(4 * NS_PER_HOUR) == "4h"
    assert format_period(NS_PER_DAY) == "1d"
    assert format_period(250_000_000) == "250ms"
    assert format_period(7) == "7ns"


def test_sharpe_statement_wording() -> None:
    assert sharpe_statement(NS_PER_SECOND, 10_000, "USDT", 1800) == (
        "Sharpe: per-1s returns on capital 10,000 USDT, annualised with sqrt(31,536,000); 1,800 periods"
    )
    assert sharpe_statement(NS_PER_DAY, Decimal("2500.5")) == (
        "Sharpe: per-1d returns on capital 2,500.5, annualised with sqrt(365)"
    )
    assert sharpe_statement(NS_PER_HOUR, 1e6, "USD", risk_free=0.045).endswith(
        "sqrt(8,760), in excess of a 4.5% a-year risk-free rate"
    )


# ------------------------------------------------------------------------------ sharpe


def test_period_pnl_last_value_forward_filled() -> None:
    # Samples at 0s (baseline), 0.5s, 1.0s, 1.2s, 3.9s; period 1s → periods (0,1], (1,2], (2,3], (3,4].
    ts = T0 + np.array([0, 500_000_000, 1_000_000_000, 1_200_000_000, 3_900_000_000], dtype=np.int64)
    eq = np.array([0.0, 2.0, 3.0, 5.0, 4.0])
    pnl = period_pnl(ts, eq, period_ns=NS_PER_SECOND)
    # (0,1]: 3-0, (1,2]: 5-3, (2,3]: empty → 0, (3,4] partial: 4-5
    np.testing.assert_allclose(pnl, [3.0, 2.0, 0.0, -1.0])
    assert pnl.sum() == pytest.approx(eq[-1] - eq[0])


def test_sharpe_matches_independent_computation() -> None:
    rng = np.random.default_rng(7)
    n = 600
    ts = T0 + np.arange(n, dtype=np.int64) * NS_PER_SECOND
    eq = np.cumsum(rng.normal(0.05, 1.0, n))
    capital = 5_000.0
    # Independent: samples are exactly 1 s apart, so returns are sample-to-sample differences.
    rets = [(eq[i] - eq[i - 1]) / capital for i in range(1, n)]
    expected = mean(rets) / stdev(rets) * math.sqrt(365 * 24 * 3600)
    got = sharpe(ts, eq, capital=capital, period_ns=NS_PER_SECOND)
    assert got == pytest.approx(expected, rel=1e-9)
    # Auto period for a 10-minute run is 1 s.
    assert sharpe(ts, eq, capital=capital) == pytest.approx(expected, rel=1e-9)


def test_sharpe_sparse_equals_dense_with_gaps() -> None:
    rng = np.random.default_rng(3)
    offsets = np.sort(rng.choice(3600, size=300, replace=False)).astype(np.int64) * NS_PER_SECOND
    ts = T0 + offsets
    eq = np.cumsum(rng.normal(0.0, 1.0, ts.size))
    dense = period_pnl(ts, eq, period_ns=NS_PER_SECOND) / 1000.0
    expected = dense.mean() / dense.std(ddof=1) * math.sqrt(365 * 86400)
    st = sharpe_stats(ts, eq, capital=1000.0, period_ns=NS_PER_SECOND)
    assert st.n_periods == dense.size
    assert st.sharpe == pytest.approx(expected, rel=1e-9)
    d = dense - dense.mean()
    skew = (d**3).mean() / (d**2).mean() ** 1.5
    kurt = (d**4).mean() / (d**2).mean() ** 2
    assert st.skew == pytest.approx(skew, rel=1e-9)
    assert st.kurtosis == pytest.approx(kurt, rel=1e-9)


def test_sharpe_capital_cancels_without_risk_free_but_not_with_it() -> None:
    # With rf = 0, capital scales mean and std alike; with rf > 0, idle capital costs Sharpe.
    ts = T0 + np.arange(100, dtype=np.int64) * NS_PER_SECOND
    eq = np.cumsum(np.sin(np.arange(100)) + 0.1)
    a = sharpe(ts, eq, capital=1_000.0)
    b = sharpe(ts, eq, capital=1_000_000.0)
    assert a == pytest.approx(b, rel=1e-12)
    rf_small = sharpe(ts, eq, capital=1_000.0, risk_free=0.05)
    rf_big = sharpe(ts, eq, capital=1_000_000.0, risk_free=0.05)
    assert rf_big < rf_small < a
    # Hand check of the excess-return definition.
    pnl = period_pnl(ts, eq, period_ns=NS_PER_SECOND)
    r = pnl / 1_000.0 - 0.05 / (365 * 86400)
    assert rf_small == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(365 * 86400), rel=1e-9)


def test_sharpe_nan_when_flat_or_too_short() -> None:
    ts = T0 + np.arange(50, dtype=np.int64) * NS_PER_SECOND
    assert math.isnan(sharpe(ts, np.zeros(50), capital=100.0))
    assert math.isnan(sharpe(ts, np.full(50, 3.0), capital=100.0))
    # Linear PnL: constant returns, std 0.
    assert math.isnan(sharpe(ts, np.arange(50, dtype=float) * 0.1, capital=100.0))
    assert math.isnan(sharpe(ts[:1], np.array([1.0]), capital=100.0))
    assert math.isnan(sharpe(ts[:0], np.zeros(0), capital=100.0))
    st = sharpe_stats(ts, np.zeros(50), capital=100.0)
    assert "undefined" in st.statement


def test_sharpe_rejects_bad_inputs() -> None:
    ts = T0 + np.arange(5, dtype=np.int64)
    with pytest.raises(ValueError):
        sharpe(ts, np.zeros(5), capital=0.0)
    with pytest.raises(ValueError):
        sharpe(ts, np.zeros(4), capital=1.0)
    with pytest.raises(ValueError):
        sharpe(ts[::-1], np.zeros(5), capital=1.0)


# ------------------------------------------------------------------------------ PSR / DSR


def test_psr_zero_benchmark_equals_phi_of_hand_z() -> None:
    sr, n, skew, kurt = 0.1, 250, -0.5, 5.0
    z = sr * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    phi = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert probabilistic_sharpe(sr, 0.0, n, skew, kurt) == pytest.approx(phi, rel=1e-12)


def test_psr_normal_defaults_and_domain() -> None:
    # Normal returns (skew 0, kurt 3): denominator sqrt(1 + SR²/2).
    z = 0.05 * math.sqrt(99) / math.sqrt(1 + 0.05**2 / 2)
    assert probabilistic_sharpe(0.05, 0.0, 100) == pytest.approx(NormalDist().cdf(z))
    assert probabilistic_sharpe(0.0, 0.0, 100) == pytest.approx(0.5)
    assert math.isnan(probabilistic_sharpe(0.1, 0.0, 1))


def test_expected_max_sharpe() -> None:
    assert expected_max_sharpe(1, 0.04) == 0.0
    g = 0.5772156649015329
    nd = NormalDist()
    expected = 0.2 * ((1 - g) * nd.inv_cdf(1 - 1 / 10) + g * nd.inv_cdf(1 - 1 / (10 * math.e)))
    assert expected_max_sharpe(10, 0.04) == pytest.approx(expected)
    with pytest.raises(ValueError):
        expected_max_sharpe(0, 0.04)


def test_deflated_sharpe_falls_with_more_trials() -> None:
    sr, n_obs, skew, kurt, var = 0.15, 500, -0.2, 4.0, 0.002
    values = [deflated_sharpe(sr, n, n_obs, skew, kurt, var) for n in (1, 2, 10, 100, 1000)]
    assert all(a > b for a, b in itertools.pairwise(values))
    # One trial: nothing to deflate, DSR is PSR against 0.
    assert values[0] == pytest.approx(probabilistic_sharpe(sr, 0.0, n_obs, skew, kurt))
    assert all(0.0 < v < 1.0 for v in values)


# ------------------------------------------------------------------------------ drawdown


def test_max_drawdown_known_curve() -> None:
    eq = np.array([0.0, 5.0, 3.0, 8.0, 2.0, 4.0, 1.0, 9.0])
    dd, start, end = max_drawdown(eq)
    assert (dd, start, end) == (7.0, 3, 6)
    assert max_drawdown_pct(eq, 100) == pytest.approx(7.0)
    assert max_drawdown_pct(eq, Decimal("1000")) == pytest.approx(0.7)


def test_max_drawdown_edge_cases() -> None:
    assert max_drawdown(np.zeros(0)) == (0.0, 0, 0)
    assert max_drawdown(np.arange(10.0)) == (0.0, 0, 0)
    # Losing from the first sample: the first sample is the peak.
    assert max_drawdown(np.array([0.0, -1.0, -3.0, -2.0])) == (3.0, 0, 2)
    # Repeated peak: the earliest one starts the episode.
    assert max_drawdown(np.array([1.0, 4.0, 4.0, 0.0])) == (4.0, 1, 3)


# ------------------------------------------------------------------------------ inventory


def test_inventory_stats_unweighted() -> None:
    st = inventory_stats([0.0, 2.0, -1.0, 0.0])
    assert st["mean"] == pytest.approx(0.25)
    assert st["mean_abs"] == pytest.approx(0.75)
    assert st["max_long"] == 2.0
    assert st["max_short"] == -1.0
    assert st["flat_fraction"] == pytest.approx(0.5)
    assert st["std"] == pytest.approx(np.std([0.0, 2.0, -1.0, 0.0]))
    assert st["time_weighted"] is False


def test_inventory_stats_time_weighted() -> None:
    # Flat for 1 s, long 2 for 3 s, short 1 for 1 s; the last sample has no duration.
    ts = T0 + np.array([0, 1, 4, 5], dtype=np.int64) * NS_PER_SECOND
    st = inventory_stats([0.0, 2.0, -1.0, 0.0], ts)
    assert st["time_weighted"] is True
    assert st["mean"] == pytest.approx((0 * 1 + 2 * 3 - 1 * 1) / 5)
    assert st["mean_abs"] == pytest.approx((2 * 3 + 1) / 5)
    assert st["flat_fraction"] == pytest.approx(1 / 5)
    m = 1.0
    assert st["std"] == pytest.approx(math.sqrt(((0 - m) ** 2 + 3 * (2 - m) ** 2 + (-1 - m) ** 2) / 5))


def test_inventory_stats_never_short_and_empty() -> None:
    st = inventory_stats([1.0, 2.0])
    assert st["max_short"] == 0.0
    assert st["max_long"] == 2.0
    empty = inventory_stats([])
    assert empty["samples"] == 0
    assert math.isnan(float(empty["mean"]))


# ------------------------------------------------------------------------------ fills


def test_fill_shares_counts_and_exact_volume() -> None:
    fills = [
        _fill(1, "buy", "100.1", "0.1", "maker"),
        _fill(2, "sell", "100.2", "0.2", "maker"),
        _fill(3, "buy", "0.3", "0.3", "taker"),
        _fill(4, "sell", "100.3", "0.00000001", "maker"),
    ]
    assert maker_taker_share(fills) == (0.75, 0.25)
    assert fill_counts(fills) == {"fills": 4, "buys": 2, "sells": 2, "maker": 3, "taker": 1}
    qty, notional = traded_volume(fills)
    assert qty == Decimal("0.60000001")
    assert notional == Decimal("10.01") + Decimal("20.04") + Decimal("0.09") + Decimal("0.000001003")
    nan_m, nan_t = maker_taker_share([])
    assert math.isnan(nan_m) and math.isnan(nan_t)
    assert traded_volume([]) == (Decimal(0), Decimal(0))


# ------------------------------------------------------------------------------ summary


def _result(n: int = 120, fills: list[FillRecord] | None = None) -> BacktestResult:
    ts = T0 + np.arange(n, dtype=np.int64) * NS_PER_SECOND
    eq = np.cumsum(np.where(np.arange(n) % 3 == 0, -1.0, 1.0))
    inv = np.where(np.arange(n) % 4 == 0, 0.0, 0.5)
    mid = 100.0 + np.sin(np.arange(n) / 10.0)
    return BacktestResult(
        strategy="mm",
        instrument_id="BTCUSDT.BINANCE",
        settle_currency="USDT",
        data_source="synthetic",
        start_ns=int(T0),
        end_ns=int(T0 + n * NS_PER_SECOND),
        events=1000,
        orders=10,
        cancels=4,
        fills=fills if fills is not None else [],
        net_pnl="12.34",
        fees="0.50",
        funding="0",
        realized_pnl="12.84",
        final_position="0.5",
        ts=ts,
        equity=eq,
        inventory=inv,
        mid=mid,
        result_hash="deadbeef",
        run_seconds=0.5,
        params={"spread": Decimal("0.5"), "gamma": float("nan"), "levels": np.int64(3)},
        notes=["from test"],
    )


REQUIRED = {
    "strategy",
    "instrument",
    "events",
    "orders",
    "cancels",
    "fills",
    "net_pnl",
    "fees",
    "funding",
    "realized_pnl",
    "final_position",
    "maker_share",
    "taker_share",
    "traded_qty",
    "traded_notional",
    "sharpe",
    "sharpe_note",
    "max_drawdown",
    "max_drawdown_pct",
    "inventory",
    "start",
    "end",
    "duration_s",
    "result_hash",
    "run_seconds",
    "events_per_s",
    "params",
    "notes",
}


def test_summarize_keys_and_values() -> None:
    fills = [_fill(T0 + 5, "buy", "100", "0.5", "maker"), _fill(T0 + 9, "sell", "101", "0.5", "taker")]
    s = summarize(_result(fills=fills), 10_000)
    assert s.keys() >= REQUIRED
    assert s["net_pnl"] == "12.34" and s["fees"] == "0.50"
    assert s["traded_qty"] == "1.0" and s["traded_notional"] == "100.5"
    assert s["maker_share"] == 0.5 and s["taker_share"] == 0.5
    assert s["start"] == iso_utc(T0) == "2023-11-14T22:13:20.000000Z"
    assert s["duration_s"] == 120.0
    assert s["events_per_s"] == 2000.0
    assert s["sharpe_note"].startswith("Sharpe: per-1s returns on capital 10,000 USDT, annualised with sqrt(")
    assert isinstance(s["sharpe"], float)
    assert s["params"] == {"spread": "0.5", "gamma": None, "levels": 3}
    assert s["notes"][0] == "from test"
    assert "Sharpe extrapolates 2 minutes to a year" in s["notes"][1]
    assert s["capital"] == "10000"
    assert s["inventory"]["time_weighted"] is True


def test_summarize_empty_run_has_no_nan() -> None:
    r = _result()
    r.ts = np.zeros(0, dtype=np.int64)
    r.equity = np.zeros(0)
    r.inventory = np.zeros(0)
    r.mid = np.zeros(0)
    r.run_seconds = 0.0
    s = summarize(r, 1000.0)
    assert s["sharpe"] is None
    assert s["maker_share"] is None
    assert s["events_per_s"] is None
    assert s["max_drawdown"] == 0.0
    assert s["inventory"]["mean"] is None
    assert any("no fills" in n for n in s["notes"])
    assert any("no series samples" in n for n in s["notes"])


def test_summarize_tolerates_misaligned_series() -> None:
    r = _result()
    r.mid = np.zeros(3)
    s = summarize(r, 1000.0)
    assert any("mid has 3 samples" in n for n in s["notes"])

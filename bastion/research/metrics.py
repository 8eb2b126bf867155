"""Performance metrics that do not flatter a backtest.

The choices here all lean the same way: a number should be hard to make look good by accident.

* Sharpe is computed on returns = PnL / a capital base the caller must state, because a PnL
  series has no denominator of its own and any implicit one (peak equity, traded notional) can be
  chosen to flatter. With a zero risk-free rate the capital cancels in the ratio, but it still
  fixes what the reported mean and std of returns mean, what a risk-free rate is charged
  against, and the drawdown percentage. The sampling period, capital and annualisation factor
  are spelled out in a one-line statement so a reader can tell a 1-second Sharpe from a daily one.
* Periods with no new sample count as zero-change periods (time passed, nothing was earned), and
  the whole PnL of the run is in the returns: their sum equals the last minus the first sample.
* Max drawdown in percent is relative to the starting capital, not to the peak account value, so
  early gains cannot dilute a later loss.
* Exact totals (PnL, fees, traded volume) stay decimal strings; only ratios become floats.
* The deflated Sharpe ratio is here so research sweeps can discount the best of many trials.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, Inexact, localcontext
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.research.result import BacktestResult, FillRecord

__all__ = [
    "NS_PER_DAY",
    "NS_PER_HOUR",
    "NS_PER_MINUTE",
    "NS_PER_SECOND",
    "NS_PER_YEAR",
    "SharpeStats",
    "aligned_series",
    "auto_period_ns",
    "deflated_sharpe",
    "expected_max_sharpe",
    "fill_counts",
    "format_period",
    "inventory_stats",
    "iso_utc",
    "maker_taker_share",
    "max_drawdown",
    "max_drawdown_pct",
    "period_pnl",
    "probabilistic_sharpe",
    "sharpe",
    "sharpe_statement",
    "sharpe_stats",
    "summarize",
    "traded_volume",
]

NS_PER_SECOND = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_SECOND
NS_PER_HOUR = 60 * NS_PER_MINUTE
NS_PER_DAY = 24 * NS_PER_HOUR
# Crypto trades every day of the year, so a year is 365 days of 24 hours, not 252 sessions.
NS_PER_YEAR = 365 * NS_PER_DAY

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Sampling period
# --------------------------------------------------------------------------------------------


def auto_period_ns(span_ns: int) -> int:
    """Pick a Sharpe sampling period that gives on the order of a thousand periods.

    Too fine a period over a long run mostly measures microstructure noise and serial
    correlation; too coarse a period over a short run leaves too few periods to estimate a
    standard deviation at all. The thresholds keep the count between roughly 30 and 2,200.
    """
    if span_ns < 30 * NS_PER_MINUTE:
        return NS_PER_SECOND
    if span_ns < NS_PER_DAY:
        return NS_PER_MINUTE
    if span_ns < 90 * NS_PER_DAY:
        return NS_PER_HOUR
    return NS_PER_DAY


def format_period(period_ns: int) -> str:
    """Name a period in the largest whole unit, so the Sharpe statement reads ``per-1min``."""
    for unit_ns, unit in (
        (NS_PER_DAY, "d"),
        (NS_PER_HOUR, "h"),
        (NS_PER_MINUTE, "min"),
        (NS_PER_SECOND, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ):
        if period_ns % unit_ns == 0:
            return f"{period_ns // unit_ns}{unit}"
    return f"{period_ns}ns"


def _format_number(x: float | Decimal) -> str:
    """Thousands-separated, without a spurious ``.0`` for whole numbers."""
    if isinstance(x, Decimal):
        if x == x.to_integral_value():
            return f"{int(x):,}"
        return f"{x:,f}"
    if math.isfinite(x) and x == int(x):
        return f"{int(x):,}"
    return f"{x:,.6g}" if abs(x) >= 1e6 else f"{x:,.6f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------------
# Sharpe
# --------------------------------------------------------------------------------------------


def _as_ts(ts_ns: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.asarray(ts_ns, dtype=np.int64).reshape(-1)


def _as_float(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _check_series(ts: npt.NDArray[np.int64], values: FloatArray, name: str) -> None:
    if ts.shape != values.shape:
        raise ValueError(f"ts and {name} differ in length: {ts.size} vs {values.size}")
    if ts.size > 1 and bool(np.any(np.diff(ts) < 0)):
        raise ValueError("ts must be non-decreasing (ns since the epoch, in sample order)")


def _bucket_index(ts: npt.NDArray[np.int64], period_ns: int) -> npt.NDArray[np.int64]:
    """Period number of each sample: ``ceil((t − t0) / P)``, so the first sample is period 0."""
    return np.asarray(-((ts[0] - ts) // period_ns), dtype=np.int64)


def _bucket_changes(
    ts: npt.NDArray[np.int64], equity: FloatArray, period_ns: int
) -> tuple[FloatArray, npt.NDArray[np.int64], int]:
    """PnL change per period, sparsely: (changes, their period numbers, n_periods).

    The state at the first timestamp ``t0`` is the baseline, not a period. Period ``k ≥ 1`` is
    ``(t0 + (k−1)·P, t0 + k·P]`` and ends at the last sample inside it (as-of sampling on the grid
    ``t0 + k·P``); empty periods carry the previous value forward, so their change is exactly zero
    and needs no storage: a 1-second period over a year of data stays cheap. The last period may
    be partial, so the changes add up to the run's whole PnL (last sample − baseline), and data
    sampled exactly every ``P`` gives exactly its sample-to-sample differences.
    """
    idx = _bucket_index(ts, period_ns)
    last = np.append(np.flatnonzero(np.diff(idx) != 0), ts.size - 1)
    values = equity[last]
    periods = idx[last]
    # last[0] is the baseline (period 0, the samples at t0); every later entry is a period ≥ 1.
    return np.diff(values), periods[1:], int(idx[-1])


def period_pnl(ts_ns: npt.ArrayLike, equity: npt.ArrayLike, *, period_ns: int) -> FloatArray:
    """Dense per-period PnL changes (same convention as :func:`sharpe`), for plots and tests.

    Materialises every period, so prefer :func:`sharpe_stats` when the period is fine and the
    run long.
    """
    if period_ns <= 0:
        raise ValueError(f"period_ns must be positive, got {period_ns}")
    ts, eq = _as_ts(ts_ns), _as_float(equity)
    _check_series(ts, eq, "equity")
    if ts.size == 0:
        return np.zeros(0, dtype=np.float64)
    changes, periods, n = _bucket_changes(ts, eq, period_ns)
    dense = np.zeros(n, dtype=np.float64)
    dense[periods - 1] = changes
    return dense


@dataclass(frozen=True, slots=True)
class SharpeStats:
    """Sharpe and the facts needed to read it (and to deflate it later in a sweep).

    ``sharpe_per_period`` is the raw, non-annualised ratio that the probabilistic and deflated
    Sharpe formulas expect; ``kurtosis`` is Pearson's (3 for a normal), not excess kurtosis.
    """

    sharpe: float
    sharpe_per_period: float
    n_periods: int
    period_ns: int
    periods_per_year: float
    capital: float
    mean: float
    std: float
    skew: float
    kurtosis: float
    statement: str


def _periods_per_year(period_ns: int) -> float:
    return NS_PER_YEAR / period_ns


def sharpe_statement(
    period_ns: int,
    capital: float | Decimal,
    currency: str = "",
    n_periods: int | None = None,
    risk_free: float = 0.0,
) -> str:
    """One line saying exactly what the Sharpe number is, to print next to it.

    Example: ``Sharpe: per-1s returns on capital 10,000 USDT, annualised with sqrt(31,536,000);
    1,800 periods``. A Sharpe without its period and denominator cannot be compared to anything.
    """
    cap = _format_number(capital if isinstance(capital, Decimal) else float(capital))
    cap = f"{cap} {currency}" if currency else cap
    text = (
        f"Sharpe: per-{format_period(period_ns)} returns on capital {cap}, "
        f"annualised with sqrt({_format_number(_periods_per_year(period_ns))})"
    )
    if risk_free:
        text += f", in excess of a {_format_number(100.0 * risk_free)}% a-year risk-free rate"
    if n_periods is not None:
        text += f"; {n_periods:,} period{'' if n_periods == 1 else 's'}"
    return text


def sharpe_stats(
    ts_ns: npt.ArrayLike,
    equity: npt.ArrayLike,
    *,
    capital: float | Decimal,
    period_ns: int | None = None,
    currency: str = "",
    risk_free: float = 0.0,
) -> SharpeStats:
    """Sharpe ratio of a PnL curve, with the moments and statement that go with it.

    ``equity`` is mark-to-market PnL in the settlement currency (not account value). It is
    sampled at a fixed period (last value per bucket, forward-filled, see
    :func:`_bucket_changes`); each period's PnL change is divided by ``capital`` to make a
    return. ``capital`` is required because PnL has no denominator of its own: returns, their
    mean and std, and any risk-free charge only mean something against a stated capital. (With
    ``risk_free=0`` the capital cancels in mean/std, so Sharpe itself does not move with it;
    with a positive rate, more idle capital rightly lowers Sharpe.) ``risk_free`` is an annual
    simple rate, charged pro rata per period. Annualisation multiplies the per-period ratio by
    ``sqrt(365 days / period)``, which assumes independent periods: serially correlated PnL
    (a market maker's inventory swings) makes this overstate the true annual Sharpe.

    ``period_ns=None`` picks :func:`auto_period_ns` from the sample span. Sharpe is NaN with
    fewer than 2 periods or when the returns do not vary (std is 0, or below 1e-12 of the mean,
    which is only float rounding of a constant).
    """
    cap = float(capital)
    if not (cap > 0 and math.isfinite(cap)):
        raise ValueError(f"capital must be a positive finite number, got {capital!r}")
    ts, eq = _as_ts(ts_ns), _as_float(equity)
    _check_series(ts, eq, "equity")
    if not bool(np.all(np.isfinite(eq))):
        raise ValueError("equity contains NaN or inf; the runner must record a finite PnL")
    span = int(ts[-1] - ts[0]) if ts.size else 0
    period = auto_period_ns(span) if period_ns is None else int(period_ns)
    if period <= 0:
        raise ValueError(f"period_ns must be positive, got {period_ns}")
    ppy = _periods_per_year(period)
    nan = math.nan

    if ts.size == 0:
        n = 0
        changes = np.zeros(0, dtype=np.float64)
    else:
        changes, _, n = _bucket_changes(ts, eq, period)
    statement = sharpe_statement(period, capital, currency, n, risk_free)
    if n < 2:
        return SharpeStats(
            nan, nan, n, period, ppy, cap, nan, nan, nan, nan, statement + ": undefined, needs 2 or more"
        )

    r = changes / cap
    zeros = n - r.size  # empty buckets: return exactly 0
    mean = float(r.sum()) / n
    d = r - mean
    m2 = float(np.sum(d * d)) + zeros * mean * mean
    m3 = float(np.sum(d * d * d)) + zeros * (-mean) ** 3
    m4 = float(np.sum((d * d) ** 2)) + zeros * mean**4
    std = math.sqrt(m2 / (n - 1))
    if std == 0.0 or std <= 1e-12 * abs(mean):
        return SharpeStats(
            nan, nan, n, period, ppy, cap, mean, std, nan, nan, statement + ": undefined, PnL did not vary"
        )
    mean -= risk_free * period / NS_PER_YEAR  # excess return; the moments above are shift-invariant
    pop_var = m2 / n
    skew = (m3 / n) / pop_var**1.5
    kurt = (m4 / n) / pop_var**2
    sr = mean / std
    return SharpeStats(sr * math.sqrt(ppy), sr, n, period, ppy, cap, mean, std, skew, kurt, statement)


def sharpe(
    ts_ns: npt.ArrayLike,
    equity: npt.ArrayLike,
    *,
    capital: float | Decimal,
    period_ns: int | None = None,
    risk_free: float = 0.0,
) -> float:
    """Annualised Sharpe of a PnL curve on a stated capital; see :func:`sharpe_stats` for why.

    Returns NaN when fewer than 2 periods or the PnL never varies.
    """
    return sharpe_stats(ts_ns, equity, capital=capital, period_ns=period_ns, risk_free=risk_free).sharpe


# --------------------------------------------------------------------------------------------
# Probabilistic and deflated Sharpe (Bailey & López de Prado)
# --------------------------------------------------------------------------------------------


def probabilistic_sharpe(
    sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurt: float = 3.0
) -> float:
    """Probability that the true Sharpe exceeds ``sr_benchmark`` given an estimate ``sr``.

    Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier" (2012)::

        PSR(SR*) = Φ( (SR − SR*) · sqrt(T − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4 · SR²) )

    with SR and SR* per-period (not annualised), T = ``n_obs`` returns, γ3 = skewness and
    γ4 = Pearson kurtosis (3 for normal returns; pass excess kurtosis + 3). Fat tails and negative
    skew widen the estimate's error, so the same SR is worth less. NaN when T < 2 or the
    variance term is not positive (inputs outside the formula's domain).
    """
    if n_obs < 2 or not all(math.isfinite(v) for v in (sr, sr_benchmark, skew, kurt)):
        return math.nan
    var_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if var_term <= 0.0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var_term)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: int, sr_var_trials: float) -> float:
    """Expected best Sharpe among ``n_trials`` independent zero-skill trials.

    Bailey & López de Prado, "The Deflated Sharpe Ratio" (2014), eq. for SR0::

        SR0 = sqrt(V[SR_n]) · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))

    with γ the Euler–Mascheroni constant. A single trial has no selection bias, so SR0 = 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if sr_var_trials < 0 or not math.isfinite(sr_var_trials):
        raise ValueError(f"sr_var_trials must be a finite variance ≥ 0, got {sr_var_trials}")
    if n_trials == 1:
        return 0.0
    z = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials) + EULER_GAMMA * _NORMAL.inv_cdf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return math.sqrt(sr_var_trials) * z


def deflated_sharpe(
    sr: float, n_trials: int, n_obs: int, skew: float, kurt: float, sr_var_trials: float
) -> float:
    """Deflated Sharpe ratio: PSR against the Sharpe the best of N lucky trials would show.

    Bailey & López de Prado, "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest
    Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 2014::

        DSR = PSR(SR0) = Φ( (SR − SR0) · sqrt(T − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4 · SR²) )
        SR0 = sqrt(V[SR_n]) · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))

    ``sr`` is the selected trial's per-period (non-annualised) Sharpe, ``n_trials`` = N the number
    of independent configurations tried, ``n_obs`` = T its number of returns, ``skew`` = γ3,
    ``kurt`` = γ4 (Pearson, 3 for normal), ``sr_var_trials`` = V[SR_n] the variance of the
    per-period Sharpe across trials. A sweep that reports its best Sharpe without this is
    reporting the maximum of noise; the more trials, the higher SR0 and the lower the DSR.
    """
    return probabilistic_sharpe(sr, expected_max_sharpe(n_trials, sr_var_trials), n_obs, skew, kurt)


# --------------------------------------------------------------------------------------------
# Drawdown and inventory
# --------------------------------------------------------------------------------------------


def max_drawdown(equity: npt.ArrayLike) -> tuple[float, int, int]:
    """Largest peak-to-trough fall of the PnL curve, in the settlement currency.

    Returns ``(drawdown ≥ 0, peak index, trough index)``; ``(0.0, 0, 0)`` for an empty or
    never-falling curve. Measured in currency rather than percent because the curve is PnL, and
    a percentage needs a capital base (see :func:`max_drawdown_pct`). The earliest peak of the
    worst fall is reported so the shaded span in a report covers the whole episode.
    """
    eq = _as_float(equity)
    if eq.size == 0:
        return 0.0, 0, 0
    peaks = np.maximum.accumulate(eq)
    dd = peaks - eq
    end = int(np.argmax(dd))
    depth = float(dd[end])
    if depth <= 0.0:
        return 0.0, 0, 0
    start = int(np.argmax(eq[: end + 1] == peaks[end]))
    return depth, start, end


def max_drawdown_pct(equity: npt.ArrayLike, capital: float | Decimal) -> float:
    """Max drawdown as a percentage of the starting capital.

    Starting capital rather than peak account value: dividing by a peak inflated by earlier gains
    would make the same loss look smaller.
    """
    cap = float(capital)
    if not (cap > 0 and math.isfinite(cap)):
        raise ValueError(f"capital must be a positive finite number, got {capital!r}")
    return 100.0 * max_drawdown(equity)[0] / cap


def inventory_stats(
    inventory: npt.ArrayLike, ts_ns: npt.ArrayLike | None = None
) -> dict[str, float | int | bool]:
    """How much inventory a strategy carried and for how long.

    With ``ts_ns`` each sample is weighted by how long it held (until the next sample; the last
    sample has no duration), because samples taken on events cluster where the market is busy
    and an unweighted mean would over-count those moments. Without timestamps, or when all
    samples share one instant, samples weigh equally. ``max_short`` is signed (≤ 0); ``std`` is
    the (weighted) population standard deviation; ``flat_fraction`` is the share of time with
    exactly zero position. Values are NaN for an empty series.
    """
    inv = _as_float(inventory)
    n = int(inv.size)
    if n == 0:
        nan = math.nan
        return {
            "mean": nan,
            "mean_abs": nan,
            "max_long": nan,
            "max_short": nan,
            "std": nan,
            "flat_fraction": nan,
            "samples": 0,
            "time_weighted": False,
        }
    weights = np.ones(n, dtype=np.float64)
    time_weighted = False
    if ts_ns is not None:
        ts = _as_ts(ts_ns)
        _check_series(ts, inv, "inventory")
        if n > 1 and ts[-1] > ts[0]:
            weights = np.append(np.diff(ts).astype(np.float64), 0.0)
            time_weighted = True
    total = float(weights.sum())
    mean = float(np.dot(weights, inv)) / total
    var = float(np.dot(weights, (inv - mean) ** 2)) / total
    return {
        "mean": mean,
        "mean_abs": float(np.dot(weights, np.abs(inv))) / total,
        "max_long": max(float(inv.max()), 0.0),
        "max_short": min(float(inv.min()), 0.0),
        "std": math.sqrt(var),
        "flat_fraction": float(weights[inv == 0.0].sum()) / total,
        "samples": n,
        "time_weighted": time_weighted,
    }


# --------------------------------------------------------------------------------------------
# Fills
# --------------------------------------------------------------------------------------------


def maker_taker_share(fills: Sequence[FillRecord]) -> tuple[float, float]:
    """Fractions of fills (by count) that added and that took liquidity; NaN, NaN with no fills.

    By count because that is what queue-position modelling gets right or wrong one fill at a time;
    a market maker that is mostly taker is paying the spread it thinks it earns.
    """
    if not fills:
        return math.nan, math.nan
    maker = sum(1 for f in fills if f.liquidity == "maker")
    taker = sum(1 for f in fills if f.liquidity == "taker")
    return maker / len(fills), taker / len(fills)


def fill_counts(fills: Sequence[FillRecord]) -> dict[str, int]:
    """Counts by side and by liquidity, so shares can be checked against raw numbers."""
    return {
        "fills": len(fills),
        "buys": sum(1 for f in fills if f.side == "buy"),
        "sells": sum(1 for f in fills if f.side == "sell"),
        "maker": sum(1 for f in fills if f.liquidity == "maker"),
        "taker": sum(1 for f in fills if f.liquidity == "taker"),
    }


def traded_volume(fills: Sequence[FillRecord]) -> tuple[Decimal, Decimal]:
    """Total quantity and notional (Σ price·qty) traded, exactly.

    Summed as Decimal in a wide context that traps any rounding, so the totals are exact or the
    call fails; a float sum of many fills would drift in the last digits.
    """
    with localcontext() as ctx:
        ctx.prec = 200
        ctx.traps[Inexact] = True
        qty = Decimal(0)
        notional = Decimal(0)
        for f in fills:
            q = Decimal(f.qty)
            qty += q
            notional += Decimal(f.price) * q
    return qty, notional


def _decimal_text(d: Decimal) -> str:
    """Plain notation (``0.00000001``, never ``1E-8``), since readers parse these as text."""
    return format(d, "f")


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def iso_utc(ns: int) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``; exact ns stay in the ``*_ns`` fields."""
    sec, rem = divmod(int(ns), NS_PER_SECOND)
    dt = datetime.fromtimestamp(sec, UTC).replace(microsecond=rem // 1000)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _num(x: float, ndigits: int) -> float | None:
    """Round for display; NaN and inf become None because JSON has no NaN."""
    if not math.isfinite(x):
        return None
    return round(float(x), ndigits)


def _sig(x: float, digits: int = 10) -> float | None:
    """Round to significant digits: for quantities whose scale is unknown (inventory units)."""
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0.0
    return round(float(x), digits - 1 - math.floor(math.log10(abs(x))))


def _jsonable(obj: Any) -> Any:
    """Coerce params into JSON-ready values: exact numbers as text, NaN as None, rest as str."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Decimal):
        return _decimal_text(obj)
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        return [_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    return str(obj)


def aligned_series(
    result: BacktestResult,
) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray, FloatArray, list[str]]:
    """The result's series as arrays, each aligned with ``ts`` or else empty, plus notes.

    A series whose length differs from ``ts`` is a runner bug. It is dropped with a note rather
    than raised, because a summary or report that fails to render hides every other finding.
    """
    ts = _as_ts(result.ts)
    notes: list[str] = []
    out: list[FloatArray] = []
    for name in ("equity", "inventory", "mid"):
        arr = _as_float(getattr(result, name))
        if arr.size != ts.size:
            notes.append(f"{name} has {arr.size} samples but ts has {ts.size}: ignored")
            arr = np.zeros(0, dtype=np.float64)
        out.append(arr)
    return ts, out[0], out[1], out[2], notes


def summarize(result: BacktestResult, capital: float | Decimal, *, risk_free: float = 0.0) -> dict[str, Any]:
    """The run in one JSON-ready dict: what the report shows and what sweeps compare.

    Exact totals are copied as decimal strings; derived ratios are rounded floats; undefined
    values are None (JSON has no NaN). ``capital`` is the base for Sharpe and drawdown percent
    and is echoed back, with the Sharpe statement, so the numbers cannot be quoted without it.
    The per-period Sharpe, skew, kurtosis and period count are included for deflating the Sharpe
    across a sweep (:func:`deflated_sharpe`).
    """
    cap = capital if isinstance(capital, Decimal) else Decimal(str(capital))
    ts, equity, inventory_series, _, series_notes = aligned_series(result)
    notes: list[str] = list(result.notes) + series_notes
    ets = ts if equity.size else ts[:0]

    st = sharpe_stats(ets, equity, capital=capital, currency=result.settle_currency, risk_free=risk_free)
    dd, dd_start, dd_end = max_drawdown(equity)
    maker, taker = maker_taker_share(result.fills)
    counts = fill_counts(result.fills)
    qty, notional = traded_volume(result.fills)
    inv = inventory_stats(inventory_series, ts if inventory_series.size else None)

    if ts.size == 0:
        notes.append("no series samples were recorded: Sharpe, drawdown and inventory are undefined")
    if not result.fills:
        notes.append("no fills: the strategy never traded")
    if not math.isfinite(st.sharpe):
        notes.append(st.statement)
    elif st.n_periods * st.period_ns < 30 * NS_PER_DAY:
        span_h = st.n_periods * st.period_ns / NS_PER_HOUR
        span = (
            f"{span_h * 60:.0f} minutes"
            if span_h < 2
            else f"{span_h:.1f} hours"
            if span_h < 48
            else (f"{span_h / 24:.1f} days")
        )
        notes.append(f"Sharpe extrapolates {span} to a year and assumes independent periods: indicative only")

    duration_s = (result.end_ns - result.start_ns) / NS_PER_SECOND
    run_s = float(result.run_seconds)
    inventory: dict[str, Any] = {k: (_sig(float(v)) if isinstance(v, float) else v) for k, v in inv.items()}
    has_dd = dd > 0.0 and ts.size > 0
    return {
        "strategy": result.strategy,
        "instrument": result.instrument_id,
        "settle_currency": result.settle_currency,
        "data_source": result.data_source,
        "capital": _decimal_text(cap.normalize()) if cap == cap.to_integral_value() else _decimal_text(cap),
        "risk_free": risk_free,
        "events": int(result.events),
        "orders": int(result.orders),
        "cancels": int(result.cancels),
        "fills": counts["fills"],
        "buys": counts["buys"],
        "sells": counts["sells"],
        "maker_fills": counts["maker"],
        "taker_fills": counts["taker"],
        "net_pnl": result.net_pnl,
        "fees": result.fees,
        "funding": result.funding,
        "realized_pnl": result.realized_pnl,
        "final_position": result.final_position,
        "maker_share": _num(maker, 6),
        "taker_share": _num(taker, 6),
        "traded_qty": _decimal_text(qty),
        "traded_notional": _decimal_text(notional),
        "sharpe": _num(st.sharpe, 4),
        "sharpe_note": st.statement,
        "sharpe_period_s": st.period_ns / NS_PER_SECOND,
        "sharpe_periods": st.n_periods,
        "sharpe_per_period": _sig(st.sharpe_per_period, 8),
        "returns_skew": _num(st.skew, 6),
        "returns_kurtosis": _num(st.kurtosis, 6),
        "max_drawdown": _sig(dd, 10),
        "max_drawdown_pct": _num(100.0 * dd / float(cap), 4),
        "max_drawdown_start": iso_utc(int(ts[dd_start])) if has_dd else None,
        "max_drawdown_end": iso_utc(int(ts[dd_end])) if has_dd else None,
        "inventory": inventory,
        "start": iso_utc(result.start_ns),
        "end": iso_utc(result.end_ns),
        "start_ns": int(result.start_ns),
        "end_ns": int(result.end_ns),
        "duration_s": round(duration_s, 9),
        "samples": int(ts.size),
        "result_hash": result.result_hash,
        "run_seconds": round(run_s, 6),
        "events_per_s": round(result.events / run_s, 1) if run_s > 0 else None,
        "params": _jsonable(result.params),
        "notes": notes,
    }

"""What a backtest hands to metrics and reports: plain arrays, exact totals and the result hash.

The runner fills this once at the end of a run; metrics and reports read it and never reach back
into the engine, so a report can be rebuilt from a saved result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class FillRecord:
    ts: int  # ns, when the fill happened at the venue
    client_order_id: str
    side: str  # "buy" | "sell"
    price: str  # exact decimal text
    qty: str  # exact decimal text
    fee: str  # exact decimal text, settlement currency (negative = rebate)
    liquidity: str  # "maker" | "taker"


@dataclass(slots=True)
class BacktestResult:
    """Everything a run produced.

    Series are sampled by the runner (at most a few thousand points per series, so a report
    stays small): ``ts`` in ns, ``equity`` = settlement-currency mark-to-market PnL since the start
    (realized + unrealized − fees + funding), ``inventory`` = signed position in the instrument's
    units, ``mid`` = mid price. Exact totals are decimal strings.
    """

    strategy: str
    instrument_id: str
    settle_currency: str
    data_source: str
    start_ns: int
    end_ns: int
    events: int
    orders: int
    cancels: int
    fills: list[FillRecord]
    net_pnl: str
    fees: str
    funding: str
    realized_pnl: str
    final_position: str
    ts: npt.NDArray[np.int64]
    equity: npt.NDArray[np.float64]
    inventory: npt.NDArray[np.float64]
    mid: npt.NDArray[np.float64]
    result_hash: str
    run_seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    balances: dict[str, str] = field(default_factory=dict)  # change of each currency over the run

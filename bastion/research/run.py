"""From a data path and a strategy name to a finished backtest: the one call the CLI makes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bastion.data.schema import FUNDING_RATE_PRECISION, DataType, Table
from bastion.model.instruments import KNOWN_INSTRUMENTS, Instrument, InstrumentKind
from bastion.research.backtest import BacktestRun, SafetySetup
from bastion.research.bar_backtest import BarBacktestRun
from bastion.research.result import BacktestResult
from bastion.research.streams import build_stream
from bastion.risk.config import RiskConfig
from bastion.strategies import load_strategy
from bastion.venues.sim.bars import BarArrays
from bastion.venues.sim.venue import LatencyModel, SimVenueConfig

Progress = Callable[[str, int, int], None]


@dataclass(slots=True)
class BacktestSpec:
    strategy: str = "avellaneda_stoikov"
    data: list[Path] = field(default_factory=list)
    instrument: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    order_latency_ms: float = 1.0
    response_latency_ms: float = 1.0
    feed_latency_ms: float = 0.0
    feed_latency_from_data: bool = False
    partial_fills: bool = True
    skip_bad: bool = False
    capital: float = 10_000.0
    risk: RiskConfig | None = None  # breaker, compliance and limits; None: the defaults
    bar_fill_at: Literal["close", "next_open"] = "close"
    bar_limit_rule: Literal["through", "touch"] = "through"


def is_catalog(path: Path) -> bool:
    return path.is_dir() and any((path / dt.value).is_dir() for dt in DataType)


def _stream_groups(paths: list[Path]) -> list[list[Path]]:
    """Consecutive files that continue one recorded stream (Binance ``_20240808`` then
    ``_20240809`` of the same instrument) are loaded together so the book carries across."""
    from bastion.data.binance_ws import infer_instrument_id
    from bastion.data.detect import MULTI_FILE, detect_format

    groups: list[list[Path]] = []
    last_key: tuple[str, str] | None = None
    for p in paths:
        key: tuple[str, str] | None = None
        if not p.is_dir():
            fmt = detect_format(p)
            if fmt in MULTI_FILE:
                key = (fmt, infer_instrument_id(p) if fmt == "binance_ws" else str(p.parent))
        if key is not None and key == last_key:
            groups[-1].append(p)
        else:
            groups.append([p])
        last_key = key
    return groups


def load_tables(
    paths: list[Path], *, skip_bad: bool = False, progress: Progress | None = None
) -> list[Table]:
    """Load raw files (format recognised from content and name) or a Parquet catalog."""
    from bastion.data.catalog import Catalog
    from bastion.data.detect import load_any

    tables: list[Table] = []
    groups = _stream_groups(paths)
    for k, group in enumerate(groups):
        if progress is not None:
            progress(f"loading {group[0].name}", k, len(groups))
        p = group[0]
        if is_catalog(p):
            cat = Catalog(p)
            for data_type, instrument_id, _rows in cat.list():
                tables.append(cat.read(DataType(data_type), instrument_id))
        else:
            tables.extend(load_any(group if len(group) > 1 else p, skip_bad=skip_bad))
    if progress is not None:
        progress("loaded", len(groups), len(groups))
    return tables


def pick_instrument(tables: list[Table], wanted: str | None) -> Instrument:
    tradable = (DataType.BOOK_DELTA, DataType.TRADE, DataType.QUOTE, DataType.BAR)
    ids = sorted({t.instrument_id for t in tables if t.data_type in tradable})
    if not ids:
        raise ValueError("the data holds no order book, trades, quotes or bars to backtest on")
    if wanted is not None:
        if wanted not in ids:
            raise ValueError(f"instrument {wanted} not in the data; found: {', '.join(ids) or 'none'}")
        chosen = wanted
    elif len(ids) == 1:
        chosen = ids[0]
    else:
        raise ValueError(
            f"the data holds several instruments ({', '.join(ids) or 'none'}): pick one with --instrument"
        )
    if chosen in KNOWN_INSTRUMENTS:
        return KNOWN_INSTRUMENTS[chosen]
    return generic_instrument(chosen, [t for t in tables if t.instrument_id == chosen])


def generic_instrument(instrument_id: str, tables: list[Table]) -> Instrument:
    """A spot instrument on the data's own grid, with conservative fees (0.1 % maker and taker).

    Lets any supported file be backtested; the result notes that the definition was inferred.
    """
    symbol, _, venue = instrument_id.rpartition(".")
    pp = max(t.price_precision for t in tables)
    sp = max(t.size_precision for t in tables)
    perp = symbol.endswith("-PERP")
    return Instrument(
        symbol,
        venue or "UNKNOWN",
        InstrumentKind.LINEAR_PERPETUAL if perp else InstrumentKind.SPOT,
        symbol.removesuffix("-PERP")[:-4] or symbol,
        symbol.removesuffix("-PERP")[-4:] or "QUOTE",
        Decimal(1).scaleb(-pp),
        Decimal(1).scaleb(-sp),
        maker_fee=Decimal("0.001"),
        taker_fee=Decimal("0.001"),
        extra={"inferred": True},
    )


def _safety(spec: BacktestSpec) -> SafetySetup:
    """The gateway of a backtest runs the configured breaker, compliance and limits."""
    return SafetySetup(capital=Fraction(Decimal(str(spec.capital))), risk=spec.risk or RiskConfig())


def venue_config(spec: BacktestSpec) -> SimVenueConfig:
    ms = 1_000_000
    return SimVenueConfig(
        latency=LatencyModel(
            order_ns=int(spec.order_latency_ms * ms),
            response_ns=int(spec.response_latency_ms * ms),
            feed_ns=int(spec.feed_latency_ms * ms),
            feed_from_data=spec.feed_latency_from_data,
        ),
        partial_fills=spec.partial_fills,
    )


def bar_arrays(tables: list[Table], inst: Instrument) -> tuple[BarArrays, Instrument]:
    """Concatenate an instrument's bar tables in time order on one (the finest) price grid."""
    bars = sorted(
        (t for t in tables if t.data_type is DataType.BAR), key=lambda t: int(t.columns["ts_event"][0])
    )
    pp = max([inst.price_precision, *(t.price_precision for t in bars)])
    sp = max([inst.size_precision, *(t.size_precision for t in bars)])
    inst = inst.refined(pp, sp)

    def col(name: str, prec_of: str, want: int) -> np.ndarray:  # type: ignore[type-arg]
        parts = [t.columns[name] * (10 ** (want - getattr(t, prec_of))) for t in bars]
        return np.ascontiguousarray(np.concatenate(parts).astype(np.int64))

    ts = np.concatenate([t.columns["ts_event"] for t in bars]).astype(np.int64)
    close_ts = np.concatenate([t.columns["ts_local"] for t in bars]).astype(np.int64)
    if len(ts) > 1 and not (np.diff(ts) > 0).all():
        raise ValueError(f"{inst.id}: bar times overlap or go backwards across the given files")
    arrays = BarArrays(
        ts, close_ts,
        col("open", "price_precision", pp), col("high", "price_precision", pp),
        col("low", "price_precision", pp), col("close", "price_precision", pp),
        col("volume", "size_precision", sp),
    )  # fmt: skip
    return arrays, inst


def funding_events(tables: list[Table]) -> list[tuple[int, Fraction]]:
    out: list[tuple[int, Fraction]] = []
    for t in tables:
        if t.data_type is DataType.FUNDING:
            scale = 10**FUNDING_RATE_PRECISION
            out += [
                (int(ts), Fraction(int(r), scale))
                for ts, r in zip(t.columns["ts_event"], t.columns["rate"], strict=True)
            ]
    return sorted(out)


def run_backtest(spec: BacktestSpec, progress: Progress | None = None) -> BacktestResult:
    """Load the data, pick L2 replay or bar mode from what it holds, run the strategy.

    A catalog's order-book data is streamed part by part (memory stays flat in its length);
    raw files are parsed into memory first.
    """
    if len(spec.data) == 1 and is_catalog(spec.data[0]):
        streamed = _run_streamed_catalog(spec, progress)
        if streamed is not None:
            return streamed
    tables = load_tables(spec.data, skip_bad=spec.skip_bad, progress=progress)
    inst = pick_instrument(tables, spec.instrument)
    mine = [t for t in tables if t.instrument_id == inst.id]
    strategy = load_strategy(spec.strategy, spec.params)

    def run_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("replaying", done, total)

    notes = (
        ["instrument definition inferred from the data (0.1 % fees)"] if inst.extra.get("inferred") else []
    )
    if any(t.data_type in (DataType.BOOK_DELTA, DataType.TRADE, DataType.QUOTE) for t in mine):
        stream = build_stream(mine, inst)
        result = BacktestRun(
            stream, strategy, venue_config(spec), progress=run_progress, safety=_safety(spec)
        ).run()
    elif any(t.data_type is DataType.BAR for t in mine):
        bars, binst = bar_arrays(mine, inst)
        source = ", ".join(sorted({t.source for t in mine}))
        result = BarBacktestRun(
            bars, binst, strategy, fill_at=spec.bar_fill_at, limit_rule=spec.bar_limit_rule,
            source=source, funding=funding_events(mine), progress=run_progress, safety=_safety(spec),
        ).run()  # fmt: skip
    else:
        raise ValueError(f"{inst.id}: no order book, trades or bars to backtest on")
    result.notes.extend(notes)
    return result


def _run_streamed_catalog(spec: BacktestSpec, progress: Progress | None) -> BacktestResult | None:
    """L2 replay straight from a catalog; None when the catalog holds no book or trades for it."""
    from bastion.data.catalog import Catalog
    from bastion.research.streams import MARKET_TYPES, catalog_stream

    root = spec.data[0]
    listed = Catalog(root).list()
    market = sorted({iid for dt, iid, _ in listed if DataType(dt) in MARKET_TYPES})
    if not market:
        return None
    if spec.instrument is None and len(market) > 1:
        raise ValueError(
            f"the catalog holds several instruments ({', '.join(market)}): pick one with --instrument"
        )
    iid = spec.instrument or market[0]
    if iid not in market:
        return None
    if iid not in KNOWN_INSTRUMENTS:
        raise ValueError(
            f"no instrument definition for {iid} (tick, lot, fees); known: {sorted(KNOWN_INSTRUMENTS)}"
        )
    stream = catalog_stream(root, KNOWN_INSTRUMENTS[iid])
    strategy = load_strategy(spec.strategy, spec.params)

    def run_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("replaying", done, total)

    return BacktestRun(
        stream, strategy, venue_config(spec), progress=run_progress, safety=_safety(spec)
    ).run()

"""From a data path and a strategy name to a finished backtest: the one call the CLI makes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.data.schema import DataType, Table
from bastion.model.instruments import KNOWN_INSTRUMENTS, Instrument
from bastion.research.backtest import BacktestRun
from bastion.research.result import BacktestResult
from bastion.strategies import load_strategy
from bastion.venues.sim.replay import EventStream, build_stream
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


def is_catalog(path: Path) -> bool:
    return path.is_dir() and any((path / dt.value).is_dir() for dt in DataType)


def load_tables(
    paths: list[Path], *, skip_bad: bool = False, progress: Progress | None = None
) -> list[Table]:
    """Load raw files (format recognised from content and name) or a Parquet catalog."""
    from bastion.data.catalog import Catalog
    from bastion.data.detect import load_any

    tables: list[Table] = []
    for k, p in enumerate(paths):
        if progress is not None:
            progress(f"loading {p.name}", k, len(paths))
        if is_catalog(p):
            cat = Catalog(p)
            for data_type, instrument_id, _rows in cat.list():
                tables.append(cat.read(DataType(data_type), instrument_id))
        else:
            tables.extend(load_any(p, skip_bad=skip_bad))
    if progress is not None:
        progress("loaded", len(paths), len(paths))
    return tables


def pick_instrument(tables: list[Table], wanted: str | None) -> Instrument:
    ids = sorted({t.instrument_id for t in tables if t.data_type in (DataType.BOOK_DELTA, DataType.TRADE)})
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
    if chosen not in KNOWN_INSTRUMENTS:
        raise ValueError(
            f"no instrument definition for {chosen} (tick, lot, fees); known: {sorted(KNOWN_INSTRUMENTS)}"
        )
    return KNOWN_INSTRUMENTS[chosen]


def prepare_stream(spec: BacktestSpec, progress: Progress | None = None) -> EventStream:
    tables = load_tables(spec.data, skip_bad=spec.skip_bad, progress=progress)
    inst = pick_instrument(tables, spec.instrument)
    mine = [t for t in tables if t.instrument_id == inst.id]
    return build_stream(mine, inst)


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


def run_backtest(spec: BacktestSpec, progress: Progress | None = None) -> BacktestResult:
    stream = prepare_stream(spec, progress)
    strategy = load_strategy(spec.strategy, spec.params)

    def run_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("replaying", done, total)

    return BacktestRun(stream, strategy, venue_config(spec), progress=run_progress).run()

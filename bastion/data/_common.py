"""Plumbing shared by the loaders: the bad-row policy, table assembly, precisions, file opening.

Keeping these in one place is what makes every loader answer the same way to the same problem: a
bad row raises ``DataError`` with file and line unless the caller asked to skip it, in which case
it is counted and logged; a table always leaves with exactly its schema's columns and dtypes.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import structlog

from bastion.data.schema import SCHEMAS, DataError, DataType, Table
from bastion.model.fixed import MAX_PRECISION
from bastion.model.instruments import KNOWN_INSTRUMENTS

log = structlog.get_logger("bastion.data")

PathLike = str | Path
OnGap = Literal["resync", "raise"]

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

GZIP_MAGIC = b"\x1f\x8b"

# Per-row warnings stop after this many per source; the total is always in meta["bad_rows"].
_MAX_LOGGED = 100
_MAX_SAMPLES = 20


class BadRows:
    """The ``skip_bad`` policy: raise on the first bad row, or count, sample and log it."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.count = 0
        self.samples: list[str] = []

    def __call__(self, path: str, line: int | None, reason: str) -> None:
        err = DataError(path, line, reason)
        if not self.skip_bad:
            raise err
        self.count += 1
        if len(self.samples) < _MAX_SAMPLES:
            self.samples.append(str(err))
        if self.count <= _MAX_LOGGED:
            log.warning("bad_row_skipped", file=path, line=line, reason=reason)
        elif self.count == _MAX_LOGGED + 1:
            log.warning("bad_row_logging_suppressed", file=path, after=_MAX_LOGGED)

    def meta(self) -> dict[str, Any]:
        return {"bad_rows": self.count, "bad_row_samples": list(self.samples)}


def as_paths(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(paths, str | Path):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError("no input paths given")
    return out


def source_name(paths: Sequence[Path]) -> str:
    """What ``Table.source`` records: the absolute path(s), ';'-joined for a multi-file stream."""
    return ";".join(str(p.resolve()) for p in paths)


def open_text(path: Path) -> IO[str]:
    """Open a text file, transparently gunzipping it when it starts with the gzip magic."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def schema_dtypes(data_type: DataType) -> dict[str, np.dtype[Any]]:
    return {f.name: np.dtype(f.type.to_pandas_dtype()) for f in SCHEMAS[data_type]}


def empty_columns(data_type: DataType) -> dict[str, Any]:
    return {name: np.empty(0, dtype=dt) for name, dt in schema_dtypes(data_type).items()}


def make_table(
    data_type: DataType,
    instrument_id: str,
    price_precision: int,
    size_precision: int,
    columns: dict[str, Any],
    *,
    source: str,
    meta: dict[str, Any],
) -> Table:
    """Build a Table with exactly the schema's columns, cast without loss.

    Lists of Python ints are converted with an explicit dtype so a value beyond int64 raises
    instead of becoming an object array or wrapping around.
    """
    dtypes = schema_dtypes(data_type)
    if set(columns) != set(dtypes):
        raise ValueError(f"{data_type}: columns {sorted(columns)} != schema {sorted(dtypes)}")
    out: dict[str, Any] = {}
    n: int | None = None
    for name, dt in dtypes.items():
        col = columns[name]
        try:
            if isinstance(col, np.ndarray):
                if col.dtype != dt:
                    cast = col.astype(dt)
                    if not np.array_equal(cast, col):
                        raise OverflowError(f"column {name} does not fit {dt}")
                    col = cast
                arr = np.ascontiguousarray(col)
            else:
                arr = np.array(col, dtype=dt)
        except OverflowError as exc:
            raise DataError(source, None, f"{name}: value out of range for {dt}: {exc}") from exc
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise ValueError(f"{data_type}: column {name} has {len(arr)} rows, expected {n}")
        out[name] = arr
    for p in (price_precision, size_precision):
        if not 0 <= p <= MAX_PRECISION:
            raise ValueError(f"precision {p} out of range 0..{MAX_PRECISION}")
    return Table(data_type, instrument_id, price_precision, size_precision, out, source, meta)


def known_precisions(instrument_id: str) -> tuple[int, int] | None:
    inst = KNOWN_INSTRUMENTS.get(instrument_id)
    if inst is None:
        return None
    return inst.price_precision, inst.size_precision


def floor_precisions(instrument_id: str, price_needed: int, size_needed: int) -> tuple[int, int]:
    """The table precision: never coarser than the data needs, never coarser than the instrument.

    A known instrument's precision is a floor, not a cap, because tick and lot sizes change over
    time (BTCUSDT-PERP had a 0.01 tick in 2020; BTCUSDT spot volumes had 6 decimals in 2018), and
    refusing or rounding that history would be worse than carrying a finer precision in the table.
    """
    known = known_precisions(instrument_id)
    if known is None:
        return price_needed, size_needed
    return max(known[0], price_needed), max(known[1], size_needed)


def json_default(obj: Any) -> Any:
    """json.dumps fallback for the values loaders put into ``Table.meta``."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_meta(meta: dict[str, Any]) -> str:
    return json.dumps(meta, default=json_default, sort_keys=True)


def drop_bad_rows(
    bad: BadRows, path: str, n: int, checks: list[tuple[Any, str]], *, line_offset: int = 0
) -> Any:
    """Apply the bad-row policy to vectorised checks; returns the boolean mask of rows to keep.

    ``checks`` are (mask of bad rows, reason) pairs; a row's reason is the first that matches.
    Rows are reported in order, so without ``skip_bad`` the first bad row raises. For columnar
    sources the reported line is the 0-based row index (plus ``line_offset``).
    """
    keep = np.ones(n, dtype=bool)
    any_bad = np.zeros(n, dtype=bool)
    for mask, _ in checks:
        any_bad |= mask
    for i in np.flatnonzero(any_bad):
        reason = next(r for m, r in checks if m[i])
        bad(path, int(i) + line_offset, f"row {int(i)}: {reason}")
        keep[i] = False
    return keep


def not_increasing(ts: Any, *, strict: bool) -> Any:
    """Mask of rows whose timestamp is not after (strict) / before (non-strict) every earlier row."""
    out = np.zeros(len(ts), dtype=bool)
    if len(ts) > 1:
        prev_max = np.maximum.accumulate(ts)[:-1]
        out[1:] = ts[1:] <= prev_max if strict else ts[1:] < prev_max
    return out


def float_columns_to_raw(
    path: str,
    columns: dict[str, Any],
    *,
    cap: int,
    floor: int = 0,
    round_beyond_cap: bool = False,
) -> tuple[dict[str, Any], int, int]:
    """Convert float columns that share one precision to raw int64.

    The precision is the smallest that puts every value on its decimal grid (at least ``floor``,
    at most ``cap``). Beyond ``cap`` a price is an error, because rounding it would change what
    was traded; a volume (``round_beyond_cap``) is rounded half-even at ``cap`` decimals, because
    float noise in an aggregated volume below 1e-8 base units has no economic meaning. Returns
    (raw columns, precision, number of rounded values).
    """
    from bastion.data._numbers import floats_to_raw, infer_float_decimals, off_grid

    values = np.concatenate([np.asarray(c, dtype=np.float64) for c in columns.values()])
    d = infer_float_decimals(values, cap)
    rounded = 0
    if d is None:
        if not round_beyond_cap:
            for name, col in columns.items():
                idx = np.flatnonzero(off_grid(np.asarray(col, dtype=np.float64), cap))
                if idx.size:
                    i = int(idx[0])
                    raise DataError(path, i, f"row {i}: {name} {col[i]!r} needs more than {cap} decimals")
        rounded = int(off_grid(values, cap).sum())
        d = cap
    prec = max(d, floor)
    out: dict[str, Any] = {}
    for name, col in columns.items():
        raw, bad_i = floats_to_raw(
            np.asarray(col, dtype=np.float64), prec, rel_tol=None if round_beyond_cap else 1e-9
        )
        if bad_i >= 0:
            raise DataError(path, bad_i, f"row {bad_i}: {name} {col[bad_i]!r} does not fit {prec} decimals")
        out[name] = raw
    return out, prec, rounded


def text_precision(texts: Iterable[Any], floor: int = 0) -> int:
    """Decimals needed by decimal strings (at least ``floor``). Values that are not numbers are
    ignored here; the parsing pass reports them as bad rows with their line."""
    from bastion.data._numbers import text_decimals

    best = floor
    seen: set[str] = set()
    for t in texts:
        if type(t) is not str or t in seen:
            continue
        seen.add(t)
        try:
            d = text_decimals(t)
        except ValueError:
            continue
        if d > best:
            best = d
    return best

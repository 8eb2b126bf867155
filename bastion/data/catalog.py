"""The Parquet catalog: loaded tables on disk, one file per source, read back exactly.

Layout: ``<root>/<data_type>/<instrument_id>/<source-stem>.parquet``. Each file has the schema
from ``SCHEMAS`` and carries in its Parquet metadata what is needed to read the raw integers and
to trace them back: ``instrument_id``, ``data_type``, ``price_precision``, ``size_precision``,
``source`` and the loader's ``meta`` (JSON). Keeping one part per source means re-importing a
file replaces exactly its own rows, and a part can always be traced to the file it came from.

Reading concatenates the parts of one (data_type, instrument_id) in time order: rows are sorted by
ts_local, then part index (parts ordered by their first ts_local, then name), then seq — seq is
only meaningful inside one source — and the sort is stable, so the rows of one venue message keep
their order. Parts with different precisions are rescaled to the finest (exact: multiplying by a
power of ten). Parts that overlap in time are not merged blindly: for bars, marks and funding,
identical rows are de-duplicated and disagreeing rows raise DataError (two sources disagree; pick
one with ``source=``); overlapping tick data (trades, quotes, book deltas) always raises, since
interleaving two copies of a stream would corrupt a replay.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bastion.data._common import OnGap, PathLike, dumps_meta, log, schema_dtypes
from bastion.data.detect import LOADERS, UnknownFormatError, detect_format
from bastion.data.schema import FLAG_CLEAR, SCHEMAS, DataError, DataType, Table

Progress = Callable[[int, int, str], None]

PRICE_COLUMNS: dict[DataType, tuple[str, ...]] = {
    DataType.BOOK_DELTA: ("price",),
    DataType.TRADE: ("price",),
    DataType.QUOTE: ("bid_price", "ask_price"),
    DataType.BAR: ("open", "high", "low", "close"),
    DataType.FUNDING: ("rate",),
    DataType.MARK: ("price",),
}
SIZE_COLUMNS: dict[DataType, tuple[str, ...]] = {
    DataType.BOOK_DELTA: ("size",),
    DataType.TRADE: ("size",),
    DataType.QUOTE: ("bid_size", "ask_size"),
    DataType.BAR: ("volume",),
    DataType.FUNDING: (),
    DataType.MARK: (),
}
# Types whose overlapping parts may be merged when they agree (one row per timestamp).
_SERIES_KEYS: dict[DataType, tuple[str, ...]] = {
    DataType.BAR: ("ts_event", "interval_ns"),
    DataType.MARK: ("ts_event",),
    DataType.FUNDING: ("ts_event",),
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_EXTS = (".gz", ".csv", ".json", ".jsonl", ".data", ".feather", ".parquet", ".ftr", ".arrow", ".pq")


class NotInCatalog(KeyError):
    """No parts for the requested (data_type, instrument_id[, source])."""


def source_stem(source: str) -> str:
    """``/x/btcusdt_20240808.gz;/x/btcusdt_20240809.gz`` -> ``btcusdt_20240808+btcusdt_20240809``."""
    stems = []
    for s in source.split(";"):
        name = Path(s).name
        while True:
            for ext in _EXTS:
                if name.lower().endswith(ext) and len(name) > len(ext):
                    name = name[: -len(ext)]
                    break
            else:
                break
        stems.append(re.sub(r"[^A-Za-z0-9._\-=+]", "_", name) or "part")
    return "+".join(stems)


@dataclass(slots=True)
class Part:
    path: Path
    name: str
    data_type: DataType
    instrument_id: str
    price_precision: int
    size_precision: int
    source: str
    meta: dict[str, Any]
    rows: int


@dataclass(slots=True)
class FileResult:
    """What happened to one input (a file, or a multi-file stream such as Binance 0808+0809)."""

    paths: list[str]
    format: str | None
    status: str  # "ok" | "unsupported" | "error"
    rows: int = 0
    bad_rows: int = 0
    gaps: int = 0
    tables: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class ImportSummary:
    files: list[FileResult]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bad_rows(self) -> int:
        return sum(f.bad_rows for f in self.files)

    @property
    def gaps(self) -> int:
        return sum(f.gaps for f in self.files)

    def by_status(self, status: str) -> list[FileResult]:
        return [f for f in self.files if f.status == status]


def _read_meta(path: Path) -> dict[bytes, bytes]:
    md = pq.read_schema(path).metadata or {}
    return dict(md)


class Catalog:
    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)

    # -- writing -----------------------------------------------------------------------------
    def _dir(self, data_type: DataType, instrument_id: str) -> Path:
        if not _ID.match(instrument_id):
            raise ValueError(f"instrument id {instrument_id!r} is not usable as a directory name")
        return self.root / DataType(data_type).value / instrument_id

    def write(self, table: Table, *, name: str | None = None) -> Path:
        """Write one table as a part; replaces the part previously written from the same source.

        The part is named after the source; if a different source already uses that name, a
        short hash of the source is appended, so two files with the same name in different
        directories never overwrite each other.
        """
        dt = DataType(table.data_type)
        dtypes = schema_dtypes(dt)
        if set(table.columns) != set(dtypes):
            raise ValueError(f"{dt}: columns {sorted(table.columns)} != schema {sorted(dtypes)}")
        n = len(table)
        for col, want in dtypes.items():
            arr = table.columns[col]
            if not isinstance(arr, np.ndarray) or arr.dtype != want or len(arr) != n:
                raise ValueError(f"{dt}: column {col} must be a {want} array of {n} rows")
        tl, seq = table.columns["ts_local"], table.columns["seq"]
        if n > 1:
            step_tl, step_seq = np.diff(tl), np.diff(seq)
            if np.any((step_tl < 0) | ((step_tl == 0) & (step_seq < 0))):
                raise ValueError(f"{dt} {table.instrument_id}: rows are not in (ts_local, seq) order")
        d = self._dir(dt, table.instrument_id)
        d.mkdir(parents=True, exist_ok=True)
        stem = name or source_stem(table.source or "unnamed")
        path = d / f"{stem}.parquet"
        if path.exists() and name is None:
            existing = _read_meta(path).get(b"source", b"").decode()
            if existing != table.source:
                digest = hashlib.sha1(table.source.encode()).hexdigest()[:8]
                path = d / f"{stem}~{digest}.parquet"
        metadata = {
            b"data_type": dt.value.encode(),
            b"instrument_id": table.instrument_id.encode(),
            b"price_precision": str(table.price_precision).encode(),
            b"size_precision": str(table.size_precision).encode(),
            b"source": table.source.encode(),
            b"meta": dumps_meta(table.meta).encode(),
        }
        schema = SCHEMAS[dt].with_metadata(metadata)
        arrow = pa.Table.from_arrays(
            [pa.array(table.columns[f.name], type=f.type) for f in schema], schema=schema
        )
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(arrow, tmp, compression="zstd")
        os.replace(tmp, path)
        return path

    # -- reading -----------------------------------------------------------------------------
    def parts(self, data_type: DataType | str, instrument_id: str) -> list[Part]:
        dt = DataType(data_type)
        d = self._dir(dt, instrument_id)
        out = []
        for path in sorted(d.glob("*.parquet")) if d.is_dir() else []:
            md = _read_meta(path)
            try:
                out.append(
                    Part(
                        path=path,
                        name=path.stem,
                        data_type=DataType(md[b"data_type"].decode()),
                        instrument_id=md[b"instrument_id"].decode(),
                        price_precision=int(md[b"price_precision"]),
                        size_precision=int(md[b"size_precision"]),
                        source=md[b"source"].decode(),
                        meta=json.loads(md[b"meta"]),
                        rows=pq.ParquetFile(path).metadata.num_rows,
                    )
                )
            except (KeyError, ValueError) as exc:
                raise DataError(str(path), None, f"not a catalog part (metadata: {exc})") from exc
        return out

    def _load_part(self, part: Part) -> dict[str, np.ndarray[Any, Any]]:
        table = pq.read_table(part.path)
        want = SCHEMAS[part.data_type]
        if [(f.name, f.type) for f in table.schema] != [(f.name, f.type) for f in want]:
            raise DataError(str(part.path), None, f"schema differs from {part.data_type}: {table.schema}")
        dtypes = schema_dtypes(part.data_type)
        return {c: table.column(c).to_numpy().astype(dtypes[c], copy=False) for c in dtypes}

    def read(
        self,
        data_type: DataType | str,
        instrument_id: str,
        *,
        source: str | None = None,
        interval_ns: int | None = None,
    ) -> Table:
        """All rows of one (data_type, instrument_id), in time order.

        ``source`` keeps only parts whose name, source path or file name equals it.
        ``interval_ns`` keeps only bars of that interval; bars of different intervals are never
        mixed silently (DataError lists the intervals present when it is needed and missing).
        """
        dt = DataType(data_type)
        parts = self.parts(dt, instrument_id)
        if source is not None:
            parts = [
                p
                for p in parts
                if source in (p.name, p.source) or any(Path(s).name == source for s in p.source.split(";"))
            ]
        if not parts:
            raise NotInCatalog(
                f"no {dt.value} data for {instrument_id}" + (f" from {source}" if source else "")
            )
        loaded = [(p, self._load_part(p)) for p in parts]
        if dt is DataType.BAR:
            if interval_ns is not None:
                loaded = [(p, _take(c, c["interval_ns"] == interval_ns)) for p, c in loaded]
                loaded = [(p, c) for p, c in loaded if len(c["ts_event"])]
                if not loaded:
                    raise NotInCatalog(f"no {interval_ns} ns bars for {instrument_id}")
            else:
                kinds = {tuple(np.unique(c["interval_ns"]).tolist()) for _, c in loaded if len(c["ts_event"])}
                if len(kinds) > 1:
                    raise DataError(
                        str(self._dir(dt, instrument_id)),
                        None,
                        f"bars of several intervals {sorted(kinds)} from {[p.name for p, _ in loaded]}: "
                        "pass interval_ns or source",
                    )
        if len(loaded) == 1:
            p, cols = loaded[0]
            return Table(dt, p.instrument_id, p.price_precision, p.size_precision, cols, p.source, p.meta)
        return self._merge(dt, instrument_id, loaded)

    def _merge(self, dt: DataType, instrument_id: str, loaded: list[tuple[Part, dict[str, Any]]]) -> Table:
        pp = max(p.price_precision for p, _ in loaded)
        sp = max(p.size_precision for p, _ in loaded)
        rescaled = []
        for p, cols in loaded:
            cols = dict(cols)
            for names, have, want in (
                (PRICE_COLUMNS[dt], p.price_precision, pp),
                (SIZE_COLUMNS[dt], p.size_precision, sp),
            ):
                if have != want:
                    factor = 10 ** (want - have)
                    for c in names:
                        v = cols[c]
                        if v.size and np.abs(v).max() > np.iinfo(np.int64).max // factor:
                            raise DataError(
                                str(p.path), None, f"{c} overflows int64 when rescaled to {want} decimals"
                            )
                        cols[c] = v * factor
            rescaled.append((p, cols))
        # Part order: by first ts_local, then name (deterministic whatever the import order).
        rescaled.sort(key=lambda pc: (int(pc[1]["ts_local"][0]) if len(pc[1]["ts_local"]) else 0, pc[0].name))
        spans = [
            (int(c["ts_local"].min()), int(c["ts_local"].max()), p) for p, c in rescaled if len(c["ts_local"])
        ]
        overlap = any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))
        if overlap and dt not in _SERIES_KEYS:
            raise DataError(
                str(self._dir(dt, instrument_id)),
                None,
                f"parts {[sp_[2].name for sp_ in spans]} overlap in time; pass source= to pick one",
            )
        if dt is DataType.BOOK_DELTA:
            for part, pcols in rescaled:
                if len(pcols["flags"]) and not int(pcols["flags"][0]) & FLAG_CLEAR:
                    raise DataError(
                        str(part.path),
                        None,
                        "book part does not start with a snapshot, so it cannot follow another part's book; "
                        "pass source= to read it alone",
                    )
        col_names = list(rescaled[0][1])
        cols_all = {c: np.concatenate([pc[1][c] for pc in rescaled]) for c in col_names}
        part_idx = np.concatenate(
            [np.full(len(pc[1]["ts_event"]), i, dtype=np.int64) for i, pc in enumerate(rescaled)]
        )
        row_idx = np.arange(len(part_idx))
        order = np.lexsort((row_idx, cols_all["seq"], part_idx, cols_all["ts_local"]))
        cols_all = {c: v[order] for c, v in cols_all.items()}
        part_idx = part_idx[order]
        dropped = 0
        if overlap:
            cols_all, part_idx, dropped = _dedupe(dt, cols_all, part_idx, [p for p, _ in rescaled])
        meta = {
            "parts": [
                {
                    "name": p.name,
                    "source": p.source,
                    "rows": p.rows,
                    "price_precision": p.price_precision,
                    "size_precision": p.size_precision,
                    "meta": p.meta,
                }
                for p, _ in rescaled
            ],
            "duplicates_dropped": dropped,
        }
        source = ";".join(p.source for p, _ in rescaled)
        return Table(dt, instrument_id, pp, sp, cols_all, source, meta)

    def list(self) -> list[tuple[DataType, str, int]]:
        out: list[tuple[DataType, str, int]] = []
        if not self.root.is_dir():
            return out
        for dt_dir in sorted(self.root.iterdir()):
            try:
                dt = DataType(dt_dir.name)
            except ValueError:
                continue
            for inst_dir in sorted(p for p in dt_dir.iterdir() if p.is_dir()):
                rows = sum(pq.ParquetFile(f).metadata.num_rows for f in inst_dir.glob("*.parquet"))
                out.append((dt, inst_dir.name, rows))
        return out

    # -- importing ---------------------------------------------------------------------------
    def import_path(
        self,
        path: PathLike,
        *,
        instrument_id: str | None = None,
        skip_bad: bool = False,
        on_gap: OnGap = "resync",
        progress: Progress | None = None,
    ) -> ImportSummary:
        """Import a supported file, or every file under a directory (recursively).

        Binance websocket files of one instrument in one directory are loaded together, in name
        order, as one session (the ``_20240809`` file continues ``_20240808`` without a snapshot).
        Unsupported files get an "unsupported" entry, files with bad data an "error" entry; the
        import carries on with the next file either way.
        """
        root = Path(path)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif root.is_file():
            files = [root]
        else:
            raise FileNotFoundError(str(root))
        groups: list[tuple[str | None, list[Path], str | None]] = []  # (format, paths, reason)
        ws_groups: dict[tuple[Path, str], list[Path]] = {}
        for f in files:
            try:
                fmt = detect_format(f)
            except UnknownFormatError as exc:
                groups.append((None, [f], exc.reason))
                continue
            if fmt == "binance_ws":
                key = (f.parent, re.sub(r"_\d{8}$", "", f.name.removesuffix(".gz")))
                if key not in ws_groups:
                    ws_groups[key] = []
                    groups.append((fmt, ws_groups[key], None))
                ws_groups[key].append(f)
            else:
                groups.append((fmt, [f], None))
        results: list[FileResult] = []
        done = 0
        total = len(files)
        for group_fmt, paths, reason in groups:
            paths.sort()
            if group_fmt is None:
                results.append(FileResult([str(p) for p in paths], None, "unsupported", error=reason))
                log.info("import_unsupported", file=str(paths[0]), reason=reason)
            else:
                results.append(self._import_one(group_fmt, paths, instrument_id, skip_bad, on_gap))
            done += len(paths)
            if progress is not None:
                progress(done, total, paths[0].name)
        return ImportSummary(results)

    def _import_one(
        self, fmt: str, paths: Sequence[Path], instrument_id: str | None, skip_bad: bool, on_gap: OnGap
    ) -> FileResult:
        names = [str(p) for p in paths]
        arg: Any = list(paths) if len(paths) > 1 else paths[0]
        try:
            tables = LOADERS[fmt](arg, instrument_id=instrument_id, skip_bad=skip_bad, on_gap=on_gap)
        except DataError as exc:
            log.error("import_failed", file=names[0], error=str(exc))
            return FileResult(names, fmt, "error", error=str(exc))
        res = FileResult(names, fmt, "ok")
        if tables:
            res.bad_rows = int(tables[0].meta.get("bad_rows", 0))
            res.gaps = len(tables[0].meta.get("gaps", []))
        for t in tables:
            entry: dict[str, Any] = {
                "data_type": t.data_type.value,
                "instrument_id": t.instrument_id,
                "rows": len(t),
            }
            if len(t):
                entry["part"] = str(self.write(t))
            res.tables.append(entry)
            res.rows += len(t)
        return res


def _take(cols: dict[str, Any], mask: Any) -> dict[str, Any]:
    return {c: v[mask] for c, v in cols.items()}


def _dedupe(
    dt: DataType, cols: dict[str, Any], part_idx: Any, parts: list[Part]
) -> tuple[dict[str, Any], Any, int]:
    """Drop rows that repeat an earlier row's key with identical values; raise if values differ."""
    keys = _SERIES_KEYS[dt]
    n = len(part_idx)
    order = np.lexsort(tuple(cols[k] for k in reversed(keys)))  # stable: earlier rows first
    sorted_keys = [cols[k][order] for k in keys]
    same_key = np.ones(max(n - 1, 0), dtype=bool)
    for k in sorted_keys:
        same_key &= k[1:] == k[:-1]
    dup_pos = np.flatnonzero(same_key) + 1  # positions in `order` that repeat the previous key
    value_cols = [c for c in cols if c not in ("ts_local", "seq") and c not in keys]
    drop = np.zeros(n, dtype=bool)
    for pos in dup_pos:
        a, b = order[pos - 1], order[pos]
        if all(cols[c][a] == cols[c][b] for c in value_cols):
            drop[b] = True
        else:
            diffs = {c: (int(cols[c][a]), int(cols[c][b])) for c in value_cols if cols[c][a] != cols[c][b]}
            raise DataError(
                parts[int(part_idx[b])].source,
                None,
                f"disagrees with {parts[int(part_idx[a])].source} at ts_event {int(cols['ts_event'][b])}: "
                f"{diffs}; pass source= to pick one",
            )
    keep = ~drop
    return {c: v[keep] for c, v in cols.items()}, part_idx[keep], int(drop.sum())

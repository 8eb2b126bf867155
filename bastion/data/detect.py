"""Recognise a data file's format from its name and its first bytes, and load it.

A file is only accepted when its content and its name agree: the content decides the family
(gzip websocket capture, feather, parquet, CSV header, JSON response) and the name must carry the
matching extension and, where the content cannot tell (freqtrade reuses one candle schema for
candles, mark prices and funding), the kind. A mismatch or an unknown file raises
``UnknownFormatError`` naming what was seen, rather than guessing a loader that would then
fail deep inside with a confusing message (or, worse, load the wrong thing).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from bastion.data._common import GZIP_MAGIC, OnGap, PathLike, as_paths
from bastion.data.backtesting_csv import is_backtesting_header, load_backtesting_csv
from bastion.data.binance_csv import HEADER as BINANCE_DEPTH_HEADER
from bastion.data.binance_csv import load_binance_depth_csv
from bastion.data.binance_ws import load_binance_ws
from bastion.data.bybit import load_bybit_orderbook
from bastion.data.freqtrade import (
    load_freqtrade_funding,
    load_freqtrade_mark,
    load_freqtrade_ohlcv,
    load_freqtrade_trades,
    parse_freqtrade_name,
)
from bastion.data.hyperliquid import load_hyperliquid_ws
from bastion.data.kraken import kraken_kind, load_kraken_ohlc, load_kraken_trades
from bastion.data.parquet_samples import (
    QUOTE_COLUMNS,
    TRADE_COLUMNS,
    load_parquet_quotes,
    load_parquet_trades,
)
from bastion.data.schema import DataError, Table
from bastion.data.tardis import load_tardis, tardis_kind

FORMATS = (
    "binance_ws",
    "hyperliquid_ws",
    "bybit_orderbook",
    "freqtrade_ohlcv",
    "freqtrade_mark",
    "freqtrade_funding",
    "freqtrade_trades",
    "parquet_trades",
    "parquet_quotes",
    "binance_depth_csv",
    "tardis_book_snapshot",
    "tardis_incremental_book_L2",
    "tardis_trades",
    "tardis_quotes",
    "kraken_ohlc",
    "kraken_trades",
    "backtesting_csv",
)

_CANDLE = {"date", "open", "high", "low", "close", "volume"}
_FT_TRADES = {"timestamp", "id", "side", "price", "amount"}
_FIRST_LINE_LIMIT = 4 << 20  # a Binance REST snapshot line is ~60 KB; stop long before memory hurts


class UnknownFormatError(DataError):
    """The file is not one of the supported formats (or its name and content disagree)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, None, f"unsupported format: {reason}")


def _ext_ok(name: str, *exts: str) -> bool:
    return any(name.endswith(e) for e in exts)


def _first_line(fh: Any) -> bytes:
    line: bytes = fh.readline(_FIRST_LINE_LIMIT)
    return line


def _sniff_text_line(ps: str, name: str, line: str, *, gz: bool) -> str:
    """Format of a text file (maybe gunzipped) from its first line."""
    stripped = line.strip()
    head, sep, rest = stripped.partition(" ")
    if sep and head.isdigit() and rest.startswith("{"):
        # <local_ts_ns> <json>: a websocket capture
        if not gz or not name.endswith(".gz"):
            raise UnknownFormatError(ps, "a websocket capture must be a .gz file")
        try:
            obj = json.loads(rest)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if "stream" in obj or "lastUpdateId" in obj:
                return "binance_ws"
            if "channel" in obj:
                return "hyperliquid_ws"
        elif rest.startswith(('{"stream":', '{"lastUpdateId":')):
            return "binance_ws"  # a first line longer than the sniff limit
        raise UnknownFormatError(ps, f"unknown websocket message: {rest[:80]!r}")
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and str(obj.get("topic", "")).startswith("orderbook.") and "data" in obj:
            if not _ext_ok(name, ".jsonl", ".jsonl.gz", ".data", ".data.gz", ".json.gz"):
                raise UnknownFormatError(ps, "Bybit order book lines need a .jsonl[.gz] name")
            return "bybit_orderbook"
        raise UnknownFormatError(ps, f"unknown JSON lines: {stripped[:80]!r}")
    if not _ext_ok(name, ".csv", ".csv.gz"):
        raise UnknownFormatError(ps, f"not a recognised data file (first line {stripped[:60]!r})")
    header = next(csv.reader([stripped]), [])
    if header:
        kind = tardis_kind(header)
        if kind is not None:
            return f"tardis_{kind}"
        if header == BINANCE_DEPTH_HEADER:
            return "binance_depth_csv"
        if is_backtesting_header(header):
            return "backtesting_csv"
        raise UnknownFormatError(ps, f"unknown CSV header {header[:8]}")
    raise UnknownFormatError(ps, "empty or unrecognised text")


def detect_format(path: PathLike) -> str:
    """Name of the format of ``path`` (one of FORMATS); UnknownFormatError otherwise."""
    p = Path(path)
    ps, name = str(p), p.name.lower()
    if not p.is_file():
        raise UnknownFormatError(ps, "not a file")
    with open(p, "rb") as fh:
        magic = fh.read(8)
    if magic[:2] == GZIP_MAGIC:
        try:
            with gzip.open(p, "rb") as gfh:
                first = _first_line(gfh)
        except (OSError, EOFError) as exc:
            raise UnknownFormatError(ps, f"corrupt gzip: {exc}") from exc
        return _sniff_text_line(ps, name, first.decode("utf-8", "replace"), gz=True)
    if magic[:6] == b"ARROW1":
        if not _ext_ok(name, ".feather", ".arrow", ".ftr"):
            raise UnknownFormatError(ps, "Arrow IPC content in a file not named .feather")
        try:
            cols = set(ipc.open_file(p).schema.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UnknownFormatError(ps, f"unreadable feather file: {exc}") from exc
        if cols >= _CANDLE:
            try:
                kind = parse_freqtrade_name(p).kind
            except DataError as exc:
                raise UnknownFormatError(ps, f"candle columns but {exc.reason}") from exc
            if kind == "trades":
                raise UnknownFormatError(ps, "the name says trades but the columns are candles")
            return f"freqtrade_{kind}"
        if cols >= _FT_TRADES:
            if "trades" not in name:
                raise UnknownFormatError(ps, "trade columns but the name does not say trades")
            return "freqtrade_trades"
        raise UnknownFormatError(ps, f"feather file with unknown columns {sorted(cols)}")
    if magic[:4] == b"PAR1":
        if not _ext_ok(name, ".parquet", ".pq"):
            raise UnknownFormatError(ps, "parquet content in a file not named .parquet")
        try:
            cols = set(pq.read_schema(p).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UnknownFormatError(ps, f"unreadable parquet file: {exc}") from exc
        if set(TRADE_COLUMNS) <= cols and "quotes" not in name:
            return "parquet_trades"
        if set(QUOTE_COLUMNS) <= cols and "trades" not in name:
            return "parquet_quotes"
        raise UnknownFormatError(ps, f"parquet file with unknown columns {sorted(cols)[:10]}")
    with open(p, "rb") as fh:
        head = fh.read(4096)
    text = head.decode("utf-8", "replace").lstrip()
    if text.startswith("{") and '"result"' in text and '"error"' in text:
        if not name.endswith(".json"):
            raise UnknownFormatError(ps, "JSON response in a file not named .json")
        try:
            with open(p, encoding="utf-8") as fh:
                doc = json.load(fh)
            pairs = [k for k in doc["result"] if k != "last"]
            kraken = kraken_kind(doc["result"][pairs[0]]) if len(pairs) == 1 else None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise UnknownFormatError(ps, f"JSON response of unknown shape: {exc}") from exc
        if kraken is None:
            raise UnknownFormatError(ps, "JSON response that is neither Kraken OHLC nor Trades")
        return f"kraken_{kraken}"
    with open(p, "rb") as fh:
        first = _first_line(fh)
    return _sniff_text_line(ps, name, first.decode("utf-8", "replace"), gz=False)


Loader = Callable[..., list[Table]]


def _one(fn: Callable[..., Table]) -> Loader:
    def load(path: Path, **kw: Any) -> list[Table]:
        kw.pop("on_gap", None)
        return [fn(path, **kw)]

    return load


def _no_gap(fn: Loader) -> Loader:
    def load(path: Path, **kw: Any) -> list[Table]:
        kw.pop("on_gap", None)
        return fn(path, **kw)

    return load


LOADERS: dict[str, Loader] = {
    "binance_ws": load_binance_ws,
    "hyperliquid_ws": _no_gap(load_hyperliquid_ws),
    "bybit_orderbook": load_bybit_orderbook,
    "freqtrade_ohlcv": _one(load_freqtrade_ohlcv),
    "freqtrade_mark": _one(load_freqtrade_mark),
    "freqtrade_funding": _one(load_freqtrade_funding),
    "freqtrade_trades": _one(load_freqtrade_trades),
    "parquet_trades": _one(load_parquet_trades),
    "parquet_quotes": _one(load_parquet_quotes),
    "binance_depth_csv": load_binance_depth_csv,
    "tardis_book_snapshot": _no_gap(load_tardis),
    "tardis_incremental_book_L2": _no_gap(load_tardis),
    "tardis_trades": _no_gap(load_tardis),
    "tardis_quotes": _no_gap(load_tardis),
    "kraken_ohlc": _one(load_kraken_ohlc),
    "kraken_trades": _one(load_kraken_trades),
    "backtesting_csv": _no_gap(load_backtesting_csv),
}
MULTI_FILE = {"binance_ws", "binance_depth_csv"}  # formats whose files continue one stream


def load_any(
    path: PathLike | Sequence[PathLike],
    *,
    instrument_id: str | None = None,
    skip_bad: bool = False,
    on_gap: OnGap = "resync",
) -> list[Table]:
    """Detect the format and load. Several paths are one stream (e.g. Binance ``_20240808`` then
    ``_20240809``) and must share a format that supports continuation."""
    paths = as_paths(path)
    fmts = {detect_format(p) for p in paths}
    if len(fmts) != 1:
        raise DataError(str(paths[0]), None, f"files of different formats in one stream: {sorted(fmts)}")
    fmt = fmts.pop()
    kw: dict[str, Any] = {"instrument_id": instrument_id, "skip_bad": skip_bad, "on_gap": on_gap}
    if len(paths) > 1:
        if fmt not in MULTI_FILE:
            raise DataError(str(paths[0]), None, f"{fmt} files cannot be loaded as one stream")
        return LOADERS[fmt](paths, **kw)
    return LOADERS[fmt](paths[0], **kw)

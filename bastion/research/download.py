"""Public market data from a venue's REST API (through ccxt, no keys) into the Parquet catalog.

``download(venue, symbols, kind, since_ns, until_ns, catalog_dir)`` fetches candles
(``fetch_ohlcv``), trades (``fetch_trades``) or funding rates (``fetch_funding_rate_history``)
page by page and writes them as catalog parts, so ``bastion backtest --data <catalog>`` reads them
like any imported file. This is how a user without ``../shared/data`` gets data.

Downloading public market data is not trading: it needs no account, places no order and moves
no money, so it is allowed from every venue in the venue table, including those the compliance
policy forbids for trading (``binance``, ``bybit``, ``okx``). The venue's public rate budget is
still respected: every request first takes a token from the venue's shared limiter
(:func:`bastion.venues.rate_limit.limiter_for`), the budget the live adapters spend too, so
ccxt's own throttle is switched off on the exchanges made here.

**Pagination.** Each request asks for data from ``since``; the next one starts at the last
timestamp received (candles and funding: one millisecond after it; trades: at it, because several
trades share a millisecond, and the repeats are dropped by trade id). The download stops at
``until`` (exclusive), or when a page brings nothing new. Kraken trades follow Kraken's own
cursor (the ``last`` nanosecond id of the previous answer), which never skips or repeats a trade.

**Exact values.** ccxt turns the venue's decimal text into floats. Values are read from the text
whenever it is reachable: the response body ccxt received (``last_http_response``, re-parsed with
``Decimal``) for Kraken and Hyperliquid candles and Kraken trades (whose nanosecond times ccxt
cuts to milliseconds), and the ``info`` record ccxt keeps for a trade or a funding rate (a string
there that converts to exactly ccxt's float is the venue's own text of that number). Otherwise a
float is converted through its shortest ``repr``: a double holds any decimal of up to 15
significant digits exactly, so for those the repr *is* the venue's decimal. A value whose repr
needs 16 or 17 digits cannot be proven exact; it is rounded to 15 significant digits and counted
in the part's ``meta["inexact_values"]``. Raw integers use the market's precision (tick and lot
from ccxt's market) as a floor and the finest precision the values need, so nothing is rounded;
funding rates use ``FUNDING_RATE_PRECISION`` like every funding table.

**Resumable.** Rows are written in chunks of ``chunk_rows``; after each chunk's part is in
place, a checkpoint (``<catalog>/_downloads/<venue>/<kind>/<instrument>.json``) records the last
timestamp written, the ids of the rows at that timestamp and the running row count (the ``seq``
of the next row). A rerun with the same arguments continues from the checkpoint and skips what
was written, so an interrupted download plus its rerun gives the same catalog as one run. Each
part also records its range in its metadata, and the parts win over the checkpoint: a crash
between writing a part and the checkpoint is repaired on the next run, never duplicated. The
candle still forming (its close is after the venue's clock) is not written, so a resumed download
never keeps a partial bar.

Layout and names: candles go to BAR (``ts_event`` = open, ``ts_local`` = close), trades to TRADE
(one clock: ``ts_local`` = ``ts_event``; ``aggressor`` from the taker side) and funding to
FUNDING. Instrument ids follow the file loaders so downloads and imports of one market meet in
one directory: ``<market id>.KRAKEN`` (``XBTUSDT.KRAKEN``), ``<coin>-PERP.HYPERLIQUID``, and
elsewhere ``<market id or BASEQUOTE>[-PERP].<VENUE>``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt
import numpy as np
import pyarrow.parquet as pq

from bastion.data.catalog import Catalog, Part
from bastion.data.freqtrade import timeframe_ns
from bastion.data.schema import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    AGGRESSOR_UNKNOWN,
    FUNDING_RATE_PRECISION,
    DataError,
    DataType,
    Table,
)
from bastion.model.fixed import MAX_PRECISION
from bastion.venues.rate_limit import RateLimiter, limiter_for
from bastion.venues.registry import UnknownVenue, VenueSpec, venue_spec

NS_PER_MS = 1_000_000
KINDS: dict[str, tuple[DataType, str]] = {
    "candles": (DataType.BAR, "fetchOHLCV"),
    "trades": (DataType.TRADE, "fetchTrades"),
    "funding": (DataType.FUNDING, "fetchFundingRateHistory"),
}
CHECKPOINT_DIR = "_downloads"
DEFAULT_CHUNK_ROWS = 50_000
# venues whose ccxt fetch_* take the unified ``until`` param; elsewhere it is filtered locally
_UNTIL_PARAM = {"hyperliquid"}
# (venue, kind) that a venue's REST API cannot serve as public data, with the reason
_NOT_PUBLIC = {
    ("hyperliquid", "trades"): "Hyperliquid publishes no public trade history over REST "
    "(ccxt's fetchTrades there returns one wallet's own fills); record trades from its websocket",
}
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_INT64_MAX = 2**63 - 1

# (description, done, total): how far the current symbol has got through its time range, in ns
Progress = Callable[[str, int, int], None]


class DownloadError(ValueError):
    """A download that cannot be done as asked (unknown venue, kind, symbol or capability)."""


@dataclass(slots=True)
class SymbolResult:
    symbol: str
    instrument_id: str
    rows: int = 0  # rows written by this run
    pages: int = 0  # requests made by this run
    parts: list[str] = field(default_factory=list)  # parts written by this run
    resumed_from_ns: int | None = None  # the checkpoint's last timestamp, when resuming
    first_ts: int | None = None  # the whole download so far (this run and earlier ones)
    last_ts: int | None = None
    total_rows: int = 0
    inexact_values: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DownloadSummary:
    venue: str
    kind: str
    timeframe: str | None
    catalog: Path
    symbols: list[SymbolResult]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.symbols)

    @property
    def pages(self) -> int:
        return sum(s.pages for s in self.symbols)


@dataclass(frozen=True, slots=True)
class _Row:
    ts: int  # ts_event, ns
    key: str  # identity among rows of the same ts (trade id, or the values)
    values: tuple[Any, ...]  # bars (o, h, l, c, v); trades (price, size, aggressor, id); funding (rate,)


@dataclass(slots=True)
class _State:
    """How far one (venue, symbol, kind[, timeframe]) download has been written."""

    first_ts: int | None = None
    last_ts: int | None = None
    boundary: set[str] = field(default_factory=set)  # keys of the rows written at last_ts
    rows: int = 0  # rows written: the seq of the next row
    parts: list[str] = field(default_factory=list)
    since: int | None = None  # the start the download was first asked for

    def is_new(self, row: _Row) -> bool:
        if self.last_ts is None or row.ts > self.last_ts:
            return True
        return row.ts == self.last_ts and row.key not in self.boundary

    def take(self, row: _Row) -> None:
        if self.last_ts is None or row.ts > self.last_ts:
            self.last_ts = row.ts
            self.boundary = set()
        self.boundary.add(row.key)
        if self.first_ts is None:
            self.first_ts = row.ts


# --- exact numbers -----------------------------------------------------------------------------


def _text_dec(text: Any) -> Decimal:
    """A decimal from the venue's text (a JSON string, or a number parsed as Decimal)."""
    if isinstance(text, bool):
        raise ValueError(f"not a number: {text!r}")
    if isinstance(text, Decimal | int):
        d = Decimal(text)
    elif isinstance(text, str):
        try:
            d = Decimal(text.strip())
        except InvalidOperation as exc:
            raise ValueError(f"not a number: {text!r}") from exc
    else:
        raise ValueError(f"not a decimal text: {text!r}")
    if not d.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return d


class _Exact:
    """Floats to decimals: the venue's text when it can be found, else the float's shortest repr."""

    def __init__(self) -> None:
        self.inexact = 0

    def of(self, value: Any, info: Any = None) -> Decimal:
        if value is None:
            raise ValueError("missing value")
        if isinstance(value, str | Decimal) or (isinstance(value, int) and not isinstance(value, bool)):
            return _text_dec(value)
        x = float(value)
        for text in _strings(info):
            try:
                if float(text) == x:
                    return _text_dec(text)
            except ValueError:
                continue
        d = Decimal(repr(x))
        if not d.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        if len(d.as_tuple().digits) > 15:
            self.inexact += 1
            d = Decimal(format(x, ".15g"))
        return d


def _strings(info: Any) -> Iterable[str]:
    if isinstance(info, dict):
        return [v for v in info.values() if isinstance(v, str)]
    if isinstance(info, list | tuple):
        return [v for v in info if isinstance(v, str)]
    return []


def _decimals(d: Decimal) -> int:
    exp = d.normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def _raw(d: Decimal, precision: int, what: str) -> int:
    scaled = d.scaleb(precision)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{what} {d} has more than {precision} decimals")
    raw = int(scaled)
    if abs(raw) > _INT64_MAX:
        raise ValueError(f"{what} {d} overflows int64 at precision {precision}")
    return raw


def _tick_decimals(ex: Any, value: Any) -> int:
    """Decimals of a ccxt market precision (a tick size, or a number of decimals)."""
    if value is None:
        return 0
    try:
        if ex.precisionMode == ccxt.TICK_SIZE:
            return min(_decimals(Decimal(repr(float(value)))), MAX_PRECISION)
        if ex.precisionMode == ccxt.DECIMAL_PLACES:
            return min(max(int(value), 0), MAX_PRECISION)
    except (ValueError, TypeError, InvalidOperation):
        return 0
    return 0  # significant digits: no fixed number of decimals


# --- venue specifics ---------------------------------------------------------------------------


def instrument_id_for(venue: str, market: dict[str, Any]) -> str:
    """The catalog instrument id of a ccxt market (the file loaders' names where they exist)."""
    suffix = venue.upper()
    swap = bool(market.get("swap"))
    if venue == "hyperliquid" and swap and market.get("baseName"):
        name = re.sub(r"[^A-Za-z0-9_\-]", "-", str(market["baseName"]))
        return f"{name}-PERP.{suffix}"
    mid = str(market.get("id") or "")
    if not _ID_OK.match(mid) or mid.isdigit():
        mid = re.sub(r"[^A-Za-z0-9]", "", f"{market.get('base', '')}{market.get('quote', '')}")
    if not mid:
        raise DownloadError(f"cannot name an instrument for market {market.get('symbol')!r}")
    if swap and not mid.upper().endswith("PERP"):
        mid += "-PERP"
    return f"{mid}.{suffix}"


def _body(ex: Any) -> Any:
    """The last response body ccxt received, with every JSON number parsed exactly."""
    text = getattr(ex, "last_http_response", None)
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        return None


def _kraken_result(body: Any, market_id: str) -> tuple[list[Any], Any]:
    if not isinstance(body, dict) or not isinstance(body.get("result"), dict):
        return [], None
    result = body["result"]
    rows = result.get(market_id)
    if not isinstance(rows, list):
        others = [v for k, v in result.items() if k != "last" and isinstance(v, list)]
        rows = others[0] if len(others) == 1 else []
    return rows, result.get("last")


def _bar_rows(venue: str, body: Any, market: dict[str, Any], ohlcv: list[Any], exact: _Exact) -> list[_Row]:
    """Candles of one page. Kraken and Hyperliquid from the body text; others from ccxt's floats."""
    rows: list[_Row] = []
    if venue == "kraken" and body is not None:
        raw, last = _kraken_result(body, str(market["id"]))
        for r in raw:
            # [time_s, open, high, low, close, vwap, volume, count]; a row after ``last`` is the
            # bar still forming (Kraken commits bars up to ``last``)
            if not isinstance(r, list) or len(r) < 7:
                raise ValueError(f"unexpected Kraken OHLC row {r!r}")
            t = int(r[0])
            if last is not None and t > int(last):
                continue
            ts = t * 1_000_000_000
            vals = tuple(_text_dec(r[i]) for i in (1, 2, 3, 4, 6))
            rows.append(_Row(ts, str(ts), vals))
        return rows
    if venue == "hyperliquid" and isinstance(body, list):
        for c in body:
            if not isinstance(c, dict):
                raise ValueError(f"unexpected Hyperliquid candle {c!r}")
            ts = int(c["t"]) * NS_PER_MS
            vals = tuple(_text_dec(c[k]) for k in ("o", "h", "l", "c", "v"))
            rows.append(_Row(ts, str(ts), vals))
        return rows
    for c in ohlcv:
        ts = int(c[0]) * NS_PER_MS
        vals = tuple(exact.of(c[i]) for i in range(1, 6))
        rows.append(_Row(ts, str(ts), vals))
    return rows


def _trade_id(value: Any) -> int:
    s = str(value) if value is not None else ""
    return int(s) if s.isdigit() and int(s) <= _INT64_MAX else 0


def _trade_key(price: Decimal, size: Decimal, aggressor: int, tid: int) -> str:
    """A trade's identity among the trades of one timestamp: its id, else its values (made
    unique by ``_number_repeats``)."""
    return f"id:{tid}" if tid else f"{price.normalize()}/{size.normalize()}/{aggressor}"


def _number_repeats(rows: list[_Row]) -> list[_Row]:
    """Tell apart id-less trades with equal values at one timestamp by their order (``#k``).

    A page starts at or before the timestamp of the first trade it repeats and holds every trade
    of each timestamp from the first one on, so the k-th such trade has the same key in every page.
    """
    seen: dict[tuple[int, str], int] = {}
    out = []
    for r in rows:
        if r.key.startswith("id:"):
            out.append(r)
            continue
        k = seen.get((r.ts, r.key), 0)
        seen[(r.ts, r.key)] = k + 1
        out.append(_Row(r.ts, f"{r.key}#{k}", r.values))
    return out


def _trade_row(ts: int, price: Decimal, size: Decimal, side: str | None, tid: int) -> _Row:
    aggressor = {"buy": AGGRESSOR_BUY, "sell": AGGRESSOR_SELL}.get(side or "", AGGRESSOR_UNKNOWN)
    return _Row(ts, _trade_key(price, size, aggressor, tid), (price, size, aggressor, tid))


def _trade_rows(
    venue: str, body: Any, market: dict[str, Any], trades: list[Any], exact: _Exact
) -> list[_Row]:
    """Trades of one page. Kraken from the body text (ns times); others from ccxt's trades."""
    rows: list[_Row] = []
    if venue == "kraken" and body is not None:
        raw, _ = _kraken_result(body, str(market["id"]))
        for r in raw:
            # [price, volume, time_s, side b/s, type m/l, misc, trade_id]
            if not isinstance(r, list) or len(r) < 4:
                raise ValueError(f"unexpected Kraken trade row {r!r}")
            ts = _raw(_text_dec(r[2]), 9, "time")
            side = "buy" if r[3] == "b" else "sell" if r[3] == "s" else None
            tid = _trade_id(r[6]) if len(r) > 6 else 0
            rows.append(_trade_row(ts, _text_dec(r[0]), _text_dec(r[1]), side, tid))
        return rows
    for t in trades:
        info = t.get("info")
        ts = int(t["timestamp"]) * NS_PER_MS
        price, size = exact.of(t.get("price"), info), exact.of(t.get("amount"), info)
        rows.append(_trade_row(ts, price, size, t.get("side"), _trade_id(t.get("id"))))
    return rows


def _funding_rows(entries: list[Any], exact: _Exact) -> list[_Row]:
    rows = []
    for e in entries:
        ts = int(e["timestamp"]) * NS_PER_MS
        info = e.get("info")
        rate = exact.of(e.get("fundingRate"), info)
        rows.append(_Row(ts, str(ts), (rate,)))
    return rows


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1e9, UTC).isoformat(timespec="seconds")


# --- the checkpoint ----------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]", "_", name)


@dataclass(frozen=True, slots=True)
class _Job:
    venue: str
    symbol: str
    market: dict[str, Any]
    kind: str
    timeframe: str | None
    instrument_id: str
    data_type: DataType
    interval_ns: int

    @property
    def tag(self) -> str:
        """What identifies this download's parts: venue, symbol, kind and timeframe."""
        return f"ccxt:{self.venue}:{self.symbol}:{self.kind}" + (
            f":{self.timeframe}" if self.timeframe else ""
        )

    def checkpoint_path(self, root: Path) -> Path:
        kind = self.kind + (f"-{self.timeframe}" if self.timeframe else "")
        return root / CHECKPOINT_DIR / self.venue / kind / f"{_safe(self.instrument_id)}.json"

    def part_name(self, first_ts: int) -> str:
        kind = self.kind + (f"-{self.timeframe}" if self.timeframe else "")
        return f"download-{self.venue}-{kind}-{first_ts}"


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _my_parts(cat: Catalog, job: _Job) -> list[Part]:
    parts = cat.parts(job.data_type, job.instrument_id)
    return [p for p in parts if isinstance(p.meta.get("download"), dict) and p.source == job.tag]


def _parts_state(job: _Job, parts: list[Part]) -> tuple[int, int, set[str]]:
    """(last ts, next seq, keys of the rows at the last ts) of downloaded parts, from their rows."""
    last = max(int(p.meta["download"]["last_ts"]) for p in parts)
    at_last: list[tuple[int, _Row]] = []  # (seq, row)
    next_seq = 0
    for part in parts:
        if int(part.meta["download"]["last_ts"]) != last:
            continue
        table = pq.read_table(part.path)
        cols = {name: table.column(name).to_numpy() for name in table.column_names}
        next_seq = max(next_seq, int(cols["seq"].max()) + 1)
        for i in np.flatnonzero(cols["ts_event"] == last):
            if job.data_type is DataType.TRADE:
                price = Decimal(int(cols["price"][i])).scaleb(-part.price_precision)
                size = Decimal(int(cols["size"][i])).scaleb(-part.size_precision)
                aggressor, tid = int(cols["aggressor"][i]), int(cols["trade_id"][i])
                row = _Row(last, _trade_key(price, size, aggressor, tid), ())
            else:
                row = _Row(last, str(last), ())
            at_last.append((int(cols["seq"][i]), row))
    rows = _number_repeats([r for _, r in sorted(at_last, key=lambda sr: sr[0])])
    return last, next_seq, {r.key for r in rows}


def _load_state(cat: Catalog, job: _Job, notes: list[str]) -> _State:
    """The checkpoint, checked against the parts on disk (the parts win)."""
    path = job.checkpoint_path(cat.root)
    state = _State()
    if path.is_file():
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("tag") != job.tag:
            raise DownloadError(f"{path}: checkpoint of {doc.get('tag')!r}, not {job.tag!r}")
        state = _State(
            first_ts=doc.get("first_ts"),
            last_ts=doc.get("last_ts"),
            boundary=set(doc.get("boundary", [])),
            rows=int(doc.get("rows", 0)),
            parts=list(doc.get("parts", [])),
            since=doc.get("since"),
        )
    parts = _my_parts(cat, job)
    if not parts:
        if state.rows:
            notes.append(f"checkpoint {path} names parts that are gone: downloading again from the start")
        return _State()
    last, next_seq, keys = _parts_state(job, parts)
    if state.last_ts != last or state.rows != next_seq:
        notes.append(f"checkpoint behind the parts on disk: continuing after {_iso(last)}")
        state = _State(
            first_ts=min(int(p.meta["download"]["first_ts"]) for p in parts),
            last_ts=last,
            boundary=keys,
            rows=next_seq,
            parts=sorted(p.name for p in parts),
            since=min(int(p.meta["download"].get("since") or p.meta["download"]["first_ts"]) for p in parts),
        )
    return state


def _save_state(root: Path, job: _Job, state: _State) -> None:
    _write_json(
        job.checkpoint_path(root),
        {
            "tag": job.tag,
            "venue": job.venue,
            "symbol": job.symbol,
            "kind": job.kind,
            "timeframe": job.timeframe,
            "instrument_id": job.instrument_id,
            "first_ts": state.first_ts,
            "last_ts": state.last_ts,
            "boundary": sorted(state.boundary),
            "rows": state.rows,
            "parts": state.parts,
            "since": state.since,
        },
    )


# --- writing -----------------------------------------------------------------------------------


def _table(
    job: _Job, rows: list[_Row], seq0: int, floors: tuple[int, int], inexact: int, since: int | None
) -> Table:
    n = len(rows)
    ts = np.array([r.ts for r in rows], dtype=np.int64)
    seq = np.arange(seq0, seq0 + n, dtype=np.int64)
    src = job.tag
    meta: dict[str, Any] = {
        "format": "ccxt_download",
        "download": {
            "venue": job.venue,
            "symbol": job.symbol,
            "market_id": str(job.market.get("id")),
            "kind": job.kind,
            "timeframe": job.timeframe,
            "first_ts": rows[0].ts,
            "last_ts": rows[-1].ts,
            "seq_start": seq0,
            "since": since,
        },
        "ccxt_version": ccxt.__version__,
        "inexact_values": inexact,
    }
    if job.data_type is DataType.FUNDING:
        rate = np.array([_raw(r.values[0], FUNDING_RATE_PRECISION, "funding rate") for r in rows], np.int64)
        cols = {"ts_event": ts, "ts_local": ts.copy(), "seq": seq, "rate": rate}
        return Table(job.data_type, job.instrument_id, FUNDING_RATE_PRECISION, 0, cols, src, meta)
    n_price = 4 if job.data_type is DataType.BAR else 1
    pp = max([floors[0], *(_decimals(v) for r in rows for v in r.values[:n_price])])
    sp = max([floors[1], *(_decimals(r.values[n_price]) for r in rows)])
    if pp > MAX_PRECISION or sp > MAX_PRECISION:
        raise DataError(src, None, f"values need {max(pp, sp)} decimals, more than {MAX_PRECISION}")

    def col(i: int, prec: int, what: str) -> Any:
        return np.array([_raw(r.values[i], prec, what) for r in rows], dtype=np.int64)

    if job.data_type is DataType.BAR:
        cols = {
            "ts_event": ts,
            "ts_local": ts + job.interval_ns,
            "seq": seq,
            "interval_ns": np.full(n, job.interval_ns, dtype=np.int64),
            "open": col(0, pp, "open"),
            "high": col(1, pp, "high"),
            "low": col(2, pp, "low"),
            "close": col(3, pp, "close"),
            "volume": col(4, sp, "volume"),
        }
    else:
        cols = {
            "ts_event": ts,
            "ts_local": ts.copy(),
            "seq": seq,
            "price": col(0, pp, "price"),
            "size": col(1, sp, "size"),
            "aggressor": np.array([r.values[2] for r in rows], dtype=np.int8),
            "trade_id": np.array([r.values[3] for r in rows], dtype=np.int64),
        }
    return Table(job.data_type, job.instrument_id, pp, sp, cols, src, meta)


# --- the download ------------------------------------------------------------------------------


def _point_at(ex: Any, api_url: str) -> None:
    """Send every REST request of ``ex`` to ``api_url`` (keeping each endpoint's path): tests
    and recorded-response servers."""
    base = urlsplit(api_url.rstrip("/"))

    def swap(v: Any) -> Any:
        if isinstance(v, str) and "://" in v:
            u = urlsplit(v)
            return urlunsplit((base.scheme, base.netloc, base.path + u.path, u.query, u.fragment))
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        return v

    ex.urls = {**ex.urls, "api": swap(ex.urls["api"])}


def make_exchange(spec: VenueSpec, api_url: str | None = None) -> Any:
    """A keyless ccxt exchange for ``spec``, markets loaded (a public request)."""
    cls = getattr(ccxt, spec.ccxt_id or "", None)
    if cls is None:
        raise DownloadError(f"ccxt {ccxt.__version__} has no exchange {spec.ccxt_id!r} for {spec.name}")
    ex = cls({"enableRateLimit": False})  # the shared per-venue limiter paces the requests
    if api_url:
        _point_at(ex, api_url)
    limiter_for(spec.name).acquire()
    ex.load_markets()
    return ex


def _resolve_symbol(ex: Any, venue: str, symbol: str) -> dict[str, Any]:
    markets = ex.markets or {}
    if symbol in markets:
        return dict(markets[symbol])
    by_id = getattr(ex, "markets_by_id", None) or {}
    found = by_id.get(symbol)
    if found:
        return dict(found[0] if isinstance(found, list) else found)
    near = sorted(s for s in markets if symbol.upper().replace("-", "/").split(":")[0] in s.upper())[:8]
    hint = f"; did you mean {', '.join(near)}" if near else ""
    raise DownloadError(f"{venue} has no market {symbol!r} (use a ccxt symbol such as BTC/USDT{hint})")


def _check(spec: VenueSpec, ex: Any, kind: str) -> None:
    _, method = KINDS[kind]
    why = _NOT_PUBLIC.get((spec.name, kind))
    if why:
        raise DownloadError(f"{spec.name} cannot download {kind}: {why}")
    if not (ex.has or {}).get(method):
        raise DownloadError(
            f"{spec.name} cannot download {kind}: ccxt's {ex.id} has no {method} "
            f"(ex.has[{method!r}] is {(ex.has or {}).get(method)!r})"
        )


def download(
    venue: str,
    symbols: Sequence[str],
    kind: str,
    since_ns: int,
    until_ns: int | None,
    catalog_dir: Path | str,
    exchange: Any = None,
    progress: Progress | None = None,
    *,
    timeframe: str = "1m",
    api_url: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    page_limit: int | None = None,
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    limiter: RateLimiter | None = None,
) -> DownloadSummary:
    """Download ``kind`` ("candles", "trades" or "funding") of ``symbols`` from ``venue`` into
    the catalog at ``catalog_dir``, for ``since_ns <= ts < until_ns`` (``until_ns`` None: now).

    ``exchange`` is a ccxt exchange to use as it is (markets loaded or set); by default a keyless
    one is made, pointed at ``api_url`` when given. ``page_limit`` caps the rows asked per request
    (default: the venue's own page size); a network error is retried ``retries`` times with a
    growing pause, then raised, and whatever was fetched before it is written and checkpointed,
    so rerunning the same call resumes. Raises DownloadError for an unknown venue, kind or symbol
    and for a venue that cannot serve the kind.
    """
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise DownloadError(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    try:
        spec = venue_spec(venue)
    except UnknownVenue as exc:
        raise DownloadError(str(exc.args[0])) from None
    if spec.ccxt_id is None:
        raise DownloadError(f"{spec.name} is not reached through ccxt; no public data download for it")
    if not symbols:
        raise DownloadError("no symbols given")
    if chunk_rows < 1:
        raise DownloadError("chunk_rows must be at least 1")
    data_type, _ = KINDS[kind]
    tf = timeframe if kind == "candles" else None
    interval = 0
    if tf is not None:
        try:
            interval = timeframe_ns(tf)
        except ValueError:
            raise DownloadError(f"unsupported timeframe {tf!r} (use 1m, 5m, 1h, 1d ...)") from None
    ex = exchange if exchange is not None else make_exchange(spec, api_url)
    if exchange is not None and api_url:
        _point_at(ex, api_url)
    ex.enableLastHttpResponse = True
    _check(spec, ex, kind)
    if tf is not None and ex.timeframes and tf not in ex.timeframes:
        raise DownloadError(f"{spec.name} has no {tf} candles; it offers {', '.join(ex.timeframes)}")
    jobs: list[_Job] = []
    for s in symbols:
        market = _resolve_symbol(ex, spec.name, s)
        if any(j.symbol == market["symbol"] for j in jobs):
            continue  # the same market named twice (symbol and id)
        if kind == "funding" and not market.get("swap"):
            raise DownloadError(f"{market['symbol']} on {spec.name} is not a perpetual swap: no funding")
        jobs.append(
            _Job(
                spec.name,
                str(market["symbol"]),
                market,
                kind,
                tf,
                instrument_id_for(spec.name, market),
                data_type,
                interval,
            )
        )
    now_ms = int(ex.milliseconds())
    until = until_ns if until_ns is not None else now_ms * NS_PER_MS
    if until <= since_ns:
        raise DownloadError(f"until ({until}) must be after since ({since_ns})")
    lim = limiter or limiter_for(spec.name)
    cat = Catalog(catalog_dir)
    summary = DownloadSummary(spec.name, kind, tf, Path(catalog_dir), [])
    for job in jobs:
        res = SymbolResult(job.symbol, job.instrument_id)
        summary.symbols.append(res)
        _Runner(
            ex, job, cat, res, since_ns, until, now_ms, progress, chunk_rows, page_limit, retries, sleep, lim
        ).run()
    return summary


class _Runner:
    """Pages of one symbol into the catalog."""

    def __init__(
        self,
        ex: Any,
        job: _Job,
        cat: Catalog,
        res: SymbolResult,
        since_ns: int,
        until_ns: int,
        now_ms: int,
        progress: Progress | None,
        chunk_rows: int,
        page_limit: int | None,
        retries: int,
        sleep: Callable[[float], None],
        limiter: RateLimiter,
    ) -> None:
        self.ex, self.job, self.cat, self.res = ex, job, cat, res
        self.since, self.until, self.now_ms = since_ns, until_ns, now_ms
        self.progress, self.chunk_rows, self.page_limit = progress, chunk_rows, page_limit
        self.retries, self.sleep, self.limiter = retries, sleep, limiter
        self.exact = _Exact()
        self.buffer: list[_Row] = []
        self.written = _State()  # what is in the catalog (advances on flush only)
        precision = job.market.get("precision") or {}
        self.floors = (
            _tick_decimals(ex, precision.get("price")),
            _tick_decimals(ex, precision.get("amount")),
        )

    def _fetch(self, since_ms: int, params: dict[str, Any]) -> tuple[list[Any], Any]:
        """One page: ccxt's parsed result and, where the values are read from it, the body."""
        job, ex = self.job, self.ex
        if job.venue in _UNTIL_PARAM:  # the venue's end time is inclusive; ours is not
            params = {**params, "until": max(since_ms, -(-self.until // NS_PER_MS) - 1)}
        for attempt in range(self.retries + 1):
            self.limiter.acquire()
            self.res.pages += 1
            try:
                if job.kind == "candles":
                    out = ex.fetch_ohlcv(job.symbol, job.timeframe, since_ms, self.page_limit, params)
                elif job.kind == "trades":
                    out = ex.fetch_trades(job.symbol, since_ms, self.page_limit, params)
                else:
                    out = ex.fetch_funding_rate_history(job.symbol, since_ms, self.page_limit, params)
            except ccxt.NetworkError:
                if attempt >= self.retries:
                    raise
                self.sleep(min(2.0**attempt, 30.0))
                continue
            body = _body(ex) if job.venue in ("kraken", "hyperliquid") and job.kind != "funding" else None
            return list(out or []), body
        raise AssertionError("unreachable")  # pragma: no cover

    def _rows(self, page: list[Any], body: Any) -> list[_Row]:
        job = self.job
        try:
            if job.kind == "candles":
                rows = _bar_rows(job.venue, body, job.market, page, self.exact)
                # the candle still forming closes after the venue's clock: never write it
                rows = [r for r in rows if r.ts + job.interval_ns <= self.now_ms * NS_PER_MS]
            elif job.kind == "trades":
                rows = _trade_rows(job.venue, body, job.market, page, self.exact)
            else:
                rows = _funding_rows(page, self.exact)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise DataError(job.tag, None, f"unexpected response: {exc}") from exc
        rows.sort(key=lambda r: r.ts)  # stable: the venue's order within one timestamp is kept
        return _number_repeats(rows) if job.kind == "trades" else rows

    def flush(self) -> None:
        """Write the buffered rows as one part, then move the checkpoint past them."""
        if not self.buffer:
            return
        rows, self.buffer = self.buffer, []
        table = _table(self.job, rows, self.written.rows, self.floors, self.exact.inexact, self.written.since)
        self.exact.inexact = 0
        name = self.job.part_name(rows[0].ts)
        self.cat.write(table, name=name)
        for r in rows:
            self.written.take(r)
        self.written.rows += len(rows)
        if name not in self.written.parts:
            self.written.parts.append(name)
        self.res.parts.append(name)
        self.res.rows += len(rows)
        self.res.inexact_values += int(table.meta["inexact_values"])
        _save_state(self.cat.root, self.job, self.written)

    def run(self) -> None:
        job, res = self.job, self.res
        self.written = _load_state(self.cat, job, res.notes)
        w = self.written
        seen = _State(w.first_ts, w.last_ts, set(w.boundary), w.rows)  # written + buffered
        start = self.since
        if w.last_ts is not None:
            res.resumed_from_ns = w.last_ts
            start = max(start, w.last_ts)
            if w.since is not None and self.since < w.since:
                res.notes.append(
                    f"resumed a download that started at {_iso(w.since)}: earlier data is not fetched "
                    f"(delete {job.checkpoint_path(self.cat.root)} and its parts to start over)"
                )
        else:
            w.since = self.since
        since_ms = start // NS_PER_MS
        kraken_trades = job.venue == "kraken" and job.kind == "trades"
        # Kraken trades: the first request by time (seconds), then Kraken's ns cursor
        params: dict[str, Any] = {"since": str(start // 1_000_000_000)} if kraken_trades else {}
        desc = f"{job.symbol} {job.kind}" + (f" {job.timeframe}" if job.timeframe else "")
        total = max(self.until - self.since, 1)
        try:
            while since_ms * NS_PER_MS < self.until:
                page, body = self._fetch(since_ms, params)
                rows = self._rows(page, body)
                fresh = [r for r in rows if self.since <= r.ts < self.until and seen.is_new(r)]
                for r in fresh:
                    seen.take(r)
                    self.buffer.append(r)
                    if len(self.buffer) >= self.chunk_rows:
                        self.flush()
                if self.progress is not None and seen.last_ts is not None:
                    self.progress(desc, min(max(seen.last_ts - self.since, 0), total), total)
                if not fresh or rows[-1].ts >= self.until:
                    break  # nothing new, or the page reached the end of the range
                last_ms = fresh[-1].ts // NS_PER_MS
                if job.kind == "trades":
                    since_ms = last_ms  # the same ms again: trades repeated from it are known by id
                    if kraken_trades:  # Kraken's own cursor when the answer has one
                        cursor = _kraken_result(body, str(job.market["id"]))[1]
                        params = {"since": str(cursor)} if cursor is not None else {}
                else:
                    since_ms = last_ms + 1
        finally:
            self.flush()
        res.first_ts, res.last_ts, res.total_rows = w.first_ts, w.last_ts, w.rows
        late = w.first_ts is not None and w.first_ts >= self.since + 2 * job.interval_ns
        if job.kind == "candles" and res.rows and res.resumed_from_ns is None and late:
            res.notes.append(
                f"the venue has no candles before {_iso(w.first_ts or 0)} (some venues keep only the "
                "latest ones: Kraken 720, Hyperliquid 5000)"
            )
        if self.progress is not None:
            self.progress(desc, total, total)

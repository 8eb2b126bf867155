"""tardis.dev CSV files (optionally gzipped): book snapshots, trades, incremental L2, quotes.

Every tardis CSV starts with ``exchange,symbol,timestamp,local_timestamp``; the rest of the header
says which data type it is. Timestamps are µs: ``timestamp`` is the exchange's (ts_event),
``local_timestamp`` tardis' receive time (ts_local), which must not go backwards.

* ``book_snapshot_N``: each row is a complete top-N book -> BOOK_DELTA rows, bids then asks,
  first row CLEAR|SNAPSHOT, all rows SNAPSHOT, last row LAST. Empty levels are skipped.
* ``incremental_book_L2``: ``is_snapshot`` rows form snapshots (CLEAR on the first row of each
  snapshot block), other rows are level updates (amount 0 deletes). Rows with the same
  local_timestamp came in one message, so LAST marks the end of each such group; the book must
  not be crossed after it.
* ``trades``: side buy/sell is the aggressor (``unknown`` -> AGGRESSOR_UNKNOWN). Non-numeric ids
  (BitMEX uses UUIDs) become a stable 63-bit hash of the id text, so they stay distinct.
* ``quotes``: top of book -> QUOTE; a crossed or one-sided quote cannot be stored and is bad.

A file may hold several symbols; each gets its own table. Precisions are the decimals the text
needs (a known instrument's precision is a floor). ``seq`` is the line number (header = 1).
Instrument ids: ``<SYMBOL>[-PERP].<VENUE>`` with the venue from the exchange name
(binance-futures -> BINANCE); perpetual markets (binance-futures, bitmex XBTUSD-style, deribit
``*-PERPETUAL``, huobi-dm-swap, bybit) get ``-PERP``, and separators are dropped (BTC-USD -> BTCUSD).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from bastion.data._book import LightBook
from bastion.data._common import (
    NS_PER_US,
    BadRows,
    PathLike,
    floor_precisions,
    make_table,
    open_text,
    source_name,
    text_precision,
)
from bastion.data._numbers import parse_fixed
from bastion.data.schema import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    AGGRESSOR_UNKNOWN,
    FLAG_CLEAR,
    FLAG_LAST,
    FLAG_SNAPSHOT,
    SIDE_ASK,
    SIDE_BID,
    DataError,
    DataType,
    Table,
)

COMMON = ["exchange", "symbol", "timestamp", "local_timestamp"]
_DATED = re.compile(r"[FGHJKMNQUVXZ]\d{2}$")
_PERP_EXCHANGES = {"binance-futures", "huobi-dm-swap", "bybit", "okex-swap", "okx-swap", "bitmex", "ftx"}


def tardis_kind(header: list[str]) -> str | None:
    """'book_snapshot' | 'incremental_book_L2' | 'trades' | 'quotes' from a CSV header, else None."""
    if header[:4] != COMMON:
        return None
    rest = header[4:]
    if rest == ["id", "side", "price", "amount"]:
        return "trades"
    if rest == ["is_snapshot", "side", "price", "amount"]:
        return "incremental_book_L2"
    if rest == ["ask_amount", "ask_price", "bid_price", "bid_amount"]:
        return "quotes"
    if rest and len(rest) % 4 == 0:
        n = len(rest) // 4
        expected = []
        for i in range(n):
            expected += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
        if rest == expected:
            return "book_snapshot"
    return None


def instrument_id_for(exchange: str, symbol: str) -> str:
    venue = exchange.split("-")[0].upper()
    perp = exchange in _PERP_EXCHANGES
    sym = symbol.upper()
    if sym.endswith("-PERPETUAL"):
        sym, perp = sym.removesuffix("-PERPETUAL"), True
    if exchange == "bitmex" and _DATED.search(sym):
        perp = False  # XBTZ20-style quarterly futures
    sym = sym.replace("-", "").replace("_", "").replace("/", "")
    return f"{sym}{'-PERP' if perp else ''}.{venue}"


def _trade_id(text: str) -> int:
    if text.isdigit() and text.isascii() and len(text) < 19:
        return int(text)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def _read(path: Path) -> tuple[str, list[tuple[int, list[str]]], list[str]]:
    with open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(str(path), None, "empty file") from None
        kind = tardis_kind(header)
        if kind is None:
            raise DataError(str(path), 1, f"not a tardis CSV header: {header[:8]}")
        rows = [(line, rec) for line, rec in enumerate(reader, 2)]
    return kind, rows, header


def load_tardis(path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False) -> list[Table]:
    p = Path(path)
    ps = str(p)
    kind, rows, header = _read(p)
    bad = BadRows(skip_bad)
    width = len(header)
    by_symbol: dict[tuple[str, str], list[tuple[int, list[str]]]] = defaultdict(list)
    for line, rec in rows:
        if len(rec) != width:
            bad(ps, line, f"expected {width} fields, got {len(rec)}")
            continue
        by_symbol[(rec[0], rec[1])].append((line, rec))
    if instrument_id is not None and len(by_symbol) > 1:
        raise DataError(ps, None, f"{len(by_symbol)} symbols in the file; instrument_id fits only one")
    loaders: dict[str, Callable[[str, str, list[tuple[int, list[str]]], BadRows], Table]] = {
        "book_snapshot": _book_snapshots,
        "incremental_book_L2": _incremental,
        "trades": _trades,
        "quotes": _quotes,
    }
    tables = []
    for (exchange, symbol), recs in by_symbol.items():
        iid = instrument_id or instrument_id_for(exchange, symbol)
        t = loaders[kind](ps, iid, recs, bad)
        t.source = source_name([p])
        t.meta.update({"format": f"tardis_{kind}", "exchange": exchange, "symbol": symbol, **bad.meta()})
        tables.append(t)
    if not tables:
        raise DataError(ps, None, "no data rows")
    return tables


def _times(ps: str, line: int, rec: list[str], last_local: int) -> tuple[int, int]:
    te = int(rec[2]) * NS_PER_US
    tl = int(rec[3]) * NS_PER_US
    if te <= 0 or tl <= 0:
        raise ValueError("timestamps must be positive")
    if tl < last_local:
        raise ValueError(f"local_timestamp goes backwards: {tl} < {last_local}")
    return te, tl


def _book_snapshots(ps: str, iid: str, recs: list[tuple[int, list[str]]], bad: BadRows) -> Table:
    n_levels = (len(recs[0][1]) - 4) // 4
    pp, sp = floor_precisions(
        iid,
        text_precision(v for _, r in recs for v in r[4::2]),
        text_precision(v for _, r in recs for v in r[5::2]),
    )
    cols: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "side", "price", "size", "flags", "update_id")
    }
    last_local = 0
    for line, rec in recs:
        try:
            te, tl = _times(ps, line, rec, last_local)
            levels: list[tuple[int, int, int]] = []
            for side, off in ((SIDE_BID, 6), (SIDE_ASK, 4)):
                for i in range(n_levels):
                    pt, qt = rec[off + 4 * i], rec[off + 4 * i + 1]
                    if pt == "" and qt == "":
                        continue
                    p, q = parse_fixed(pt, pp), parse_fixed(qt, sp)
                    if p <= 0 or q <= 0:
                        raise ValueError(f"bad level price={pt} amount={qt}")
                    levels.append((side, p, q))
            if not levels:
                raise ValueError("empty snapshot")
            bids = [p for s, p, _ in levels if s == SIDE_BID]
            asks = [p for s, p, _ in levels if s == SIDE_ASK]
            if bids and asks and max(bids) >= min(asks):
                raise ValueError(f"crossed snapshot: bid {max(bids)} >= ask {min(asks)}")
        except ValueError as exc:
            bad(ps, line, str(exc))
            continue
        last_local = tl
        n = len(levels)
        flags = [FLAG_SNAPSHOT] * n
        flags[0] |= FLAG_CLEAR
        flags[-1] |= FLAG_LAST
        cols["ts_event"].extend([te] * n)
        cols["ts_local"].extend([tl] * n)
        cols["seq"].extend([line] * n)
        cols["side"].extend(s for s, _, _ in levels)
        cols["price"].extend(p for _, p, _ in levels)
        cols["size"].extend(q for _, _, q in levels)
        cols["flags"].extend(flags)
        cols["update_id"].extend([0] * n)
    return make_table(DataType.BOOK_DELTA, iid, pp, sp, dict(cols), source="", meta={"levels": n_levels})


def _incremental(ps: str, iid: str, recs: list[tuple[int, list[str]]], bad: BadRows) -> Table:
    pp, sp = floor_precisions(
        iid, text_precision(r[6] for _, r in recs), text_precision(r[7] for _, r in recs)
    )
    # Parse every row first, then group into messages by local_timestamp.
    parsed: list[tuple[int, int, int, bool, int, int, int]] = []  # line, te, tl, snap, side, p, q
    last_local = 0
    for line, rec in recs:
        try:
            te, tl = _times(ps, line, rec, last_local)
            if rec[4] not in ("true", "false"):
                raise ValueError(f"is_snapshot must be true/false, got {rec[4]!r}")
            if rec[5] not in ("bid", "ask"):
                raise ValueError(f"side must be bid/ask, got {rec[5]!r}")
            p, q = parse_fixed(rec[6], pp), parse_fixed(rec[7], sp)
            if p <= 0 or q < 0:
                raise ValueError(f"bad level price={rec[6]} amount={rec[7]}")
        except ValueError as exc:
            bad(ps, line, str(exc))
            continue
        last_local = tl
        parsed.append((line, te, tl, rec[4] == "true", SIDE_BID if rec[5] == "bid" else SIDE_ASK, p, q))
    groups: list[list[tuple[int, int, int, bool, int, int, int]]] = []
    for r in parsed:
        if groups and groups[-1][0][2] == r[2] and groups[-1][0][3] == r[3]:
            groups[-1].append(r)
        else:
            groups.append([r])
    cols: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "side", "price", "size", "flags", "update_id")
    }
    book = LightBook(track_undo=True)
    in_snapshot = False
    synced = False
    for g in groups:
        snap = g[0][3]
        start_clear = snap and not in_snapshot
        if start_clear:
            book.clear()
            synced = True
        for _, _, _, _, side, p, q in g:
            book.update(side, [p], [q])
        crossed = book.crossed() if synced else None
        if crossed:
            book.rollback()
            bad(ps, g[0][0], f"crossed book after message: bid {crossed[0]} >= ask {crossed[1]}")
            continue
        book.commit()
        in_snapshot = snap
        n = len(g)
        flags = [FLAG_SNAPSHOT if snap else 0] * n
        if start_clear:
            flags[0] |= FLAG_CLEAR
        flags[-1] |= FLAG_LAST
        cols["ts_event"].extend(r[1] for r in g)
        cols["ts_local"].extend(r[2] for r in g)
        cols["seq"].extend(r[0] for r in g)
        cols["side"].extend(r[4] for r in g)
        cols["price"].extend(r[5] for r in g)
        cols["size"].extend(r[6] for r in g)
        cols["flags"].extend(flags)
        cols["update_id"].extend([0] * n)
    return make_table(DataType.BOOK_DELTA, iid, pp, sp, dict(cols), source="", meta={})


def _trades(ps: str, iid: str, recs: list[tuple[int, list[str]]], bad: BadRows) -> Table:
    pp, sp = floor_precisions(
        iid, text_precision(r[6] for _, r in recs), text_precision(r[7] for _, r in recs)
    )
    cols: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "price", "size", "aggressor", "trade_id")
    }
    aggr = {"buy": AGGRESSOR_BUY, "sell": AGGRESSOR_SELL, "unknown": AGGRESSOR_UNKNOWN, "": AGGRESSOR_UNKNOWN}
    last_local = 0
    for line, rec in recs:
        try:
            te, tl = _times(ps, line, rec, last_local)
            if rec[5] not in aggr:
                raise ValueError(f"side must be buy/sell/unknown, got {rec[5]!r}")
            p, q = parse_fixed(rec[6], pp), parse_fixed(rec[7], sp)
            if p <= 0 or q <= 0:
                raise ValueError(f"bad trade price={rec[6]} amount={rec[7]}")
            if not rec[4]:
                raise ValueError("missing trade id")
        except ValueError as exc:
            bad(ps, line, str(exc))
            continue
        last_local = tl
        cols["ts_event"].append(te)
        cols["ts_local"].append(tl)
        cols["seq"].append(line)
        cols["price"].append(p)
        cols["size"].append(q)
        cols["aggressor"].append(aggr[rec[5]])
        cols["trade_id"].append(_trade_id(rec[4]))
    return make_table(DataType.TRADE, iid, pp, sp, dict(cols), source="", meta={})


def _quotes(ps: str, iid: str, recs: list[tuple[int, list[str]]], bad: BadRows) -> Table:
    pp, sp = floor_precisions(
        iid,
        text_precision(v for _, r in recs for v in (r[5], r[6])),
        text_precision(v for _, r in recs for v in (r[4], r[7])),
    )
    cols: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "bid_price", "bid_size", "ask_price", "ask_size")
    }
    last_local = 0
    for line, rec in recs:
        try:
            te, tl = _times(ps, line, rec, last_local)
            if "" in rec[4:8]:
                raise ValueError("one-sided quote cannot be stored as QUOTE")
            asz, ap, bp, bsz = (
                parse_fixed(rec[4], sp),
                parse_fixed(rec[5], pp),
                parse_fixed(rec[6], pp),
                parse_fixed(rec[7], sp),
            )
            if ap <= 0 or bp <= 0 or asz < 0 or bsz < 0:
                raise ValueError("non-positive price or negative size")
            if bp >= ap:
                raise ValueError(f"crossed quote: bid {rec[6]} >= ask {rec[5]}")
        except ValueError as exc:
            bad(ps, line, str(exc))
            continue
        last_local = tl
        cols["ts_event"].append(te)
        cols["ts_local"].append(tl)
        cols["seq"].append(line)
        cols["bid_price"].append(bp)
        cols["bid_size"].append(bsz)
        cols["ask_price"].append(ap)
        cols["ask_size"].append(asz)
    return make_table(DataType.QUOTE, iid, pp, sp, dict(cols), source="", meta={})

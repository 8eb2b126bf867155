"""Binance websocket captures (hftbacktest collector): ``<local_ts_ns> <json>`` per gzip line.

A depth diff only means something relative to a book, and the capture starts unsynchronised: the
REST snapshot line arrives after some stream messages, and the first diffs it must be combined
with were received *before* it. So the loader follows Binance's documented sync procedure
instead of replaying lines blindly:

1. Buffer depth diffs until the snapshot line (``lastUpdateId`` = L).
2. Emit the snapshot (first row CLEAR|SNAPSHOT, all rows SNAPSHOT, last row LAST).
3. Drop buffered/later diffs that the snapshot already contains: spot ``u <= L``; futures
   ``u < L`` (Binance's futures page; a futures diff with ``u == L`` is re-applied, which is
   harmless because levels are absolute).
4. The first applied diff must straddle L: spot ``U <= L+1 <= u``; futures ``U <= L <= u``.
5. Every later diff must continue the previous one: spot ``U == prev_u + 1``; futures
   (usdm, cm) ``pu == prev_u``.

A break in step 4 or 5 is a sequence gap. It is never absorbed: ``on_gap="raise"`` raises
DataError naming the file and line; ``on_gap="resync"`` records {file, line, expected, got} in
``meta["gaps"]``, logs a warning, and emits no book rows until a later snapshot line re-syncs
the book (these captures have only one snapshot, so in practice the book data ends at the gap).

Several files can be given in order: the ``_20240809`` files continue the ``_20240808`` session
with no new snapshot, so sequence continuity and local-time monotonicity are checked across files.

Timestamps: ``ts_local`` is the collector's receive time. ``ts_event`` is the venue time: ``T``
(transaction time) for futures depth and all trades, ``E`` (event time) for spot depth, which has
no ``T``. The spot REST snapshot carries no venue time at all, so its rows use the local receive
time as ts_event. Diffs that were buffered before the snapshot are emitted after it with the
snapshot's ``ts_local`` and ``seq`` (their own ``ts_event`` is kept): that is when they became
applicable, and it keeps (ts_local, seq) non-decreasing so a sort cannot move them before the
CLEAR that would wipe them.

``seq`` is the line number in the concatenated stream (1-based; the second file continues the
count); all rows of one message share it, so sorts must be stable within a message.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.data._book import LightBook, snapshot_crossed
from bastion.data._common import (
    NS_PER_MS,
    BadRows,
    OnGap,
    PathLike,
    as_paths,
    known_precisions,
    log,
    make_table,
    source_name,
)
from bastion.data._numbers import TooManyDecimals, parse_fixed, text_decimals
from bastion.data.schema import (
    AGGRESSOR_BUY,
    AGGRESSOR_SELL,
    FLAG_CLEAR,
    FLAG_LAST,
    FLAG_SNAPSHOT,
    SIDE_ASK,
    SIDE_BID,
    DataError,
    DataType,
    Table,
)

_decode = json.JSONDecoder().decode
_MARKETS = {"spot": "", "usdm": "-PERP", "cm": "-PERP"}
_FILE_SYMBOL = re.compile(r"^([a-z0-9]+?)(?:_perp)?_\d{8}$")


def infer_instrument_id(path: PathLike) -> str:
    """Instrument id from the capture's layout: ``<market>/<symbol>_<yyyymmdd>.gz``.

    spot/btcusdt -> BTCUSDT.BINANCE, usdm/btcusdt -> BTCUSDT-PERP.BINANCE,
    cm/btcusd_perp -> BTCUSD-PERP.BINANCE. When the directory is not one of spot/usdm/cm, the
    market is read from the first depth message instead (futures diffs carry ``pu``).
    """
    p = Path(path)
    stem = p.name.removesuffix(".gz")
    m = _FILE_SYMBOL.match(stem)
    if not m:
        raise DataError(str(p), None, "cannot infer the instrument from the file name; pass instrument_id")
    symbol = m.group(1).upper()
    market = p.parent.name.lower()
    if market not in _MARKETS:
        market = _sniff_market(p)
    return f"{symbol}{_MARKETS[market]}.BINANCE"


def _sniff_market(path: Path) -> str:
    with gzip.open(path, "rb") as fh:
        for n, raw in enumerate(fh):
            if n > 2000:
                break
            _, _, js = raw.partition(b" ")
            try:
                obj = json.loads(js)
            except ValueError:
                continue
            data = obj.get("data") if isinstance(obj, dict) else None
            if isinstance(data, dict) and data.get("e") == "depthUpdate":
                if "ps" in data:
                    return "cm"
                return "usdm" if "pu" in data else "spot"
    raise DataError(str(path), None, "cannot tell spot from futures; pass instrument_id")


class _Diff:
    """A parsed depth diff (kept as an object only while buffered before a snapshot)."""

    __slots__ = (
        "ask_p",
        "ask_q",
        "bid_p",
        "bid_q",
        "first",
        "last",
        "line",
        "path",
        "prev",
        "seq",
        "te",
        "tl",
    )

    def __init__(
        self,
        first: int,
        last: int,
        prev: int,
        te: int,
        tl: int,
        seq: int,
        bid_p: list[int],
        bid_q: list[int],
        ask_p: list[int],
        ask_q: list[int],
        path: str,
        line: int,
    ) -> None:
        self.first, self.last, self.prev = first, last, prev
        self.te, self.tl, self.seq = te, tl, seq
        self.bid_p, self.bid_q, self.ask_p, self.ask_q = bid_p, bid_q, ask_p, ask_q
        self.path, self.line = path, line


class _Stream:
    """The state of one capture session while its lines are read."""

    def __init__(
        self,
        instrument_id: str,
        price_precision: int,
        size_precision: int,
        skip_bad: bool,
        on_gap: OnGap,
        *,
        may_widen: tuple[bool, bool],
    ) -> None:
        self.may_widen = may_widen
        self.instrument_id = instrument_id
        self.pp = price_precision
        self.sp = size_precision
        self.bad = BadRows(skip_bad)
        self.on_gap = on_gap
        self.futures = "-PERP" in instrument_id
        self.book = LightBook(track_undo=skip_bad)
        self.pcache: dict[str, int] = {}
        self.scache: dict[str, int] = {}
        # sync state
        self.snapshot_id: int | None = None  # L of the snapshot the book is built on
        self.last_u: int | None = None  # u of the last applied diff (None: first event pending)
        self.buffer: list[_Diff] = []
        self.stream_symbol: str | None = None
        self.last_local = 0
        # book_delta columns
        self.b_te: list[int] = []
        self.b_tl: list[int] = []
        self.b_seq: list[int] = []
        self.b_side: list[int] = []
        self.b_price: list[int] = []
        self.b_size: list[int] = []
        self.b_flags: list[int] = []
        self.b_uid: list[int] = []
        # trade columns
        self.t_te: list[int] = []
        self.t_tl: list[int] = []
        self.t_seq: list[int] = []
        self.t_price: list[int] = []
        self.t_size: list[int] = []
        self.t_aggr: list[int] = []
        self.t_id: list[int] = []
        # counters for meta
        self.counts: Counter[str] = Counter()
        self.trades_skipped: Counter[str] = Counter()
        self.gaps: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.stale_dropped = 0  # diffs already contained in a snapshot
        self.unsynced_dropped = 0  # diffs that never found a snapshot to apply to
        self.applied = 0
        self.lines = 0
        self.widened: dict[str, list[int]] = {}

    # -- parsing helpers -------------------------------------------------------------------
    def _parse(self, text: Any, kind: int) -> int:
        """Parse a price (kind 0) or size (kind 1); a value finer than a precision we are allowed
        to widen restarts the load at the finer precision instead of failing."""
        try:
            return parse_fixed(text, self.pp if kind == 0 else self.sp)
        except TooManyDecimals:
            if self.may_widen[kind]:
                raise _NeedWider(kind, text_decimals(text)) from None
            raise

    def _levels(self, levels: Any, *, snapshot: bool) -> tuple[list[int], list[int]]:
        pc, sc = self.pcache, self.scache
        prices: list[int] = []
        sizes: list[int] = []
        for ps, qs in levels:
            try:
                p = pc[ps]
            except KeyError:
                p = self._parse(ps, 0)
                if p <= 0:
                    raise ValueError(f"price must be positive: {ps!r}") from None
                pc[ps] = p
            try:
                q = sc[qs]
            except KeyError:
                q = self._parse(qs, 1)
                if q < 0:
                    raise ValueError(f"size must not be negative: {qs!r}") from None
                sc[qs] = q
            if snapshot and q == 0:
                raise ValueError(f"snapshot level {ps} has size 0")
            prices.append(p)
            sizes.append(q)
        return prices, sizes

    # -- line dispatch ---------------------------------------------------------------------
    def feed(self, path: str, line: int, seq: int, raw: bytes) -> None:
        sp = raw.find(b" ")
        if sp <= 0:
            self.bad(path, line, "malformed line: expected '<local_ts_ns> <json>'")
            return
        try:
            tl = int(raw[:sp])
            obj = _decode(raw[sp + 1 :].decode())
        except ValueError as exc:
            self.bad(path, line, f"malformed line: {exc}")
            return
        if tl <= 0:
            self.bad(path, line, f"local timestamp must be positive, got {tl}")
            return
        if tl < self.last_local:
            self.bad(path, line, f"local timestamp goes backwards: {tl} < {self.last_local}")
            return
        if not isinstance(obj, dict):
            self.bad(path, line, "JSON is not an object")
            return
        try:
            stream = obj.get("stream")
            if stream is None:
                if "lastUpdateId" in obj:
                    self._snapshot(obj, tl, seq, path, line)
                else:
                    raise ValueError("neither a stream message nor a depth snapshot")
            else:
                at = stream.find("@")
                symbol, kind = stream[:at], stream[at + 1 :]
                if self.stream_symbol is None:
                    self.stream_symbol = symbol
                elif symbol != self.stream_symbol:
                    raise ValueError(
                        f"stream {stream!r} is not {self.stream_symbol!r}: one instrument per file"
                    )
                data = obj["data"]
                if kind.startswith("depth"):
                    self.counts["depth"] += 1
                    self._diff(data, tl, seq, path, line)
                elif kind == "trade":
                    self.counts["trade"] += 1
                    self._trade(data, tl, seq)
                elif kind == "bookTicker":
                    if not isinstance(data, dict):
                        raise ValueError("bookTicker data is not an object")
                    self.counts["bookTicker"] += 1
                else:
                    self.counts["other"] += 1
        except _Skipped:
            pass
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            if isinstance(exc, DataError):
                raise
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            self.bad(path, line, reason)
            return
        self.last_local = tl

    # -- snapshot ----------------------------------------------------------------------------
    def _snapshot(self, obj: dict[str, Any], tl: int, seq: int, path: str, line: int) -> None:
        last_id = obj["lastUpdateId"]
        if type(last_id) is not int:
            raise ValueError(f"lastUpdateId is not an integer: {last_id!r}")
        bid_p, bid_q = self._levels(obj["bids"], snapshot=True)
        ask_p, ask_q = self._levels(obj["asks"], snapshot=True)
        if not bid_p and not ask_p:
            raise ValueError("empty depth snapshot")
        crossed = snapshot_crossed(bid_p, ask_p)
        if crossed:
            raise ValueError(f"crossed snapshot: best bid {crossed[0]} >= best ask {crossed[1]}")
        if self.futures:
            t = obj.get("T", obj.get("E"))
            if type(t) is not int:
                raise ValueError("futures snapshot without an integer T/E")
            te = t * NS_PER_MS
        else:
            te = tl
        self.counts["snapshot"] += 1
        self.snapshots.append(
            {"file": path, "line": line, "last_update_id": last_id, "buffered": len(self.buffer)}
        )
        self.book.load(bid_p, bid_q, ask_p, ask_q)
        self.book.commit()
        n = len(bid_p) + len(ask_p)
        self.b_te.extend([te] * n)
        self.b_tl.extend([tl] * n)
        self.b_seq.extend([seq] * n)
        self.b_side.extend([SIDE_BID] * len(bid_p))
        self.b_side.extend([SIDE_ASK] * len(ask_p))
        self.b_price.extend(bid_p)
        self.b_price.extend(ask_p)
        self.b_size.extend(bid_q)
        self.b_size.extend(ask_q)
        flags = [FLAG_SNAPSHOT] * n
        flags[0] |= FLAG_CLEAR
        flags[-1] |= FLAG_LAST
        self.b_flags.extend(flags)
        self.b_uid.extend([last_id] * n)
        self.snapshot_id = last_id
        self.last_u = None
        pending, self.buffer = self.buffer, []
        for d in pending:
            if self.snapshot_id is None:  # a gap among the buffered diffs: wait for the next snapshot
                self.buffer.append(d)
            else:
                self._apply(d, tl, seq)

    # -- depth diff --------------------------------------------------------------------------
    def _diff(self, data: dict[str, Any], tl: int, seq: int, path: str, line: int) -> None:
        first, last = data["U"], data["u"]
        if not self.futures and "pu" in data:
            raise ValueError("futures depth message (has pu) in a spot stream: check instrument_id")
        prev = data["pu"] if self.futures else -1
        t = data["T"] if self.futures and "T" in data else data["E"]
        if type(first) is not int or type(last) is not int or type(prev) is not int or type(t) is not int:
            raise ValueError("U/u/pu/E/T must be integers")
        if first > last:
            raise ValueError(f"U {first} > u {last}")
        bid_p, bid_q = self._levels(data["b"], snapshot=False)
        ask_p, ask_q = self._levels(data["a"], snapshot=False)
        d = _Diff(first, last, prev, t * NS_PER_MS, tl, seq, bid_p, bid_q, ask_p, ask_q, path, line)
        if self.snapshot_id is None:
            self.buffer.append(d)
            return
        self._apply(d, tl, seq)

    def _apply(self, d: _Diff, tl: int, seq: int) -> None:
        """Apply one diff to the synced book (tl/seq: when it becomes effective)."""
        L = self.snapshot_id
        assert L is not None
        if self.last_u is None:
            if d.last < L if self.futures else d.last <= L:
                self.stale_dropped += 1
                return
            if self.futures:
                ok, expected, got = d.first <= L <= d.last, L, d.first
            else:
                ok, expected, got = d.first <= L + 1 <= d.last, L + 1, d.first
            if not ok:
                self._gap(d, expected, got, "first diff after the snapshot does not straddle lastUpdateId")
                return
        elif self.futures:
            if d.prev != self.last_u:
                self._gap(d, self.last_u, d.prev, "pu != previous u")
                return
        elif d.first != self.last_u + 1:
            self._gap(d, self.last_u + 1, d.first, "U != previous u + 1")
            return
        book = self.book
        book.update(SIDE_BID, d.bid_p, d.bid_q)
        book.update(SIDE_ASK, d.ask_p, d.ask_q)
        crossed = book.crossed()
        if crossed:
            book.rollback()
            self.bad(
                d.path, d.line, f"crossed book after message: best bid {crossed[0]} >= best ask {crossed[1]}"
            )
            return  # skipped: its update ids are not consumed, so the next diff reports the gap
        book.commit()
        self.applied += 1
        self.last_u = d.last
        nb, na = len(d.bid_p), len(d.ask_p)
        n = nb + na
        if n == 0:
            return
        self.b_te.extend([d.te] * n)
        self.b_tl.extend([tl] * n)
        self.b_seq.extend([seq] * n)
        self.b_side.extend([SIDE_BID] * nb)
        self.b_side.extend([SIDE_ASK] * na)
        self.b_price.extend(d.bid_p)
        self.b_price.extend(d.ask_p)
        self.b_size.extend(d.bid_q)
        self.b_size.extend(d.ask_q)
        self.b_flags.extend([0] * (n - 1))
        self.b_flags.append(FLAG_LAST)
        self.b_uid.extend([d.last] * n)

    def _gap(self, d: _Diff, expected: int, got: int, what: str) -> None:
        if self.on_gap == "raise":
            raise DataError(d.path, d.line, f"sequence gap ({what}): expected {expected}, got {got}")
        self.gaps.append({"file": d.path, "line": d.line, "expected": expected, "got": got})
        log.warning("sequence_gap", file=d.path, line=d.line, expected=expected, got=got, detail=what)
        # Tell every replayer the book is no longer valid: a lone CLEAR row (no SNAPSHOT flag)
        # empties it, so nothing quotes on stale levels until a snapshot rebuilds it.
        self.b_te.append(d.te)
        self.b_tl.append(d.tl)
        self.b_seq.append(d.seq)
        self.b_side.append(SIDE_BID)
        self.b_price.append(1)
        self.b_size.append(0)
        self.b_flags.append(FLAG_CLEAR | FLAG_LAST)
        self.b_uid.append(expected)
        # Resync: forget the book and wait for a snapshot, buffering from this diff on exactly as
        # at the start of the capture.
        self.book.clear()
        self.snapshot_id = None
        self.last_u = None
        self.buffer = [d]

    # -- trade -------------------------------------------------------------------------------
    def _trade(self, data: dict[str, Any], tl: int, seq: int) -> None:
        if self.futures:
            x = data["X"]
            if x != "MARKET":
                self.trades_skipped[str(x)] += 1
                raise _Skipped
        t, tid, maker = data["T"], data["t"], data["m"]
        if type(t) is not int or type(tid) is not int:
            raise ValueError("trade T/t must be integers")
        if type(maker) is not bool:
            raise ValueError(f"trade m must be a boolean, got {maker!r}")
        ps, qs = data["p"], data["q"]
        p = self.pcache.get(ps)
        if p is None:
            p = self._parse(ps, 0)
            if p <= 0:
                raise ValueError(f"price must be positive: {ps!r}")
            self.pcache[ps] = p
        q = self._parse(qs, 1)
        if q <= 0:
            raise ValueError(f"trade size must be positive: {qs!r}")
        self.t_te.append(t * NS_PER_MS)
        self.t_tl.append(tl)
        self.t_seq.append(seq)
        self.t_price.append(p)
        self.t_size.append(q)
        self.t_aggr.append(AGGRESSOR_SELL if maker else AGGRESSOR_BUY)
        self.t_id.append(tid)

    # -- result ------------------------------------------------------------------------------
    def tables(self, source: str, files: list[str], lines: int) -> list[Table]:
        self.unsynced_dropped += len(self.buffer)
        if self.buffer:
            log.warning(
                "diffs_without_snapshot",
                file=self.buffer[0].path,
                line=self.buffer[0].line,
                dropped=len(self.buffer),
            )
        meta: dict[str, Any] = {
            "format": "binance_ws",
            "files": files,
            "lines": lines,
            "messages": dict(self.counts),
            "snapshots": self.snapshots,
            "diffs_applied": self.applied,
            "diffs_stale_dropped": self.stale_dropped,
            "diffs_unsynced_dropped": self.unsynced_dropped,
            "trades_skipped": dict(self.trades_skipped),
            "gaps": self.gaps,
            "precision_widened": self.widened,
            **self.bad.meta(),
        }
        book = make_table(
            DataType.BOOK_DELTA,
            self.instrument_id,
            self.pp,
            self.sp,
            {
                "ts_event": self.b_te,
                "ts_local": self.b_tl,
                "seq": self.b_seq,
                "side": self.b_side,
                "price": self.b_price,
                "size": self.b_size,
                "flags": self.b_flags,
                "update_id": self.b_uid,
            },
            source=source,
            meta=meta,
        )
        trades = make_table(
            DataType.TRADE,
            self.instrument_id,
            self.pp,
            self.sp,
            {
                "ts_event": self.t_te,
                "ts_local": self.t_tl,
                "seq": self.t_seq,
                "price": self.t_price,
                "size": self.t_size,
                "aggressor": self.t_aggr,
                "trade_id": self.t_id,
            },
            source=source,
            meta=dict(meta),
        )
        return [book, trades]


class _Skipped(Exception):
    """A well-formed message that is deliberately not loaded (e.g. a non-MARKET futures trade)."""


class _NeedWider(Exception):
    """The instrument's precision is coarser than the data: reload at a finer one."""

    def __init__(self, kind: int, decimals: int) -> None:
        super().__init__(kind, decimals)
        self.kind = kind
        self.decimals = decimals


def scan_decimals(files: Sequence[Path]) -> tuple[int, int]:
    """Decimals needed by the prices and sizes of a capture (malformed lines are ignored here;
    the loading pass reports them)."""
    seen: set[str] = set()
    need = [0, 0]

    def note(text: Any, k: int) -> None:
        if type(text) is str and text not in seen:
            seen.add(text)
            try:
                d = text_decimals(text)
            except ValueError:
                return
            if d > need[k]:
                need[k] = d

    for f in files:
        with gzip.open(f, "rb") as fh:
            for raw in fh:
                _, _, js = raw.partition(b" ")
                try:
                    obj = json.loads(js)
                    if "lastUpdateId" in obj:
                        levels = [*obj["bids"], *obj["asks"]]
                    else:
                        data = obj["data"]
                        if "p" in data and "q" in data:
                            levels = [(data["p"], data["q"])]
                        elif "U" in data:
                            levels = [*data["b"], *data["a"]]
                        else:
                            continue
                    for p, q in levels:
                        note(p, 0)
                        note(q, 1)
                except (ValueError, KeyError, TypeError):
                    continue
    return need[0], need[1]


def load_binance_ws(
    paths: PathLike | Sequence[PathLike],
    *,
    instrument_id: str | None = None,
    skip_bad: bool = False,
    on_gap: OnGap = "resync",
    price_precision: int | None = None,
    size_precision: int | None = None,
) -> list[Table]:
    """Load one capture session (one or more files in order) into [BOOK_DELTA, TRADE] tables.

    Precisions: given explicitly, they are strict (a finer value is a bad row). Otherwise they
    start at the known instrument's and are widened if the data needs more decimals (recorded in
    ``meta["precision_widened"]``); for an unknown instrument they are read off the data first.
    """
    files = as_paths(paths)
    if on_gap not in ("resync", "raise"):
        raise ValueError(f"on_gap must be 'resync' or 'raise', got {on_gap!r}")
    iid = instrument_id or infer_instrument_id(files[0])
    if instrument_id is None:
        for f in files[1:]:
            other = infer_instrument_id(f)
            if other != iid:
                raise DataError(str(f), None, f"instrument {other} does not continue {iid}")
    known = known_precisions(iid)
    if known is None and (price_precision is None or size_precision is None):
        # No instrument to take the grid from: read it off the data (one extra pass).
        need = scan_decimals(files)
        known = (need[0], need[1])
    assert known is not None
    pp = price_precision if price_precision is not None else known[0]
    sp = size_precision if size_precision is not None else known[1]
    may_widen = (price_precision is None, size_precision is None)
    start = (pp, sp)
    while True:
        try:
            st = _read(files, iid, pp, sp, skip_bad, on_gap, may_widen=may_widen)
            break
        except _NeedWider as w:
            # Tick and lot sizes change over time and resting orders keep the old grid, so a
            # known instrument's precision is a floor: restart once at the finer precision.
            if w.kind == 0:
                pp = max(pp, w.decimals)
            else:
                sp = max(sp, w.decimals)
    if (pp, sp) != start:
        log.info(
            "precision_widened", instrument=iid, price=(start[0], pp), size=(start[1], sp), file=str(files[0])
        )
        st.widened = {"price_precision": [start[0], pp], "size_precision": [start[1], sp]}
    return st.tables(source_name(files), [str(f) for f in files], st.lines)


def _read(
    files: list[Path],
    iid: str,
    pp: int,
    sp: int,
    skip_bad: bool,
    on_gap: OnGap,
    *,
    may_widen: tuple[bool, bool],
) -> _Stream:
    st = _Stream(iid, pp, sp, skip_bad, on_gap, may_widen=may_widen)
    seq = 0
    for f in files:
        fs = str(f)
        try:
            with gzip.open(f, "rb") as fh:
                for line, raw in enumerate(fh, 1):
                    seq += 1
                    st.feed(fs, line, seq, raw)
        except (OSError, EOFError) as exc:  # truncated or not gzip
            raise DataError(fs, None, f"cannot read gzip stream: {exc}") from exc
    st.lines = seq
    return st

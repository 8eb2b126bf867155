"""Hyperliquid websocket captures (hftbacktest collector): ``<local_ts_ns> <json>`` per gzip line.

``l2Book`` messages are full top-20 snapshots, not diffs, so each becomes a complete snapshot in
BOOK_DELTA (first row CLEAR|SNAPSHOT, all rows SNAPSHOT, last row LAST; bids then asks) and needs
no sequence check. ``trades`` messages carry a list of trades; ``side`` is the taker's side
(B = buy aggressor, A = sell aggressor). The first ``trades`` message after subscribing replays
recent trades from before the capture started; they are real trades and are kept (their
ts_event precedes the first book), which ``meta["trades_before_first_book"]`` counts.

ts_event = the message's ``time`` (book) or the trade's ``time`` (ms); ts_local = the collector's
receive time, which must not go backwards. ``seq`` = line number; ``update_id`` = 0 (Hyperliquid
books carry no sequence number). Instrument: ``<COIN>-PERP.HYPERLIQUID``. Precisions are the
decimals the text needs (Hyperliquid prices follow significant-figure rules, not a fixed tick).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion.data._book import snapshot_crossed
from bastion.data._common import (
    NS_PER_MS,
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
    FLAG_CLEAR,
    FLAG_LAST,
    FLAG_SNAPSHOT,
    SIDE_ASK,
    SIDE_BID,
    DataError,
    DataType,
    Table,
)


def _texts(msgs: list[tuple[int, int, Any]], key: str) -> list[Any]:
    out: list[Any] = []
    for _, _, o in msgs:
        try:
            data = o["data"]
            if o["channel"] == "l2Book":
                out.extend(lv[key] for side in data["levels"] for lv in side)
            elif o["channel"] == "trades":
                out.extend(t[key] for t in data)
        except (KeyError, TypeError, IndexError):
            continue
    return out


def load_hyperliquid_ws(
    path: PathLike, *, instrument_id: str | None = None, skip_bad: bool = False
) -> list[Table]:
    p = Path(path)
    ps = str(p)
    bad = BadRows(skip_bad)
    msgs: list[tuple[int, int, Any]] = []
    last_local = 0
    with open_text(p) as fh:
        for line, text in enumerate(fh, 1):
            ts_text, sep, js = text.partition(" ")
            try:
                if not sep:
                    raise ValueError("expected '<local_ts_ns> <json>'")
                tl = int(ts_text)
                obj = json.loads(js)
                if not isinstance(obj, dict):
                    raise ValueError("JSON is not an object")
            except ValueError as exc:
                bad(ps, line, f"malformed line: {exc}")
                continue
            if tl < last_local:
                bad(ps, line, f"local timestamp goes backwards: {tl} < {last_local}")
                continue
            last_local = tl
            msgs.append((line, tl, obj))
    coin = next(
        (
            o["data"].get("coin")
            for _, _, o in msgs
            if o.get("channel") == "l2Book" and isinstance(o.get("data"), dict)
        ),
        None,
    )
    if coin is None:
        coin = next(
            (o["data"][0].get("coin") for _, _, o in msgs if o.get("channel") == "trades" and o.get("data")),
            None,
        )
    if not isinstance(coin, str):
        raise DataError(ps, None, "no l2Book or trades message naming a coin")
    iid = instrument_id or f"{coin}-PERP.HYPERLIQUID"
    pp, sp = floor_precisions(iid, text_precision(_texts(msgs, "px")), text_precision(_texts(msgs, "sz")))
    book: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "side", "price", "size", "flags", "update_id")
    }
    trades: dict[str, list[int]] = {
        k: [] for k in ("ts_event", "ts_local", "seq", "price", "size", "aggressor", "trade_id")
    }
    counts = {"l2Book": 0, "trades": 0, "other": 0}
    first_book_te: int | None = None
    early_trades = 0
    for line, tl, o in msgs:
        try:
            channel = o["channel"]
            data = o["data"]
            if channel == "l2Book":
                if data["coin"] != coin:
                    raise ValueError(f"coin {data['coin']} is not {coin}: one instrument per file")
                t = data["time"]
                if type(t) is not int:
                    raise ValueError("time must be an integer")
                bids_side, asks_side = data["levels"]
                levels: list[tuple[int, int, int]] = []
                for side, lvls in ((SIDE_BID, bids_side), (SIDE_ASK, asks_side)):
                    for lv in lvls:
                        pr, q = parse_fixed(lv["px"], pp), parse_fixed(lv["sz"], sp)
                        if pr <= 0 or q <= 0:
                            raise ValueError(f"bad level px={lv['px']} sz={lv['sz']}")
                        levels.append((side, pr, q))
                if not levels:
                    raise ValueError("empty book")
                crossed = snapshot_crossed(
                    [pr for s, pr, _ in levels if s == SIDE_BID], [pr for s, pr, _ in levels if s == SIDE_ASK]
                )
                if crossed:
                    raise ValueError(f"crossed book: bid {crossed[0]} >= ask {crossed[1]}")
                te = t * NS_PER_MS
                if first_book_te is None:
                    first_book_te = te
                n = len(levels)
                flags = [FLAG_SNAPSHOT] * n
                flags[0] |= FLAG_CLEAR
                flags[-1] |= FLAG_LAST
                book["ts_event"].extend([te] * n)
                book["ts_local"].extend([tl] * n)
                book["seq"].extend([line] * n)
                book["side"].extend(s for s, _, _ in levels)
                book["price"].extend(pr for _, pr, _ in levels)
                book["size"].extend(q for _, _, q in levels)
                book["flags"].extend(flags)
                book["update_id"].extend([0] * n)
                counts["l2Book"] += 1
            elif channel == "trades":
                rows = []
                for tr in data:
                    if tr["coin"] != coin:
                        raise ValueError(f"coin {tr['coin']} is not {coin}: one instrument per file")
                    pr, q = parse_fixed(tr["px"], pp), parse_fixed(tr["sz"], sp)
                    if pr <= 0 or q <= 0:
                        raise ValueError(f"bad trade px={tr['px']} sz={tr['sz']}")
                    side = tr["side"]
                    if side not in ("B", "A"):
                        raise ValueError(f"side must be B or A, got {side!r}")
                    t, tid = tr["time"], tr["tid"]
                    if type(t) is not int or type(tid) is not int:
                        raise ValueError("time/tid must be integers")
                    rows.append((t * NS_PER_MS, pr, q, AGGRESSOR_BUY if side == "B" else AGGRESSOR_SELL, tid))
                for te, pr, q, ag, tid in rows:
                    if first_book_te is None or te < first_book_te:
                        early_trades += 1
                    trades["ts_event"].append(te)
                    trades["ts_local"].append(tl)
                    trades["seq"].append(line)
                    trades["price"].append(pr)
                    trades["size"].append(q)
                    trades["aggressor"].append(ag)
                    trades["trade_id"].append(tid)
                counts["trades"] += 1
            else:
                counts["other"] += 1
        except (KeyError, TypeError, ValueError) as exc:
            bad(ps, line, f"missing field {exc}" if isinstance(exc, KeyError) else str(exc))
    meta = {
        "format": "hyperliquid_ws",
        "coin": coin,
        "messages": counts,
        "trades_before_first_book": early_trades,
        **bad.meta(),
    }
    src = source_name([p])
    return [
        make_table(DataType.BOOK_DELTA, iid, pp, sp, book, source=src, meta=meta),
        make_table(DataType.TRADE, iid, pp, sp, trades, source=src, meta=dict(meta)),
    ]

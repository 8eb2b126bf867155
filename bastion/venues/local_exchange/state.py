"""The exchange's memory on disk: one SQLite file, one transaction per answered request.

A client that got an answer must be able to rely on it even if the exchange is killed the next
instant, so every change a request makes (order, fills, balances, the nonce it used, how far the
market replay got) is committed in a single transaction *before* the HTTP response is written,
with ``synchronous=FULL``. On start-up everything is read back, and the replayed book is rebuilt
by replaying the recording up to the saved position.

The schema is deliberately plain (integers at the pair's or asset's precision, text ids) so a
person can inspect the state of a chaos test with the ``sqlite3`` shell.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (api_key TEXT PRIMARY KEY, nonce TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS balances (asset TEXT PRIMARY KEY, raw TEXT NOT NULL, decimals INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    txid TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    cl_ord_id TEXT,
    userref INTEGER,
    status TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_cl_ord_id ON orders (cl_ord_id);
CREATE TABLE IF NOT EXISTS trades (
    txid TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    ordertxid TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS public_trades (
    pair TEXT NOT NULL,
    id INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (pair, id)
);
"""


@dataclass(slots=True)
class Snapshot:
    """Everything read back at start-up."""

    meta: dict[str, str] = field(default_factory=dict)
    nonces: dict[str, int] = field(default_factory=dict)
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)  # asset -> (raw, decimals)
    orders: list[dict[str, Any]] = field(default_factory=list)  # by seq
    trades: list[dict[str, Any]] = field(default_factory=list)  # by seq
    public_trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # pair -> by id


class Store:
    """SQLite persistence; callers batch all writes of one request in :meth:`transaction`."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "exchange.sqlite"
        # the exchange serialises access with its own lock; the server thread and a test thread
        # may both call into it
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def load(self) -> Snapshot:
        db = self._db
        snap = Snapshot()
        snap.meta = {k: v for k, v in db.execute("SELECT key, value FROM meta")}
        snap.nonces = {k: int(v) for k, v in db.execute("SELECT api_key, nonce FROM nonces")}
        snap.balances = {
            a: (int(r), int(d)) for a, r, d in db.execute("SELECT asset, raw, decimals FROM balances")
        }
        snap.orders = [json.loads(d) for (d,) in db.execute("SELECT doc FROM orders ORDER BY seq")]
        snap.trades = [json.loads(d) for (d,) in db.execute("SELECT doc FROM trades ORDER BY seq")]
        for pair, doc in db.execute("SELECT pair, doc FROM public_trades ORDER BY pair, id"):
            snap.public_trades.setdefault(pair, []).append(json.loads(doc))
        return snap

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        """All-or-nothing: either every write of the block is durable or none is."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield Txn(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


class Txn:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def nonce(self, api_key: str, nonce: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO nonces (api_key, nonce) VALUES (?, ?)", (api_key, str(nonce))
        )

    def balance(self, asset: str, raw: int, decimals: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO balances (asset, raw, decimals) VALUES (?, ?, ?)",
            (asset, str(raw), decimals),
        )

    def order(self, doc: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO orders (txid, seq, cl_ord_id, userref, status, doc)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                doc["txid"],
                doc["seq"],
                doc.get("cl_ord_id"),
                doc.get("userref"),
                doc["status"],
                json.dumps(doc),
            ),
        )

    def trade(self, doc: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO trades (txid, seq, ordertxid, doc) VALUES (?, ?, ?, ?)",
            (doc["txid"], doc["seq"], doc["ordertxid"], json.dumps(doc)),
        )

    def public_trades(self, pair: str, docs: list[dict[str, Any]], keep: int) -> None:
        if not docs:
            return
        self._db.executemany(
            "INSERT OR REPLACE INTO public_trades (pair, id, doc) VALUES (?, ?, ?)",
            [(pair, d["id"], json.dumps(d)) for d in docs],
        )
        self._db.execute(
            "DELETE FROM public_trades WHERE pair = ? AND id <= ?", (pair, int(docs[-1]["id"]) - keep)
        )

"""The durable state of a live system: orders, their audit trail, fills, reservations, switches.

After a crash the order gateway rebuilds itself from here (plus the write-ahead log): which orders
may still be working at a venue, which balances are still promised to them, whether the kill
switch was on. So the store is built to be *right* rather than clever:

* Every method runs in one transaction; :meth:`Store.transaction` lets a caller put several
  (reserve + upsert order + record event) in one, so a crash leaves all of them or none.
* On SQLite every transaction starts with ``BEGIN IMMEDIATE`` (the write lock up front), the
  journal is WAL and ``synchronous=FULL``: a committed transaction survives power loss, and two
  processes never interleave half-transactions. On PostgreSQL the atomic steps are single
  statements (``INSERT … ON CONFLICT … RETURNING``, conditional ``UPDATE``) whose row locks make
  them safe under READ COMMITTED without retries.
* "Exactly once" is enforced by the database, not by the caller's memory: a fill is keyed by
  (venue, client order id, trade id), a reservation is released by an ``UPDATE … WHERE released_ns
  IS NULL`` whose row count says who won, sequence numbers come from an atomic upsert.
* A repeated write with *different* content (the same fill id with another price, a client order
  id reused for another instrument) raises instead of being ignored: it is a bug or a venue
  correction, and either needs a human.
* Amounts are exact decimal text, timestamps integer nanoseconds (see :mod:`bastion.store.schema`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from bastion.model.codec import from_jsonable, parse_exact, to_jsonable
from bastion.model.fixed import Money, Price, Quantity, format_raw
from bastion.model.orders import Fill, Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.store import schema as S

__all__ = [
    "DEFAULT_URL",
    "ConflictError",
    "Store",
    "StoreError",
    "StoreNotWritable",
    "StoreTx",
    "order_from_row",
]

DEFAULT_URL = "sqlite:///state/bastion.db"

ExactValue = str | int | Decimal | Price | Quantity | Money


class StoreError(RuntimeError):
    """Base class of store errors."""


class StoreNotWritable(StoreError):
    """The store cannot take writes: trading must not start (or must stop)."""


class ConflictError(StoreError):
    """The same identity was written twice with different content."""


def _now() -> int:
    return time.time_ns()


def _exact_text(value: ExactValue, what: str) -> str:
    """Canonical exact text for an amount; floats are refused, they are not exact."""
    if isinstance(value, Price | Quantity | Money):
        return format_raw(value.raw, value.precision)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise TypeError(
            f"{what}: exact value needed (str, int, Decimal, Price, Quantity, Money), got {value!r}"
        )
    if isinstance(value, int):
        return str(value)
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what}: not a decimal number: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"{what}: not finite: {value!r}")
    return format(d, "f")  # canonical: "1e3" -> "1000", trailing zeros kept ("1.50")


def order_from_row(row: Mapping[str, Any]) -> Order:
    """Rebuild the model :class:`Order` from a row of ``bastion_orders`` (exact, lossless)."""
    q_raw, q_prec = parse_exact(row["quantity"])
    f_raw, f_prec = parse_exact(row["filled"])
    price = None
    if row["price"] is not None:
        p_raw, p_prec = parse_exact(row["price"])
        price = Price(p_raw, p_prec)
    return Order(
        client_order_id=row["client_order_id"],
        instrument_id=row["instrument_id"],
        side=Side[row["side"]],
        order_type=OrderType[row["order_type"]],
        quantity=Quantity(q_raw, q_prec),
        price=price,
        time_in_force=TimeInForce[row["tif"]],
        reduce_only=bool(row["reduce_only"]),
        strategy_id=row["strategy_id"],
        status=OrderStatus[row["status"]],
        filled=Quantity(f_raw, f_prec),
        venue_order_id=row["venue_order_id"],
        ts_init=row["created_ns"],
        ts_last=row["updated_ns"],
        cancel_pending=bool(row["cancel_pending"]),
    )


def _status_name(s: OrderStatus | str) -> str:
    if isinstance(s, OrderStatus):
        return s.name
    return OrderStatus[s].name  # KeyError on a typo rather than an empty result


_OPEN = tuple(s.name for s in OrderStatus if not s.is_terminal)


class StoreTx:
    """The store's operations inside one open transaction (see :meth:`Store.transaction`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._pg = conn.dialect.name == "postgresql"

    def _insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table) if self._pg else sqlite.insert(table)

    # --- orders ----------------------------------------------------------------------------------
    def upsert_order(self, order: Order, venue: str) -> None:
        """Insert or update an order; its identity (venue, instrument, side, strategy) is fixed."""
        t = S.orders
        created = order.ts_init
        filled = order.filled if order.filled is not None else Quantity(0, order.quantity.precision)
        values = {
            "client_order_id": order.client_order_id,
            "strategy_id": order.strategy_id,
            "instrument_id": order.instrument_id,
            "venue": venue,
            "side": order.side.name,
            "order_type": order.order_type.name,
            "tif": order.time_in_force.name,
            "price": None if order.price is None else format_raw(order.price.raw, order.price.precision),
            "quantity": format_raw(order.quantity.raw, order.quantity.precision),
            "reduce_only": order.reduce_only,
            "status": order.status.name,
            "venue_order_id": order.venue_order_id,
            "filled": format_raw(filled.raw, filled.precision),
            "cancel_pending": order.cancel_pending,
            "created_ns": created,
            "updated_ns": order.ts_last,  # 0 = never updated; the row mirrors the Order exactly
        }
        ins = self._insert(t).values(**values)
        fixed = ("strategy_id", "instrument_id", "venue", "side")
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.client_order_id],
            set_={k: ins.excluded[k] for k in values if k not in ("client_order_id", "created_ns")},
            where=sa.and_(*(t.c[k] == ins.excluded[k] for k in fixed)),
        ).returning(t.c.client_order_id)
        # RETURNING, not rowcount: drivers disagree on rowcount for INSERT … ON CONFLICT
        if self.conn.execute(stmt).first() is None:
            old = self.get_order(order.client_order_id)
            raise ConflictError(
                f"client_order_id {order.client_order_id!r} already names a different order: "
                f"{ {k: old[k] for k in fixed} if old else None } vs { {k: values[k] for k in fixed} }"
            )

    def get_order(self, client_order_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            sa.select(S.orders).where(S.orders.c.client_order_id == client_order_id)
        ).first()
        return dict(row._mapping) if row is not None else None

    def orders_in_status(self, *statuses: OrderStatus | str) -> list[dict[str, Any]]:
        names = [_status_name(s) for s in statuses]
        rows = self.conn.execute(
            sa.select(S.orders)
            .where(S.orders.c.status.in_(names))
            .order_by(S.orders.c.created_ns, S.orders.c.client_order_id)
        )
        return [dict(r._mapping) for r in rows]

    def open_orders(self) -> list[dict[str, Any]]:
        """Every order not known to be finished (incl. INITIALIZED and PENDING_VERIFICATION)."""
        return self.orders_in_status(*_OPEN)

    # --- audit trail -----------------------------------------------------------------------------
    def record_event(self, client_order_id: str, ts_ns: int, event_type: str, detail: dict[str, Any]) -> int:
        """Append to an order's audit trail; returns the entry's id (its place in the order)."""
        if not isinstance(detail, dict):
            raise TypeError(f"event detail must be a dict, got {type(detail).__name__}")
        res = self.conn.execute(
            sa.insert(S.order_events)
            .values(
                client_order_id=client_order_id,
                ts_ns=int(ts_ns),
                event_type=event_type,
                detail=to_jsonable(detail),
            )
            .returning(S.order_events.c.id)
        )
        return int(res.scalar_one())

    def audit_trail(self, client_order_id: str) -> list[dict[str, Any]]:
        """In the order the store received them (id), which is the gateway's order of events."""
        t = S.order_events
        rows = self.conn.execute(sa.select(t).where(t.c.client_order_id == client_order_id).order_by(t.c.id))
        out = []
        for r in rows:
            d = dict(r._mapping)
            d["detail"] = from_jsonable(d["detail"])
            out.append(d)
        return out

    # --- fills -----------------------------------------------------------------------------------
    def record_fill(self, fill: Fill, venue: str) -> bool:
        """True if new, False if this exact fill was already recorded (replays are harmless)."""
        if not fill.trade_id:
            raise ValueError(
                f"fill of {fill.client_order_id} has no trade_id: it cannot be recorded exactly once"
            )
        t = S.fills
        values = {
            "venue": venue,
            "client_order_id": fill.client_order_id,
            "trade_id": fill.trade_id,
            "instrument_id": fill.instrument_id,
            "ts_ns": fill.ts_event,
            "side": fill.side.name,
            "price": format_raw(fill.price.raw, fill.price.precision),
            "quantity": format_raw(fill.quantity.raw, fill.quantity.precision),
            "fee": format_raw(fill.fee.raw, fill.fee.precision),
            "fee_currency": fill.fee.currency,
            "liquidity": fill.liquidity.name,
        }
        stmt = (
            self._insert(t)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[t.c.venue, t.c.client_order_id, t.c.trade_id])
            .returning(t.c.id)
        )
        if self.conn.execute(stmt).first() is not None:
            self._sync_filled(venue, fill.client_order_id, fill.quantity.precision)
            return True
        old = self.conn.execute(
            sa.select(t).where(
                t.c.venue == venue, t.c.client_order_id == fill.client_order_id, t.c.trade_id == fill.trade_id
            )
        ).one()
        diff = {k: (old._mapping[k], v) for k, v in values.items() if old._mapping[k] != v}
        if diff:
            raise ConflictError(
                f"fill {venue}/{fill.client_order_id}/{fill.trade_id} seen with other data: {diff}"
            )
        return False

    def _sync_filled(self, venue: str, client_order_id: str, precision: int) -> None:
        """Keep the order row's ``filled`` equal to the sum of its recorded fills.

        A fill can arrive after its order was settled by recovery (the venue said FILLED before we
        had read the trades), when no gateway tracks the order any more; without this the audit
        trail would show a FILLED order with nothing filled. Never lowers the row's figure.
        """
        o, f = S.orders, S.fills
        row = self.conn.execute(
            sa.select(o.c.filled).where(o.c.client_order_id == client_order_id, o.c.venue == venue)
        ).first()
        if row is None:
            return
        parts = [
            parse_exact(str(q))
            for (q,) in self.conn.execute(
                sa.select(f.c.quantity).where(f.c.venue == venue, f.c.client_order_id == client_order_id)
            )
        ]
        cur_raw, cur_prec = parse_exact(str(row[0]))
        prec = max([precision, cur_prec, *(p for _, p in parts)])
        total = sum(r * 10 ** (prec - p) for r, p in parts)
        if total > cur_raw * 10 ** (prec - cur_prec):
            self.conn.execute(
                sa.update(o)
                .where(o.c.client_order_id == client_order_id, o.c.venue == venue)
                .values(filled=format_raw(total, prec))
            )

    def fills_for(self, client_order_id: str) -> list[dict[str, Any]]:
        t = S.fills
        rows = self.conn.execute(sa.select(t).where(t.c.client_order_id == client_order_id).order_by(t.c.id))
        return [dict(r._mapping) for r in rows]

    # --- reservations ----------------------------------------------------------------------------
    def reserve(
        self,
        client_order_id: str,
        currency: str,
        amount_raw: int,
        precision: int,
        *,
        ts_ns: int | None = None,
    ) -> bool:
        """Promise ``amount`` of ``currency`` to an order. True if new; False if already reserved."""
        if type(amount_raw) is not int or amount_raw < 0:
            raise ValueError(f"reservation amount must be a non-negative int raw, got {amount_raw!r}")
        t = S.reservations
        amount = format_raw(amount_raw, precision)
        stmt = (
            self._insert(t)
            .values(
                client_order_id=client_order_id,
                currency=currency,
                amount=amount,
                created_ns=_now() if ts_ns is None else ts_ns,
                released_ns=None,
            )
            .on_conflict_do_nothing(index_elements=[t.c.client_order_id, t.c.currency])
            .returning(t.c.client_order_id)
        )
        if self.conn.execute(stmt).first() is not None:
            return True
        old = self.conn.execute(
            sa.select(t).where(t.c.client_order_id == client_order_id, t.c.currency == currency)
        ).one()
        if old.amount != amount or old.released_ns is not None:
            state = "released" if old.released_ns is not None else f"reserved {old.amount}"
            raise ConflictError(
                f"reservation {client_order_id}/{currency} already exists ({state}); asked for {amount}"
            )
        return False

    def release(self, client_order_id: str, *, ts_ns: int | None = None) -> bool:
        """Release every reservation of an order. True for exactly one caller, ever."""
        t = S.reservations
        # the row lock of this UPDATE decides the race: a concurrent second caller re-checks
        # ``released_ns IS NULL`` after the first commits, matches nothing and gets False
        res = self.conn.execute(
            sa.update(t)
            .where(t.c.client_order_id == client_order_id, t.c.released_ns.is_(None))
            .values(released_ns=_now() if ts_ns is None else ts_ns)
            .returning(t.c.currency)
        )
        return len(res.all()) > 0

    def active_reservations(self) -> list[dict[str, Any]]:
        t = S.reservations
        rows = self.conn.execute(
            sa.select(t).where(t.c.released_ns.is_(None)).order_by(t.c.created_ns, t.c.client_order_id)
        )
        out = []
        for r in rows:
            d = dict(r._mapping)
            d["amount_raw"], d["precision"] = parse_exact(d["amount"])
            out.append(d)
        return out

    def reserved_totals(self) -> dict[str, str]:
        """Exact sum of active reservations per currency (at the finest precision seen)."""
        acc: dict[str, tuple[int, int]] = {}
        for r in self.active_reservations():
            raw, prec = r["amount_raw"], r["precision"]
            total, tprec = acc.get(r["currency"], (0, prec))
            p = max(prec, tprec)
            acc[r["currency"]] = (total * 10 ** (p - tprec) + raw * 10 ** (p - prec), p)
        return {c: format_raw(raw, p) for c, (raw, p) in sorted(acc.items())}

    # --- key/value state (breaker, kill switch, ...) ---------------------------------------------
    def kv_get(self, name: str) -> dict[str, Any] | None:
        v = self.conn.execute(sa.select(S.kv_state.c.value).where(S.kv_state.c.name == name)).scalar()
        if v is None:
            return None
        out = from_jsonable(v)
        assert isinstance(out, dict)
        return out

    def kv_put(self, name: str, value: dict[str, Any], *, ts_ns: int | None = None) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"kv value must be a dict, got {type(value).__name__}")
        t = S.kv_state
        ins = self._insert(t).values(
            name=name, value=to_jsonable(value), updated_ns=_now() if ts_ns is None else ts_ns
        )
        self.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[t.c.name],
                set_={"value": ins.excluded.value, "updated_ns": ins.excluded.updated_ns},
            )
        )

    # --- sequences -------------------------------------------------------------------------------
    def next_sequence(self, name: str) -> int:
        """1, 2, 3, … per name; never the same number twice, across threads and processes.

        One ``INSERT … ON CONFLICT DO UPDATE … RETURNING``: the row lock it takes (PostgreSQL) or
        the write lock of ``BEGIN IMMEDIATE`` (SQLite) serializes callers until commit.
        """
        t = S.sequences
        ins = self._insert(t).values(name=name, value=1)
        stmt = ins.on_conflict_do_update(index_elements=[t.c.name], set_={"value": t.c.value + 1}).returning(
            t.c.value
        )
        return int(self.conn.execute(stmt).scalar_one())

    # --- PnL series ------------------------------------------------------------------------------
    def record_pnl(
        self,
        strategy_id: str,
        ts_ns: int,
        *,
        equity: ExactValue,
        position: ExactValue,
        realized: ExactValue = 0,
        unrealized: ExactValue = 0,
        fees: ExactValue = 0,
        currency: str = "",
    ) -> None:
        """One point of a strategy's PnL curve; recording the same (strategy, ts) again replaces it."""
        t = S.pnl_series
        values = {
            "strategy_id": strategy_id,
            "ts_ns": int(ts_ns),
            "equity": _exact_text(equity, "equity"),
            "position": _exact_text(position, "position"),
            "realized": _exact_text(realized, "realized"),
            "unrealized": _exact_text(unrealized, "unrealized"),
            "fees": _exact_text(fees, "fees"),
            "currency": currency,
        }
        ins = self._insert(t).values(**values)
        self.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[t.c.strategy_id, t.c.ts_ns],
                set_={k: ins.excluded[k] for k in values if k not in ("strategy_id", "ts_ns")},
            )
        )

    def pnl_series(self, strategy_id: str, since_ns: int = 0) -> list[dict[str, Any]]:
        t = S.pnl_series
        rows = self.conn.execute(
            sa.select(t).where(t.c.strategy_id == strategy_id, t.c.ts_ns >= since_ns).order_by(t.c.ts_ns)
        )
        return [dict(r._mapping) for r in rows]


def _make_engine(url: str) -> Engine:
    u = sa.make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        db = u.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            raise StoreError(f"SQLite store needs a file path (durability is the point), got {url!r}")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
            cur = dbapi_conn.cursor()
            try:
                mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"SQLite at {db} refused WAL journal mode (got {mode!r})")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
            finally:
                cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # DEFERRED would take the write lock at the first write and can then fail with
            # SQLITE_BUSY mid-transaction; IMMEDIATE waits (busy_timeout) before doing anything.
            conn.exec_driver_sql(
                "BEGIN" if conn.get_execution_options().get("bastion_read") else "BEGIN IMMEDIATE"
            )

        return engine
    if backend == "postgresql":
        return sa.create_engine(u, pool_pre_ping=True)
    raise StoreError(
        f"unsupported store URL {u.render_as_string(hide_password=True)!r}: use sqlite or postgresql"
    )


class Store:
    """SQL store (SQLite by default, PostgreSQL by URL). Each method is its own transaction.

    ``schema`` (PostgreSQL only) puts the tables in a named schema, created if missing, so
    several systems (paper, live, tests) can share one database without seeing each other.
    """

    def __init__(self, url: str = DEFAULT_URL, *, schema: str | None = None) -> None:
        self.engine = _make_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        self.schema = schema
        self._local = threading.local()
        if schema is not None:
            if self.engine.dialect.name != "postgresql":
                raise StoreError("schema= is only supported on PostgreSQL")
            self.engine = self.engine.execution_options(schema_translate_map={None: schema})
        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    # concurrent first starts would race on CREATE TABLE; serialize them
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7215330581)"))
                    if schema is not None:
                        q = self.engine.dialect.identifier_preparer.quote_schema(schema)
                        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {q}")
                S.metadata.create_all(conn)
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise StoreError(f"cannot open store {self.url}: {exc.orig}") from exc

    @contextmanager
    def transaction(self) -> Iterator[StoreTx]:
        """Several operations, one commit: all happen or none (an exception rolls back).

        Inside, use the yielded ``tx`` only: a ``Store`` method would open a second transaction
        that cannot see this one's writes and, on SQLite, would wait for its write lock forever.
        That mistake raises at once instead.
        """
        with self._guard(), self.engine.begin() as conn:
            yield StoreTx(conn)

    @contextmanager
    def reading(self) -> Iterator[StoreTx]:
        """A read-only view that does not take SQLite's write lock (readers never queue)."""
        with (
            self._guard(),
            self.engine.connect().execution_options(bastion_read=True) as conn,
            conn.begin(),
        ):
            yield StoreTx(conn)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if getattr(self._local, "open", False):
            raise StoreError("a Store method was called inside store.transaction(): use the tx it yielded")
        self._local.open = True
        try:
            yield
        finally:
            self._local.open = False

    def check_writable(self) -> None:
        """Raise :class:`StoreNotWritable` unless a write can be committed right now."""
        try:
            with self.transaction() as tx:
                tx.kv_put("_store.writable_probe", {"ts_ns": _now()})
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            cause = getattr(exc, "orig", None) or exc
            raise StoreNotWritable(f"store {self.url} is not writable: {cause}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one-transaction shortcuts (see StoreTx for what each does) ------------------------------
    def upsert_order(self, order: Order, venue: str) -> None:
        with self.transaction() as tx:
            tx.upsert_order(order, venue)

    def get_order(self, client_order_id: str) -> dict[str, Any] | None:
        with self.reading() as tx:
            return tx.get_order(client_order_id)

    def orders_in_status(self, *statuses: OrderStatus | str) -> list[dict[str, Any]]:
        with self.reading() as tx:
            return tx.orders_in_status(*statuses)

    def open_orders(self) -> list[dict[str, Any]]:
        with self.reading() as tx:
            return tx.open_orders()

    def record_event(self, client_order_id: str, ts_ns: int, event_type: str, detail: dict[str, Any]) -> int:
        with self.transaction() as tx:
            return tx.record_event(client_order_id, ts_ns, event_type, detail)

    def audit_trail(self, client_order_id: str) -> list[dict[str, Any]]:
        with self.reading() as tx:
            return tx.audit_trail(client_order_id)

    def record_fill(self, fill: Fill, venue: str) -> bool:
        with self.transaction() as tx:
            return tx.record_fill(fill, venue)

    def fills_for(self, client_order_id: str) -> list[dict[str, Any]]:
        with self.reading() as tx:
            return tx.fills_for(client_order_id)

    def reserve(
        self,
        client_order_id: str,
        currency: str,
        amount_raw: int,
        precision: int,
        *,
        ts_ns: int | None = None,
    ) -> bool:
        with self.transaction() as tx:
            return tx.reserve(client_order_id, currency, amount_raw, precision, ts_ns=ts_ns)

    def release(self, client_order_id: str, *, ts_ns: int | None = None) -> bool:
        with self.transaction() as tx:
            return tx.release(client_order_id, ts_ns=ts_ns)

    def active_reservations(self) -> list[dict[str, Any]]:
        with self.reading() as tx:
            return tx.active_reservations()

    def reserved_totals(self) -> dict[str, str]:
        with self.reading() as tx:
            return tx.reserved_totals()

    def kv_get(self, name: str) -> dict[str, Any] | None:
        with self.reading() as tx:
            return tx.kv_get(name)

    def kv_put(self, name: str, value: dict[str, Any], *, ts_ns: int | None = None) -> None:
        with self.transaction() as tx:
            tx.kv_put(name, value, ts_ns=ts_ns)

    def next_sequence(self, name: str) -> int:
        with self.transaction() as tx:
            return tx.next_sequence(name)

    def record_pnl(
        self,
        strategy_id: str,
        ts_ns: int,
        *,
        equity: ExactValue,
        position: ExactValue,
        realized: ExactValue = 0,
        unrealized: ExactValue = 0,
        fees: ExactValue = 0,
        currency: str = "",
    ) -> None:
        with self.transaction() as tx:
            tx.record_pnl(
                strategy_id,
                ts_ns,
                equity=equity,
                position=position,
                realized=realized,
                unrealized=unrealized,
                fees=fees,
                currency=currency,
            )

    def pnl_series(self, strategy_id: str, since_ns: int = 0) -> list[dict[str, Any]]:
        with self.reading() as tx:
            return tx.pnl_series(strategy_id, since_ns)

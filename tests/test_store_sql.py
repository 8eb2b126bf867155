"""The SQL store on SQLite and on the real PostgreSQL: exactly-once writes, atomic numbers, audit order."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.model.fixed import Money, Price, Quantity
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, Side
from bastion.store.sql import ConflictError, Store, StoreError, StoreNotWritable, order_from_row

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_HELP = (
    "PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test', user postgres). Start it with:\n"
    "    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as c:
            c.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        pytest.fail(f"{PG_HELP}\n(error: {exc.orig})")
    yield engine
    engine.dispose()


StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on one fresh database (SQLite file, or a PostgreSQL schema dropped afterwards)."""
    opened: list[Store] = []
    schema = f"bastion_test_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        url, kw = f"sqlite:///{tmp_path}/state/bastion.db", {}
    else:
        pg: sa.Engine = request.getfixturevalue("pg_engine")
        url, kw = PG_URL, {"schema": schema}

    def factory() -> Store:
        s = Store(url, **kw)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()
    if request.param == "postgresql":
        with pg.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


def _order(cid: str = "c-1", **kw: Any) -> Order:
    args: dict[str, Any] = {
        "client_order_id": cid,
        "instrument_id": "BTCUSDT",
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": Quantity(1500, 3),
        "price": Price(6180030, 2),
        "strategy_id": "mm",
        "ts_init": 1_700_000_000_000_000_000,
    }
    args.update(kw)
    return Order(**args)


def _fill(cid: str = "c-1", trade_id: str = "t-1", **kw: Any) -> Fill:
    args: dict[str, Any] = {
        "client_order_id": cid,
        "instrument_id": "BTCUSDT",
        "side": Side.BUY,
        "price": Price(6180030, 2),
        "quantity": Quantity(500, 3),
        "fee": Money(3090015, 8, "USDT"),
        "liquidity": Liquidity.MAKER,
        "ts_event": 1_700_000_000_500_000_000,
        "trade_id": trade_id,
    }
    args.update(kw)
    return Fill(**args)


def _run_threads(n: int, fn: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_order_round_trips_exactly_and_updates(store: Store) -> None:
    o = _order(price=Price(-5, 2))  # negative prices exist (spreads); trailing zeros matter
    store.upsert_order(o, "BINANCE")
    row = store.get_order("c-1")
    assert row is not None
    assert (row["price"], row["quantity"], row["filled"], row["status"]) == (
        "-0.05",
        "1.500",
        "0.000",
        "INITIALIZED",
    )
    assert order_from_row(row) == o
    o.status = OrderStatus.ACCEPTED
    o.venue_order_id = "v-9"
    o.apply_fill(Quantity(500, 3), 1_700_000_001_000_000_000)
    store.upsert_order(o, "BINANCE")
    row = store.get_order("c-1")
    assert row is not None and order_from_row(row) == o
    assert row["created_ns"] == 1_700_000_000_000_000_000 and row["updated_ns"] == 1_700_000_001_000_000_000


def test_reusing_a_client_order_id_for_another_order_is_refused(store: Store) -> None:
    store.upsert_order(_order(), "BINANCE")
    with pytest.raises(ConflictError, match="c-1"):
        store.upsert_order(_order(instrument_id="ETHUSDT"), "BINANCE")
    with pytest.raises(ConflictError):
        store.upsert_order(_order(), "BYBIT")
    row = store.get_order("c-1")
    assert row is not None and row["instrument_id"] == "BTCUSDT"


def test_open_orders_are_all_non_terminal_ones(store: Store) -> None:
    for st in OrderStatus:
        store.upsert_order(_order(f"c-{st.name}", status=st), "BINANCE")
    open_ids = {r["client_order_id"] for r in store.open_orders()}
    assert open_ids == {f"c-{s.name}" for s in OrderStatus if not s.is_terminal}
    assert "c-PENDING_VERIFICATION" in open_ids and "c-INITIALIZED" in open_ids
    got = store.orders_in_status(OrderStatus.FILLED, "CANCELED")
    assert {r["client_order_id"] for r in got} == {"c-FILLED", "c-CANCELED"}
    with pytest.raises(KeyError):
        store.orders_in_status("CANCELLED")  # a typo is an error, not an empty answer


def test_audit_trail_keeps_insertion_order_and_exact_detail(store: Store) -> None:
    ts = [30, 10, 20]  # venue timestamps may arrive out of order; the trail keeps arrival order
    kinds = ["OrderSubmitted", "OrderAccepted", "OrderFilled"]
    ids = [
        store.record_event("c-1", t, k, {"fill": _fill(), "n": i})
        for i, (t, k) in enumerate(zip(ts, kinds, strict=True))
    ]
    store.record_event("other", 5, "OrderSubmitted", {})
    assert ids == sorted(ids)
    trail = store.audit_trail("c-1")
    assert [e["event_type"] for e in trail] == kinds
    assert [e["ts_ns"] for e in trail] == ts
    assert trail[2]["detail"] == {"fill": _fill(), "n": 2}


def test_fills_are_recorded_exactly_once(store: Store) -> None:
    f = _fill()
    assert store.record_fill(f, "BINANCE") is True
    assert store.record_fill(f, "BINANCE") is False
    assert store.record_fill(f, "BYBIT") is True  # another venue's trade id space
    assert store.record_fill(_fill(trade_id="t-2"), "BINANCE") is True
    rows = store.fills_for("c-1")
    assert len(rows) == 3
    assert (rows[0]["price"], rows[0]["quantity"], rows[0]["fee"], rows[0]["fee_currency"]) == (
        "61800.30",
        "0.500",
        "0.03090015",
        "USDT",
    )
    with pytest.raises(ConflictError, match="price"):
        store.record_fill(_fill(price=Price(6180031, 2)), "BINANCE")
    with pytest.raises(ValueError, match="trade_id"):
        store.record_fill(_fill(trade_id=""), "BINANCE")


def test_concurrent_duplicate_fills_record_once(store: Store) -> None:
    results: list[bool] = []
    _run_threads(8, lambda i: results.append(store.record_fill(_fill(), "BINANCE")))
    assert sorted(results) == [False] * 7 + [True]


def test_reservation_release_exactly_once(store: Store) -> None:
    assert store.reserve("c-1", "USDT", 9270045, 2) is True
    assert store.reserve("c-1", "USDT", 9270045, 2) is False  # a replayed reserve is harmless
    assert store.reserve("c-1", "BNB", 1, 8) is True
    assert store.reserve("c-2", "USDT", 5, 1) is True
    with pytest.raises(ConflictError):
        store.reserve("c-2", "USDT", 6, 1)
    act = {(r["client_order_id"], r["currency"]): r for r in store.active_reservations()}
    assert act[("c-1", "USDT")]["amount"] == "92700.45"
    assert (act[("c-1", "USDT")]["amount_raw"], act[("c-1", "USDT")]["precision"]) == (9270045, 2)
    assert store.reserved_totals() == {"BNB": "0.00000001", "USDT": "92700.95"}

    results: list[bool] = []
    _run_threads(8, lambda i: results.append(store.release("c-1")))
    assert sorted(results) == [False] * 7 + [True]
    assert store.release("c-1") is False
    assert store.release("never-reserved") is False
    assert {r["client_order_id"] for r in store.active_reservations()} == {"c-2"}
    with pytest.raises(ConflictError, match="released"):
        store.reserve("c-1", "USDT", 9270045, 2)  # a client id is never reused


def test_next_sequence_is_unique_under_threads_and_two_stores(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()  # two engines: as two processes would have
    got: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        s = a if i % 2 else b
        for _ in range(25):
            n = s.next_sequence("client_order_id")
            with lock:
                got.append(n)

    _run_threads(8, worker)
    assert sorted(got) == list(range(1, 201))
    assert a.next_sequence("other") == 1
    b.close()
    assert make_store().next_sequence("client_order_id") == 201  # durable


def test_transaction_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError, match="venue said no"), store.transaction() as tx:
        assert tx.reserve("c-1", "USDT", 100, 2)
        tx.upsert_order(_order(), "BINANCE")
        tx.record_event("c-1", 1, "OrderSubmitted", {})
        n = tx.next_sequence("seq")
        raise RuntimeError("venue said no")
    assert store.active_reservations() == [] and store.get_order("c-1") is None
    assert store.audit_trail("c-1") == []
    assert store.next_sequence("seq") == n  # the rolled-back number was never handed out

    with store.transaction() as tx:
        tx.reserve("c-1", "USDT", 100, 2)
        tx.upsert_order(_order(), "BINANCE")
        tx.record_event("c-1", 1, "OrderSubmitted", {})
        with pytest.raises(StoreError, match=r"inside store\.transaction"):
            store.get_order("c-1")  # would not see the uncommitted order
    assert len(store.active_reservations()) == 1 and store.get_order("c-1") is not None


def test_kv_state_round_trip(store: Store) -> None:
    assert store.kv_get("kill_switch") is None
    store.kv_put("kill_switch", {"on": True, "reason": "manual", "limit": Money(5, 2, "USDT")})
    store.kv_put("kill_switch", {"on": False, "type": "not a tag", "big": 10**30})
    assert store.kv_get("kill_switch") == {"on": False, "type": "not a tag", "big": 10**30}


def test_pnl_series_is_exact_ordered_and_idempotent(store: Store) -> None:
    store.record_pnl("mm", 300, equity="1000.50", position=Quantity(1500, 3))
    store.record_pnl(
        "mm", 100, equity=Decimal("999.999999999999999999"), position="0", fees=Money(12, 8, "USDT")
    )
    store.record_pnl("mm", 200, equity=1000, position="-0.001", realized="-1.25", unrealized="0.5")
    store.record_pnl("mm", 200, equity=1001, position="-0.001")  # same point again: replaced
    store.record_pnl("other", 150, equity="1", position="0")
    rows = store.pnl_series("mm")
    assert [r["ts_ns"] for r in rows] == [100, 200, 300]
    assert rows[0]["equity"] == "999.999999999999999999" and rows[0]["fees"] == "0.00000012"
    assert rows[1]["equity"] == "1001" and rows[2]["position"] == "1.500"
    assert [r["ts_ns"] for r in store.pnl_series("mm", since_ns=200)] == [200, 300]
    with pytest.raises(TypeError):
        store.record_pnl("mm", 400, equity=1.5, position="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.record_pnl("mm", 400, equity="NaN", position="0")


def test_check_writable(store: Store) -> None:
    store.check_writable()


def test_sqlite_is_durable_and_detects_a_lost_file(tmp_path: Path) -> None:
    db_dir = tmp_path / "deep" / "state"
    s = Store(f"sqlite:///{db_dir}/b.db")
    assert db_dir.is_dir()
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    s.check_writable()
    s.engine.dispose()
    shutil.rmtree(tmp_path / "deep")
    with pytest.raises(StoreNotWritable, match=r"b\.db"):
        s.check_writable()


def test_bad_urls_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="file path"):
        Store("sqlite:///:memory:")
    with pytest.raises(StoreError, match="unsupported"):
        Store("mysql://u:secret@127.0.0.1/x")
    with pytest.raises(StoreError, match="PostgreSQL"):
        Store(f"sqlite:///{tmp_path}/x.db", schema="s")

"""The durable journal behind the gateway: write-ahead first, ids used once across restarts."""

from __future__ import annotations

from pathlib import Path

from simkit import INST
from test_gateway import FakeVenue, order

from bastion.engine.clock import SimClock
from bastion.execution.gateway import OrderGateway
from bastion.execution.reservations import Reservations
from bastion.model.events import OrderDenied, OrderEvent
from bastion.store.journal import DurableJournal
from bastion.store.sql import Store
from bastion.store.wal import WriteAheadLog


def gateway(tmp: Path, venue: FakeVenue) -> tuple[OrderGateway, list[OrderEvent], DurableJournal]:
    journal = DurableJournal(WriteAheadLog(tmp / "wal"), Store(f"sqlite:///{tmp}/state.db"), venue.name)
    events: list[OrderEvent] = []
    gw = OrderGateway(
        venue, INST, clock=SimClock(1), journal=journal,
        reservations=Reservations(lambda c: 10**13), on_event=events.append,
        position_of=lambda: 0, reference_price=lambda side: 10001,
    )  # fmt: skip
    return gw, events, journal


def test_intent_is_durable_before_the_venue_sees_it(tmp_path: Path) -> None:
    seen_at_submit: list[list[str]] = []

    class Watching(FakeVenue):
        def submit(self, o):  # type: ignore[no-untyped-def]
            seen_at_submit.append([e["event_type"] for e in journal.store.audit_trail(o.client_order_id)])
            return super().submit(o)

    gw, _, journal = gateway(tmp_path, Watching())
    gw.submit(order("s-1"))
    assert seen_at_submit == [["intent"]]
    assert [r.kind for r in journal.wal.replay()] == ["intent", "submitted"]
    assert journal.store.get_order("s-1") is not None


def test_client_ids_stay_used_after_a_restart(tmp_path: Path) -> None:
    v = FakeVenue()
    gw, _, journal = gateway(tmp_path, v)
    gw.submit(order("s-1"))
    journal.wal.close()
    journal.store.close()
    gw2, events, _ = gateway(tmp_path, v)  # a new process, same state
    gw2.submit(order("s-1"))
    assert v.sent == ["s-1"]
    assert isinstance(events[-1], OrderDenied) and "idempotency" in events[-1].reason


def test_replay_restores_what_the_store_missed(tmp_path: Path) -> None:
    v = FakeVenue()
    gw, _, journal = gateway(tmp_path, v)
    gw.submit(order("s-1"))
    # a crash between the WAL append and the store write: the log has a step the store lacks
    journal.wal.append("ack", {"client_order_id": "s-1", "ts_ns": 99, "detail": {}})
    assert [e["event_type"] for e in journal.store.audit_trail("s-1")] == ["intent", "submitted"]
    assert journal.replay_into_store() == 1
    assert [e["event_type"] for e in journal.store.audit_trail("s-1")] == ["intent", "submitted", "ack"]
    assert journal.replay_into_store() == 0


def test_strategy_client_ids_come_from_the_persisted_sequence(tmp_path: Path) -> None:
    from bastion.engine.strategy import Context, Strategy

    def ids(store: Store) -> list[str]:
        st = Strategy("mm")
        st.bind(Context(SimClock(1), INST, None, None, None, None, order_sequence=store.next_sequence))  # type: ignore[arg-type]
        return [st.next_client_order_id() for _ in range(3)]

    s1 = Store(f"sqlite:///{tmp_path}/ids.db")
    first = ids(s1)
    s1.close()
    s2 = Store(f"sqlite:///{tmp_path}/ids.db")  # a restarted process
    assert first == ["mm-1", "mm-2", "mm-3"] and ids(s2) == ["mm-4", "mm-5", "mm-6"]

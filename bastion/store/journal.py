"""The durable journal of the order gateway: write-ahead log first, SQL store second.

The gateway writes every step before acting on it. The write-ahead log makes that write
durable in one fsync; the SQL store makes it queryable (audit trail, open orders, reservations)
and is what recovery reads. If the process dies between the two, the log still has the record
and :meth:`DurableJournal.replay_into_store` puts it back on the next start.
"""

from __future__ import annotations

from typing import Any

from bastion.model.orders import Order
from bastion.store.sql import Store
from bastion.store.wal import WriteAheadLog


class DurableJournal:
    """Implements the gateway's ``Journal`` protocol on a WAL plus a SQL store."""

    detailed = True

    def __init__(self, wal: WriteAheadLog, store: Store, venue: str) -> None:
        self.wal = wal
        self.store = store
        self.venue = venue
        self._used: set[str] = set()

    def claim_client_id(self, client_order_id: str) -> bool:
        """A client id is used once in the life of the system, across restarts."""
        if client_order_id in self._used or self.store.get_order(client_order_id) is not None:
            return False
        self._used.add(client_order_id)
        return True

    def write(self, kind: str, client_order_id: str, ts_ns: int, detail: dict[str, Any]) -> None:
        self.wal.append(kind, {"client_order_id": client_order_id, "ts_ns": ts_ns, "detail": detail})
        self.store.record_event(client_order_id, ts_ns, kind, detail)

    def save_order(self, order: Order) -> None:
        self.store.upsert_order(order, self.venue)

    def replay_into_store(self) -> int:
        """Re-apply logged steps the store missed (a crash between the two writes).

        Returns how many events were missing. Events are matched by (client id, kind, time).
        """
        missing = 0
        seen_by_cid: dict[str, set[tuple[str, int]]] = {}
        for rec in self.wal.replay(after_seq=self.wal.checkpointed_seq):
            p = rec.payload
            cid = str(p.get("client_order_id", ""))
            if cid not in seen_by_cid:
                seen_by_cid[cid] = {(e["event_type"], int(e["ts_ns"])) for e in self.store.audit_trail(cid)}
            key = (rec.kind, int(p.get("ts_ns", 0)))
            if key not in seen_by_cid[cid]:
                self.store.record_event(cid, key[1], rec.kind, dict(p.get("detail", {})))
                seen_by_cid[cid].add(key)
                missing += 1
        return missing

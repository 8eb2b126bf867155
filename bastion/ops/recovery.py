"""Start-up is crash recovery: one path, run before the first order of every process.

After a crash the journal knows what we intended and the venue knows what happened; recovery
brings the two together before anything new is sent:

1. re-apply journal steps the store missed (a crash between the write-ahead log and the store);
2. take every order the store still thinks is working (including those whose fate was unknown)
   and ask the venue about each one by client order id;
3. an order the venue never received is closed and its reservation released; one the venue
   finished is closed likewise; one still working is adopted back with its reservation; one the
   venue will not tell us about stays ``PENDING_VERIFICATION`` with its money reserved;
4. reconcile positions and balances with the venue (the breaker opens on a mismatch).

Only when every order is verified and reconciliation passes is the report ``ok``: no new order
may be sent before that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog

from bastion.execution.gateway import OrderGateway
from bastion.model.codec import from_jsonable
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.risk.breaker import CircuitBreaker
from bastion.risk.reconciliation import ReconciliationResult
from bastion.store import schema as S
from bastion.store.journal import DurableJournal
from bastion.store.sql import order_from_row
from bastion.venues.base import VenueClient, VenueTimeout, VenueUnavailable

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class RecoveryReport:
    replayed_events: int = 0
    restored_rows: int = 0  # intents journaled without an order row (a crash mid-submit)
    in_flight: int = 0
    resumed: list[str] = field(default_factory=list)  # still working at the venue: adopted back
    settled: list[str] = field(default_factory=list)  # finished at the venue: closed, released
    absent: list[str] = field(default_factory=list)  # never reached the venue: closed, released
    unknown: list[str] = field(default_factory=list)  # no answer: still reserved, unverified
    reconciliation: ReconciliationResult | None = None

    @property
    def ok(self) -> bool:
        return not self.unknown and (self.reconciliation is None or self.reconciliation.ok)


def _reserved_at_intent(journal: DurableJournal, cid: str) -> tuple[str, int]:
    for e in journal.store.audit_trail(cid):
        if e["event_type"] == "intent":
            r = e["detail"].get("reserved", {})
            return str(r.get("currency", "")), int(r.get("amount_raw", 0))
    return "", 0


def _order_from_intent(cid: str, ts: int, d: dict[str, Any], inst: Instrument) -> Order:
    price = d.get("price")
    return Order(
        client_order_id=cid,
        instrument_id=str(d.get("instrument_id") or inst.id),
        side=Side[str(d["side"])],
        order_type=OrderType[str(d["type"])],
        quantity=Quantity.from_str(str(d["qty"]), inst.size_precision),
        price=None if price is None else Price.from_str(str(price), inst.price_precision),
        time_in_force=TimeInForce[str(d["tif"])],
        reduce_only=bool(d.get("reduce_only", False)),
        strategy_id=str(d.get("strategy_id", "")),
        status=OrderStatus.SUBMITTED,
        ts_init=int(d.get("ts_init") or ts),  # older journals did not carry it
    )


def restore_order_rows(journal: DurableJournal, inst: Instrument) -> int:
    """Make every order the venue may have visible to recovery; returns how many rows were added.

    The intent is journaled before the venue call, the order row after it, so a crash in between
    leaves an intent without a row: it gets a SUBMITTED row rebuilt from the intent. Open rows
    also take their filled quantity from the recorded fills (written before the gateway saw them).
    """
    store = journal.store
    with store.reading() as tx:
        ev, od = S.order_events, S.orders
        rows = tx.conn.execute(
            sa.select(ev.c.client_order_id, ev.c.ts_ns, ev.c.detail)
            .where(ev.c.event_type == "intent")
            .where(ev.c.client_order_id.not_in(sa.select(od.c.client_order_id)))
        ).all()
    for cid, ts, detail in rows:
        d = from_jsonable(detail)
        assert isinstance(d, dict)
        journal.save_order(_order_from_intent(str(cid), int(ts), d, inst))
    for row in store.open_orders():
        order = order_from_row(row)
        filled = sum(
            Quantity.from_str(f["quantity"], inst.size_precision).raw
            for f in store.fills_for(order.client_order_id)
        )
        if filled != order.filled_raw:
            order.filled = Quantity(filled, inst.size_precision)
            journal.save_order(order)
    return len(rows)


def recover(
    journal: DurableJournal,
    gateway: OrderGateway,
    venue: VenueClient,
    *,
    reconcile: Callable[[], ReconciliationResult] | None = None,
    breaker: CircuitBreaker | None = None,
    attempts: int = 3,
) -> RecoveryReport:
    report = RecoveryReport(replayed_events=journal.replay_into_store())
    report.restored_rows = restore_order_rows(journal, gateway.instrument)
    rows = journal.store.open_orders()
    report.in_flight = len(rows)
    for row in rows:
        order = order_from_row(row)
        cid = order.client_order_id
        answer = None
        answered = False
        for _ in range(max(1, attempts)):
            try:
                answer = venue.query(cid)
                answered = True
                break
            except (VenueTimeout, VenueUnavailable) as exc:
                log.warning(
                    "recovery_query_failed", client_order_id=cid, error=repr(exc), risk_level="medium"
                )
        now = gateway.clock.now_ns()
        if not answered:
            order.status = OrderStatus.PENDING_VERIFICATION
            currency, amount = _reserved_at_intent(journal, cid)
            gateway.adopt(order, currency, amount)
            journal.save_order(order)
            report.unknown.append(cid)
            continue
        if answer is None:
            order.status = OrderStatus.REJECTED
            journal.write("recovered_absent", cid, now, {})
            journal.save_order(order)
            report.absent.append(cid)
            continue
        if answer.status.is_terminal:
            order.status = answer.status
            journal.write(
                "recovered_settled", cid, now, {"status": answer.status.name, "filled": answer.filled_raw}
            )
            journal.save_order(order)
            report.settled.append(cid)
            continue
        order.status = OrderStatus.PARTIALLY_FILLED if answer.filled_raw else OrderStatus.ACCEPTED
        currency, amount = _reserved_at_intent(journal, cid)
        gateway.adopt(order, currency, amount)
        journal.write("recovered_resumed", cid, now, {"filled": answer.filled_raw})
        journal.save_order(order)
        report.resumed.append(cid)
    if reconcile is not None:
        report.reconciliation = reconcile()
        if breaker is not None:
            if report.reconciliation.ok:
                breaker.on_reconciliation_ok()
            else:
                breaker.on_reconciliation_mismatch(report.reconciliation.summary())
    log.info(
        "recovery_done", ok=report.ok, in_flight=report.in_flight, resumed=len(report.resumed),
        settled=len(report.settled), absent=len(report.absent), unknown=len(report.unknown),
        risk_level="low" if report.ok else "high",
    )  # fmt: skip
    return report

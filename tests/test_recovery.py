"""Start-up recovery: every in-flight order verified with the venue before anything new is sent."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from simkit import INST
from test_gateway import FakeVenue, order
from test_store_journal import gateway

from bastion.model.events import OrderAccepted, OrderRejected
from bastion.model.orders import OrderStatus
from bastion.ops.recovery import recover
from bastion.risk.reconciliation import reconcile
from bastion.venues.base import OrderStatusReport, VenueUnavailable


class DownVenue(FakeVenue):
    def query(self, client_order_id: str) -> OrderStatusReport | None:
        raise VenueUnavailable("connection refused")


def crash_with_orders(tmp: Path) -> FakeVenue:
    v = FakeVenue()
    gw, _, journal = gateway(tmp, v)
    gw.submit(order("s-1"))
    gw.on_venue_event(OrderAccepted("s-1", INST.id, 2))  # working at the venue
    v.mode = "timeout"
    gw.submit(order("s-2"))  # the venue got it, but we never heard
    gw.submit(order("s-3"))  # the venue never got it
    v.mode = "ok"
    gw.submit(order("s-4"))
    gw.on_venue_event(OrderRejected("s-4", INST.id, 3, "post-only"))  # finished
    v.known["s-1"] = OrderStatusReport("s-1", OrderStatus.ACCEPTED, 0, "1")
    v.known["s-2"] = OrderStatusReport("s-2", OrderStatus.ACCEPTED, 0, "2")
    journal.wal.close()  # the process dies here
    journal.store.close()
    return v


def test_recovery_verifies_every_in_flight_order(tmp_path: Path) -> None:
    v = crash_with_orders(tmp_path)
    gw, _, journal = gateway(tmp_path, v)  # the restarted process
    rep = recover(journal, gw, v, reconcile=lambda: reconcile({}, {}))
    assert rep.ok
    assert sorted(rep.resumed) == ["s-1", "s-2"] and rep.absent == ["s-3"] and not rep.unknown
    assert sorted(gw.open_orders) == ["s-1", "s-2"]
    # the working orders hold their reservations again; the absent one's money is free
    held = {r.client_order_id for r in gw.reservations.active()}
    assert held == {"s-1", "s-2"}
    assert gw.reservations.reserved("USDT") == 2 * 5005 * 10**8 // 10
    assert [r["client_order_id"] for r in journal.store.open_orders()] == ["s-1", "s-2"]
    # nothing was re-sent
    assert v.sent == ["s-1", "s-2", "s-3", "s-4"]


def test_unreachable_venue_keeps_everything_reserved_and_blocks_trading(tmp_path: Path) -> None:
    crash_with_orders(tmp_path)
    down = DownVenue()
    gw, _, journal = gateway(tmp_path, down)
    rep = recover(journal, gw, down, attempts=2)
    assert not rep.ok and sorted(rep.unknown) == ["s-1", "s-2", "s-3"]
    assert {r.client_order_id for r in gw.reservations.active()} == {"s-1", "s-2", "s-3"}
    assert all(o.status is OrderStatus.PENDING_VERIFICATION for o in gw.pending_verification.values())


def test_reconciliation_mismatch_fails_recovery(tmp_path: Path) -> None:
    v = crash_with_orders(tmp_path)
    gw, _, journal = gateway(tmp_path, v)
    rep = recover(journal, gw, v, reconcile=lambda: reconcile({"position:BTC": Fraction(0)},
                                                              {"position:BTC": Fraction(1)}))  # fmt: skip
    assert not rep.ok and rep.reconciliation is not None and rep.reconciliation.mismatches


def test_an_intent_rebuilds_the_order_with_its_creation_time() -> None:
    """Venues that sign the creation time (Polymarket V2) need the same ts_init after a crash."""
    from bastion.model import KNOWN_INSTRUMENTS
    from bastion.ops.recovery import _order_from_intent

    inst = KNOWN_INSTRUMENTS["BTCUSDT-PERP.BINANCE"]
    d = {
        "side": "BUY",
        "type": "LIMIT",
        "tif": "GTC",
        "price": "60000.0",
        "qty": "0.010",
        "ts_init": 1_700_000_000_123_456_789,
    }
    assert _order_from_intent("s-1", 1_700_000_001_000_000_000, d, inst).ts_init == 1_700_000_000_123_456_789
    del d["ts_init"]  # a journal written before the field existed
    assert _order_from_intent("s-1", 1_700_000_001_000_000_000, d, inst).ts_init == 1_700_000_001_000_000_000

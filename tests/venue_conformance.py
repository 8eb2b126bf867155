"""The conformance suite every venue adapter must pass, whatever venue it talks to.

Each venue's test module provides a :class:`Harness` (an adapter wired to a local server on
127.0.0.1 that speaks the venue's real protocol, verifies its signatures and keeps order state)
and calls :func:`run_conformance` — or, better for readable failures, parametrizes over
:data:`CHECKS`. The checks are the situations that decide whether money can be lost: an order
placed is findable by its client id; a cancel is confirmed; partial fills are counted exactly;
a refusal is a refusal (the order does not exist); an unanswered submit is *not* a refusal (the
order may exist, and the client id finds it); a dropped connection is survived.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

import pytest

from bastion.model.instruments import Instrument
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import VenueClient, VenueError, VenueRejected


class Harness(Protocol):
    """What a venue's test module gives the suite."""

    venue: VenueClient
    instrument: Instrument

    def resting_price(self, side: Side) -> Decimal:
        """A limit price for ``side`` that rests (does not cross the server's book)."""
        ...

    def quantity(self) -> Decimal:
        """An order size the test account can afford several times over."""
        ...

    def unaffordable_quantity(self) -> Decimal:
        """A size the venue refuses (beyond the account's balance or the venue's max)."""
        ...

    def fill(self, client_order_id: str, quantity: Decimal) -> None:
        """Make the server fill ``quantity`` of the resting order, as a counterparty would."""
        ...

    def lose_next_response(self) -> None:
        """The server will process the next order submission but never answer it."""
        ...

    def restart(self) -> None:
        """Stop the server and start it again on the same port with the same state."""
        ...


def _order(h: Harness, cid: str, side: Side = Side.BUY, qty: Decimal | None = None) -> Order:
    inst = h.instrument
    return Order(
        client_order_id=cid,
        instrument_id=inst.id,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=inst.qty(qty if qty is not None else h.quantity()),
        price=inst.price(h.resting_price(side)),
        time_in_force=TimeInForce.GTC,
        ts_init=0,
    )


def _status(h: Harness, cid: str) -> OrderStatus | None:
    rep = h.venue.query(cid)
    return None if rep is None else rep.status


def check_place_and_query(h: Harness) -> None:
    o = _order(h, "conf-place-1")
    h.venue.submit(o)
    rep = h.venue.query("conf-place-1")
    assert rep is not None, "a placed order must be found by its client order id"
    assert rep.status in (OrderStatus.ACCEPTED, OrderStatus.SUBMITTED), rep
    assert rep.filled_raw == 0
    assert rep.venue_order_id, "the venue's own id must come back with the report"
    assert h.venue.query("conf-never-sent") is None, "an unknown client id is None, not an error"


def check_cancel(h: Harness) -> None:
    o = _order(h, "conf-cancel-1", Side.SELL)
    h.venue.submit(o)
    h.venue.cancel(o)
    assert _status(h, "conf-cancel-1") is OrderStatus.CANCELED


def check_partial_then_full_fill(h: Harness) -> None:
    qty = h.quantity()
    o = _order(h, "conf-fill-1", qty=qty)
    h.venue.submit(o)
    inst = h.instrument
    half = inst.qty_from_raw(o.quantity.raw // 2 // inst.lot_raw * inst.lot_raw).to_decimal()
    h.fill("conf-fill-1", half)
    rep = h.venue.query("conf-fill-1")
    assert rep is not None and rep.status is OrderStatus.PARTIALLY_FILLED, rep
    assert rep.filled_raw == inst.qty(half).raw
    h.fill("conf-fill-1", qty - half)
    rep = h.venue.query("conf-fill-1")
    assert rep is not None and rep.status is OrderStatus.FILLED, rep
    assert rep.filled_raw == o.quantity.raw


def check_reject(h: Harness) -> None:
    o = _order(h, "conf-reject-1", qty=h.unaffordable_quantity())
    with pytest.raises(VenueRejected):
        h.venue.submit(o)
    assert h.venue.query("conf-reject-1") is None, "a rejected order must not exist at the venue"


def check_timeout_then_verify_by_client_id(h: Harness) -> None:
    o = _order(h, "conf-lost-1")
    h.lose_next_response()
    with pytest.raises(VenueError) as err:
        h.venue.submit(o)
    assert err.value.retryable, f"a lost answer must say 'the order may exist', got {err.value!r}"
    assert not isinstance(err.value, VenueRejected)
    rep = h.venue.query("conf-lost-1")
    assert rep is not None and rep.status is OrderStatus.ACCEPTED, "the venue did take it"


def check_reconnect(h: Harness) -> None:
    h.venue.submit(_order(h, "conf-before-restart"))
    h.restart()
    assert _status(h, "conf-before-restart") is OrderStatus.ACCEPTED
    h.venue.submit(_order(h, "conf-after-restart", Side.SELL))
    assert _status(h, "conf-after-restart") is OrderStatus.ACCEPTED


CHECKS: dict[str, Callable[[Harness], None]] = {
    "place_and_query": check_place_and_query,
    "cancel": check_cancel,
    "partial_then_full_fill": check_partial_then_full_fill,
    "reject": check_reject,
    "timeout_then_verify_by_client_id": check_timeout_then_verify_by_client_id,
    "reconnect": check_reconnect,
}


def run_conformance(h: Harness) -> None:
    for check in CHECKS.values():
        check(h)

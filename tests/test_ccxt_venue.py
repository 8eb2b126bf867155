"""The ccxt adapter against the local Kraken-compatible exchange, over real HTTP.

The exchange runs the recorded Kraken BTC/USD book snapshot from the ccxt fixtures as a static
book; the adapter is the one the chaos test and live trading use, so what is checked here (client
ids at the venue, exact fills keyed by trade id, "may exist" errors never releasing money) is the
adapter's real behaviour, not a mock's.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import ccxt
import pytest

from bastion.engine.clock import WallClock
from bastion.execution.gateway import OrderGateway
from bastion.execution.reservations import Reservations
from bastion.model.events import OrderAccepted, OrderCanceled, OrderEvent, OrderFilled
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.store.journal import DurableJournal
from bastion.store.sql import Store
from bastion.store.wal import WriteAheadLog
from bastion.venues.base import VenueRejected
from bastion.venues.ccxt_venue import CcxtVenue, OrderMayExist
from bastion.venues.local_exchange import Exchange, ExchangeConfig, MarketEvents, ServerThread

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
SECRET = base64.b64encode(bytes(range(64))).decode()
KEY = "venue-test-key"
INST = Instrument(
    symbol="BTCUSD", venue="KRAKEN", kind=InstrumentKind.SPOT, base="BTC", quote="USD",
    tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"),
    maker_fee=Decimal("0.0016"), taker_fee=Decimal("0.0026"),
)  # fmt: skip


@pytest.fixture(scope="module")
def market() -> MarketEvents:
    doc = json.loads((FIXTURES / "ccxt/extracts/ws_kraken_book_subset.json").read_text())
    s = doc["messages"][0]["data"][0]
    return MarketEvents.from_levels(
        [(repr(b["price"]), repr(b["qty"])) for b in s["bids"]],
        [(repr(a["price"]), repr(a["qty"])) for a in s["asks"]],
        1_791_273_897_750_392_000,
        source="kraken ws book BTC/USD",
    )


@pytest.fixture()
def server(tmp_path: Path, market: MarketEvents) -> Iterator[ServerThread]:
    cfg = ExchangeConfig(
        KEY, SECRET, tmp_path / "exch", speed=0, initial_balances={"XXBT": "2", "ZUSD": "500000"}
    )
    with ServerThread(Exchange(cfg, {"XXBTZUSD": market})) as srv:
        yield srv


@pytest.fixture()
def venue(server: ServerThread) -> CcxtVenue:
    ex = ccxt.kraken({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "timeout": 3000})
    ex.urls["api"] = {**ex.urls["api"], "public": server.url, "private": server.url}
    ex.load_markets()
    return CcxtVenue(ex, INST, "BTC/USD", "kraken")


def limit(cid: str, side: Side, px: str, qty: str, tif: TimeInForce = TimeInForce.GTC) -> Order:
    return Order(cid, INST.id, side, OrderType.LIMIT, INST.qty(qty), INST.price(px), tif)


def touch(server: ServerThread) -> tuple[Decimal, Decimal]:
    book: dict[str, Any] = server.exchange.public("Depth", {"pair": "XXBTZUSD", "count": "1"})["XXBTZUSD"]
    return Decimal(book["bids"][0][0]), Decimal(book["asks"][0][0])


def test_place_query_cancel_by_client_id(server: ServerThread, venue: CcxtVenue) -> None:
    bid, _ = touch(server)
    o = limit("v-rest", Side.BUY, str(bid - 100), "0.01", TimeInForce.POST_ONLY)
    assert venue.submit(o) is None
    assert o.venue_order_id
    rep = venue.query("v-rest")
    assert rep is not None and rep.status is OrderStatus.ACCEPTED and rep.filled_raw == 0
    assert rep.venue_order_id == o.venue_order_id
    assert server.exchange.order_by_clordid("v-rest") is not None  # sent as Kraken's cl_ord_id
    events = venue.poll_events()
    assert [type(e) for e in events] == [OrderAccepted]
    venue.cancel(o)
    events = venue.poll_events()
    assert [(type(e), e.client_order_id) for e in events] == [(OrderCanceled, "v-rest")]
    rep = venue.query("v-rest")
    assert rep is not None and rep.status is OrderStatus.CANCELED
    assert venue.query("never-sent") is None
    venue.cancel(o)  # cancelling a finished order is harmless


def test_fill_is_reported_with_its_trade_id_exactly(server: ServerThread, venue: CcxtVenue) -> None:
    _, ask = touch(server)
    o = limit("v-take", Side.BUY, str(ask + 50), "0.001")
    venue.submit(o)
    events = venue.poll_events()
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert fills and all(f.client_order_id == "v-take" for f in fills)
    assert sum(f.fill.quantity.raw for f in fills) == INST.qty("0.001").raw
    venue_trades = server.exchange.trades
    for f in fills:
        t = venue_trades[f.fill.trade_id]  # the venue's own trade id
        assert f.fill.price == Price(t.price, 1)
        assert f.fill.quantity == Quantity(t.vol, 8)
        assert f.fill.fee.raw * 10**5 == t.fee * 10**8  # cost decimals 5, money precision 8
    # polling again reports the same fills (same ids: the store dedupes), and no new ones
    again = [e for e in venue.poll_events() if isinstance(e, OrderFilled)]
    assert {e.fill.trade_id for e in again} == {f.fill.trade_id for f in fills}
    bal = venue.balances()
    assert bal["BTC"] == Fraction(2) + Fraction(1, 1000)


def test_rejections_and_duplicates(server: ServerThread, venue: CcxtVenue) -> None:
    with pytest.raises(VenueRejected):  # far more than the account holds
        venue.submit(limit("v-big", Side.BUY, "80000", "100"))
    assert venue.query("v-big") is None
    bid, _ = touch(server)
    o = limit("v-dup", Side.BUY, str(bid - 100), "0.01")
    venue.submit(o)
    with pytest.raises(OrderMayExist):  # the venue has this id: never a rejection
        venue.submit(limit("v-dup", Side.BUY, str(bid - 100), "0.01"))


def test_lost_answer_is_pending_then_verified_and_kept(
    tmp_path: Path, server: ServerThread, venue: CcxtVenue
) -> None:
    journal = DurableJournal(WriteAheadLog(tmp_path / "wal"), Store(f"sqlite:///{tmp_path}/s.db"), "kraken")
    seen: list[OrderEvent] = []
    gw = OrderGateway(
        venue, INST, clock=WallClock(), journal=journal,
        reservations=Reservations(lambda c: 10**15), on_event=seen.append,
        position_of=lambda: 0, reference_price=lambda side: 800000,
    )  # fmt: skip
    bid, _ = touch(server)
    server.faults.force("lost_answer", "AddOrder")
    o = limit("v-lost", Side.BUY, str(bid - 100), "0.01")
    gw.submit(o)
    assert o.status is OrderStatus.PENDING_VERIFICATION and "v-lost" in gw.pending_verification
    assert gw.reservations.holds("v-lost")  # the money stays promised while the fate is unknown
    assert gw.verify_pending() == 1
    assert not gw.pending_verification
    assert "v-lost" in gw.open_orders and gw.reservations.holds("v-lost")  # found, kept, reserved
    assert o.venue_order_id == server.exchange.order_by_clordid("v-lost").txid  # type: ignore[union-attr]
    journal.wal.close()
    journal.store.close()

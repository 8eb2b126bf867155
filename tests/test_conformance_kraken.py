"""Kraken (the ccxt adapter) against the shared venue conformance suite.

The real ``ccxt.kraken`` (only its API URLs changed) and :class:`CcxtVenue` talk HTTP to the local
Kraken-protocol exchange on 127.0.0.1, which verifies every signature and nonce and keeps its
order state in SQLite. The market is the recorded Kraken BTC/USD book snapshot from the ccxt
fixtures, static (speed 0: nothing moves unless told to), so the resting prices below never
trade against the recording; fills come from the exchange's ``counterparty_fill`` test control,
which books a maker fill exactly as a counterparty taking the order would. A restart stops the
HTTP server and opens a *new* :class:`Exchange` over the same state directory on the same port:
the adapter keeps its URL and its ccxt client, and must find everything again.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
import venue_conformance

from bastion.model.events import OrderFilled
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import VenueClient
from bastion.venues.ccxt_venue import CcxtVenue, OrderMayExist, venue_client_id
from bastion.venues.local_exchange import Exchange, ExchangeConfig, MarketEvents, ServerThread

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
SECRET = base64.b64encode(bytes(range(64))).decode()
KEY = "conformance-key"
PAIR = "XXBTZUSD"
SYMBOL = "BTC/USD"
BALANCES = {"XXBT": "2", "ZUSD": "500000"}
TIMEOUT_MS = 2000  # loopback answers in milliseconds; a lost answer is a dropped connection
INST = Instrument(
    symbol="BTCUSD", venue="KRAKEN", kind=InstrumentKind.SPOT, base="BTC", quote="USD",
    tick_size=Decimal("0.1"), lot_size=Decimal("0.00000001"),
    maker_fee=Decimal("0.0016"), taker_fee=Decimal("0.0026"),
)  # fmt: skip


@pytest.fixture(scope="module")
def market() -> MarketEvents:
    path = FIXTURES / "ccxt/extracts/ws_kraken_book_subset.json"
    if not path.is_file():
        pytest.fail(f"recorded fixture {path} not found: set BASTION_SHARED_FIXTURES")
    snap = json.loads(path.read_text(encoding="utf-8"))["messages"][0]["data"][0]
    return MarketEvents.from_levels(
        [(repr(b["price"]), repr(b["qty"])) for b in snap["bids"]],
        [(repr(a["price"]), repr(a["qty"])) for a in snap["asks"]],
        1_791_273_897_750_392_000,
        source="kraken ws book BTC/USD",
    )


class KrakenHarness:
    """The conformance harness: CcxtVenue over the local Kraken exchange."""

    venue: VenueClient  # typed as the protocol: mypy checks that CcxtVenue is one
    instrument: Instrument

    def __init__(self, state_dir: Path, market: MarketEvents) -> None:
        self.config = ExchangeConfig(KEY, SECRET, state_dir, speed=0, initial_balances=BALANCES)
        self.market = market
        self.server = ServerThread(self._exchange()).start()
        self.port = self.server.port
        self.restarts = 0
        ex = ccxt.kraken({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "timeout": TIMEOUT_MS})
        ex.urls["api"] = {**ex.urls["api"], "public": self.server.url, "private": self.server.url}
        ex.load_markets()
        self.client: Any = ex
        self.venue = CcxtVenue(ex, INST, SYMBOL, "kraken")
        self.instrument = INST
        book = self.server.exchange.public("Depth", {"pair": PAIR, "count": "1"})[PAIR]
        self.best_bid = Decimal(book["bids"][0][0])
        self.best_ask = Decimal(book["asks"][0][0])

    def _exchange(self) -> Exchange:
        return Exchange(self.config, {PAIR: self.market})

    def close(self) -> None:
        self.server.stop()

    # --- venue_conformance.Harness --------------------------------------------------------------
    def resting_price(self, side: Side) -> Decimal:
        # a thousand from the recorded touch: the static book never reaches it
        return self.best_bid - 1000 if side is Side.BUY else self.best_ask + 1000

    def quantity(self) -> Decimal:
        return Decimal("0.01")

    def unaffordable_quantity(self) -> Decimal:
        return Decimal("100")  # several million USD at the buy price; the account holds 500k

    def fill(self, client_order_id: str, quantity: Decimal) -> None:
        # the exchange knows the order by the cl_ord_id the adapter sent for this client id
        self.server.exchange.counterparty_fill(venue_client_id(client_order_id), str(quantity))

    def lose_next_response(self) -> None:
        # the exchange processes and commits the next AddOrder, then drops the connection
        self.server.faults.force("lost_answer", "AddOrder")

    def restart(self) -> None:
        self.server.stop()  # closes the exchange's SQLite store too
        self.server = ServerThread(self._exchange(), port=self.port).start()
        assert self.server.port == self.port, "the adapter keeps its URL, so the port must not move"
        self.restarts += 1


@pytest.fixture()
def harness(tmp_path: Path, market: MarketEvents) -> Iterator[KrakenHarness]:
    h = KrakenHarness(tmp_path / "exch", market)
    try:
        yield h
    finally:
        h.close()


def test_counterparty_fill_is_a_maker_fill_at_the_order_price(harness: KrakenHarness) -> None:
    """The harness's fill control books what a counterparty would: exact, maker, own trade id."""
    ex = harness.server.exchange
    venue_conformance.CHECKS["place_and_query"](harness)
    order = ex.order_by_clordid("conf-place-1")
    assert order is not None
    before = dict(ex.balances)
    harness.fill("conf-place-1", Decimal("0.004"))
    assert order.vol_exec == 400_000 and order.status == "open"
    (trade,) = (ex.trades[t] for t in order.trades)
    assert (trade.price, trade.vol, trade.maker, trade.side) == (order.price, 400_000, True, "buy")
    assert ex.balances["XXBT"] - before["XXBT"] == 400_000 * 10**2  # lot 8 decimals, balance 10
    with pytest.raises(ValueError):
        harness.fill("conf-place-1", Decimal("0.0061"))  # more than is left
    harness.fill("conf-place-1", Decimal("0.006"))
    assert order.status == "closed" and order.vol_exec == order.vol
    with pytest.raises(ValueError):
        harness.fill("conf-place-1", Decimal("0.001"))  # no longer open


def test_a_client_id_kraken_would_refuse_goes_out_as_its_uuid(harness: KrakenHarness) -> None:
    """Kraken takes free-text cl_ord_ids of at most 18 characters; ours can be longer."""
    cid = "momentum-btcusd-1234567"  # <strategy id>-<sequence>: 23 characters
    sent = venue_client_id(cid)
    assert len(sent) == 32 and sent == venue_client_id(cid), "a UUID, the same every time"
    assert venue_client_id("conf-after-restart") == "conf-after-restart"  # 18: unchanged
    o = Order(
        cid, INST.id, Side.BUY, OrderType.LIMIT, INST.qty("0.01"),
        INST.price(harness.resting_price(Side.BUY)), TimeInForce.GTC,
    )  # fmt: skip
    harness.venue.submit(o)
    at_venue = harness.server.exchange.order_by_clordid(sent)
    assert at_venue is not None and at_venue.txid == o.venue_order_id
    rep = harness.venue.query(cid)
    assert rep is not None and rep.status is OrderStatus.ACCEPTED and rep.venue_order_id == o.venue_order_id
    with pytest.raises(OrderMayExist):  # a retry under the same id is still a duplicate
        harness.venue.submit(Order(cid, o.instrument_id, o.side, o.order_type, o.quantity, o.price))
    # a new process (a restarted engine) knows nothing but the id, and finds the order by it
    fresh = CcxtVenue(harness.client, INST, SYMBOL, "kraken")
    rep = fresh.query(cid)
    assert rep is not None and rep.venue_order_id == o.venue_order_id
    harness.fill(cid, Decimal("0.004"))
    fills = [e for e in fresh.poll_events() if isinstance(e, OrderFilled)]
    assert [(f.client_order_id, f.fill.quantity) for f in fills] == [(cid, INST.qty("0.004"))]
    fresh.cancel(o)
    rep = harness.venue.query(cid)
    assert rep is not None and rep.status is OrderStatus.CANCELED and rep.filled_raw == INST.qty("0.004").raw


@pytest.mark.parametrize("check", list(venue_conformance.CHECKS), ids=list(venue_conformance.CHECKS))
def test_conformance(harness: KrakenHarness, check: str) -> None:
    h: venue_conformance.Harness = harness  # mypy checks the harness against the protocol
    venue_conformance.CHECKS[check](h)
    if check == "reconnect":
        assert harness.restarts == 1

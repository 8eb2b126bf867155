"""Polymarket: py-clob-client and :class:`PolymarketVenue` against a local CLOB that checks signatures.

Two tiers. The contract tier runs py-clob-client itself, only its host changed, against
``contract.polymarket_server`` (recorded ``/book`` body, recorded response shapes; every L1, L2
and order signature verified by the server with its own EIP-712 code), and shows that a signing
bug fails: a wrong HMAC secret, an order signed by a key that is not the signer, a neg-risk order
signed for the wrong exchange contract. The conformance tier runs the shared venue checks over
the adapter. The market is the recorded one: JD Vance 2028 YES (a neg-risk market, tick 0.001).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal

import pytest
import venue_conformance
from contract.polymarket_server import EXCHANGES, ClobState, PolymarketServer, recorded_cases
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from py_clob_client.client import ClobClient
from py_clob_client.clob_types import ApiCreds, CreateOrderOptions, OpenOrderParams, OrderArgs
from py_clob_client.exceptions import PolyApiException
from py_clob_client.headers.headers import create_level_1_headers
from py_clob_client.http_helpers.helpers import get as clob_get
from py_clob_client.order_builder.builder import ROUNDING_CONFIG
from py_clob_client.signer import Signer
from py_order_utils.builders import OrderBuilder as UtilsOrderBuilder
from py_order_utils.model import BUY as ORDER_BUY
from py_order_utils.model import Order as EIP712Order
from py_order_utils.model import SignedOrder
from py_order_utils.signer import Signer as UtilsSigner

from bastion.model.events import OrderRejected
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import VenueAuthError, VenueRejected, VenueTimeout, VenueUnavailable
from bastion.venues.polymarket import (
    OrderMayExist,
    OrderNotSent,
    PolymarketVenue,
    configure_transport,
    order_amounts,
    order_salt,
    polymarket_client,
)
from bastion.venues.rate_limit import RateLimiter, limiter_for, reset_limiters

RECORDED = recorded_cases()
BOOK = RECORDED["fetchOrderBook"]
TOKEN = str(BOOK["asset_id"])
INSTRUMENT = Instrument(
    symbol="VANCE-WIN-2028-YES", venue="POLYMARKET", kind=InstrumentKind.BINARY_OUTCOME,
    base="VANCE-WIN-2028-YES", quote="USDC", tick_size=Decimal(BOOK["tick_size"]),
    lot_size=Decimal("0.01"), size_decimals=6, outcome="YES",
    extra={"token_id": TOKEN, "condition_id": BOOK["market"]},
)  # fmt: skip
TIMEOUT = 5.0  # the client's; nothing here waits for it except the one stalled-answer check


def key_of(acct: LocalAccount) -> str:
    return "0x" + bytes(acct.key).hex()


def _order_domain(client: ClobClient, neg_risk: bool) -> object:
    """The EIP-712 domain py-clob-client signs orders in (exchange contract by neg-risk flag)."""
    exchange = client.get_exchange_address(neg_risk)
    return UtilsOrderBuilder(exchange, 137, UtilsSigner(client.signer.private_key)).domain_separator


def limit(cid: str, side: Side = Side.BUY, price: str = "0.150", qty: str = "10") -> Order:
    return Order(cid, INSTRUMENT.id, side, OrderType.LIMIT, INSTRUMENT.qty(qty), INSTRUMENT.price(price))


@pytest.fixture(autouse=True)
def budget() -> Iterator[RateLimiter]:
    """The shared polymarket budget, wide open so tests do not wait (the count is what matters)."""
    reset_limiters()
    configure_transport(TIMEOUT)
    yield limiter_for("polymarket", rate=1_000_000.0, burst=1_000_000)
    reset_limiters()


@pytest.fixture()
def wallet() -> LocalAccount:
    return Account.create()


@pytest.fixture()
def server(wallet: LocalAccount) -> Iterator[PolymarketServer]:
    with PolymarketServer(ClobState.recorded(wallet.address)) as srv:
        yield srv


@pytest.fixture()
def client(server: PolymarketServer, wallet: LocalAccount) -> ClobClient:
    return polymarket_client(key_of(wallet), server.url, timeout=TIMEOUT)


@pytest.fixture()
def venue(client: ClobClient) -> PolymarketVenue:
    return PolymarketVenue(client, INSTRUMENT, TOKEN)


# --- contract tier: py-clob-client itself ------------------------------------------------------------
def test_py_clob_client_with_only_its_host_changed(server: PolymarketServer, wallet: LocalAccount) -> None:
    c = ClobClient(server.url, chain_id=137, key=key_of(wallet))
    with pytest.raises(PolyApiException) as no_key:
        c.derive_api_key()
    assert no_key.value.status_code == 400  # nothing to derive before a key exists
    creds = c.create_api_key()  # L1: the server recovered the ClobAuth signer
    assert creds is not None
    assert c.derive_api_key() == creds
    c.set_api_creds(creds)

    book = c.get_order_book(TOKEN)  # the recorded body
    assert [(o.price, o.size) for o in book.bids] == [(b["price"], b["size"]) for b in BOOK["bids"]]
    assert [(o.price, o.size) for o in book.asks] == [(a["price"], a["size"]) for a in BOOK["asks"]]
    assert (book.market, book.tick_size, book.neg_risk) == (BOOK["market"], "0.001", True)

    signed = c.create_order(OrderArgs(token_id=TOKEN, price=0.15, size=10.0, side="BUY"))
    assert server.count("GET", "/tick-size") == 0  # the tick came with the book
    assert server.count("GET", "/neg-risk") == 1 and server.count("GET", "/fee-rate") == 1
    res = c.post_order(signed)
    assert list(res) == list(RECORDED["createOrder"])  # the recorded live response, key for key
    assert res["success"] is True and res["status"] == "live"
    oid = res["orderID"]
    assert server.state.orders[oid].exchange == EXCHANGES[137][True]  # neg-risk exchange domain

    o = c.get_order(oid)
    assert (o["status"], o["original_size"], o["size_matched"], o["price"]) == ("LIVE", "10", "0", "0.15")
    assert [x["id"] for x in c.get_orders(OpenOrderParams(asset_id=TOKEN))] == [oid]
    canceled = c.cancel(oid)
    assert canceled == {"not_canceled": {}, "canceled": [oid]}
    assert list(canceled) == list(RECORDED["cancelOrder"])  # the recorded cancel response shape
    assert c.get_order(oid)["status"] == "CANCELED"
    assert oid in c.cancel(oid)["not_canceled"]
    assert c.get_orders(OpenOrderParams(asset_id=TOKEN)) == []


def test_l1_signature_must_be_the_wallets(server: PolymarketServer, wallet: LocalAccount) -> None:
    other = Account.create()
    forged = create_level_1_headers(Signer(key_of(other), 137))
    forged["POLY_ADDRESS"] = wallet.address  # claims the wallet, signed by another key
    with pytest.raises(PolyApiException) as err:
        clob_get(f"{server.url}/auth/derive-api-key", headers=forged)
    assert err.value.status_code == 401
    assert err.value.error_msg == {"error": "Invalid L1 Request headers"}
    with pytest.raises(VenueAuthError):  # a correctly signed stranger has no account here
        polymarket_client(key_of(other), server.url, timeout=TIMEOUT)


def test_wrong_l2_secret_is_401(server: PolymarketServer, wallet: LocalAccount, client: ClobClient) -> None:
    good = client.creds
    bad = ApiCreds(good.api_key, base64.urlsafe_b64encode(bytes(32)).decode(), good.api_passphrase)
    wrong = polymarket_client(key_of(wallet), server.url, creds=bad, timeout=TIMEOUT)
    with pytest.raises(PolyApiException) as err:
        wrong.get_orders()
    assert err.value.status_code == 401
    assert err.value.error_msg == {"error": "Unauthorized/Invalid api key"}
    with pytest.raises(VenueAuthError):
        PolymarketVenue(wrong, INSTRUMENT, TOKEN).submit(limit("l2-bad"))
    assert client.get_orders() == []  # the right secret works, and nothing was placed


def test_order_signed_by_another_key_is_refused(
    server: PolymarketServer, wallet: LocalAccount, client: ClobClient
) -> None:
    other = Account.create()
    good = client.create_order(OrderArgs(token_id=TOKEN, price=0.15, size=10.0, side="BUY"))
    forged = EIP712Order(**good.order.dict())  # the wallet's order, to be signed by another key
    assert forged["side"] == ORDER_BUY
    digest = keccak(forged.signable_bytes(domain=_order_domain(client, neg_risk=True)))
    sig = Account._sign_hash(digest, other.key).signature.hex()
    with pytest.raises(PolyApiException) as err:
        client.post_order(SignedOrder(forged, "0x" + sig.removeprefix("0x")))
    assert (err.value.status_code, err.value.error_msg) == (400, {"error": "invalid signature"})

    own = ClobClient(server.url, chain_id=137, key=key_of(other)).create_order(
        OrderArgs(token_id=TOKEN, price=0.15, size=10.0, side="BUY")
    )  # validly signed by the other key, posted under the wallet's API key
    with pytest.raises(PolyApiException) as err:
        client.post_order(own)
    assert err.value.error_msg == {"error": "the order signer address has to be the address of the API KEY"}

    # the adapter signing for a funder that is not the wallet (an EOA order must be its own)
    stranger = polymarket_client(
        key_of(wallet), server.url, creds=client.creds, funder=other.address, timeout=TIMEOUT
    )
    v = PolymarketVenue(stranger, INSTRUMENT, TOKEN)
    with pytest.raises(VenueRejected, match="invalid signature"):
        v.submit(limit("wrong-funder"))
    assert v.query("wrong-funder") is None
    assert client.post_order(good)["success"] is True  # the honest order passes


def test_neg_risk_order_signed_for_the_normal_exchange_is_refused(
    server: PolymarketServer, client: ClobClient
) -> None:
    args = OrderArgs(token_id=TOKEN, price=0.15, size=10.0, side="BUY")
    wrong = client.builder.create_order(args, CreateOrderOptions(tick_size="0.001", neg_risk=False))
    with pytest.raises(PolyApiException) as err:
        client.post_order(wrong)
    assert (err.value.status_code, err.value.error_msg) == (400, {"error": "invalid signature"})
    right = client.builder.create_order(args, CreateOrderOptions(tick_size="0.001", neg_risk=True))
    res = client.post_order(right)
    assert res["success"] is True
    assert server.state.orders[res["orderID"]].exchange == EXCHANGES[137][True]


def test_a_plain_market_signs_for_the_normal_exchange(wallet: LocalAccount) -> None:
    state = ClobState.recorded(wallet.address, neg_risk=False)  # the same book, flag flipped
    with PolymarketServer(state) as srv:
        c = polymarket_client(key_of(wallet), srv.url, timeout=TIMEOUT)
        v = PolymarketVenue(c, INSTRUMENT, TOKEN)
        o = limit("plain-1")
        v.submit(o)
        assert srv.state.orders[o.venue_order_id].exchange == EXCHANGES[137][False]
        args = OrderArgs(token_id=TOKEN, price=0.15, size=10.0, side="BUY")
        for_neg_risk = c.builder.create_order(args, CreateOrderOptions(tick_size="0.001", neg_risk=True))
        with pytest.raises(PolyApiException) as err:
            c.post_order(for_neg_risk)
        assert err.value.error_msg == {"error": "invalid signature"}


# --- the adapter's own promises ---------------------------------------------------------------------
def test_order_id_is_known_before_submission(
    server: PolymarketServer, client: ClobClient, venue: PolymarketVenue
) -> None:
    o = limit("known-1")
    expected = venue.order_id(o)
    assert server.count("POST", "/order") == 0
    assert venue.submit(o) is None
    assert o.venue_order_id == expected
    rec = server.state.orders[expected]  # the server computed the same hash, independently
    assert int(rec.order["salt"]) == order_salt("known-1")
    rep = venue.query("known-1")
    assert rep is not None and rep.venue_order_id == expected and rep.status is OrderStatus.ACCEPTED
    # another process knows nothing: it recomputes the id from the journaled order
    fresh = PolymarketVenue(client, INSTRUMENT, TOKEN, order_lookup={"known-1": o}.get)
    rep = fresh.query("known-1")
    assert rep is not None and rep.venue_order_id == expected
    # without a lookup it can only answer for what it signed itself (hence the lookup in production)
    assert PolymarketVenue(client, INSTRUMENT, TOKEN).query("known-1") is None


@pytest.mark.parametrize(
    ("side", "price", "size"),
    [("BUY", "0.15", "10"), ("SELL", "0.9", "12.34"), ("BUY", "0.001", "5.55"), ("SELL", "0.999", "7.01")],
)
def test_amounts_equal_py_clob_clients(client: ClobClient, side: str, price: str, size: str) -> None:
    ours = order_amounts(Side[side], Decimal(price), Decimal(size))
    _, maker, taker = client.builder.get_order_amounts(
        side, float(size), float(price), ROUNDING_CONFIG["0.001"]
    )
    assert ours == (maker, taker)


def test_local_refusals_send_nothing(server: PolymarketServer, venue: PolymarketVenue) -> None:
    iid = INSTRUMENT.id
    off_tick = Order(
        "off-tick", iid, Side.BUY, OrderType.LIMIT, INSTRUMENT.qty("10"), Price.from_str("0.1505", 4)
    )
    too_fine = Order(
        "too-fine", iid, Side.BUY, OrderType.LIMIT, Quantity.from_str("10.005", 6), INSTRUMENT.price("0.15")
    )
    market = Order("market", iid, Side.BUY, OrderType.MARKET, INSTRUMENT.qty("10"))
    ioc = Order(
        "ioc", iid, Side.BUY, OrderType.LIMIT, INSTRUMENT.qty("10"), INSTRUMENT.price("0.15"), TimeInForce.IOC
    )
    for o in (off_tick, too_fine, market, ioc):
        ev = venue.submit(o)
        assert isinstance(ev, OrderRejected) and ev.client_order_id == o.client_order_id, ev
        assert venue.query(o.client_order_id) is None
    assert server.count("POST", "/order") == 0


def test_fills_are_read_exactly(server: PolymarketServer, venue: PolymarketVenue) -> None:
    venue.submit(limit("exact-1", qty="10"))
    server.fill("exact-1", "2.57")
    rep = venue.query("exact-1")
    assert rep is not None and rep.status is OrderStatus.PARTIALLY_FILLED
    assert rep.filled_raw == INSTRUMENT.qty("2.57").raw
    server.fill("exact-1", "7.43")
    rep = venue.query("exact-1")
    assert rep is not None and rep.status is OrderStatus.FILLED and rep.filled_raw == INSTRUMENT.qty("10").raw


def test_a_matched_order_missing_from_the_order_view_is_found_in_trades(
    server: PolymarketServer, venue: PolymarketVenue
) -> None:
    o = limit("gone-1", qty="6.5")
    venue.submit(o)
    server.fill("gone-1", "6.5")
    server.state.forget_matched = True  # /data/order answers null for it, as seen live
    rep = venue.query("gone-1")
    assert rep is not None and rep.status is OrderStatus.FILLED
    assert (rep.filled_raw, rep.venue_order_id) == (INSTRUMENT.qty("6.5").raw, o.venue_order_id)


def test_refusals_are_rejections_and_failures_may_exist(
    server: PolymarketServer, venue: PolymarketVenue
) -> None:
    with pytest.raises(VenueRejected, match="not enough balance / allowance"):
        venue.submit(limit("broke", qty="100000"))
    assert venue.query("broke") is None
    with pytest.raises(VenueRejected, match="lower than the minimum"):
        venue.submit(limit("tiny", qty="1"))
    server.refuse_next("the market is not yet ready to process new orders")
    with pytest.raises(VenueRejected, match="not yet ready"):
        venue.submit(limit("refused"))
    assert venue.query("refused") is None

    venue.submit(limit("twice"))
    with pytest.raises(OrderMayExist) as dup:  # the venue has this very order: never a rejection
        venue.submit(limit("twice"))
    assert dup.value.retryable

    for status, error in ((503, "Trading is currently disabled. Check polymarket.com for updates"),
                          (429, "Too Many Requests"), (500, "Internal server error")):  # fmt: skip
        server.fail_next("/order", status, error)
        with pytest.raises(VenueUnavailable) as err:
            venue.submit(limit(f"fail-{status}"))
        assert err.value.retryable and not isinstance(err.value, VenueRejected)
        assert venue.query(f"fail-{status}") is None  # it was not processed: the query says so


def test_failure_before_sending_is_not_sent(server: PolymarketServer, wallet: LocalAccount) -> None:
    fresh = polymarket_client(key_of(wallet), server.url, timeout=TIMEOUT)  # nothing cached yet
    server.fail_next("/neg-risk", 500, "Internal server error")
    with pytest.raises(OrderNotSent):
        PolymarketVenue(fresh, INSTRUMENT, TOKEN).submit(limit("early"))
    assert server.count("POST", "/order") == 0


def test_an_unanswered_submission_times_out_and_is_found(
    server: PolymarketServer, venue: PolymarketVenue
) -> None:
    configure_transport(0.3)  # the server never answers this one: keep the wait short
    server.stall_next_response()
    with pytest.raises(VenueTimeout):
        venue.submit(limit("stalled"))
    configure_transport(TIMEOUT)
    rep = venue.query("stalled")
    assert rep is not None and rep.status is OrderStatus.ACCEPTED


def test_cancel_twice_is_quiet(server: PolymarketServer, venue: PolymarketVenue) -> None:
    o = limit("cx", Side.SELL, "0.900")
    venue.submit(o)
    venue.cancel(o)
    venue.cancel(o)  # "already canceled or matched": the query says which
    rep = venue.query("cx")
    assert rep is not None and rep.status is OrderStatus.CANCELED


def test_every_request_draws_from_the_shared_budget(
    server: PolymarketServer, venue: PolymarketVenue, budget: RateLimiter
) -> None:
    spent, seen = budget.requests, len(server.state.requests)
    o = limit("budget-1")
    venue.submit(o)
    venue.query("budget-1")
    venue.cancel(o)
    venue.query("budget-1")
    assert len(server.state.requests) > seen
    assert budget.requests - spent == len(server.state.requests) - seen


# --- the shared conformance suite -------------------------------------------------------------------
class Harness:
    def __init__(self, server: PolymarketServer, venue: PolymarketVenue) -> None:
        self.server = server
        self.venue = venue
        self.instrument = INSTRUMENT

    def resting_price(self, side: Side) -> Decimal:
        # the recorded book: bids up to 0.005, asks from 0.995; both prices rest inside it
        return Decimal("0.150") if side is Side.BUY else Decimal("0.900")

    def quantity(self) -> Decimal:
        return Decimal("10")

    def unaffordable_quantity(self) -> Decimal:
        return Decimal("100000")  # 15,000 USDC at 0.15; the account holds 1,000

    def fill(self, client_order_id: str, quantity: Decimal) -> None:
        self.server.fill(client_order_id, quantity)

    def lose_next_response(self) -> None:
        self.server.lose_next_response()

    def restart(self) -> None:
        self.server.restart()


@pytest.mark.parametrize("check", list(venue_conformance.CHECKS))
def test_conformance(server: PolymarketServer, venue: PolymarketVenue, check: str) -> None:
    venue_conformance.CHECKS[check](Harness(server, venue))

"""Polymarket CLOB V2: py-clob-client-v2 and :class:`PolymarketVenue` against a signature-checking CLOB.

Two tiers. The contract tier runs py-clob-client-v2 itself, only its host changed, against
``contract.polymarket_server`` (recorded ``/book`` body, recorded response shapes; every L1, L2
and order signature verified by the server with its own EIP-712 code, domain version "2", V2
exchange contracts), and shows that a signing bug fails: a wrong HMAC secret, an order signed by
a key that is not the signer, a tampered salt or timestamp, a neg-risk order signed for the wrong
exchange contract, and any V1-signed order. ccxt's Polymarket signer (an independent V2
implementation, installed) must produce byte-identical signatures. The conformance tier runs the
shared venue checks over the adapter. The market is the recorded one: JD Vance 2028 YES (a
neg-risk market, tick 0.001).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt.prediction as ccxt_prediction
import pytest
import venue_conformance
from contract.polymarket_server import (
    EXCHANGES,
    V1_EXCHANGES,
    ClobState,
    PolymarketServer,
    domain_separator,
    order_digest,
    recorded_cases,
    recorded_inputs,
    struct_hash,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import (
    ApiCreds,
    CreateOrderOptions,
    OpenOrderParams,
    OrderArgsV1,
    OrderArgsV2,
    OrderPayload,
)
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.headers.headers import create_level_1_headers
from py_clob_client_v2.http_helpers.helpers import get as clob_get
from py_clob_client_v2.order_builder.builder import ROUNDING_CONFIG
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, SignatureTypeV2
from py_clob_client_v2.order_utils import Side as ClobSide
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.signer import Signer

from bastion.model.events import OrderRejected
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import VenueAuthError, VenueRejected, VenueTimeout, VenueUnavailable
from bastion.venues.polymarket import (
    OrderMayExist,
    OrderNotSent,
    OrderUnverifiable,
    PolymarketVenue,
    configure_transport,
    exchange_address,
    order_amounts,
    order_salt,
    order_timestamp,
    polymarket_client,
    post_order_payload,
    translate,
)
from bastion.venues.rate_limit import RateLimiter, limiter_for, reset_limiters

RECORDED = recorded_cases()
BOOK = RECORDED["fetchOrderBook"]
TOKEN = str(BOOK["asset_id"])
INSTRUMENT = Instrument(
    symbol="VANCE-WIN-2028-YES", venue="POLYMARKET", kind=InstrumentKind.BINARY_OUTCOME,
    base="VANCE-WIN-2028-YES", quote="PUSD", tick_size=Decimal(BOOK["tick_size"]),
    lot_size=Decimal("0.01"), size_decimals=6, outcome="YES",
    extra={"token_id": TOKEN, "condition_id": BOOK["market"]},
)  # fmt: skip
_CREATE = recorded_inputs()["createOrder"]
RECORDED_CREATE_PARAMS = {**_CREATE[5], "amount": _CREATE[3], "price": _CREATE[4]}  # buy 5 at 0.5
TIMEOUT = 5.0  # the client's; nothing here waits for it except the one stalled-answer check
TS_INIT = int(BOOK["timestamp"]) * 1_000_000 + 123_456  # the recorded book's time, in ns
ZERO32 = "0x" + "00" * 32


def key_of(acct: LocalAccount) -> str:
    return "0x" + bytes(acct.key).hex()


def limit(
    cid: str, side: Side = Side.BUY, price: str = "0.150", qty: str = "10", ts_init: int = TS_INIT
) -> Order:
    return Order(
        cid,
        INSTRUMENT.id,
        side,
        OrderType.LIMIT,
        INSTRUMENT.qty(qty),
        INSTRUMENT.price(price),
        ts_init=ts_init,
    )


def resign(order: Any, exchange: str, key: str, version: str = "2") -> Any:
    """``order`` (a signed V2 order) signed again by ``key`` for ``exchange`` in domain ``version``."""
    builder = ExchangeOrderBuilderV2(exchange, 137, Signer(key, 137), domain_version=version)
    return dataclasses.replace(
        order, signature=builder.build_order_signature(builder.build_order_typed_data(order))
    )


def ccxt_message(order: Any) -> dict[str, Any]:
    """A signed V2 order as the message ccxt's ``sign_clob_order`` takes."""
    return {
        "salt": str(order.salt), "maker": order.maker, "signer": order.signer, "tokenId": order.tokenId,
        "makerAmount": order.makerAmount, "takerAmount": order.takerAmount, "side": int(order.side),
        "signatureType": int(order.signatureType), "timestamp": order.timestamp,
        "metadata": order.metadata, "builder": order.builder,
    }  # fmt: skip


def ccxt_body(order: Any, signature: str, owner: str) -> dict[str, Any]:
    """The order JSON as ccxt 4.5.90's createOrder lays it out (it adds a zero ``taker``)."""
    return {
        "deferExec": False, "postOnly": False,
        "order": {
            "salt": int(order.salt), "maker": order.maker, "signer": order.signer,
            "taker": "0x" + "00" * 20, "tokenId": order.tokenId, "makerAmount": order.makerAmount,
            "takerAmount": order.takerAmount, "side": "BUY" if order.side == ClobSide.BUY else "SELL",
            "signatureType": int(order.signatureType), "timestamp": order.timestamp, "expiration": "0",
            "metadata": order.metadata, "builder": order.builder, "signature": signature,
        },
        "owner": owner, "orderType": "GTC",
    }  # fmt: skip


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


# --- contract tier: py-clob-client-v2 itself ---------------------------------------------------------
def test_py_clob_client_v2_with_only_its_host_changed(server: PolymarketServer, wallet: LocalAccount) -> None:
    c = ClobClient(server.url, chain_id=137, key=key_of(wallet))
    with pytest.raises(PolyApiException) as no_key:
        c.derive_api_key()
    assert no_key.value.status_code == 400  # nothing to derive before a key exists
    creds = c.create_api_key()  # L1: the server recovered the ClobAuth signer (domain version "1")
    assert c.derive_api_key() == creds
    c.set_api_creds(creds)

    assert c.get_order_book(TOKEN) == BOOK  # the recorded body, served verbatim

    signed = c.create_order(OrderArgsV2(token_id=TOKEN, price=0.15, size=10.0, side="BUY"))
    assert server.count("GET", "/version") == 1  # the SDK asks which order version to sign
    assert server.count("GET", "/neg-risk") == 1 and server.count("GET", "/fee-rate") == 0  # no fee signed
    assert (signed.metadata, signed.builder, signed.expiration) == (ZERO32, ZERO32, "0")
    res = c.post_order(signed)
    assert list(res) == list(RECORDED["createOrder"])  # the recorded live response, key for key
    assert res["success"] is True and res["status"] == "live"
    oid = res["orderID"]
    rec = server.state.orders[oid]
    assert rec.exchange == EXCHANGES[137][True]  # the V2 neg-risk exchange's domain
    assert (
        rec.order["timestamp"] == signed.timestamp and "nonce" not in rec.order and "taker" not in rec.order
    )

    o = c.get_order(oid)
    assert (o["status"], o["original_size"], o["size_matched"], o["price"]) == ("LIVE", "10", "0", "0.15")
    assert [x["id"] for x in c.get_open_orders(OpenOrderParams(asset_id=TOKEN))] == [oid]
    canceled = c.cancel_order(OrderPayload(orderID=oid))
    assert canceled == {"not_canceled": {}, "canceled": [oid]}
    assert list(canceled) == list(RECORDED["cancelOrder"])  # the recorded cancel response shape
    assert c.get_order(oid)["status"] == "CANCELED"
    assert oid in c.cancel_order(OrderPayload(orderID=oid))["not_canceled"]
    assert c.get_open_orders(OpenOrderParams(asset_id=TOKEN)) == []


def test_the_server_hashes_v2_orders_two_ways(client: ClobClient) -> None:
    """EIP-712 by eth_account's encoder and by hand (domain separator, struct hash) agree."""
    signed = client.create_order(OrderArgsV2(token_id=TOKEN, price=0.15, size=10.0, side="BUY"))
    order = order_to_json_v2(signed, "owner", "GTC")["order"]
    exchange = EXCHANGES[137][True]
    by_hand = keccak(b"\x19\x01" + domain_separator(137, exchange) + struct_hash(order))
    assert order_digest(order, 137, exchange)[0] == by_hand
    sdk = ExchangeOrderBuilderV2(exchange, 137, client.signer)
    assert sdk.build_order_hash(sdk.build_order_typed_data(signed)) == "0x" + by_hand.hex()


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
        wrong.get_open_orders()
    assert err.value.status_code == 401
    assert err.value.error_msg == {"error": "Unauthorized/Invalid api key"}
    with pytest.raises(VenueAuthError):
        PolymarketVenue(wrong, INSTRUMENT, TOKEN).submit(limit("l2-bad"))
    assert client.get_open_orders() == []  # the right secret works, and nothing was placed


def test_order_signed_by_another_key_is_refused(
    server: PolymarketServer, wallet: LocalAccount, client: ClobClient
) -> None:
    other = Account.create()
    good = client.create_order(OrderArgsV2(token_id=TOKEN, price=0.15, size=10.0, side="BUY"))
    forged = resign(good, EXCHANGES[137][True], key_of(other))  # the wallet's order, another key
    with pytest.raises(PolyApiException) as err:
        client.post_order(forged)
    assert (err.value.status_code, err.value.error_msg) == (400, {"error": "invalid signature"})

    own = ClobClient(server.url, chain_id=137, key=key_of(other)).create_order(
        OrderArgsV2(token_id=TOKEN, price=0.15, size=10.0, side="BUY")
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


@pytest.mark.parametrize("field", ["salt", "timestamp", "makerAmount", "metadata", "builder"])
def test_a_tampered_signed_field_is_refused(
    server: PolymarketServer, client: ClobClient, venue: PolymarketVenue, field: str
) -> None:
    o = limit("tamper-1")
    signed, oid = venue.signed_order(o, venue.terms())
    old = getattr(signed, field)
    new = "0x" + "00" * 31 + "01" if old.startswith("0x") else str(int(old) + 1)  # a bytes32 or a number
    tampered = dataclasses.replace(signed, **{field: new})
    with pytest.raises(PolyApiException) as err:
        client.post_order(tampered)
    assert (err.value.status_code, err.value.error_msg) == (400, {"error": "invalid signature"})
    assert server.state.orders == {}
    assert client.post_order(signed)["orderID"] == oid  # untouched, it passes under the computed id


def test_neg_risk_order_signed_for_the_normal_exchange_is_refused(
    server: PolymarketServer, client: ClobClient
) -> None:
    args = OrderArgsV2(token_id=TOKEN, price=0.15, size=10.0, side="BUY")
    wrong = client.builder.build_order(args, CreateOrderOptions(tick_size="0.001", neg_risk=False), version=2)
    with pytest.raises(PolyApiException) as err:
        client.post_order(wrong)
    assert (err.value.status_code, err.value.error_msg) == (400, {"error": "invalid signature"})
    right = client.builder.build_order(args, CreateOrderOptions(tick_size="0.001", neg_risk=True), version=2)
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
        args = OrderArgsV2(token_id=TOKEN, price=0.15, size=10.0, side="BUY")
        for_neg_risk = c.builder.build_order(
            args, CreateOrderOptions(tick_size="0.001", neg_risk=True), version=2
        )
        with pytest.raises(PolyApiException) as err:
            c.post_order(for_neg_risk)
        assert err.value.error_msg == {"error": "invalid signature"}


def test_v1_signed_orders_are_refused(server: PolymarketServer, client: ClobClient) -> None:
    # a V1 order as py-clob-client 0.34 made it (V1 struct, V1 domain and exchange, V1 JSON)
    v1 = client.builder.build_order(
        OrderArgsV1(token_id=TOKEN, price=0.15, size=10.0, side="BUY"),
        CreateOrderOptions(tick_size="0.001", neg_risk=True), version=1, fee_rate_bps=0,
    )  # fmt: skip
    assert not hasattr(v1, "timestamp") and (v1.nonce, v1.feeRateBps) == ("0", "0")
    with pytest.raises(PolyApiException) as err:
        client.post_order(v1)
    assert (err.value.status_code, err.value.error_msg) == (400, {"error": "order_version_mismatch"})
    refusal = translate(err.value, order_refusal=True)
    assert isinstance(refusal, VenueRejected) and not refusal.retryable  # nothing was placed

    # the V2 struct signed in the V1 domain, or for the V1 exchange: the signature is not V2's
    good = client.builder.build_order(
        OrderArgsV2(token_id=TOKEN, price=0.15, size=10.0, side="BUY"),
        CreateOrderOptions(tick_size="0.001", neg_risk=True),
        version=2,
    )
    for exchange, version in (
        (EXCHANGES[137][True], "1"),
        (V1_EXCHANGES[True], "2"),
        (V1_EXCHANGES[True], "1"),
    ):
        with pytest.raises(PolyApiException) as err:
            client.post_order(resign(good, exchange, str(client.signer.private_key), version))
        assert err.value.error_msg == {"error": "invalid signature"}, (exchange, version)
    assert server.state.orders == {}
    assert client.post_order(good)["success"] is True


def test_an_independent_v2_signer_agrees(
    server: PolymarketServer, wallet: LocalAccount, client: ClobClient
) -> None:
    """ccxt's Polymarket signer (its own EIP-712 code) signs the adapter's order byte for byte."""
    o = limit("ccxt-1", Side.SELL, "0.900", "12.34")
    venue = PolymarketVenue(client, INSTRUMENT, TOKEN)
    signed, oid = venue.signed_order(o, venue.terms())
    ex = ccxt_prediction.polymarket({"privateKey": key_of(wallet)})
    signature = ex.sign_clob_order(ccxt_message(signed), EXCHANGES[137][True], "2", 0)
    assert signature == signed.signature.lower()  # RFC 6979: the same digest gives the same bytes
    # ccxt's layout (with its zero taker) is taken, under the id the adapter computed
    res = post_order_payload(client, ccxt_body(signed, signature, client.creds.api_key))
    assert res["orderID"] == oid
    rep = PolymarketVenue(client, INSTRUMENT, TOKEN, order_lookup={"ccxt-1": o}.get).query("ccxt-1")
    assert rep is not None and (rep.status, rep.venue_order_id) == (OrderStatus.ACCEPTED, oid)


def test_deposit_wallet_orders_poly_1271(wallet: LocalAccount) -> None:
    """Signature type 3, as in the recorded createOrder: the deposit wallet signs through its owner."""
    params = RECORDED_CREATE_PARAMS
    deposit = params["funder"]
    state = ClobState.recorded(wallet.address, funder=deposit)
    with PolymarketServer(state) as srv:
        c = polymarket_client(key_of(wallet), srv.url, funder=deposit, signature_type=3, timeout=TIMEOUT)
        v = PolymarketVenue(c, INSTRUMENT, TOKEN)
        o = limit("dw-1")
        v.submit(o)
        rec = srv.state.orders[o.venue_order_id]
        assert (rec.order["signatureType"], rec.order["maker"], rec.order["signer"]) == (3, deposit, deposit)
        assert len(bytes.fromhex(rec.order["signature"][2:])) > 65  # the ERC-7739 wrapped form
        rep = v.query("dw-1")
        assert rep is not None and rep.status is OrderStatus.ACCEPTED

        signed, oid = v.signed_order(limit("dw-2"), v.terms())
        ex = ccxt_prediction.polymarket({"privateKey": key_of(wallet)})
        assert (
            ex.sign_clob_order(ccxt_message(signed), EXCHANGES[137][True], "2", 3) == signed.signature.lower()
        )
        # the wallet's order signed by a key that does not own the wallet, or for the wrong exchange
        for key, exchange in (
            (key_of(Account.create()), EXCHANGES[137][True]),
            (key_of(wallet), EXCHANGES[137][False]),
        ):
            with pytest.raises(PolyApiException) as err:
                c.post_order(resign(signed, exchange, key))
            assert err.value.error_msg == {"error": "invalid signature"}
        assert c.post_order(signed)["orderID"] == oid


def test_the_recorded_v2_order_parameters_are_signed_and_taken(wallet: LocalAccount) -> None:
    """The recorded createOrder (buy 5 at 0.5, deposit wallet, pinned salt and ms timestamp, plain market)."""
    p = RECORDED_CREATE_PARAMS
    assert (p["signatureType"], p["negRisk"], p["tickSize"]) == (3, False, "0.01")
    state = ClobState.recorded(wallet.address, funder=p["funder"], neg_risk=False)
    with PolymarketServer(state) as srv:
        c = polymarket_client(key_of(wallet), srv.url, funder=p["funder"], signature_type=3, timeout=TIMEOUT)
        maker_amount, taker_amount = order_amounts(
            Side.BUY, Decimal(str(p["price"])), Decimal(str(p["amount"]))
        )
        builder = ExchangeOrderBuilderV2(
            exchange_address(137, p["negRisk"]), 137, c.signer, generate_salt=lambda: p["salt"]
        )
        signed = builder.build_signed_order(
            OrderDataV2(maker=p["funder"], tokenId=TOKEN, makerAmount=str(maker_amount),
                        takerAmount=str(taker_amount), side=ClobSide.BUY, signer=p["funder"],
                        signatureType=SignatureTypeV2(p["signatureType"]), timestamp=p["timestamp"])
        )  # fmt: skip
        res = c.post_order(signed)
        assert (
            list(res) == list(RECORDED["createOrder"]) and res["status"] == RECORDED["createOrder"]["status"]
        )
        rec = srv.state.orders[res["orderID"]]
        assert (rec.order["salt"], rec.order["timestamp"]) == (int(p["salt"]), p["timestamp"])
        assert (rec.order["makerAmount"], rec.order["takerAmount"]) == ("2500000", "5000000")
        assert len(res["orderID"]) == len(RECORDED["createOrder"]["orderID"])  # a 32-byte hash, as recorded


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
    assert rec.order["timestamp"] == str(TS_INIT // 1_000_000) == str(order_timestamp(o))
    rep = venue.query("known-1")
    assert rep is not None and rep.venue_order_id == expected and rep.status is OrderStatus.ACCEPTED
    # another process knows nothing: it takes the journaled venue id, or recomputes it
    for journaled in (o, dataclasses.replace(o, venue_order_id="")):
        fresh = PolymarketVenue(client, INSTRUMENT, TOKEN, order_lookup={"known-1": journaled}.get)
        rep = fresh.query("known-1")
        assert rep is not None and rep.venue_order_id == expected
    # without a lookup it can only answer for what it signed itself (hence the lookup in production)
    assert PolymarketVenue(client, INSTRUMENT, TOKEN).query("known-1") is None


def test_the_signed_timestamp_is_the_orders_creation_time(
    server: PolymarketServer, client: ClobClient, venue: PolymarketVenue
) -> None:
    o = limit("ts-1")
    other_process = PolymarketVenue(client, INSTRUMENT, TOKEN)
    assert other_process.order_id(limit("ts-1")) == venue.order_id(o)  # deterministic, no clock read
    assert venue.order_id(limit("ts-1", ts_init=TS_INIT + 1_000_000)) != venue.order_id(o)  # 1 ms later
    assert venue.order_id(limit("ts-1", ts_init=TS_INIT + 999)) == venue.order_id(o)  # same millisecond
    venue.submit(o)
    # rebuilt from the intent alone (no venue id, ts_init = the intent's time): "not found" proves
    # nothing, so the order stays unresolved instead of being declared absent
    rebuilt = dataclasses.replace(o, venue_order_id="", ts_init=TS_INIT + 5_000_000)
    with pytest.raises(OrderUnverifiable) as err:
        PolymarketVenue(client, INSTRUMENT, TOKEN, order_lookup={"ts-1": rebuilt}.get).query("ts-1")
    assert err.value.retryable
    # a journaled venue id finds it whatever the timestamp
    kept = dataclasses.replace(rebuilt, venue_order_id=o.venue_order_id)
    rep = PolymarketVenue(client, INSTRUMENT, TOKEN, order_lookup={"ts-1": kept}.get).query("ts-1")
    assert rep is not None and rep.status is OrderStatus.ACCEPTED
    # an order the venue gave an id to and then lost is absent (it never arrived)
    lost = dataclasses.replace(limit("ts-never"), venue_order_id="0x" + "ab" * 32)
    assert (
        PolymarketVenue(client, INSTRUMENT, TOKEN, order_lookup={"ts-never": lost}.get).query("ts-never")
        is None
    )


@pytest.mark.parametrize(
    ("side", "price", "size"),
    [("BUY", "0.15", "10"), ("SELL", "0.9", "12.34"), ("BUY", "0.001", "5.55"), ("SELL", "0.999", "7.01")],
)
def test_amounts_equal_py_clob_client_v2s(client: ClobClient, side: str, price: str, size: str) -> None:
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


def test_a_matched_answer_is_not_polled(
    server: PolymarketServer, client: ClobClient, venue: PolymarketVenue
) -> None:
    # the SDK's post_order follows a matched answer's tradeIDs on /data/trades (up to 30 s, sleeping)
    server.match_next_response()
    res = client.post_order(
        client.create_order(OrderArgsV2(token_id=TOKEN, price=0.15, size=5.0, side="BUY"))
    )
    assert res["status"] == "matched" and res["transactionsHashes"]
    assert server.count("GET", "/data/trades") == 1
    # the adapter takes the answer as it comes: the fill is the query's business
    server.match_next_response()
    assert venue.submit(limit("matched-1")) is None
    assert server.count("GET", "/data/trades") == 1
    rep = venue.query("matched-1")
    assert rep is not None and rep.status is OrderStatus.FILLED and rep.filled_raw == INSTRUMENT.qty("10").raw


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
        return Decimal("100000")  # 15,000 pUSD at 0.15; the account holds 1,000

    def fill(self, client_order_id: str, quantity: Decimal) -> None:
        self.server.fill(client_order_id, quantity)

    def lose_next_response(self) -> None:
        self.server.lose_next_response()

    def restart(self) -> None:
        self.server.restart()


@pytest.mark.parametrize("check", list(venue_conformance.CHECKS))
def test_conformance(server: PolymarketServer, venue: PolymarketVenue, check: str) -> None:
    venue_conformance.CHECKS[check](Harness(server, venue))

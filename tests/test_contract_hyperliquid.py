"""Hyperliquid: the contract tier and the shared conformance suite, over real HTTP on 127.0.0.1.

The server (``tests/contract/hyperliquid_server.py``) shapes every body from recorded traffic and
recovers the signer of every action itself, so a signing bug fails here (see its docstring for
which shapes are recorded and which are only quoted in ccxt's source).

Markets: ``load_markets`` would ask ``/info`` for ``metaAndAssetCtxs``, ``spotMetaAndAssetCtxs``
and the HIP-3 ``perpDexs`` family, none of which is in the recorded traffic. So every client is
given its markets with ``set_markets``, built by the pinned ccxt's own ``parse_market`` from the
raw market records (``info``) of ``shared/fixtures/ccxt/markets/hyperliquid.json``: the unified
records in that file were made by an older ccxt whose ``precision`` was in decimals, which
ccxt 4.5.90 (tick-size precision) would misread. The server's ``meta`` cassette and that file
agree on BTC being asset 0 with ``szDecimals`` 5.

The test wallet is a throwaway key made per run (``eth_account.Account.create()``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
import venue_conformance
from contract.hyperliquid_server import (
    HyperliquidServer,
    HyperliquidState,
    canonical_action,
    cloid_of,
    recover_l1_signer,
)
from eth_account import Account

from bastion.model.events import OrderRejected
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import (
    VenueAuthError,
    VenueClient,
    VenueError,
    VenueRejected,
    VenueTimeout,
    VenueUnavailable,
)
from bastion.venues.hyperliquid import (
    HyperliquidVenue,
    _translate,
    cloid_for,
    hyperliquid_client,
    instrument_for,
)
from bastion.venues.rate_limit import limiter_for, reset_limiters

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
SYMBOL = "BTC/USDC:USDC"
TIMEOUT_MS = 2000


def _key_hex(acct: Any) -> str:
    return "0x" + bytes(acct.key).hex()


def _markets(ex: ccxt.hyperliquid) -> list[dict[str, Any]]:
    doc = json.loads((FIXTURES / "ccxt" / "markets" / "hyperliquid.json").read_text())
    return [ex.parse_market(m["info"]) for m in doc.values() if m.get("swap")]


def _ccxt(url: str, wallet: str, key: str, **config: Any) -> ccxt.hyperliquid:
    """ccxt as it ships, pointed here (plus no throttle and a short timeout: test speed only)."""
    ex = ccxt.hyperliquid(
        {
            "walletAddress": wallet,
            "privateKey": key,
            "enableRateLimit": False,
            "timeout": TIMEOUT_MS,
            **config,
        }
    )
    ex.urls["api"] = {**ex.urls["api"], "public": url, "private": url}
    ex.set_markets(_markets(ex))
    return ex


@pytest.fixture(autouse=True)
def _own_limiter() -> Iterator[None]:
    reset_limiters()
    limiter_for("hyperliquid", rate=1e6, burst=10**6)  # the real budget, without waiting in tests
    yield
    reset_limiters()


@pytest.fixture(scope="module")
def wallet() -> Any:
    return Account.create()


@pytest.fixture()
def server(wallet: Any) -> Iterator[HyperliquidServer]:
    with HyperliquidServer(HyperliquidState(wallet.address)) as srv:
        yield srv


@pytest.fixture()
def client(server: HyperliquidServer, wallet: Any) -> ccxt.hyperliquid:
    return _ccxt(server.url, wallet.address, _key_hex(wallet))


def _venue(server: HyperliquidServer, wallet_address: str, key: str) -> HyperliquidVenue:
    ex = hyperliquid_client(wallet_address, key, server.url, timeout_ms=TIMEOUT_MS)
    ex.set_markets(_markets(ex))
    return HyperliquidVenue(ex, instrument_for(ex.market(SYMBOL)), SYMBOL)


@pytest.fixture()
def venue(server: HyperliquidServer, wallet: Any) -> HyperliquidVenue:
    return _venue(server, wallet.address, _key_hex(wallet))


def _keys(d: Any) -> Any:
    """The nested key layout of a JSON value (lists by their first element)."""
    if isinstance(d, dict):
        return {k: _keys(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_keys(d[0])] if d else []
    return None


# --- contract tier: ccxt as shipped ------------------------------------------------------------


def test_ccxt_places_reads_fills_and_cancels(server: HyperliquidServer, client: ccxt.hyperliquid) -> None:
    bal = client.fetch_balance()
    assert bal["USDC"]["total"] == 10000.0 and bal["USDC"]["used"] == 0.0
    cloid = "0x" + "ab" * 16
    placed = client.create_order(SYMBOL, "limit", "buy", 0.001, 27121, {"clientOrderId": cloid})
    oid = placed["id"]
    assert oid == str(server.state.by_cloid[cloid])
    # ccxt's first order also signs a builder-fee approval (user-signed, EIP-712 in the
    # HyperliquidSignTransaction domain) and a referrer (L1): each verified, each by our wallet
    seen = [(a["type"], a["accepted"]) for a in server.state.actions]
    assert seen == [("approveBuilderFee", True), ("setReferrer", True), ("order", True)]

    got = client.fetch_order(oid, SYMBOL)
    assert (got["status"], got["amount"], got["price"], got["clientOrderId"]) == (
        "open",
        0.001,
        27121.0,
        cloid,
    )
    by_cloid = client.fetch_order("", SYMBOL, {"clientOrderId": cloid})
    assert by_cloid["id"] == oid
    assert [o["id"] for o in client.fetch_open_orders(SYMBOL)] == [oid]

    server.fill(cloid, Decimal("0.0004"))
    assert client.fetch_order(oid, SYMBOL)["filled"] == pytest.approx(0.0004)
    trades = client.fetch_my_trades(SYMBOL)
    assert [(t["order"], t["amount"], t["price"]) for t in trades] == [(oid, 0.0004, 27121.0)]
    pos = client.fetch_positions([SYMBOL])
    assert [(p["symbol"], p["side"], p["contracts"]) for p in pos] == [(SYMBOL, "long", 0.0004)]

    client.cancel_order(oid, SYMBOL)
    done = client.fetch_order(oid, SYMBOL)
    assert (done["status"], done["filled"], done["remaining"]) == ("canceled", 0.0004, 0.0006)
    assert client.fetch_open_orders(SYMBOL) == []
    with pytest.raises(ccxt.OrderNotFound):  # the venue's "never placed, canceled or filled"
        client.cancel_order(oid, SYMBOL)
    with pytest.raises(ccxt.OrderNotFound):  # {"status": "unknownOid"}
        client.fetch_order("0x" + "cd" * 16, SYMBOL)

    book = client.fetch_order_book(SYMBOL)
    assert book["bids"][0][0] < 30135.0 < book["asks"][0][0]  # the recorded BTC mid


def test_served_bodies_keep_the_recorded_layout(server: HyperliquidServer, client: ccxt.hyperliquid) -> None:
    rec = server.state.recorded
    client.create_order(SYMBOL, "limit", "sell", 0.001, 33149, {"clientOrderId": "0x" + "01" * 16})
    status = client.public_post_info(
        {"type": "orderStatus", "user": client.walletAddress, "oid": "0x" + "01" * 16}
    )
    assert _keys(status) == _keys(rec.order_status)
    frontend = client.public_post_info({"type": "frontendOpenOrders", "user": client.walletAddress})
    assert _keys(frontend[0]) == _keys(rec.frontend_order)
    state = client.public_post_info({"type": "clearinghouseState", "user": client.walletAddress})
    assert _keys(state) == _keys(rec.clearinghouse)
    book = client.public_post_info({"type": "l2Book", "coin": "BTC"})
    assert _keys(book) == _keys(rec.l2_book)


def test_ccxt_with_another_key_is_refused(server: HyperliquidServer, wallet: Any) -> None:
    other = Account.create()
    ex = _ccxt(server.url, wallet.address, _key_hex(other))  # right wallet, wrong key
    with pytest.raises(ccxt.InvalidOrder, match="User or API Wallet"):
        ex.create_order(SYMBOL, "limit", "buy", 0.001, 27121, {"clientOrderId": "0x" + "ee" * 16})
    assert not server.state.orders
    assert {a["signer"] for a in server.state.actions} == {other.address.lower()}
    assert not any(a["accepted"] for a in server.state.actions)


def test_ccxt_testnet_signature_is_refused(server: HyperliquidServer, wallet: Any) -> None:
    ex = _ccxt(server.url, wallet.address, _key_hex(wallet))
    ex.options["sandboxMode"] = True  # phantom agent source "b": a testnet signature
    with pytest.raises(ccxt.InvalidOrder, match="User or API Wallet"):
        ex.create_order(SYMBOL, "limit", "buy", 0.001, 27121)
    assert not server.state.orders


def _tamper(ex: ccxt.hyperliquid, change: Callable[[dict[str, Any]], None]) -> None:
    real = ex.fetch

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        if body and url.endswith("/exchange"):
            doc = json.loads(body)
            if doc["action"].get("type") == "order":
                change(doc)
                body = json.dumps(doc)
        return real(url, method, headers, body)

    ex.fetch = fetch


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d["action"]["orders"][0].update(p="27122"), id="price-after-signing"),
        pytest.param(lambda d: d.update(nonce=d["nonce"] + 1), id="nonce-after-signing"),
        pytest.param(
            lambda d: d["signature"].update(s=hex(int(d["signature"]["s"], 16) ^ 1)), id="signature-bits"
        ),
    ],
)
def test_ccxt_tampered_action_is_refused(
    server: HyperliquidServer, client: ccxt.hyperliquid, change: Callable[[dict[str, Any]], None]
) -> None:
    _tamper(client, change)
    with pytest.raises(ccxt.BaseError) as err:
        client.create_order(SYMBOL, "limit", "buy", 0.001, 27121, {"clientOrderId": "0x" + "12" * 16})
    assert not isinstance(err.value, ccxt.NetworkError)
    assert not server.state.orders


def test_server_verifier_matches_the_sdks_published_vector() -> None:
    """hyperliquid-python-sdk tests/signing_test.py, test_l1_action_signing_order_matches:
    an ETH Gtc buy of 100 at 100, nonce 0, signed on mainnet by key 0x0123...0123."""
    key = "0x0123456789012345678901234567890123456789012345678901234567890123"
    action = canonical_action(
        {
            "type": "order",
            "orders": [
                {"a": 1, "b": True, "p": "100", "s": "100", "r": False, "t": {"limit": {"tif": "Gtc"}}}
            ],
            "grouping": "na",
        }
    )
    sig = {
        "r": "0xd65369825a9df5d80099e513cce430311d7d26ddf477f5b3a33d2806b100d78e",
        "s": "0x2b54116ff64054968aa237c20ca9ff68000f977c93289157748a3162b6ea940e",
        "v": 28,
    }
    address = Account.from_key(key).address
    assert recover_l1_signer(action, 0, sig) == address
    assert recover_l1_signer(action, 0, sig, mainnet=False) != address
    reordered = {"grouping": "na", **action}  # the venue hashes its own key order, not the sender's
    assert canonical_action(reordered) == action and list(canonical_action(reordered)) == list(action)


# --- the adapter's own Hyperliquid quirks --------------------------------------------------------


def _limit(
    inst: Instrument, cid: str, side: Side, px: str, qty: str, tif: TimeInForce = TimeInForce.GTC
) -> Order:
    return Order(cid, inst.id, side, OrderType.LIMIT, inst.qty(qty), inst.price(px), tif)


def test_cloid_is_a_stable_function_of_the_client_id() -> None:
    assert cloid_for("conf-place-1") == cloid_of("conf-place-1")
    assert cloid_for("conf-place-1") == "0x" + __import__("hashlib").sha256(b"conf-place-1").hexdigest()[:32]
    assert re.fullmatch(r"0x[0-9a-f]{32}", cloid_for("any id, any length, ünïcode"))
    assert cloid_for("a") != cloid_for("b")


def test_instrument_comes_from_the_market(venue: HyperliquidVenue) -> None:
    inst = venue.instrument
    assert (inst.kind, inst.venue, inst.base, inst.quote, inst.settle) == (
        InstrumentKind.LINEAR_PERPETUAL,
        "HYPERLIQUID",
        "BTC",
        "USDC",
        "USDC",
    )
    assert inst.lot_size == Decimal("0.00001")  # szDecimals 5
    assert inst.tick_size == Decimal("1")
    assert inst.min_notional == Decimal("10")


def test_adapter_sends_only_our_orders_and_reads_exact_sizes(
    server: HyperliquidServer, venue: HyperliquidVenue
) -> None:
    inst = venue.instrument
    o = _limit(inst, "hl-exact", Side.BUY, "27121", "0.00123")
    assert venue.submit(o) is None
    assert o.venue_order_id
    server.fill("hl-exact", Decimal("0.00007"))
    rep = venue.query("hl-exact")
    assert rep is not None
    assert (rep.status, rep.filled_raw, rep.venue_order_id) == (
        OrderStatus.PARTIALLY_FILLED,
        7,
        o.venue_order_id,
    )
    venue.cancel(o)
    venue.cancel(o)  # already canceled: harmless
    rep = venue.query("hl-exact")
    assert rep is not None and rep.status is OrderStatus.CANCELED and rep.filled_raw == 7
    # no builder-fee approval, no referrer: only the order and the cancels were ever signed
    assert [a["type"] for a in server.state.actions] == ["order", "cancelByCloid", "cancelByCloid"]
    assert server.state.orders[int(o.venue_order_id)].cloid == cloid_for("hl-exact")


def test_adapter_crossing_order_fills_at_once(server: HyperliquidServer, venue: HyperliquidVenue) -> None:
    o = _limit(venue.instrument, "hl-take", Side.BUY, "31000", "0.001", TimeInForce.IOC)
    assert venue.submit(o) is None and o.venue_order_id
    rep = venue.query("hl-take")
    assert rep is not None and rep.status is OrderStatus.FILLED and rep.filled_raw == 100


def test_adapter_definite_refusals_are_rejections(venue: HyperliquidVenue) -> None:
    inst = venue.instrument
    with pytest.raises(VenueRejected, match="Post only"):
        venue.submit(_limit(inst, "hl-alo", Side.BUY, "31000", "0.001", TimeInForce.POST_ONLY))
    with pytest.raises(VenueRejected, match="minimum value"):
        venue.submit(_limit(inst, "hl-tiny", Side.BUY, "27121", "0.0001"))
    assert venue.query("hl-alo") is None and venue.query("hl-tiny") is None


def test_adapter_refuses_locally_what_ccxt_would_round(
    server: HyperliquidServer, venue: HyperliquidVenue
) -> None:
    fine = Instrument(
        "BTCUSDC-PERP", "HYPERLIQUID", InstrumentKind.LINEAR_PERPETUAL, "BTC", "USDC",
        Decimal("0.1"), Decimal("0.00001"),
    )  # fmt: skip
    venue.instrument = fine
    o = Order("hl-grid", fine.id, Side.BUY, OrderType.LIMIT, fine.qty("0.001"), fine.price("27121.5"))
    event = venue.submit(o)
    assert isinstance(event, OrderRejected) and "27122" in event.reason  # ccxt would have sent 27122
    market = Order("hl-mkt", fine.id, Side.BUY, OrderType.MARKET, fine.qty("0.001"))
    assert isinstance(venue.submit(market), OrderRejected)
    assert server.state.actions == []  # nothing was sent


def test_adapter_wrong_key_is_an_auth_error(server: HyperliquidServer, wallet: Any) -> None:
    venue = _venue(server, wallet.address, _key_hex(Account.create()))
    o = _limit(venue.instrument, "hl-key", Side.BUY, "27121", "0.001")
    with pytest.raises(VenueAuthError):
        venue.submit(o)
    with pytest.raises(VenueAuthError):
        venue.cancel(o)
    assert not server.state.orders


_PER_ORDER = 'hyperliquid {"status":"ok","response":{"type":"order","data":{"statuses":[{"error":"%s"}]}}}'


@pytest.mark.parametrize(
    ("exc", "on_submit", "otherwise"),
    [
        (ccxt.RequestTimeout("t"), VenueTimeout, VenueTimeout),
        (ccxt.ExchangeNotAvailable("5xx"), VenueUnavailable, VenueUnavailable),
        (ccxt.RateLimitExceeded("Too many cumulative requests sent"), VenueUnavailable, VenueUnavailable),
        (ccxt.AuthenticationError("a"), VenueAuthError, VenueAuthError),
        (ccxt.InvalidOrder('{"status":"err","response":"User or API Wallet 0x1 does not exist."}'),
         VenueAuthError, VenueAuthError),
        (ccxt.InsufficientFunds(_PER_ORDER % "Insufficient margin to place order. asset=0"),
         VenueRejected, VenueUnavailable),
        # a per-order refusal in words ccxt does not know is still a definite refusal
        (ccxt.ExchangeError(_PER_ORDER % "Some new refusal. asset=0"), VenueRejected, VenueUnavailable),
        # a whole-action error we cannot classify: the order may exist
        (ccxt.ExchangeError('hyperliquid {"status":"err","response":"something else"}'),
         VenueUnavailable, VenueUnavailable),
        (ccxt.ExchangeError("hyperliquid POST /exchange"), VenueUnavailable, VenueUnavailable),
    ],
)  # fmt: skip
def test_error_mapping(exc: ccxt.BaseError, on_submit: type[VenueError], otherwise: type[VenueError]) -> None:
    assert type(_translate(exc, submitting=True)) is on_submit
    assert type(_translate(exc, submitting=False)) is otherwise


def test_every_request_draws_from_the_shared_budget(venue: HyperliquidVenue) -> None:
    lim = limiter_for("hyperliquid")
    before = lim.requests
    venue.submit(_limit(venue.instrument, "hl-budget", Side.BUY, "27121", "0.001"))
    venue.query("hl-budget")
    venue.cancel(_limit(venue.instrument, "hl-budget", Side.BUY, "27121", "0.001"))
    assert lim.requests - before == 3
    assert venue.limiter is lim


# --- the shared conformance suite ------------------------------------------------------------


@dataclass
class Harness:
    venue: VenueClient
    instrument: Instrument
    server: HyperliquidServer

    def resting_price(self, side: Side) -> Decimal:
        mid, tick = self.server.state.mid("BTC"), self.instrument.tick_size
        if side is Side.BUY:
            return (mid * Decimal("0.9") / tick).to_integral_value(ROUND_FLOOR) * tick
        return (mid * Decimal("1.1") / tick).to_integral_value(ROUND_CEILING) * tick

    def quantity(self) -> Decimal:
        return Decimal("0.001")

    def unaffordable_quantity(self) -> Decimal:
        return Decimal("100")  # ~2.7M USDC of notional on a 10,000 USDC account at 20x

    def fill(self, client_order_id: str, quantity: Decimal) -> None:
        self.server.fill(client_order_id, quantity)

    def lose_next_response(self) -> None:
        self.server.lose_next_response()

    def restart(self) -> None:
        self.server.restart()


@pytest.mark.parametrize("check", list(venue_conformance.CHECKS), ids=list(venue_conformance.CHECKS))
def test_conformance(check: str, server: HyperliquidServer, venue: HyperliquidVenue) -> None:
    venue_conformance.CHECKS[check](Harness(venue, venue.instrument, server))

"""Coinbase Advanced Trade: the contract tier and the shared venue conformance suite.

A real ``ccxt.coinbase`` (only its REST base changed) and :class:`CoinbaseVenue` talk HTTP to the
local server in ``tests/contract/coinbase_server.py``, which verifies every ES256 JWT and keeps
order state. What comes from recorded traffic (``shared/fixtures/ccxt``) is checked as such:
the products served are the recorded ``info`` records and must load into the recorded markets;
the ticker served is the recorded body and must parse into the recorded ticker; order, fill and
account records must have the recorded key layout. The order state machine is the server's own.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import ccxt
import ccxt_fixture_kit as kit
import pytest
import venue_conformance
from contract.coinbase_server import Balance, CoinbaseServer, CoinbaseState, make_cdp_key

from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import VenueAuthError, VenueClient, VenueRejected, VenueTimeout
from bastion.venues.coinbase import CoinbaseVenue, coinbase_client
from bastion.venues.rate_limit import RateLimiter, limiter_for, reset_limiters

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
SYMBOL = "BTC/USDC"
PRODUCT = "BTC-USDC"
START_BALANCES = {"BTC": Decimal("2"), "USDC": Decimal("100000")}


def _load(relative: str) -> Any:
    path = FIXTURES / relative
    if not path.is_file():
        pytest.fail(f"recorded fixture {path} not found: set BASTION_SHARED_FIXTURES")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def markets() -> dict[str, Any]:
    data: dict[str, Any] = _load("ccxt/markets/coinbase.json")
    return data


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    methods: dict[str, Any] = _load("ccxt/response/coinbase.json")["methods"]
    return methods


@pytest.fixture(scope="module")
def instrument(markets: dict[str, Any]) -> Instrument:
    info = markets[SYMBOL]["info"]
    return Instrument(
        symbol="BTCUSDC",
        venue="COINBASE",
        kind=InstrumentKind.SPOT,
        base=info["base_currency_id"],
        quote=info["quote_currency_id"],
        tick_size=Decimal(info["price_increment"]),
        lot_size=Decimal(info["base_increment"]),
        min_notional=Decimal(info["quote_min_size"]),
        maker_fee=Decimal("0.006"),
        taker_fee=Decimal("0.012"),
    )


@pytest.fixture(scope="module")
def key() -> tuple[str, str]:
    return make_cdp_key()


@pytest.fixture(autouse=True)
def limiter() -> Iterator[RateLimiter]:
    """The real shared limiter, with a budget no test waits on (the count is what is checked)."""
    reset_limiters()
    yield limiter_for("coinbase", rate=1e6, burst=1_000_000)
    reset_limiters()


@pytest.fixture()
def state(markets: dict[str, Any], recorded: dict[str, Any], key: tuple[str, str]) -> CoinbaseState:
    ticker = recorded["fetchTicker"][0]
    assert ticker["input"] == [SYMBOL]
    st = CoinbaseState(
        products=[m["info"] for m in markets.values()],
        tickers={PRODUCT: ticker["httpResponse"]},
        balances={code: Balance(amount) for code, amount in START_BALANCES.items()},
    )
    st.add_key(*key)
    return st


@pytest.fixture()
def server(state: CoinbaseState) -> Iterator[CoinbaseServer]:
    with CoinbaseServer(state) as srv:
        yield srv


def _client(server: CoinbaseServer, name: str, pem: str) -> Any:
    ex = coinbase_client(name, pem, server.url)
    assert ex.urls["api"] == {"rest": server.url}, "only the REST base may change"
    return ex


@pytest.fixture()
def client(server: CoinbaseServer, key: tuple[str, str]) -> Any:
    return _client(server, *key)


@pytest.fixture()
def venue(client: Any, instrument: Instrument) -> CoinbaseVenue:
    client.load_markets()
    return CoinbaseVenue(client, instrument, SYMBOL)


def _best(recorded: dict[str, Any]) -> tuple[Decimal, Decimal]:
    body = recorded["fetchTicker"][0]["httpResponse"]
    return Decimal(body["best_bid"]), Decimal(body["best_ask"])


def _limit(inst: Instrument, cid: str, side: Side, price: Decimal, qty: str) -> Order:
    return Order(cid, inst.id, side, OrderType.LIMIT, inst.qty(qty), inst.price(price), TimeInForce.GTC)


# --- contract tier: plain ccxt.coinbase against the server ---------------------------------------------
def test_load_markets_over_http_gives_the_recorded_markets(
    client: Any, state: CoinbaseState, markets: dict[str, Any]
) -> None:
    loaded = client.load_markets()
    for symbol, want in markets.items():
        assert symbol in loaded, symbol
        if want.get("future"):
            # the recorded expired future (BTC/USD:USD-240426) is in an older unified layout
            # (fewer keys, other fee figures); only its raw record is compared
            assert loaded[symbol]["info"] == want["info"]
            continue
        # "alias" is in the recorded structure but the pinned ccxt drops it from loaded markets
        assert kit.compare(loaded[symbol], want, {"alias"}) == [], symbol
        assert loaded[symbol]["info"] == want["info"]
    paths = {p for _, p in state.requests}
    assert "/api/v3/brokerage/transaction_summary" in paths  # private, so JWT-signed
    assert not state.auth_failures


def test_ticker_over_http_parses_to_the_recorded_ticker(client: Any, recorded: dict[str, Any]) -> None:
    case = recorded["fetchTicker"][0]
    ticker = client.fetch_ticker(*case["input"])
    # the pinned ccxt keeps the body's microseconds in "datetime"; the recording (another ccxt
    # commit) cut them to milliseconds. "timestamp" (ms) is compared and agrees.
    assert kit.compare(ticker, case["parsedResponse"], {"datetime"}) == []
    assert ticker["datetime"].startswith(case["parsedResponse"]["datetime"][:-1])


def test_balance_has_the_recorded_layout(
    client: Any, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    total = client.fetch_balance()["total"]
    assert {c: Decimal(str(v)) for c, v in total.items()} == START_BALANCES
    want = recorded["fetchBalance"][0]["httpResponse"]
    got = server.state.accounts(250)
    assert set(got) == set(want)
    assert set(got["pagination"]) == set(want["pagination"])
    for record in got["data"]:
        ref = want["data"][0]
        assert set(record) == set(ref)
        assert set(record["balance"]) == set(ref["balance"])
        assert set(record["currency"]) == set(ref["currency"])


def test_order_lifecycle_through_plain_ccxt(
    client: Any, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    bid, _ = _best(recorded)
    price = bid - 1000
    placed = client.create_order(SYMBOL, "limit", "buy", 0.01, float(price), {"client_order_id": "ccxt-1"})
    assert placed["clientOrderId"] == "ccxt-1" and placed["id"]
    fetched = client.fetch_order(placed["id"], SYMBOL)
    assert (fetched["status"], fetched["clientOrderId"], fetched["amount"]) == ("open", "ccxt-1", 0.01)
    assert fetched["price"] == float(price)
    assert [o["id"] for o in client.fetch_open_orders(SYMBOL)] == [placed["id"]]

    trade = server.fill("ccxt-1", Decimal("0.004"))
    mine = client.fetch_my_trades(SYMBOL)
    assert [(t["id"], t["order"], t["amount"], t["takerOrMaker"]) for t in mine] == [
        (trade["trade_id"], placed["id"], 0.004, "maker")
    ]
    assert Decimal(mine[0]["info"]["commission"]) == Decimal("0.004") * price * Decimal("0.006")
    fetched = client.fetch_order(placed["id"], SYMBOL)
    assert (fetched["status"], fetched["filled"]) == ("open", 0.004)

    client.cancel_order(placed["id"], SYMBOL)
    fetched = client.fetch_order(placed["id"], SYMBOL)
    assert (fetched["status"], fetched["filled"]) == ("canceled", 0.004)
    assert client.fetch_open_orders(SYMBOL) == []
    spent = Decimal("0.004") * price * Decimal("1.006")
    total = {c: Decimal(str(v)) for c, v in client.fetch_balance()["total"].items()}
    assert total == {"BTC": Decimal("2.004"), "USDC": Decimal("100000") - spent}


def test_order_and_fill_records_have_the_recorded_layout(
    client: Any, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    bid, _ = _best(recorded)
    client.create_order(SYMBOL, "limit", "buy", 0.01, float(bid - 1000), {"client_order_id": "layout-1"})
    server.fill("layout-1", Decimal("0.01"))
    orders = client.v3PrivateGetBrokerageOrdersHistoricalBatch({"product_ids": [PRODUCT]})
    fills = client.v3PrivateGetBrokerageOrdersHistoricalFills({"product_ids": [PRODUCT]})
    want_orders = recorded["fetchClosedOrders"][0]["httpResponse"]
    want_fills = recorded["fetchMyTrades"][0]["httpResponse"]
    assert set(orders) == set(want_orders)
    assert set(fills) == set(want_fills)
    # ccxt writes the page cursor into the first record after the answer arrives (see the
    # server's docstring), so the recorded records carry a "cursor" key the venue does not send
    assert set(orders["orders"][0]) == set(want_orders["orders"][0]) - {"cursor"}
    assert set(fills["fills"][0]) == set(want_fills["fills"][0]) - {"cursor"}
    closed = client.fetch_closed_orders(SYMBOL)
    assert [(o["clientOrderId"], o["status"], o["filled"]) for o in closed] == [("layout-1", "closed", 0.01)]


def test_insufficient_funds_is_coinbase_failure_body(client: Any, server: CoinbaseServer) -> None:
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order(SYMBOL, "limit", "buy", 100, 60000.0, {"client_order_id": "too-big"})
    assert "too-big" not in server.state.by_client_id


def _tamper(ex: Any, how: str) -> None:
    """Make ``ex`` send a JWT that is wrong in one way."""
    make = ex.create_auth_token

    def token(
        seconds: int, method: str | None = None, url: str | None = None, use_eddsa: bool = False
    ) -> str:
        if how == "other_path" and url is not None:
            url = url.split("?")[0] + "/other"  # a valid token, for another endpoint
        if how == "other_method" and method is not None:
            method = "DELETE"
        if how == "expired":
            seconds -= 3600
        out: str = make(seconds, method, url, use_eddsa)
        if how == "corrupt_signature":
            head, body, sig = out.split(".")
            raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
            raw[5] ^= 0x01
            out = f"{head}.{body}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
        return out

    ex.create_auth_token = token


@pytest.mark.parametrize("how", ["other_path", "other_method", "expired", "corrupt_signature"])
def test_a_tampered_jwt_is_refused(client: Any, server: CoinbaseServer, how: str) -> None:
    client.load_markets()
    _tamper(client, how)
    with pytest.raises(ccxt.AuthenticationError):
        client.fetch_balance()
    with pytest.raises(ccxt.AuthenticationError):
        client.create_order(SYMBOL, "limit", "buy", 0.01, 60000.0, {"client_order_id": f"t-{how}"})
    assert not server.state.orders, "a refused request must not place an order"
    assert len(server.state.auth_failures) == 2


def test_a_different_key_is_refused(
    server: CoinbaseServer, key: tuple[str, str], instrument: Instrument, markets: dict[str, Any]
) -> None:
    name, _ = key
    _, other_pem = make_cdp_key()
    impostor = _client(server, name, other_pem)  # right name, wrong private key
    with pytest.raises(ccxt.AuthenticationError):
        impostor.load_markets()  # load_markets calls the private transaction_summary
    assert server.state.auth_failures == ["bad signature"]
    stranger = _client(server, *make_cdp_key())  # a key the venue never registered
    with pytest.raises(ccxt.AuthenticationError):
        stranger.load_markets()
    assert server.state.auth_failures[-1].startswith("unknown key")
    impostor.set_markets(markets)
    v = CoinbaseVenue(impostor, instrument, SYMBOL)
    with pytest.raises(VenueAuthError):
        v.query("anything")
    with pytest.raises(VenueAuthError):
        v.submit(_limit(instrument, "auth-1", Side.BUY, Decimal("60000"), "0.01"))
    assert not server.state.orders


# --- the adapter ----------------------------------------------------------------------------------------
def test_every_request_draws_from_the_shared_limiter(
    client: Any, venue: CoinbaseVenue, server: CoinbaseServer, limiter: RateLimiter, recorded: dict[str, Any]
) -> None:
    assert limiter.requests == len(server.state.requests) > 0  # load_markets included
    bid, _ = _best(recorded)
    o = _limit(venue.instrument, "lim-1", Side.BUY, bid - 1000, "0.01")
    venue.submit(o)
    venue.query("lim-1")
    venue.cancel(o)
    venue.balances()
    assert limiter is limiter_for("coinbase")
    assert limiter.requests == len(server.state.requests)


def test_submit_sends_our_client_id_and_exact_decimals(
    venue: CoinbaseVenue, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    bid, _ = _best(recorded)
    o = Order(
        "exact-1",
        venue.instrument.id,
        Side.BUY,
        OrderType.LIMIT,
        venue.instrument.qty("0.00012345"),
        venue.instrument.price(bid - Decimal("0.01")),
        TimeInForce.POST_ONLY,
    )
    assert venue.submit(o) is None
    sent = server.state.orders[o.venue_order_id]
    assert sent.client_order_id == "exact-1"
    spec = sent.configuration["limit_limit_gtc"]
    assert Decimal(spec["base_size"]) == Decimal("0.00012345")
    assert Decimal(spec["limit_price"]) == bid - Decimal("0.01")
    assert spec["post_only"] is True
    # a retried submit (same client id) gets Coinbase's existing order back: no second order
    again = Order("exact-1", o.instrument_id, o.side, o.order_type, o.quantity, o.price, o.time_in_force)
    venue.submit(again)
    assert again.venue_order_id == o.venue_order_id and len(server.state.orders) == 1


def test_fills_and_balances_are_exact(
    venue: CoinbaseVenue, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    inst = venue.instrument
    _, ask = _best(recorded)
    price = ask + Decimal("12.34")
    o = _limit(inst, "sell-1", Side.SELL, price, "0.03")
    venue.submit(o)
    recs = [server.fill("sell-1", Decimal(q)) for q in ("0.00000001", "0.01", "0.01999999")]
    fills = venue.fills("sell-1")
    assert sorted(f.trade_id for f in fills) == sorted(r["trade_id"] for r in recs)
    by_id = {f.trade_id: f for f in fills}
    for r in recs:
        f = by_id[r["trade_id"]]
        assert f.side is Side.SELL and f.client_order_id == "sell-1"
        assert f.price.to_decimal() == price
        assert f.quantity.to_decimal() == Decimal(r["size"])
        assert f.fee == inst.money(Fraction(Decimal(r["commission"])))  # rounded like our own fees
    assert sum(f.quantity.raw for f in fills) == o.quantity.raw
    rep = venue.query("sell-1")
    assert rep is not None and rep.status is OrderStatus.FILLED and rep.filled_raw == o.quantity.raw
    proceeds = Decimal("0.03") * price * (1 - Decimal("0.006"))
    assert venue.balances() == {
        "BTC": Fraction(Decimal("1.97")),
        "USDC": Fraction(Decimal("100000") + proceeds),
    }


def test_query_walks_every_page_before_saying_none(
    client: Any, instrument: Instrument, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    client.load_markets()
    placing = CoinbaseVenue(client, instrument, SYMBOL)
    bid, _ = _best(recorded)
    for i in range(5):
        placing.submit(_limit(instrument, f"page-{i}", Side.BUY, bid - 1000 - i, "0.001"))
    fresh = CoinbaseVenue(client, instrument, SYMBOL, page_size=2)  # knows no venue ids
    before = len(server.state.requests)
    rep = fresh.query("page-0")  # the oldest: on the last page
    assert rep is not None and rep.status is OrderStatus.ACCEPTED
    assert rep.venue_order_id == server.state.by_client_id["page-0"]
    assert len(server.state.requests) - before == 3
    before = len(server.state.requests)
    assert fresh.query("never-placed") is None
    assert len(server.state.requests) - before == 3
    assert fresh.query("page-0") is not None  # now by venue id: one request
    assert len(server.state.requests) - before == 4


def test_cancel_of_a_finished_or_unknown_order_is_quiet(
    venue: CoinbaseVenue, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    bid, _ = _best(recorded)
    o = _limit(venue.instrument, "done-1", Side.BUY, bid - 1000, "0.01")
    venue.submit(o)
    server.fill("done-1", Decimal("0.01"))
    venue.cancel(o)  # Coinbase refuses (success: false); the order is finished, so nothing to do
    rep = venue.query("done-1")
    assert rep is not None and rep.status is OrderStatus.FILLED
    venue.cancel(_limit(venue.instrument, "never-sent", Side.BUY, bid - 1000, "0.01"))
    assert "never-sent" not in server.state.by_client_id


def test_unanswered_submit_is_a_timeout_and_the_order_is_found(
    client: Any, venue: CoinbaseVenue, server: CoinbaseServer, recorded: dict[str, Any]
) -> None:
    bid, _ = _best(recorded)
    o = _limit(venue.instrument, "hang-1", Side.BUY, bid - 1000, "0.01")
    server.lose_next_response("hang")
    client.timeout = 1000  # ms: the server holds the answer until released, however long that is
    try:
        with pytest.raises(VenueTimeout) as err:
            venue.submit(o)
    finally:
        server.release()
        client.timeout = 10_000
    assert err.value.retryable and not o.venue_order_id
    rep = venue.query("hang-1")
    assert rep is not None and rep.status is OrderStatus.ACCEPTED
    venue.submit(o)  # the gateway's retry: Coinbase hands back the order it has
    assert o.venue_order_id == rep.venue_order_id and len(server.state.orders) == 1


def test_refusal_is_a_rejection_and_leaves_the_balance(venue: CoinbaseVenue, server: CoinbaseServer) -> None:
    with pytest.raises(VenueRejected):
        venue.submit(_limit(venue.instrument, "big-1", Side.SELL, Decimal("70000"), "2.5"))
    assert venue.query("big-1") is None
    assert venue.balances() == {c: Fraction(v) for c, v in START_BALANCES.items()}


# --- the shared conformance suite ---------------------------------------------------------------------
@dataclass
class CoinbaseHarness:
    venue: VenueClient  # typed as the protocol: mypy then checks that CoinbaseVenue is one
    instrument: Instrument
    server: CoinbaseServer
    best_bid: Decimal
    best_ask: Decimal

    def resting_price(self, side: Side) -> Decimal:
        # a thousand away from the recorded touch: rests on any book near it
        return self.best_bid - 1000 if side is Side.BUY else self.best_ask + 1000

    def quantity(self) -> Decimal:
        return Decimal("0.01")

    def unaffordable_quantity(self) -> Decimal:
        return Decimal("100")  # about 6.5M USDC at the buy price; the account holds 100k

    def fill(self, client_order_id: str, quantity: Decimal) -> None:
        self.server.fill(client_order_id, quantity)

    def lose_next_response(self) -> None:
        self.server.lose_next_response("drop")

    def restart(self) -> None:
        self.server.restart()


@pytest.fixture()
def harness(venue: CoinbaseVenue, server: CoinbaseServer, recorded: dict[str, Any]) -> CoinbaseHarness:
    bid, ask = _best(recorded)
    return CoinbaseHarness(venue, venue.instrument, server, bid, ask)


@pytest.mark.parametrize("check", list(venue_conformance.CHECKS), ids=list(venue_conformance.CHECKS))
def test_conformance(harness: CoinbaseHarness, check: str) -> None:
    h: venue_conformance.Harness = harness  # mypy checks the harness against the protocol
    venue_conformance.CHECKS[check](h)
    assert not harness.server.state.auth_failures

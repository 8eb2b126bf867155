"""The local Kraken-compatible exchange, driven by the pinned ccxt client over real HTTP.

Markets are real recordings: the XBT/USD book is Kraken's own WebSocket book snapshot from the
ccxt fixtures (2026-10-06), XBT/USDT replays the Binance BTCUSDT L2 capture of 2024-08-08 from
``shared/data`` re-gridded onto Kraken's 0.1 tick. The client is ``ccxt.kraken`` with only its API
URLs changed and dummy keys, so its signing, parsing and error mapping are exercised for real.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import ccxt
import pytest

from bastion.data.binance_ws import load_binance_ws
from bastion.venues.local_exchange import (
    Exchange,
    ExchangeConfig,
    FaultConfig,
    FaultInjector,
    MarketEvents,
    ServerThread,
    signed_request,
)
from bastion.venues.local_exchange.pairs import load_pair_records

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
SECRET = base64.b64encode(bytes(range(64))).decode()
KEY = "local-test-key"
BALANCES = {"XXBT": "2", "ZUSD": "500000", "USDT": "100000"}
BINANCE_SPOT = "ticks_l2/binance_ws_hftbacktest/spot/btcusdt_20240808.gz"


# --- markets ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kraken_snapshot() -> dict[str, Any]:
    """Kraken's recorded BTC/USD book snapshot (WebSocket v2, depth 10)."""
    doc = json.loads((FIXTURES / "ccxt/extracts/ws_kraken_book_subset.json").read_text())
    snap: dict[str, Any] = doc["messages"][0]["data"][0]
    assert snap["symbol"] == "BTC/USD"
    return snap


@pytest.fixture(scope="module")
def usd_market(kraken_snapshot: dict[str, Any]) -> MarketEvents:
    s = kraken_snapshot
    return MarketEvents.from_levels(
        [(repr(b["price"]), repr(b["qty"])) for b in s["bids"]],
        [(repr(a["price"]), repr(a["qty"])) for a in s["asks"]],
        1_791_273_897_750_392_000,
        source="kraken ws book BTC/USD 2026-10-06",
    )


@pytest.fixture(scope="module")
def usdt_market(shared_data: Path) -> MarketEvents:
    book, trades = load_binance_ws(shared_data / BINANCE_SPOT)
    assert book.price_precision == trades.price_precision
    return MarketEvents.from_columns(
        book.columns, trades.columns, book.price_precision, book.size_precision, source=BINANCE_SPOT
    )


# --- helpers ----------------------------------------------------------------------------------------
def make_exchange(state: Path, markets: dict[str, MarketEvents], *, speed: float = 0, **kw: Any) -> Exchange:
    return Exchange(ExchangeConfig(KEY, SECRET, state, speed=speed, **kw), markets)


def client(url: str, secret: str = SECRET, **opts: Any) -> ccxt.kraken:
    ex = ccxt.kraken({"apiKey": KEY, "secret": secret, "enableRateLimit": False, "timeout": 3000, **opts})
    ex.urls["api"] = {**ex.urls["api"], "public": url, "private": url}
    return ex


@pytest.fixture()
def usd_server(tmp_path: Path, usd_market: MarketEvents) -> Iterator[ServerThread]:
    exch = make_exchange(tmp_path / "state", {"XXBTZUSD": usd_market}, initial_balances=BALANCES)
    with ServerThread(exch) as srv:
        yield srv


def raw_private(url: str, method: str, params: dict[str, str], *, secret: str = SECRET) -> dict[str, Any]:
    body, headers = signed_request(f"/0/private/{method}", params, KEY, secret)
    req = urllib.request.Request(f"{url}/0/private/{method}", data=body.encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def call(exch: Exchange, method: str, nonce: int, **params: str) -> Any:
    """A signed private call straight into the exchange (no HTTP), for market-stepping tests."""
    params = {"nonce": str(nonce), **params}
    body, headers = signed_request(f"/0/private/{method}", params, KEY, SECRET)
    return exch.private(method, body, dict(parse_qsl(body)), headers)


# --- tests ------------------------------------------------------------------------------------------
def test_pair_metadata_is_krakens_recorded_assetpairs() -> None:
    markets = json.loads((FIXTURES / "ccxt/markets/kraken.json").read_text())
    shipped = load_pair_records()
    assert shipped["XBTUSDT"] == markets["BTC/USDT"]["info"]
    assert shipped["XXBTZUSD"] == markets["BTC/USD"]["info"]


def test_ccxt_end_to_end(usd_server: ServerThread, kraken_snapshot: dict[str, Any]) -> None:
    ex = client(usd_server.url)
    ex.load_markets()
    assert {"BTC/USD", "BTC/USDT"} <= set(ex.markets)
    m = ex.market("BTC/USD")
    assert (m["id"], m["precision"]["price"], m["precision"]["amount"]) == ("XXBTZUSD", 0.1, 1e-08)
    assert (m["maker"], m["taker"]) == (0.0016, 0.0026)

    ob = ex.fetch_order_book("BTC/USD")
    assert [lv[:2] for lv in ob["bids"]] == [[b["price"], b["qty"]] for b in kraken_snapshot["bids"]]
    assert [lv[:2] for lv in ob["asks"]] == [[a["price"], a["qty"]] for a in kraken_snapshot["asks"]]
    assert all(isinstance(lv[2], int) for lv in ob["bids"] + ob["asks"])  # [price, amount, timestamp]

    bal = ex.fetch_balance()
    assert (bal["USD"]["total"], bal["BTC"]["total"], bal["USDT"]["total"]) == (500000.0, 2.0, 100000.0)

    # post-only limit below the book rests
    rest = ex.create_order(
        "BTC/USD", "limit", "buy", 0.01, 85000, {"postOnly": True, "clientOrderId": "rest-1"}
    )
    got = ex.fetch_order(rest["id"])
    assert (got["status"], got["postOnly"], got["clientOrderId"], got["filled"]) == (
        "open",
        True,
        "rest-1",
        0.0,
    )
    assert [o["id"] for o in ex.fetch_open_orders()] == [rest["id"]]
    assert ex.fetch_balance()["USD"]["used"] == pytest.approx(85000 * 0.01 * 1.0026)
    # our order shows in the public book
    assert [85000.0, 0.01] in [lv[:2] for lv in ex.fetch_order_book("BTC/USD", 500)["bids"]]

    # a limit buy through the best ask fills as taker at the book's prices
    cross = ex.create_order("BTC/USD", "limit", "buy", 0.5, 85602, {"clientOrderId": "cross-1"})
    got = ex.fetch_order(cross["id"])
    assert (got["status"], got["filled"], got["average"]) == ("closed", 0.5, 85600.5)
    assert got["info"]["cost"] == "42800.25000" and got["info"]["fee"] == "111.28065"  # 0.26 % taker

    # a market sell walks the bids
    mkt = ex.create_order("BTC/USD", "market", "sell", 0.3)
    got = ex.fetch_order(mkt["id"])
    assert (got["status"], got["filled"], len(got["trades"])) == ("closed", 0.3, 3)
    # the recorded bids it hit, each fill's cost rounded to XBTUSD's 5 cost decimals
    fills = [("85600.4", "0.20401971"), ("85599.6", "0.04385864"), ("85599.5", "0.05212165")]
    cost = sum((Decimal(p) * Decimal(q)).quantize(Decimal("0.00001")) for p, q in fills)
    assert Decimal(got["info"]["cost"]) == cost

    # balances moved exactly by every fill and fee
    trades = ex.fetch_my_trades("BTC/USD")
    assert len(trades) == 4 and all(t["takerOrMaker"] == "taker" for t in trades)
    usd = Decimal(500000)
    for t in trades:
        c, f = Decimal(t["info"]["cost"]), Decimal(t["info"]["fee"])
        usd += (c if t["side"] == "sell" else -c) - f
    info = ex.fetch_balance()["info"]["result"]
    assert Decimal(info["ZUSD"]["balance"]) == usd
    assert Decimal(info["XXBT"]["balance"]) == Decimal("2.2")

    ex.cancel_order(rest["id"])
    assert ex.fetch_order(rest["id"])["status"] == "canceled"
    assert ex.fetch_open_orders() == []
    assert ex.fetch_balance()["USD"]["used"] == 0.0
    closed = ex.fetch_closed_orders(params={"clientOrderId": "rest-1"})
    assert [(o["id"], o["info"]["reason"]) for o in closed] == [(rest["id"], "User requested")]

    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(rest["id"])
    ticker = ex.fetch_ticker("BTC/USD")
    assert ticker["last"] == 85599.5 and ticker["bid"] == 85599.5 and ticker["ask"] == 85600.5
    assert [t["price"] for t in ex.fetch_trades("BTC/USD")][-4:] == [85600.5, 85600.4, 85599.6, 85599.5]


def test_order_options_post_only_ioc_stp_and_refusals(usd_server: ServerThread) -> None:
    ex = client(usd_server.url)
    ex.load_markets()
    # post-only that would take: accepted, then cancelled by the engine (Kraken's behaviour)
    po = ex.create_order("BTC/USD", "limit", "buy", 0.01, 85600.5, {"postOnly": True})
    got = ex.fetch_order(po["id"])
    assert (got["status"], got["info"]["reason"], got["filled"]) == ("canceled", "Post only order", 0.0)

    # IOC takes what is there up to its limit and drops the rest
    ioc = ex.create_order("BTC/USD", "limit", "buy", 1.5, 85601.6, {"timeInForce": "IOC"})
    got = ex.fetch_order(ioc["id"])
    assert got["status"] == "canceled" and got["info"]["vol_exec"] == "1.12287714"

    # self-trade prevention: our resting sell stops our own buy (cancel-newest)
    ask = ex.create_order("BTC/USD", "limit", "sell", 0.2, 85601.0)
    buy = ex.create_order("BTC/USD", "limit", "buy", 0.4, 85602.0)
    got = ex.fetch_order(buy["id"])
    assert (got["status"], got["info"]["reason"], got["filled"]) == ("canceled", "Self trade prevention", 0.0)
    assert ex.fetch_order(ask["id"])["status"] == "open"

    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USD", "limit", "buy", 10, 85000)
    with pytest.raises(ccxt.InvalidOrder):  # below Kraken's ordermin 0.0001
        ex.create_order("BTC/USD", "limit", "buy", 0.00005, 85000)
    order = {"pair": "XXBTZUSD", "type": "buy", "ordertype": "limit", "price": "85000.05", "volume": "0.01"}
    off_tick = raw_private(usd_server.url, "AddOrder", {"nonce": str(ex.nonce() + 10**6), **order})
    assert off_tick == {"error": ["EGeneral:Invalid arguments:price"]}


def test_authentication_errors(usd_server: ServerThread) -> None:
    good = client(usd_server.url)
    good.load_markets()
    wrong = client(usd_server.url, secret=base64.b64encode(b"not the secret" * 4).decode())
    wrong.set_markets(good.markets)
    with pytest.raises(ccxt.AuthenticationError):
        wrong.fetch_balance()
    nonce = good.nonce() + 10**6
    assert "result" in raw_private(usd_server.url, "Balance", {"nonce": str(nonce)})
    # the same nonce again (a replayed request) is refused
    assert raw_private(usd_server.url, "Balance", {"nonce": str(nonce)}) == {"error": ["EAPI:Invalid nonce"]}
    req = urllib.request.Request(
        f"{usd_server.url}/0/private/Balance",
        data=f"nonce={nonce + 1}".encode(),
        headers={"API-Key": KEY, "API-Sign": "not base64!"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"error": ["EAPI:Invalid signature"]}
    bad_key = client(usd_server.url, apiKey="someone-else")
    bad_key.set_markets(good.markets)
    with pytest.raises(ccxt.AuthenticationError):
        bad_key.fetch_open_orders()


def test_duplicate_client_order_id_is_refused(usd_server: ServerThread) -> None:
    ex = client(usd_server.url)
    ex.load_markets()
    first = ex.create_order("BTC/USD", "limit", "buy", 0.01, 85000, {"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.ExchangeError, match="EOrder:Duplicate order"):
        ex.create_order("BTC/USD", "limit", "buy", 0.01, 85000, {"clientOrderId": "dup-1"})
    # also once the first one is no longer open: the id is spent
    ex.cancel_order(first["id"])
    with pytest.raises(ccxt.ExchangeError, match="EOrder:Duplicate order"):
        ex.create_order("BTC/USD", "limit", "buy", 0.01, 85000, {"clientOrderId": "dup-1"})
    orders = ex.fetch_open_orders() + ex.fetch_closed_orders()
    assert [o["id"] for o in orders if o["clientOrderId"] == "dup-1"] == [first["id"]]


def test_processed_then_no_answer_leaves_a_findable_order(usd_server: ServerThread) -> None:
    ex = client(usd_server.url)
    ex.load_markets()
    usd_server.faults.force("lost_answer", "AddOrder")
    with pytest.raises(ccxt.NetworkError):
        ex.create_order("BTC/USD", "limit", "buy", 0.01, 85100, {"clientOrderId": "lost-1"})
    found = ex.fetch_open_orders(params={"clientOrderId": "lost-1"})
    assert [(o["clientOrderId"], o["price"], o["amount"]) for o in found] == [("lost-1", 85100.0, 0.01)]
    # the blind retry of a client that did not look first cannot make a second order
    with pytest.raises(ccxt.ExchangeError, match="Duplicate order"):
        ex.create_order("BTC/USD", "limit", "buy", 0.01, 85100, {"clientOrderId": "lost-1"})
    assert len(ex.fetch_open_orders()) == 1
    ex.cancel_order("", "BTC/USD", {"clientOrderId": "lost-1"})
    assert [o["status"] for o in ex.fetch_closed_orders(params={"clientOrderId": "lost-1"})] == ["canceled"]

    # the other faults: nothing happens before, the order exists after
    for kind, exists in (
        ("drop", False),
        ("http_5xx", False),
        ("rate_limit", False),
        ("http_5xx_after", True),
    ):
        usd_server.faults.force(kind, "AddOrder")
        with pytest.raises(ccxt.NetworkError):
            ex.create_order("BTC/USD", "limit", "buy", 0.01, 85000, {"clientOrderId": f"f-{kind}"})
        assert bool(ex.fetch_open_orders(params={"clientOrderId": f"f-{kind}"})) is exists, kind
    assert usd_server.faults.injected["lost_answer"] == 1


def test_delayed_answer_times_out_but_the_order_exists(usd_server: ServerThread) -> None:
    ex = client(usd_server.url, timeout=300)
    ex.load_markets()
    usd_server.faults.configure(FaultConfig(delay_s=1.0))
    usd_server.faults.force("delay", "AddOrder")
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order("BTC/USD", "limit", "sell", 0.01, 86000, {"clientOrderId": "slow-1"})
    assert [o["clientOrderId"] for o in ex.fetch_open_orders(params={"clientOrderId": "slow-1"})] == [
        "slow-1"
    ]


def test_state_survives_restart(tmp_path: Path, usd_market: MarketEvents) -> None:
    state = tmp_path / "state"
    srv = ServerThread(make_exchange(state, {"XXBTZUSD": usd_market})).start()
    ex = client(srv.url)
    ex.load_markets()
    resting = ex.create_order("BTC/USD", "limit", "buy", 0.02, 85000, {"clientOrderId": "keep-1"})
    ex.create_order("BTC/USD", "limit", "buy", 0.1, 85602)  # fills
    before = {
        "book": ex.fetch_order_book("BTC/USD", 500),
        "open": ex.fetch_open_orders(),
        "closed": ex.fetch_closed_orders(),
        "trades": ex.fetch_my_trades(),
        "balance": ex.fetch_balance()["info"]["result"],
    }
    last_body = ex.last_request_body
    srv.stop()

    srv = ServerThread(make_exchange(state, {"XXBTZUSD": usd_market})).start()
    try:
        ex.urls["api"] = {**ex.urls["api"], "public": srv.url, "private": srv.url}
        after = {
            "balance": ex.fetch_balance()["info"]["result"],
            "open": ex.fetch_open_orders(),
            "closed": ex.fetch_closed_orders(),
            "trades": ex.fetch_my_trades(),
            "book": ex.fetch_order_book("BTC/USD", 500),
        }
        for k in ("balance", "open", "closed", "trades"):
            assert after[k] == before[k], k
        assert [lv[:2] for lv in after["book"]["asks"]] == [lv[:2] for lv in before["book"]["asks"]]
        assert [lv[:2] for lv in after["book"]["bids"]] == [lv[:2] for lv in before["book"]["bids"]]
        # nonces are remembered: the last request cannot be replayed against the new process
        nonce = dict(parse_qsl(last_body))["nonce"]
        assert raw_private(srv.url, "Balance", {"nonce": nonce}) == {"error": ["EAPI:Invalid nonce"]}
        with pytest.raises(ccxt.ExchangeError, match="Duplicate order"):
            ex.create_order("BTC/USD", "limit", "buy", 0.02, 85000, {"clientOrderId": "keep-1"})
        ex.cancel_order(resting["id"])
        assert ex.fetch_order(resting["id"])["status"] == "canceled"
    finally:
        srv.stop()


def test_resting_orders_fill_from_the_replayed_market(tmp_path: Path, usdt_market: MarketEvents) -> None:
    """Binance BTCUSDT 2024-08-08 as XBTUSDT: our quotes fill as maker, at our price, exactly."""
    exch = make_exchange(tmp_path / "s", {"XBTUSDT": usdt_market})
    try:
        v = exch.venues["XBTUSDT"]
        assert (v.book.best(1), v.book.best(2)) == (618376, 618377)  # 61837.63/.64 re-gridded to 0.1
        quote = {"pair": "XBTUSDT", "ordertype": "limit", "volume": "0.01", "oflags": "post"}
        buy = call(exch, "AddOrder", 1, type="buy", price="61800.0", cl_ord_id="mm-bid", **quote)["txid"][0]
        sell = call(exch, "AddOrder", 2, type="sell", price="61850.0", cl_ord_id="mm-ask", **quote)["txid"][0]
        assert exch.advance_market() == len(usdt_market) - v.opening
        for txid, side in ((buy, "buy"), (sell, "sell")):
            o = exch.orders[txid]
            assert (o.status, o.vol_exec) == ("closed", 1_000_000)
            trades = [exch.trades[t] for t in o.trades]
            assert all(t.maker and t.price == o.price and t.side == side for t in trades)
        # every fill: cost at XBTUSDT's 5 cost decimals, 0.16 % maker fee on it, half-even
        hist = call(exch, "TradesHistory", 3)["trades"]
        usdt = Decimal(100000)
        for t in hist.values():
            cost = (Decimal(t["price"]) * Decimal(t["vol"])).quantize(Decimal("0.00001"), ROUND_HALF_EVEN)
            fee = (cost * Decimal("0.0016")).quantize(Decimal("0.00001"), ROUND_HALF_EVEN)
            assert (Decimal(t["cost"]), Decimal(t["fee"]), t["maker"]) == (cost, fee, True)
            usdt += (cost if t["type"] == "sell" else -cost) - fee
        res = call(exch, "BalanceEx", 4)
        assert Decimal(res["USDT"]["balance"]) == usdt
        assert res["XXBT"]["balance"] == "1.0000000000"
        assert Decimal(res["USDT"]["hold_trade"]) == Decimal(res["XXBT"]["hold_trade"]) == 0
        assert {t["ordertxid"] for t in hist.values()} == {buy, sell}
    finally:
        exch.close()


def test_queue_position_on_real_data(tmp_path: Path, usdt_market: MarketEvents) -> None:
    """A bid at the best bid waits behind the recorded volume: trades at its price eat the queue first."""
    exch = make_exchange(tmp_path / "s", {"XBTUSDT": usdt_market})
    try:
        v = exch.venues["XBTUSDT"]
        best = v.book.best(1)
        assert best is not None
        price = f"{Decimal(best).scaleb(-1)}"
        order = {"pair": "XBTUSDT", "type": "buy", "ordertype": "limit", "volume": "0.5", "oflags": "post"}
        txid = call(exch, "AddOrder", 1, price=price, **order)["txid"][0]
        o = exch.orders[txid]
        assert o.queue_ahead == v.book.bids[best] > 0
        ev = usdt_market
        queue = v.engine.resting[txid].queue_ahead
        while o.is_open and v.pos < len(ev):
            i = v.pos
            filled_before = o.vol_exec
            exch.advance_market(events=1)
            r = v.engine.resting.get(txid)
            new_queue = r.queue_ahead if r else 0
            assert new_queue <= queue  # the queue ahead never grows
            got = o.vol_exec - filled_before
            if got and ev.kind[i] == 1 and v.book.trade_price(int(ev.side[i]), int(ev.price[i])) == best:
                assert v.book.grid.size(int(ev.size[i])) > queue  # the print went past the queue to us
            queue = new_queue
        assert o.vol_exec > 0
    finally:
        exch.close()


def test_replay_position_and_book_survive_restart(tmp_path: Path, usdt_market: MarketEvents) -> None:
    """With speed > 0 the market follows the clock; a restart resumes where the disk says it was."""
    now = [1_900_000_000_000_000_000]
    cfg = ExchangeConfig(KEY, SECRET, tmp_path / "s", speed=10.0)
    exch = Exchange(cfg, {"XBTUSDT": usdt_market}, clock=lambda: now[0])
    v = exch.venues["XBTUSDT"]
    opened = v.pos
    now[0] += 5 * 10**9  # 5 s wall = 50 s of data
    exch.tick()
    pos, bids, asks = v.pos, dict(v.book.bids), dict(v.book.asks)
    assert pos > opened and usdt_market.ts[pos - 1] <= usdt_market.ts[opened - 1] + 50 * 10**9
    exch.close()
    again = Exchange(cfg, {"XBTUSDT": usdt_market}, clock=lambda: now[0])
    try:
        w = again.venues["XBTUSDT"]
        assert (w.pos, w.book.bids, w.book.asks) == (pos, bids, asks)
    finally:
        again.close()


def test_fault_injection_is_seeded_and_admin_endpoint_needs_the_key(usd_server: ServerThread) -> None:
    cfg = FaultConfig(seed=7, drop=0.1, lost_answer=0.2, rate_limit=0.1)
    a, b = FaultInjector(cfg), FaultInjector(cfg)
    seq_a = [a.decide("AddOrder", True) for _ in range(200)]
    assert seq_a == [b.decide("AddOrder", True) for _ in range(200)]
    assert {k for k in seq_a if k} == {"drop", "lost_answer", "rate_limit"}
    assert a.decide("Depth", False) is None  # public endpoints are spared unless asked for

    def post(path: str, doc: dict[str, Any], key: str) -> int:
        req = urllib.request.Request(
            f"{usd_server.url}{path}", data=json.dumps(doc).encode(), headers={"API-Key": key}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert post("/_bastion/faults", {"rate_limit": 1.0}, "wrong") == 403
    assert post("/_bastion/advance", {}, KEY) == 200  # the static book has nothing left to replay
    assert post("/_bastion/faults", {"rate_limit": 1.0, "endpoints": ["BalanceEx"]}, KEY) == 200
    ex = client(usd_server.url)
    with pytest.raises(ccxt.DDoSProtection):
        ex.fetch_balance()


def test_refuses_to_bind_beyond_loopback(tmp_path: Path, usd_market: MarketEvents) -> None:
    exch = make_exchange(tmp_path / "s", {"XXBTZUSD": usd_market})
    try:
        with pytest.raises(ValueError, match="loopback"):
            ServerThread(exch, host="0.0.0.0")
    finally:
        exch.close()


def test_market_events_keep_arrival_order(shared_data: Path) -> None:
    """Catalog tables merge back into stream order: each snapshot's wipe precedes its levels."""
    book, trades = load_binance_ws(shared_data / BINANCE_SPOT)
    ev = MarketEvents.from_columns(book.columns, trades.columns, book.price_precision, book.size_precision)
    flags = book.columns["flags"]
    clears = int(((flags & 2) != 0).sum())
    gaps = int((((flags & 2) != 0) & ((flags & 1) == 0) & (book.columns["size"] == 0)).sum())
    assert len(ev) == len(book) - gaps + clears + len(trades)
    first_clear = int((ev.kind == 2).argmax())
    assert ev.kind[first_clear + 1] == 0 and ev.ts[first_clear] == ev.ts[first_clear + 1]
    assert int((ev.kind == 1).sum()) == len(trades)


def test_depth_round_trips_through_kraken_format(usd_server: ServerThread, usd_market: MarketEvents) -> None:
    """Our Depth body, parsed as a Kraken recording, gives back the book it was served from."""
    with urllib.request.urlopen(f"{usd_server.url}/0/public/Depth?pair=XBTUSD&count=10", timeout=5) as resp:
        body = json.loads(resp.read())
    again = MarketEvents.from_kraken_depth(body, "XXBTZUSD")

    def levels(ev: MarketEvents) -> set[tuple[int, Decimal, Decimal]]:
        return {
            (int(s), Decimal(int(p)).scaleb(-ev.price_precision), Decimal(int(q)).scaleb(-ev.size_precision))
            for k, s, p, q in zip(ev.kind, ev.side, ev.price, ev.size, strict=True)
            if k == 0
        }

    assert levels(again) == levels(usd_market)


def test_sigkilled_exchange_process_keeps_what_it_answered(tmp_path: Path) -> None:
    """The exchange as its own process (``python -m``), killed with SIGKILL, restarted on its state."""
    state = tmp_path / "state"

    def launch() -> tuple[subprocess.Popen[bytes], str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "bastion.venues.local_exchange", "--port", str(port), "--api-key", KEY,
               "--api-secret", SECRET, "--state-dir", str(state), "--speed", "0"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/0/public/Time", timeout=1).close()
                return proc, url
            except OSError:
                time.sleep(0.05)
        proc.kill()
        raise AssertionError("exchange process did not come up")

    proc, url = launch()
    try:
        ex = client(url)
        ex.load_markets()
        placed = ex.create_order("BTC/USDT", "limit", "buy", 0.5, 50000, {"clientOrderId": "crash-1"})
        used = ex.fetch_balance()["USDT"]["used"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc, url = launch()
    try:
        ex.urls["api"] = {**ex.urls["api"], "public": url, "private": url}
        found = ex.fetch_open_orders(params={"clientOrderId": "crash-1"})
        assert [o["id"] for o in found] == [placed["id"]]
        assert ex.fetch_balance()["USDT"]["used"] == used == pytest.approx(50000 * 0.5 * 1.0026)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_partial_fill_fault_trades_part_then_cancels_or_rests(usd_server: ServerThread) -> None:
    """A taking order meets less liquidity than the book showed: the rest is canceled or rests."""
    ex = client(usd_server.url)
    ex.load_markets()
    usd_server.faults.configure(FaultConfig(seed=11, partial_fill=1.0))
    ob = ex.fetch_order_book("BTC/USD")
    best_ask = ob["asks"][0][0]
    ex.create_order("BTC/USD", "market", "buy", 0.01, None, {"clientOrderId": "pf-market"})
    ex.create_order("BTC/USD", "limit", "buy", 0.01, best_ask + 50, {"clientOrderId": "pf-gtc"})
    ex.create_order(
        "BTC/USD", "limit", "buy", 0.01, best_ask + 50, {"clientOrderId": "pf-ioc", "timeInForce": "IOC"}
    )
    done = {o["clientOrderId"]: o for o in ex.fetch_closed_orders()}
    live = {o["clientOrderId"]: o for o in ex.fetch_open_orders()}
    for cid in ("pf-market", "pf-ioc"):
        assert done[cid]["status"] == "canceled" and 0 < done[cid]["filled"] < 0.01, done[cid]
    assert 0 < live["pf-gtc"]["filled"] < 0.01 and live["pf-gtc"]["remaining"] > 0, live["pf-gtc"]
    assert usd_server.faults.injected["partial_fill"] == 3
    # post-only orders never take, so they are never capped
    ex.create_order(
        "BTC/USD", "limit", "buy", 0.01, ob["bids"][0][0], {"clientOrderId": "pf-post", "postOnly": True}
    )
    assert usd_server.faults.injected["partial_fill"] == 3


def test_stale_book_fault_freezes_depth_and_counts_orders_sent_into_it(usd_server: ServerThread) -> None:
    ex = client(usd_server.url)
    ex.load_markets()
    usd_server.faults.configure(FaultConfig(seed=1, stale_book=1.0, stale_s=60.0, stale_grace_s=0.05))
    frozen = ex.fetch_order_book("BTC/USD")
    bid = frozen["bids"][0][0]
    # our own resting order would show in a live book at the touch; the stalled feed does not move
    ex.create_order("BTC/USD", "limit", "buy", 0.5, bid, {"clientOrderId": "stale-0"})
    assert ex.fetch_order_book("BTC/USD")["bids"] == frozen["bids"]
    assert usd_server.faults.injected["stale_book"] == 1
    assert usd_server.faults.injected["orders_in_stall"] == 0  # sent within the grace period
    time.sleep(0.1)
    ex.create_order("BTC/USD", "limit", "buy", 0.01, bid - 100, {"clientOrderId": "stale-1"})
    assert usd_server.faults.injected["orders_in_stall"] == 1
    usd_server.faults.configure(FaultConfig(seed=1))  # the feed recovers
    live = ex.fetch_order_book("BTC/USD")["bids"][0]
    assert live[0] == bid and live[1] == pytest.approx(frozen["bids"][0][1] + 0.5)

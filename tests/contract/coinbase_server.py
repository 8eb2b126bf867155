"""A local Coinbase Advanced Trade (v3) server for the contract tier, on 127.0.0.1 only.

It speaks the subset of the REST API that the pinned ``ccxt.coinbase`` uses to load markets, read
balances and place, read, fill and cancel spot limit orders, so that a real ``ccxt.coinbase`` whose
``urls['api']['rest']`` points here runs its own request building, signing and parsing unchanged.

Where each body's layout comes from (the reason a test can trust it):

* Recorded traffic (``shared/fixtures/ccxt``): order records (``fetchClosedOrders``), fill records
  (``fetchMyTrades``), account records and pagination (``fetchBalance``), the ticker body
  (``fetchTicker``, served verbatim) and the product records (the ``info`` of each market in the
  markets fixture, served verbatim). ``tests/test_contract_coinbase.py`` checks the key sets of
  what this server produces against those recordings. The per-record ``cursor`` key seen in the
  recorded orders/fills is left out: ccxt writes the page cursor into the first record itself
  (``first['cursor'] = cursor``) after the response arrives, so it is not the venue's field.
* Quoted real answers in public issue threads: the create-order success body
  (coinbase/coinbase-advanced-py#49), the create-order failure body with ``INSUFFICIENT_FUND``
  (ccxt/ccxt#20419), and the bare ``Unauthorized`` text of a refused JWT (ccxt/ccxt#26300).
* ccxt's source comments only (not recorded): the cancel result list, ``transaction_summary``,
  the product list envelope, ``v2/currencies`` and ``v2/exchange-rates``.

Order state (resting, partial and full fills, cancels, holds on the balance) is this server's
own model of Coinbase; nothing recorded proves that Coinbase moves through it the same way.

Every private request must carry an ES256 JWT that verifies against the public half of a
registered CDP-style key (``organizations/<org>/apiKeys/<id>``); ``sub``/``kid`` must be the key
name, ``exp`` must not be past, and the ``uri`` claim must name this request's method and path
(the host part is not compared: ccxt puts ``http://127.0.0.1:PORT`` there). Anything else gets
Coinbase's 401 answer, so a signing bug fails a test instead of passing against a lenient mock.

Products, tickers, keys, balances and orders live in :class:`CoinbaseState`, outside the server, so that
:meth:`CoinbaseServer.restart` drops every connection while the venue "remembers" its orders.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

HOST = "127.0.0.1"
API = "/api/v3/brokerage"
USER_ID = "5f1a2c3e-7b4d-5e6f-8a9b-0c1d2e3f4a5b"
MAX_SKEW_S = 5  # how far in the future a token's nbf may be (clock skew allowance)
UNAUTHORIZED = "Unauthorized"  # the whole body of Coinbase's v3 answer to a refused JWT

# currency metadata for the v2 account records (layout of the recorded fetchBalance body)
_CURRENCIES: dict[str, dict[str, Any]] = {
    "BTC": {"color": "#F7931A", "exponent": "8", "name": "Bitcoin", "slug": "bitcoin"},
    "USDC": {"color": "#2775CA", "exponent": "6", "name": "USDC", "slug": "usdc"},
    "USDT": {"color": "#22A079", "exponent": "6", "name": "Tether", "slug": "tether"},
    "ETH": {"color": "#627EEA", "exponent": "8", "name": "Ethereum", "slug": "ethereum"},
}


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _text(d: Decimal) -> str:
    """Coinbase writes decimals as plain strings without trailing zeros ("10", "0.392")."""
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def _iso(ts: float, digits: int = 6) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    frac = f"{dt.microsecond:06d}"[:digits]
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


def make_cdp_key(org: str = "bastion-contract", key_id: str | None = None) -> tuple[str, str]:
    """A CDP-style API key made now: its name and its EC P-256 private key as PEM text."""
    name = f"organizations/{org}/apiKeys/{key_id or uuid.uuid4()}"
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN EC PRIVATE KEY", as CDP hands out
        serialization.NoEncryption(),
    ).decode()
    return name, pem


def public_key_of(pem: str) -> ec.EllipticCurvePublicKey:
    private = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return private.public_key()


@dataclass
class Balance:
    available: Decimal
    hold: Decimal = Decimal(0)


@dataclass
class SimOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: str  # BUY / SELL
    configuration: dict[str, Any]
    time_in_force: str
    base_size: Decimal
    limit_price: Decimal
    created_time: str
    seq: int
    status: str = "OPEN"
    filled: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    number_of_fills: int = 0
    hold: Decimal = Decimal(0)  # what the order still holds: quote (with fees) for a buy, base for a sell
    last_fill_time: str | None = None


class RefusedOrder(Exception):
    """A create-order request Coinbase answers with ``success: false``."""

    def __init__(self, error: str, message: str, preview: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.preview = preview


@dataclass
class CoinbaseState:
    """Everything the venue remembers; outlives any one :class:`CoinbaseServer`."""

    products: list[dict[str, Any]]  # raw product records (``info`` of the markets fixture)
    tickers: dict[str, dict[str, Any]]  # product id -> raw ticker body
    balances: dict[str, Balance]
    maker_fee_rate: Decimal = Decimal("0.006")
    taker_fee_rate: Decimal = Decimal("0.012")
    clock: Callable[[], float] = time.time
    keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    orders: dict[str, SimOrder] = field(default_factory=dict)  # order id -> order
    by_client_id: dict[str, str] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    auth_failures: list[str] = field(default_factory=list)
    lose_next: str | None = None  # "drop" or "hang": what to do to the next create-order answer
    lock: threading.RLock = field(default_factory=threading.RLock)
    _seq: int = 0

    def add_key(self, name: str, pem: str) -> None:
        self.keys[name] = public_key_of(pem)

    def product(self, product_id: str) -> dict[str, Any] | None:
        return next((p for p in self.products if p.get("product_id") == product_id), None)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- authentication -------------------------------------------------------------------------
    def verify_jwt(self, authorization: str, method: str, path: str) -> str | None:
        """None when the token is good for this request; otherwise why it is refused."""
        if not authorization.startswith("Bearer "):
            return "no bearer token"
        parts = authorization[len("Bearer ") :].split(".")
        if len(parts) != 3:
            return "malformed token"
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError:
            return "malformed token"
        if header.get("alg") != "ES256":
            return f"alg {header.get('alg')!r} is not ES256"
        name = claims.get("sub")
        if header.get("kid") != name:
            return "kid and sub differ"
        key = self.keys.get(str(name))
        if key is None:
            return f"unknown key {name!r}"
        if len(signature) != 64:
            return "signature is not 64 bytes (r||s)"
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return "bad signature"
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or exp <= now:
            return "token expired"
        if isinstance(nbf, int | float) and nbf > now + MAX_SKEW_S:
            return "token not valid yet"
        if claims.get("iss") not in ("coinbase-cloud", "cdp"):
            return f"issuer {claims.get('iss')!r}"
        uri = claims.get("uri")
        if not isinstance(uri, str) or " " not in uri:
            return "no uri claim"
        uri_method, target = uri.split(" ", 1)
        if "://" in target:
            target = target.split("://", 1)[1]
        uri_path = "/" + target.split("/", 1)[1] if "/" in target else "/"
        if uri_method != method or uri_path != path:
            return f"uri claim {uri!r} does not match {method} {path}"
        return None

    # --- orders -----------------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """The create-order answer (success or Coinbase's ``success: false`` failure)."""
        configuration = body.get("order_configuration") or {}
        with self.lock:
            cid = str(body.get("client_order_id") or "")
            if cid in self.by_client_id:  # Coinbase returns the order it already has under this id
                return self._success(self.orders[self.by_client_id[cid]], configuration)
            try:
                order = self._new_order(cid, body, configuration)
            except RefusedOrder as refused:
                return {
                    "success": False,
                    "failure_reason": "UNKNOWN_FAILURE_REASON",
                    "order_id": "",
                    "error_response": {
                        "error": refused.error,
                        "message": refused.message,
                        "error_details": "",
                        "preview_failure_reason": refused.preview,
                    },
                    "order_configuration": configuration,
                }
            return self._success(order, configuration)

    @staticmethod
    def _success(order: SimOrder, configuration: dict[str, Any]) -> dict[str, Any]:
        return {
            "success": True,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": order.order_id,
            "success_response": {
                "order_id": order.order_id,
                "product_id": order.product_id,
                "side": order.side,
                "client_order_id": order.client_order_id,
            },
            "order_configuration": configuration,
        }

    def _new_order(self, cid: str, body: dict[str, Any], configuration: dict[str, Any]) -> SimOrder:
        product = self.product(str(body.get("product_id")))
        if product is None or product.get("product_type") != "SPOT":
            raise RefusedOrder("INVALID_ARGUMENT", "invalid product_id", "UNKNOWN_PREVIEW_FAILURE_REASON")
        kinds = {"limit_limit_gtc": "GOOD_UNTIL_CANCELLED", "limit_limit_gtd": "GOOD_UNTIL_DATE_TIME"}
        kind = next((k for k in configuration if k in kinds), None)
        if kind is None or len(configuration) != 1:
            raise RefusedOrder(
                "UNSUPPORTED_ORDER_CONFIGURATION",
                "this server rests limit orders only",
                "UNKNOWN_PREVIEW_FAILURE_REASON",
            )
        side = str(body.get("side"))
        if side not in ("BUY", "SELL"):
            raise RefusedOrder(
                "INVALID_ARGUMENT", "side must be BUY or SELL", "UNKNOWN_PREVIEW_FAILURE_REASON"
            )
        spec = configuration[kind]
        size, price = Decimal(str(spec["base_size"])), Decimal(str(spec["limit_price"]))
        if size <= 0 or size % Decimal(product["base_increment"]):
            raise RefusedOrder("INVALID_SIZE_PRECISION", "Invalid size", "PREVIEW_INVALID_SIZE_PRECISION")
        if price <= 0 or price % Decimal(product["price_increment"]):
            raise RefusedOrder("INVALID_PRICE_PRECISION", "Invalid price", "PREVIEW_INVALID_PRICE_PRECISION")
        base, quote = product["base_currency_id"], product["quote_currency_id"]
        if side == "BUY":
            currency, need = quote, size * price * (1 + self.maker_fee_rate)
        else:
            currency, need = base, size
        bal = self.balances.setdefault(currency, Balance(Decimal(0)))
        if need > bal.available:
            raise RefusedOrder(
                "INSUFFICIENT_FUND", "Insufficient balance in source account", "PREVIEW_INSUFFICIENT_FUND"
            )
        bal.available -= need
        bal.hold += need
        order = SimOrder(
            order_id=str(uuid.uuid4()),
            client_order_id=cid,
            product_id=product["product_id"],
            side=side,
            configuration=copy.deepcopy(configuration),
            time_in_force=kinds[kind],
            base_size=size,
            limit_price=price,
            created_time=_iso(self.clock()),
            seq=self.next_seq(),
            hold=need,
        )
        self.orders[order.order_id] = order
        if cid:
            self.by_client_id[cid] = order.order_id
        return order

    def cancel(self, order_ids: Iterable[str]) -> dict[str, Any]:
        results = []
        with self.lock:
            for oid in order_ids:
                order = self.orders.get(oid)
                if order is None:
                    results.append(
                        {"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": oid}
                    )
                elif order.status != "OPEN":
                    results.append(
                        {
                            "success": False,
                            "failure_reason": "COMMANDER_REJECTED_CANCEL_ORDER",
                            "order_id": oid,
                        }
                    )
                else:
                    self._release(order)
                    order.status = "CANCELLED"
                    results.append(
                        {"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": oid}
                    )
        return {"results": results}

    def _release(self, order: SimOrder) -> None:
        product = self.product(order.product_id)
        assert product is not None
        currency = product["quote_currency_id"] if order.side == "BUY" else product["base_currency_id"]
        bal = self.balances[currency]
        bal.hold -= order.hold
        bal.available += order.hold
        order.hold = Decimal(0)

    def fill(self, client_order_id: str, quantity: Decimal, price: Decimal | None = None) -> dict[str, Any]:
        """A counterparty trades ``quantity`` against the resting order (as maker, at its price)."""
        with self.lock:
            order = self.orders[self.by_client_id[client_order_id]]
            product = self.product(order.product_id)
            assert product is not None
            qty = Decimal(quantity)
            remaining = order.base_size - order.filled
            if order.status != "OPEN" or qty <= 0 or qty > remaining:
                raise ValueError(f"cannot fill {qty} of {client_order_id} ({order.status}, {remaining} left)")
            px = order.limit_price if price is None else Decimal(price)
            value = qty * px
            fee = value * self.maker_fee_rate
            base, quote = product["base_currency_id"], product["quote_currency_id"]
            if order.side == "BUY":
                spent = qty * order.limit_price * (1 + self.maker_fee_rate)
                self.balances[quote].hold -= spent
                order.hold -= spent
                self.balances[quote].available += spent - value - fee  # a better price frees the rest
                self.balances.setdefault(base, Balance(Decimal(0))).available += qty
            else:
                self.balances[base].hold -= qty
                order.hold -= qty
                self.balances.setdefault(quote, Balance(Decimal(0))).available += value - fee
            now = self.clock()
            order.filled += qty
            order.filled_value += value
            order.fees += fee
            order.number_of_fills += 1
            order.last_fill_time = _iso(now, 3)
            if order.filled == order.base_size:
                order.status = "FILLED"
                self._release(order)  # nothing should be left; a rounding remainder goes back
            record = {
                "entry_id": secrets.token_hex(32),
                "trade_id": str(uuid.uuid4()),
                "order_id": order.order_id,
                "trade_time": _iso(now, 3),
                "trade_type": "FILL",
                "price": _text(px),
                "size": _text(qty),
                "commission": _text(fee),
                "product_id": order.product_id,
                "sequence_timestamp": _iso(now, 6),
                "liquidity_indicator": "MAKER",
                "size_in_quote": False,
                "user_id": USER_ID,
                "side": order.side,
            }
            self.fills.append(record)
            return record

    # --- bodies -----------------------------------------------------------------------------------
    def order_record(self, o: SimOrder) -> dict[str, Any]:
        average = o.filled_value / o.filled if o.filled else Decimal(0)
        after_fees = o.filled_value + o.fees if o.side == "BUY" else o.filled_value - o.fees
        return {
            "order_id": o.order_id,
            "product_id": o.product_id,
            "user_id": USER_ID,
            "order_configuration": copy.deepcopy(o.configuration),
            "side": o.side,
            "client_order_id": o.client_order_id,
            "status": o.status,
            "time_in_force": o.time_in_force,
            "created_time": o.created_time,
            "completion_percentage": format((o.filled * 100 / o.base_size).quantize(Decimal("0.01")), "f"),
            "filled_size": _text(o.filled),
            "average_filled_price": _text(average),
            "fee": "",
            "number_of_fills": str(o.number_of_fills),
            "filled_value": _text(o.filled_value),
            "pending_cancel": False,
            "size_in_quote": False,
            "total_fees": _text(o.fees),
            "size_inclusive_of_fees": False,
            "total_value_after_fees": _text(after_fees),
            "trigger_status": "INVALID_ORDER_TYPE",
            "order_type": "LIMIT",
            "reject_reason": "REJECT_REASON_UNSPECIFIED",
            "settled": o.status != "OPEN",
            "product_type": "SPOT",
            "reject_message": "",
            "cancel_message": "",
            "order_placement_source": "RETAIL_ADVANCED",
            "outstanding_hold_amount": _text(o.hold),
            "is_liquidation": False,
            "last_fill_time": o.last_fill_time,
            "edit_history": [],
            "leverage": "",
            "margin_type": "UNKNOWN_MARGIN_TYPE",
        }

    def list_orders(self, query: dict[str, list[str]]) -> dict[str, Any]:
        products = set(query.get("product_ids", []) + query.get("product_id", []))
        statuses = set(query.get("order_status", []))
        ids = set(query.get("order_ids", []))
        with self.lock:
            found = [
                o
                for o in sorted(self.orders.values(), key=lambda o: o.seq, reverse=True)  # newest first
                if (not products or o.product_id in products)
                and (not statuses or o.status in statuses)
                and (not ids or o.order_id in ids)
            ]
            page, has_next, cursor = _page(found, query)
            return {
                "orders": [self.order_record(o) for o in page],
                "sequence": "0",
                "has_next": has_next,
                "cursor": cursor,
            }

    def list_fills(self, query: dict[str, list[str]]) -> dict[str, Any]:
        products = set(query.get("product_ids", []) + query.get("product_id", []))
        ids = set(query.get("order_ids", []) + query.get("order_id", []))
        with self.lock:
            found = [
                f
                for f in reversed(self.fills)  # newest first
                if (not products or f["product_id"] in products) and (not ids or f["order_id"] in ids)
            ]
            page, _, cursor = _page(found, query)
            return {"fills": copy.deepcopy(page), "cursor": cursor}

    def accounts(self, limit: int) -> dict[str, Any]:
        with self.lock:
            records = [self._account(code, bal) for code, bal in sorted(self.balances.items())]
        return {
            "data": records[:limit],
            "pagination": {
                "ending_before": None,
                "limit": str(limit),
                "next_starting_after": None,
                "next_uri": None,
                "order": "desc",
                "previous_ending_before": None,
                "previous_uri": None,
                "starting_after": None,
            },
        }

    @staticmethod
    def _account(code: str, bal: Balance) -> dict[str, Any]:
        meta = _CURRENCIES.get(
            code, {"color": "#000000", "exponent": "8", "name": code, "slug": code.lower()}
        )
        account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"coinbase-contract/account/{code}"))
        return {
            "id": account_id,
            "name": f"{code} Wallet",
            "primary": True,
            "type": "wallet",
            "balance": {"amount": _text(bal.available + bal.hold), "currency": code},
            "created_at": "2024-01-02T03:04:05Z",
            "updated_at": "2024-01-02T03:04:05Z",
            "resource": "account",
            "resource_path": f"/v2/accounts/{account_id}",
            "currency": {
                "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"coinbase-contract/asset/{code}")),
                "code": code,
                "color": meta["color"],
                "exponent": meta["exponent"],
                "name": meta["name"],
                "slug": meta["slug"],
                "type": "crypto",
                "rewards": None,
            },
            "allow_deposits": True,
            "allow_withdrawals": True,
        }

    def transaction_summary(self) -> dict[str, Any]:
        return {
            "total_volume": 0,
            "total_fees": 0,
            "fee_tier": {
                "pricing_tier": "Advanced 1",
                "usd_from": "0",
                "usd_to": "1000",
                "taker_fee_rate": _text(self.taker_fee_rate),
                "maker_fee_rate": _text(self.maker_fee_rate),
                "aop_from": "",
                "aop_to": "",
            },
            "margin_rate": None,
            "goods_and_services_tax": None,
            "advanced_trade_only_volume": 0,
            "advanced_trade_only_fees": 0,
            "coinbase_pro_volume": 0,
            "coinbase_pro_fees": 0,
            "total_balance": "",
            "has_promo_fee": False,
        }


def _page(items: list[Any], query: dict[str, list[str]]) -> tuple[list[Any], bool, str]:
    """Cursor paging as Coinbase does it: an opaque cursor, empty when there is nothing more."""
    start = int((query.get("cursor") or ["0"])[0] or 0)
    limit = int((query.get("limit") or ["100"])[0])
    page = items[start : start + limit]
    has_next = start + limit < len(items)
    return page, has_next, str(start + limit) if has_next else ""


def _is_public(path: str) -> bool:
    return (
        path.startswith(f"{API}/market/")
        or path == f"{API}/time"
        or path.startswith("/v2/currencies")
        or path in ("/v2/exchange-rates", "/v2/time")
    )


class CoinbaseServer:
    """The HTTP face of a :class:`CoinbaseState`, in a background thread with its own event loop."""

    def __init__(self, state: CoinbaseState, host: str = HOST, port: int = 0) -> None:
        if host != HOST:
            raise ValueError("the contract server only listens on 127.0.0.1")
        self.state = state
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> CoinbaseServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="coinbase-contract-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._release.set()  # a hung answer must not hold the shutdown
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=30)
            self._runner = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        self._loop = self._thread = None
        self._release.clear()

    def restart(self) -> None:
        """Stop (every connection drops) and start again on the same port with the same state."""
        self.stop()
        self.start()

    def __enter__(self) -> CoinbaseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._authenticate])
        app.add_routes(
            [
                web.get(f"{API}/market/products", self._products),
                web.get(f"{API}/market/products/{{product_id}}/ticker", self._ticker),
                web.get(f"{API}/transaction_summary", self._transaction_summary),
                web.get("/v2/currencies", self._fiat_currencies),
                web.get("/v2/currencies/crypto", self._crypto_currencies),
                web.get("/v2/exchange-rates", self._exchange_rates),
                web.get("/v2/accounts", self._accounts),
                web.post(f"{API}/orders", self._create_order),
                web.post(f"{API}/orders/batch_cancel", self._cancel_orders),
                web.get(f"{API}/orders/historical/batch", self._list_orders),
                web.get(f"{API}/orders/historical/fills", self._list_fills),
                web.get(f"{API}/orders/historical/{{order_id}}", self._get_order),
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])

    # --- controls (called from the test thread) ---------------------------------------------------
    def fill(self, client_order_id: str, quantity: Decimal, price: Decimal | None = None) -> dict[str, Any]:
        return self.state.fill(client_order_id, quantity, price)

    def lose_next_response(self, mode: str = "drop") -> None:
        """The next create-order is processed, then its answer is lost.

        ``drop`` closes the connection at once; ``hang`` keeps it open, unanswered, until
        :meth:`release` (or a stop), so the client runs into its own timeout.
        """
        if mode not in ("drop", "hang"):
            raise ValueError(mode)
        self._release.clear()
        with self.state.lock:
            self.state.lose_next = mode

    def release(self) -> None:
        self._release.set()

    # --- HTTP -------------------------------------------------------------------------------------
    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        with self.state.lock:
            self.state.requests.append((request.method, request.path))
        if not _is_public(request.path):
            reason = self.state.verify_jwt(
                request.headers.get("Authorization", ""), request.method, request.path
            )
            if reason is not None:
                with self.state.lock:
                    self.state.auth_failures.append(reason)
                return web.Response(status=401, text=UNAUTHORIZED)
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    def _query(request: web.Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in request.query.items():
            out.setdefault(k, []).append(v)
        return out

    async def _products(self, request: web.Request) -> web.Response:
        kind = request.query.get("product_type", "SPOT")
        products = [p for p in self.state.products if p.get("product_type") == kind]
        return web.json_response({"products": products, "num_products": len(products)})

    async def _ticker(self, request: web.Request) -> web.Response:
        body = self.state.tickers.get(request.match_info["product_id"])
        if body is None:
            return _not_found("product not found")
        return web.json_response(body)

    async def _transaction_summary(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.transaction_summary())

    async def _fiat_currencies(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "USD", "name": "US Dollar", "min_size": "0.01"}]})

    async def _crypto_currencies(self, request: web.Request) -> web.Response:
        data = [
            {
                "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"coinbase-contract/asset/{code}")),
                "code": code,
                "name": meta["name"],
                "color": meta["color"],
                "sort_index": str(i),
                "exponent": meta["exponent"],
                "type": "crypto",
                "address_regex": "",
            }
            for i, (code, meta) in enumerate(sorted(_CURRENCIES.items()))
        ]
        return web.json_response({"data": data})

    async def _exchange_rates(self, request: web.Request) -> web.Response:
        return web.json_response({"data": {"currency": "USD", "rates": {}}})

    async def _accounts(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.accounts(int(request.query.get("limit", "25"))))

    async def _create_order(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        answer = self.state.create(body)
        with self.state.lock:
            mode, self.state.lose_next = self.state.lose_next, None
        if mode is not None:
            if mode == "hang":
                while not self._release.is_set():
                    await asyncio.sleep(0.01)
            if request.transport is not None:
                request.transport.abort()  # the order exists; its answer never arrives
            raise asyncio.CancelledError
        return web.json_response(answer)

    async def _cancel_orders(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(self.state.cancel(str(i) for i in body.get("order_ids") or []))

    async def _list_orders(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.list_orders(self._query(request)))

    async def _list_fills(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.list_fills(self._query(request)))

    async def _get_order(self, request: web.Request) -> web.Response:
        with self.state.lock:
            order = self.state.orders.get(request.match_info["order_id"])
            if order is None:
                return _not_found("order with this orderID was not found")
            return web.json_response({"order": self.state.order_record(order)})


def _not_found(message: str) -> web.Response:
    return web.json_response({"error": "NOT_FOUND", "error_details": message, "message": message}, status=404)

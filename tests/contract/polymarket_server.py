"""A local Polymarket CLOB (V2) on 127.0.0.1 for the contract tier: real protocol, real signatures.

It speaks the CLOB V2 protocol as py-clob-client-v2 1.2.1 uses it, from recorded traffic where
there is some (``shared/fixtures/ccxt/response/polymarket.json``: the ``GET /book`` body, the
order-creation and cancel response shapes, and the V2 createOrder parameters: a deposit-wallet
order with ``signatureType`` 3, a pinned ``salt`` and a millisecond ``timestamp``) and from
Polymarket's published texts otherwise. It checks what the real venue checks, with its own code
rather than the client's (``eth_account``'s EIP-712 encoder and ``eth_abi``, not the SDK's
builder), so a signing bug in the client path fails here:

* L1 (API-key creation/derivation): the ClobAuth EIP-712 signature (domain version "1", which
  V2 kept) must recover to ``POLY_ADDRESS`` and that must be the test wallet;
* L2 (everything private): HMAC-SHA256 with the base64-decoded secret over
  ``timestamp + method + path + body``, urlsafe-base64, plus key, passphrase and address;
* each order: it must be a V2 order (a V1 payload, with ``nonce``/``feeRateBps`` and without
  ``timestamp``, is refused with ``order_version_mismatch`` as production does since the
  cutover); its EIP-712 signature (domain ``Polymarket CTF Exchange`` version "2") must be valid
  under the V2 exchange contract that settles the token (the V2 neg-risk exchange for neg-risk
  markets); EOA, proxy and safe orders (types 0-2) must recover to their ``signer``, which must
  own the API key, with the maker being the signer's funder; deposit-wallet orders (type 3,
  POLY_1271) carry the ERC-7739 wrapped signature, whose app domain and contents hash must be
  this order's and whose inner signature must recover to the API key's owner, the wallet
  (``signer`` = ``maker``) being that owner's funder. The order id is the EIP-712 hash.

Order state lives in :class:`ClobState`, outside the server, so :meth:`PolymarketServer.restart`
comes back on the same port with the same orders. The book is the recorded snapshot and stays
static: orders rest, nothing crosses; fills happen only through :meth:`PolymarketServer.fill`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak

from bastion.venues.polymarket import order_salt

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("BASTION_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
RECORDED = FIXTURES / "ccxt" / "response" / "polymarket.json"

# The V2 CTF exchange contracts that verify order signatures (Polymarket's published V2
# addresses; kept here independently of the SDK's table so a wrong address there fails a test)
EXCHANGES: dict[int, dict[bool, str]] = {
    137: {
        False: "0xE111180000d2663C0091e4f400237545B87B996B",
        True: "0xe2222d279d744050d28e00520010520000310F59",
    },
}
# The V1 exchanges, whose orders the V2 venue no longer takes (for the tests that show it)
V1_EXCHANGES: dict[bool, str] = {
    False: "0x4bFb41d5B3570DeFd03C39a9A4D8dE6Bd8B8982E",
    True: "0xC5d563A36AE78145C45a50134d48A1215220f80a",
}
EXCHANGE_NAME = "Polymarket CTF Exchange"
EXCHANGE_VERSION = "2"
CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"
UNITS = Decimal(10**6)
END_CURSOR = "LTE="
NOT_CANCELED = "order can't be found - already canceled or matched"
VERSION_MISMATCH = "order_version_mismatch"  # production's answer to V1 orders (400)
ZERO_ADDRESS = "0x" + "00" * 20
POLY_1271 = 3

_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
_ORDER_FIELDS = [
    ("salt", "uint256"),
    ("maker", "address"),
    ("signer", "address"),
    ("tokenId", "uint256"),
    ("makerAmount", "uint256"),
    ("takerAmount", "uint256"),
    ("side", "uint8"),
    ("signatureType", "uint8"),
    ("timestamp", "uint256"),
    ("metadata", "bytes32"),
    ("builder", "bytes32"),
]
ORDER_TYPE = "Order(" + ",".join(f"{t} {n}" for n, t in _ORDER_FIELDS) + ")"
# ERC-7739 nested typed-data signing, as the deposit wallet (a Solady ERC1271) verifies it
_TYPED_DATA_SIGN = (
    "TypedDataSign(Order contents,string name,string version,uint256 chainId,"
    "address verifyingContract,bytes32 salt)" + ORDER_TYPE
)
_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_V2_KEYS = frozenset(
    ("salt", "maker", "signer", "tokenId", "makerAmount", "takerAmount", "side", "signatureType",
     "timestamp", "metadata", "builder", "signature")
)  # fmt: skip
_V1_KEYS = frozenset(("nonce", "feeRateBps"))


@functools.cache
def recorded_cases() -> dict[str, Any]:
    """The recorded raw bodies by ccxt method name (first case of each); copy before changing."""
    doc = json.loads(RECORDED.read_text())
    return {name: cases[0]["httpResponse"] for name, cases in doc["methods"].items() if cases}


@functools.cache
def recorded_inputs() -> dict[str, list[Any]]:
    """The recorded call arguments by ccxt method name (first case of each); copy before changing."""
    doc = json.loads(RECORDED.read_text())
    return {name: cases[0]["input"] for name, cases in doc["methods"].items() if cases}


def _text(d: Decimal) -> str:
    """Decimal as the venue writes it: plain digits, no exponent, no trailing zeros."""
    if d == 0:
        return "0"
    out = format(d.normalize(), "f")
    return out


def _digest(signable: Any) -> bytes:
    return bytes(keccak(b"\x19" + signable.version + signable.header + signable.body))


def _bytes32(text: Any) -> bytes:
    raw = bytes.fromhex(str(text).removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"not 32 bytes: {text!r}")
    return raw


def order_message(order: dict[str, Any]) -> dict[str, Any]:
    """The signed V2 struct of a posted order (the JSON's other keys are not signed)."""
    return {
        "salt": int(order["salt"]),
        "maker": order["maker"],
        "signer": order["signer"],
        "tokenId": int(order["tokenId"]),
        "makerAmount": int(order["makerAmount"]),
        "takerAmount": int(order["takerAmount"]),
        "side": {"BUY": 0, "SELL": 1}[str(order["side"])],
        "signatureType": int(order["signatureType"]),
        "timestamp": int(order["timestamp"]),
        "metadata": _bytes32(order["metadata"]),
        "builder": _bytes32(order["builder"]),
    }


def order_digest(
    order: dict[str, Any], chain_id: int, exchange: str, version: str = EXCHANGE_VERSION
) -> tuple[bytes, Any]:
    """EIP-712 digest (the order id) and signable message of a posted V2 order, for ``exchange``."""
    signable = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [*_DOMAIN, {"name": "verifyingContract", "type": "address"}],
                "Order": [{"name": n, "type": t} for n, t in _ORDER_FIELDS],
            },
            "primaryType": "Order",
            "domain": {
                "name": EXCHANGE_NAME,
                "version": version,
                "chainId": chain_id,
                "verifyingContract": exchange,
            },
            "message": order_message(order),
        }
    )
    return _digest(signable), signable


def domain_separator(chain_id: int, exchange: str) -> bytes:
    """The V2 exchange's EIP-712 domain separator (as the contract computes it)."""
    return bytes(
        keccak(
            abi_encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [keccak(text=_DOMAIN_TYPE), keccak(text=EXCHANGE_NAME), keccak(text=EXCHANGE_VERSION),
                 chain_id, exchange],
            )
        )
    )  # fmt: skip


def struct_hash(order: dict[str, Any]) -> bytes:
    """``hashStruct(order)``: keccak of the type hash and the 11 fields, ABI-encoded."""
    m = order_message(order)
    types = [t for _, t in _ORDER_FIELDS]
    return bytes(
        keccak(abi_encode(["bytes32", *types], [keccak(text=ORDER_TYPE), *(m[n] for n, _ in _ORDER_FIELDS)]))
    )


def deposit_wallet_owner(order: dict[str, Any], chain_id: int, exchange: str) -> str:
    """The EOA whose key made a POLY_1271 order's ERC-7739 wrapped signature (or ValueError).

    Layout: inner signature (65) || app domain separator (32) || contents hash (32) ||
    contents type || uint16 length of the contents type. The wrapped parts must be this
    order's, under this exchange; the inner signature signs ``TypedDataSign`` with the deposit
    wallet (the order's ``signer``) as the nested domain's verifying contract.
    """
    raw = bytes.fromhex(str(order["signature"]).removeprefix("0x"))
    if len(raw) < 131:
        raise ValueError("too short for a wrapped signature")
    type_len = int.from_bytes(raw[-2:], "big")
    inner, app_domain, contents = raw[:65], raw[65:97], raw[97:129]
    contents_type = raw[129:-2]
    if len(contents_type) != type_len or contents_type.decode() != ORDER_TYPE:
        raise ValueError("wrong contents type")
    if app_domain != domain_separator(chain_id, exchange) or contents != struct_hash(order):
        raise ValueError("the wrapped domain or contents are not this order's")
    nested = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "bytes32", "uint256", "address", "bytes32"],
            [keccak(text=_TYPED_DATA_SIGN), contents, keccak(text="DepositWallet"), keccak(text="1"),
             chain_id, order["signer"], bytes(32)],
        )
    )  # fmt: skip
    return str(Account._recover_hash(keccak(b"\x19\x01" + app_domain + nested), signature=inner))


def clob_auth_signer(address: str, timestamp: str, nonce: int, signature: str, chain_id: int) -> str:
    """The address that signed an L1 ClobAuth message."""
    signable = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": _DOMAIN,
                "ClobAuth": [
                    {"name": "address", "type": "address"},
                    {"name": "timestamp", "type": "string"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "message", "type": "string"},
                ],
            },
            "primaryType": "ClobAuth",
            "domain": {"name": "ClobAuthDomain", "version": "1", "chainId": chain_id},
            "message": {
                "address": address,
                "timestamp": timestamp,
                "nonce": nonce,
                "message": CLOB_AUTH_MESSAGE,
            },
        }
    )
    return str(Account.recover_message(signable, signature=signature))


@dataclass
class Cred:
    address: str
    secret: str
    passphrase: str
    nonce: int


@dataclass
class OrderRec:
    """One order as the venue keeps it (amounts exact)."""

    id: str
    order: dict[str, Any]
    owner: str
    order_type: str
    side: str
    price: Decimal
    size: Decimal
    exchange: str
    created_at: int
    matched: Decimal = Decimal(0)
    status: str = "LIVE"
    associate_trades: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.size - self.matched


@dataclass
class ClobState:
    """Everything the venue knows; survives :meth:`PolymarketServer.restart`."""

    chain_id: int
    books: dict[str, dict[str, Any]]  # token id -> recorded /book body
    funders: dict[str, str]  # signer address (lower) -> the funder it may trade for (lower)
    collateral: Decimal
    shares: dict[str, Decimal]
    creds: dict[str, Cred] = field(default_factory=dict)
    orders: dict[str, OrderRec] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fee_rate_bps: int = 0
    forget_matched: bool = False  # /data/order answers null for MATCHED orders (seen live)
    lose_next: bool = False
    stall_next: bool = False
    refuse_next: str | None = None
    match_next: bool = False  # the next accepted order is filled on arrival (tradeIDs answered)
    fail_next: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (status, error)
    lock: threading.RLock = field(default_factory=threading.RLock)
    release: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def recorded(
        cls,
        wallet: str,
        *,
        funder: str | None = None,
        chain_id: int = 137,
        collateral: Decimal = Decimal(1000),
        shares: Decimal = Decimal(1000),
        neg_risk: bool | None = None,
    ) -> ClobState:
        """The recorded JD Vance 2028 YES book; ``neg_risk`` overrides its flag for a variant."""
        book = copy.deepcopy(recorded_cases()["fetchOrderBook"])
        if neg_risk is not None:
            book["neg_risk"] = neg_risk
        token = str(book["asset_id"])
        return cls(
            chain_id=chain_id,
            books={token: book},
            funders={wallet.lower(): (funder or wallet).lower()},
            collateral=collateral,
            shares={token: shares},
        )

    # --- queries used by the handler and the test controls --------------------------------------------
    def locked_collateral(self) -> Decimal:
        return sum(
            (r.remaining * r.price for r in self.orders.values() if r.status == "LIVE" and r.side == "BUY"),
            Decimal(0),
        )

    def locked_shares(self, token: str) -> Decimal:
        return sum(
            (
                r.remaining
                for r in self.orders.values()
                if r.status == "LIVE" and r.side == "SELL" and str(r.order["tokenId"]) == token
            ),
            Decimal(0),
        )

    def find(self, ref: str) -> OrderRec:
        """An order by its id, or by the client order id its salt was derived from."""
        with self.lock:
            if ref.startswith("0x"):
                return self.orders[ref.lower()]
            salt = order_salt(ref)
            hits = [r for r in self.orders.values() if int(r.order["salt"]) == salt]
            if len(hits) != 1:
                raise KeyError(f"{len(hits)} orders with the salt of {ref!r}")
            return hits[0]

    def fill(self, ref: str, qty: Decimal | str) -> dict[str, Any]:
        """A counterparty takes ``qty`` of the resting order ``ref`` (order id or client order id)."""
        st = self
        q = Decimal(str(qty))
        with st.lock:
            r = st.find(ref)
            if r.status != "LIVE" or not 0 < q <= r.remaining:
                raise ValueError(f"cannot fill {q} of {r.id} ({r.status}, {r.remaining} left)")
            r.matched += q
            if r.matched == r.size:
                r.status = "MATCHED"
            token = str(r.order["tokenId"])
            if r.side == "BUY":
                st.collateral -= q * r.price
                st.shares[token] = st.shares.get(token, Decimal(0)) + q
            else:
                st.collateral += q * r.price
                st.shares[token] -= q
            now = str(int(time.time()))
            book = st.books[token]
            trade = {
                "id": str(uuid.uuid4()),
                "taker_order_id": "0x" + secrets.token_hex(32),
                "market": book["market"],
                "asset_id": token,
                "side": "SELL" if r.side == "BUY" else "BUY",
                "size": _text(q),
                "fee_rate_bps": str(st.fee_rate_bps),  # operator-set at match time in V2
                "price": _text(r.price),
                "status": "MATCHED",
                "match_time": now,
                "last_update": now,
                "outcome": "Yes",
                "bucket_index": 0,
                "owner": str(uuid.uuid4()),
                "maker_address": r.order["maker"],
                "maker_orders": [
                    {
                        "order_id": r.id,
                        "owner": r.owner,
                        "maker_address": r.order["maker"],
                        "matched_amount": _text(q),
                        "price": _text(r.price),
                        "fee_rate_bps": str(st.fee_rate_bps),
                        "asset_id": token,
                        "outcome": "Yes",
                        "side": r.side,
                    }
                ],
                "transaction_hash": "0x" + hashlib.sha256(r.id.encode() + now.encode()).hexdigest(),
                "trader_side": "MAKER",
            }
            st.trades.append(trade)
            r.associate_trades.append(trade["id"])
            return trade

    def order_view(self, r: OrderRec) -> dict[str, Any]:
        book = self.books[str(r.order["tokenId"])]
        return {
            "id": r.id,
            "status": r.status,
            "owner": r.owner,
            "maker_address": r.order["maker"],
            "market": book["market"],
            "asset_id": str(r.order["tokenId"]),
            "side": r.side,
            "original_size": _text(r.size),
            "size_matched": _text(r.matched),
            "price": _text(r.price),
            "outcome": "Yes",
            "expiration": str(r.order.get("expiration", "0")),
            "order_type": r.order_type,
            "associate_trades": list(r.associate_trades),
            "created_at": r.created_at,
        }


def _l2_signature(secret: str, timestamp: str, method: str, path: str, body: str) -> str:
    mac = hmac.new(base64.urlsafe_b64decode(secret), f"{timestamp}{method}{path}{body}".encode(), "sha256")
    return base64.urlsafe_b64encode(mac.digest()).decode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- plumbing ---------------------------------------------------------------------------------
    @property
    def st(self) -> ClobState:
        return self.server.clob

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _drop(self) -> None:
        """Close the connection without a response: the client cannot know what happened."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _body(self) -> str:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self._body()
        st = self.st
        with st.lock:
            st.requests.append((method, path))
            failure = next((p for p in st.fail_next if path.startswith(p)), None)
            if failure is not None:
                status, error = st.fail_next.pop(failure)
                self._send(status, {"error": error})
                return
        public = {
            ("GET", "/"): lambda: (200, "OK"),
            ("GET", "/time"): lambda: (200, int(time.time())),
            ("GET", "/version"): lambda: (200, {"version": 2}),
            ("GET", "/book"): lambda: self._book(query),
            ("GET", "/tick-size"): lambda: self._market(query, "tick"),
            ("GET", "/neg-risk"): lambda: self._market(query, "neg_risk"),
            ("GET", "/fee-rate"): lambda: self._market(query, "fee"),
        }
        if (method, path) in public:
            self._send(*public[(method, path)]())
            return
        if (method, path) in (("POST", "/auth/api-key"), ("GET", "/auth/derive-api-key")):
            self._send(*self._api_key(method == "POST"))
            return
        cred_key = self._l2(method, path, body)
        if cred_key is None:
            self._send(401, {"error": "Unauthorized/Invalid api key"})
            return
        if (method, path) == ("POST", "/order"):
            self._post_order(cred_key, body)
        elif method == "GET" and path.startswith("/data/order/"):
            self._send(200, self._get_order(cred_key, path.removeprefix("/data/order/")))
        elif (method, path) == ("GET", "/data/orders"):
            self._send(200, self._open_orders(cred_key, query))
        elif (method, path) == ("DELETE", "/order"):
            self._send(*self._cancel(cred_key, body))
        elif (method, path) == ("GET", "/data/trades"):
            self._send(200, self._trades(cred_key, query))
        else:
            self._send(404, {"error": f"{method} {path} not found"})

    # --- public market data -------------------------------------------------------------------------
    def _book(self, q: dict[str, str]) -> tuple[int, Any]:
        book = self.st.books.get(q.get("token_id", ""))
        if book is None:
            return 404, {"error": "No orderbook exists for the requested token id"}
        return 200, book

    def _market(self, q: dict[str, str], what: str) -> tuple[int, Any]:
        book = self.st.books.get(q.get("token_id", ""))
        if book is None:
            return 404, {"error": "market not found"}
        if what == "tick":
            return 200, {"minimum_tick_size": float(book["tick_size"])}
        if what == "neg_risk":
            return 200, {"neg_risk": bool(book["neg_risk"])}
        return 200, {"base_fee": self.st.fee_rate_bps}

    # --- authentication -----------------------------------------------------------------------------
    def _api_key(self, create: bool) -> tuple[int, Any]:
        h = self.headers
        address = h.get("POLY_ADDRESS", "")
        try:
            nonce = int(h.get("POLY_NONCE", "0"))
            signer = clob_auth_signer(
                address, h.get("POLY_TIMESTAMP", ""), nonce, h.get("POLY_SIGNATURE", ""), self.st.chain_id
            )
        except Exception:
            return 401, {"error": "Invalid L1 Request headers"}
        if signer.lower() != address.lower() or address.lower() not in self.st.funders:
            return 401, {"error": "Invalid L1 Request headers"}
        with self.st.lock:
            existing = next(
                (
                    (k, c)
                    for k, c in self.st.creds.items()
                    if c.address.lower() == address.lower() and c.nonce == nonce
                ),
                None,
            )
            if create:
                if existing is not None:
                    return 400, {"error": "Could not create api key"}
                key = str(uuid.uuid4())
                cred = Cred(
                    address=address,
                    secret=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                    passphrase=secrets.token_hex(32),
                    nonce=nonce,
                )
                self.st.creds[key] = cred
                existing = (key, cred)
            elif existing is None:
                return 400, {"error": "Could not derive api key!"}
        key, cred = existing
        return 200, {"apiKey": key, "secret": cred.secret, "passphrase": cred.passphrase}

    def _l2(self, method: str, path: str, body: str) -> str | None:
        """The API key of a correctly signed L2 request, or None."""
        h = self.headers
        key = h.get("POLY_API_KEY", "")
        cred = self.st.creds.get(key)
        if cred is None:
            return None
        if h.get("POLY_PASSPHRASE") != cred.passphrase or h.get("POLY_ADDRESS", "").lower() != (
            cred.address.lower()
        ):
            return None
        expected = _l2_signature(cred.secret, h.get("POLY_TIMESTAMP", ""), method, path, body)
        if not hmac.compare_digest(expected, h.get("POLY_SIGNATURE", "")):
            return None
        return key

    # --- orders ---------------------------------------------------------------------------------------
    def _post_order(self, api_key: str, body: str) -> None:
        st = self.st
        with st.lock:
            status, answer = self._accept(api_key, body)
            lose, stall = st.lose_next, st.stall_next
            if status == 200 and answer.get("success"):
                st.lose_next = st.stall_next = False
        if status == 200 and answer.get("success") and (lose or stall):
            if stall:  # processed; the answer never comes (until the server stops)
                st.release.wait(30)
            self._drop()
            return
        self._send(status, answer)

    def _accept(self, api_key: str, body: str) -> tuple[int, dict[str, Any]]:
        st = self.st
        cred = st.creds[api_key]
        try:
            doc = json.loads(body)
            order = doc["order"]
            if not isinstance(order, dict):
                raise TypeError(order)
            if _V1_KEYS & order.keys() or "timestamp" not in order:
                return 400, {"error": VERSION_MISMATCH}
            taker = str(order.get("taker", ZERO_ADDRESS)).lower()
            if not order.keys() >= _V2_KEYS or taker != ZERO_ADDRESS:
                raise ValueError("not a V2 order")  # V2 has no private orders: taker is not signed
            token = str(order["tokenId"])
            side = str(order["side"])
            maker_amount, taker_amount = Decimal(order["makerAmount"]), Decimal(order["takerAmount"])
            if side not in ("BUY", "SELL") or maker_amount <= 0 or taker_amount <= 0:
                raise ValueError(side)
            sig_type = int(order["signatureType"])
            order_message(order)  # every signed field readable
            if sig_type not in (0, 1, 2, POLY_1271) or str(order.get("expiration", "0")) != "0":
                raise ValueError("signature type or expiration")  # GTD is not modelled
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "Invalid order payload"}
        if doc.get("owner") != api_key:
            return 400, {"error": "the order owner has to be the owner of the API KEY"}
        book = st.books.get(token)
        if book is None:
            return 400, {"error": "Invalid order payload"}
        funder = st.funders.get(cred.address.lower())
        signer = str(order["signer"]).lower()
        if sig_type != POLY_1271 and signer != cred.address.lower():
            return 400, {"error": "the order signer address has to be the address of the API KEY"}
        if sig_type == POLY_1271 and signer != funder:
            return 400, {"error": "the order signer address has to be the address of the API KEY"}
        exchange = EXCHANGES[st.chain_id][bool(book["neg_risk"])]
        try:
            digest, signable = order_digest(order, st.chain_id, exchange)
            if sig_type == POLY_1271:  # the wallet's owner signed; the wallet is signer and maker
                valid = deposit_wallet_owner(order, st.chain_id, exchange).lower() == cred.address.lower()
            else:
                recovered = str(Account.recover_message(signable, signature=order["signature"]))
                valid = recovered.lower() == signer
        except Exception:
            return 400, {"error": "invalid signature"}
        if not valid or str(order["maker"]).lower() != funder:
            return 400, {"error": "invalid signature"}
        if sig_type == 0 and str(order["maker"]).lower() != signer:
            return 400, {"error": "invalid signature"}  # an EOA order is its signer's own money
        oid = "0x" + digest.hex()
        if oid in st.orders:
            return 400, {"error": f"order {oid} is invalid. Duplicated."}
        size = (taker_amount if side == "BUY" else maker_amount) / UNITS
        price = (maker_amount / taker_amount) if side == "BUY" else (taker_amount / maker_amount)
        tick = Decimal(book["tick_size"])
        if price % tick or not tick <= price <= 1 - tick:
            rule = f"breaks minimum tick size rule: {tick}"
            return 400, {"error": f"order {oid} is invalid. Price ({_text(price)}) {rule}"}
        if size < Decimal(book["min_order_size"]):
            return 400, {
                "error": f"order {oid} is invalid. Size ({_text(size)}) lower than the minimum: "
                f"{book['min_order_size']}"
            }
        if side == "BUY":
            enough = maker_amount / UNITS <= st.collateral - st.locked_collateral()
        else:
            enough = size <= st.shares.get(token, Decimal(0)) - st.locked_shares(token)
        if not enough:
            return 400, {"error": "not enough balance / allowance"}
        if st.refuse_next is not None:
            msg, st.refuse_next = st.refuse_next, None
            return 200, {
                "errorMsg": msg,
                "orderID": "",
                "takingAmount": "",
                "makingAmount": "",
                "status": "",
                "success": False,
            }
        st.orders[oid] = OrderRec(
            id=oid,
            order=order,
            owner=api_key,
            order_type=str(doc.get("orderType", "GTC")),
            side=side,
            price=price,
            size=size,
            exchange=exchange,
            created_at=int(time.time()),
        )
        # the recorded live order-creation response, with this order's values
        answer = dict(recorded_cases()["createOrder"])
        answer.update({"errorMsg": "", "orderID": oid, "status": "live", "success": True})
        if st.match_next:  # matched on arrival: the SDK's layout (tradeIDs), not a recording
            st.match_next = False
            trade = st.fill(oid, size)
            making, taking = _text(maker_amount / UNITS), _text(taker_amount / UNITS)
            answer.update(
                {
                    "status": "matched",
                    "tradeIDs": [trade["id"]],
                    "makingAmount": making,
                    "takingAmount": taking,
                }
            )
        return 200, answer

    def _get_order(self, api_key: str, oid: str) -> dict[str, Any] | None:
        st = self.st
        with st.lock:
            r = st.orders.get(oid.lower())
            if r is None or r.owner != api_key or (st.forget_matched and r.status == "MATCHED"):
                return None  # the venue answers 200 with an empty body for an order it does not show
            return st.order_view(r)

    def _open_orders(self, api_key: str, q: dict[str, str]) -> dict[str, Any]:
        st = self.st
        with st.lock:
            rows = [
                st.order_view(r)
                for r in st.orders.values()
                if r.owner == api_key
                and r.status == "LIVE"
                and q.get("id", r.id) == r.id
                and q.get("asset_id", str(r.order["tokenId"])) == str(r.order["tokenId"])
            ]
        return {"data": rows, "next_cursor": END_CURSOR, "limit": 100, "count": len(rows)}

    def _cancel(self, api_key: str, body: str) -> tuple[int, Any]:
        st = self.st
        try:
            oid = str(json.loads(body)["orderID"]).lower()
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "Invalid order payload"}
        with st.lock:
            r = st.orders.get(oid)
            if r is None or r.owner != api_key or r.status != "LIVE":
                return 200, {"not_canceled": {oid: NOT_CANCELED}, "canceled": []}
            r.status = "CANCELED"
        return 200, {"not_canceled": {}, "canceled": [oid]}

    def _trades(self, api_key: str, q: dict[str, str]) -> dict[str, Any]:
        st = self.st
        with st.lock:
            rows = [
                t
                for t in st.trades
                if any(m["owner"] == api_key for m in t["maker_orders"])
                and q.get("asset_id", t["asset_id"]) == t["asset_id"]
                and q.get("id", t["id"]) == t["id"]
            ]
        return {"data": rows, "next_cursor": END_CURSOR, "limit": 100, "count": len(rows)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], clob: ClobState) -> None:
        self.clob = clob
        self.connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_all(self) -> None:
        with self._conn_lock:
            conns = list(self.connections)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class PolymarketServer:
    """The CLOB in a background thread on 127.0.0.1 (``port=0``: any free port, kept on restart)."""

    def __init__(self, state: ClobState, port: int = 0) -> None:
        self.state = state
        self.port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.state.release.clear()
        self._httpd = _Server(("127.0.0.1", self.port), self.state)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="polymarket-clob", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self.state.release.set()  # let a stalled answer go (into a dropped connection)
        self._httpd.shutdown()
        self._httpd.drop_all()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = self._thread = None

    def restart(self) -> None:
        """Down and up again on the same port; open connections die, the order state does not."""
        self.stop()
        self.start()

    def __enter__(self) -> PolymarketServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls ------------------------------------------------------------------------------
    def fill(self, ref: str, qty: Decimal | str) -> dict[str, Any]:
        """A counterparty takes ``qty`` of the resting order ``ref`` (order id or client order id)."""
        return self.state.fill(ref, qty)

    def lose_next_response(self) -> None:
        """The next accepted ``POST /order`` is processed, then its connection dropped unanswered."""
        with self.state.lock:
            self.state.lose_next = True

    def stall_next_response(self) -> None:
        """The next accepted ``POST /order`` is processed and never answered (the client times out)."""
        with self.state.lock:
            self.state.stall_next = True

    def refuse_next(self, error_msg: str) -> None:
        """The next valid order gets ``success: false`` with this ``errorMsg`` (HTTP 200)."""
        with self.state.lock:
            self.state.refuse_next = error_msg

    def match_next_response(self) -> None:
        """The next valid order is filled completely on arrival and answered as matched."""
        with self.state.lock:
            self.state.match_next = True

    def fail_next(self, path: str, status: int, error: str) -> None:
        """The next request to ``path`` gets ``status`` ``{"error": error}`` without being processed."""
        with self.state.lock:
            self.state.fail_next[path] = (status, error)

    def count(self, method: str, path: str) -> int:
        with self.state.lock:
            return sum(1 for m, p in self.state.requests if m == method and p == path)

"""A :class:`~bastion.venues.base.VenueClient` for one Polymarket outcome token, over py-clob-client-v2.

Polymarket's CLOB runs V2 since 2026-04-28 and refuses V1-signed orders, so this adapter signs
V2 orders only: domain ``Polymarket CTF Exchange`` version "2", verifying contract the V2
exchange (or the V2 neg-risk exchange), and the 11-field order struct (salt, maker, signer,
tokenId, makerAmount, takerAmount, side, signatureType, timestamp, metadata, builder).

Why it looks the way it does:

* Polymarket has no client order id, but its order id is the EIP-712 hash of the signed order,
  and every signed field is ours to choose. The order is signed here, through py-clob-client-v2's
  own ``ExchangeOrderBuilderV2`` (which takes a salt generator; ``ClobClient.create_order`` does
  not let the salt or the timestamp be chosen), with two fields derived from our order:

  - ``salt`` from the client order id (:func:`order_salt`);
  - ``timestamp`` (milliseconds, signed in V2) from the order's ``ts_init`` (:func:`order_timestamp`),
    the creation time the journal keeps with the order. Not the clock at signing: then a
    restarted process could not recompute the id.

  ``metadata`` and ``builder`` are zero. The venue's id is therefore known *before* the order is
  sent: a lost answer still leaves us an id to ask about, and ``query`` recomputes it from the
  order instead of persisting a mapping. Unlike V1, no venue input (the V1 fee rate) is signed;
  the neg-risk flag still chooses the domain.
* Amounts are computed exactly (integers of 10⁻⁶ collateral / shares), not through the floats of
  the SDK's rounding helpers: an order that is off the tick or finer than the share lot (0.01)
  is refused locally, before anything is signed, instead of being rounded into a different
  order. For every order that passes, the amounts equal the SDK's own.
* Neg-risk markets settle through a different exchange contract, which is part of the EIP-712
  domain: a signature made for the wrong one is "invalid signature" at the venue. The flag is
  asked of the venue (``/neg-risk``), never assumed.
* The order is posted by :func:`post_order_payload`, not ``ClobClient.post_order``: for an order
  that matched, the SDK's ``post_order`` polls ``/data/trades`` for up to 30 s (sleeping) to
  attach settlement hashes, which would hold the order gateway and spend the request budget.
  The request itself (JSON layout, L2 headers) is the SDK's.
* Error mapping follows the gateway's one question, may the order exist? Only a definite refusal
  of the order (HTTP 400, or ``success: false``) is :class:`VenueRejected`; a duplicate, a
  delayed match or a server-side cancelled context say it may exist. Timeouts, lost connections,
  429/425/5xx and anything unclassified after the request left are retryable.
* py-clob-client-v2 sends every request through one module-level ``httpx.Client`` without a
  timeout setting or a hook. :func:`configure_transport` replaces it once per process with one
  whose timeout is ours and whose every request draws from the shared ``polymarket`` budget
  (:func:`bastion.venues.rate_limit.limiter_for`), whoever in the process makes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import py_clob_client_v2.http_helpers.helpers as _clob_http
from py_clob_client_v2.client import ClobClient
from py_clob_client_v2.clob_types import ApiCreds, OrderPayload, RequestArgs, TradeParams
from py_clob_client_v2.clob_types import OrderType as ClobOrderType
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.constants import BYTES32_ZERO
from py_clob_client_v2.endpoints import POST_ORDER
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.headers.headers import create_level_2_headers
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, SignatureTypeV2
from py_clob_client_v2.order_utils import Side as ClobSide
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2

from bastion.model.events import OrderEvent, OrderRejected
from bastion.model.fixed import Quantity
from bastion.model.instruments import Instrument
from bastion.model.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import (
    OrderStatusReport,
    VenueAuthError,
    VenueError,
    VenueRejected,
    VenueTimeout,
    VenueUnavailable,
)
from bastion.venues.rate_limit import limiter_for

log = logging.getLogger(__name__)

POLYGON = 137
VENUE = "polymarket"
ORDER_VERSION = 2  # the CTF exchange domain version this adapter signs
_TOKEN_UNITS = 10**6  # collateral (pUSD) and outcome tokens both have 6 decimals
_SHARE_LOT = Decimal("0.01")  # the CLOB's size grid (the SDK rounds sizes to 2 decimals)
_SALT_DOMAIN = b"bastion/polymarket/order-salt/v1\x00"
_SALT_BYTES = 6  # 48 bits: exact in every JSON number parser (JS-safe), unique enough per account
# 400 answers that do not prove the order is absent (Polymarket's documented texts, lower-cased)
_MAY_EXIST = ("duplicated", "delayed", "context canceled")


class OrderMayExist(VenueTimeout):
    """The venue answered in a way that says an order with this hash may exist already."""


class OrderNotSent(VenueRejected):
    """The submission failed before the order left this process: it certainly does not exist."""


class OrderUnverifiable(VenueUnavailable):
    """A journaled order without a venue id whose recomputed id the venue does not know.

    Its signed timestamp may not be the one recomputed (see :meth:`PolymarketVenue.query`), so
    "not found" does not prove it absent: the order stays unresolved instead of being dropped.
    """


def order_salt(client_order_id: str) -> int:
    """The salt of the order signed for ``client_order_id``: the venue's handle back to our id.

    A hash (not a counter) so it needs no state and survives restarts; 48 bits so the number
    stays exact in every JSON parser between us and the matching engine.
    """
    digest = hashlib.sha256(_SALT_DOMAIN + client_order_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:_SALT_BYTES], "big")


def order_timestamp(order: Order) -> int:
    """The V2 ``timestamp`` (milliseconds) signed for ``order``: its ``ts_init``, truncated.

    Part of the order hash, so it must come from the order itself: ``ts_init`` is set when the
    order is created and kept by the journal (``created_ns``). An order built without one signs 0.
    """
    return max(order.ts_init, 0) // 1_000_000


def order_amounts(side: Side, price: Decimal, size: Decimal) -> tuple[int, int]:
    """``(makerAmount, takerAmount)`` in 10⁻⁶ units: a buy gives collateral for shares.

    Exact or an error: ``size × price`` must be a whole number of collateral units, which it is
    for any size on the 0.01 lot and any price on a tick of at least 0.0001.
    """
    shares = size * _TOKEN_UNITS
    collateral = size * price * _TOKEN_UNITS
    if shares != shares.to_integral_value() or collateral != collateral.to_integral_value():
        raise ValueError(f"size {size} at price {price} is not a whole number of token units")
    if side is Side.BUY:
        return int(collateral), int(shares)
    return int(shares), int(collateral)


def exchange_address(chain_id: int, neg_risk: bool) -> str:
    """The V2 exchange contract that verifies (and whose domain signs) orders of this market."""
    cfg = get_contract_config(chain_id)
    return str(cfg.neg_risk_exchange_v2 if neg_risk else cfg.exchange_v2)


def _draw_from_budget(request: httpx.Request) -> None:
    limiter_for(VENUE).acquire()


def configure_transport(timeout: float = 10.0) -> None:
    """Give py-clob-client-v2 a transport with our timeout and the shared request budget.

    The SDK offers no other way to set its timeout or to see its requests: they all go through
    ``py_clob_client_v2.http_helpers.helpers._http_client``. The limiter is looked up per
    request, so a limiter replaced later (a config reload, a test) is the one that counts.
    """
    transport = httpx.Client(
        http2=True, timeout=httpx.Timeout(timeout), event_hooks={"request": [_draw_from_budget]}
    )
    old = _clob_http._http_client
    _clob_http._http_client = transport
    if isinstance(old, httpx.Client):
        old.close()


def post_order_payload(client: ClobClient, payload: dict[str, Any]) -> Any:
    """``POST /order`` with ``payload`` (the SDK's order JSON), L2-signed, answered as is.

    The same request ``ClobClient.post_order`` makes, without its after-work: no retry on a
    transient error, no polling of ``/data/trades`` for a matched order's settlement hashes.
    """
    client.assert_level_2_auth()
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    headers = create_level_2_headers(
        client.signer,
        client.creds,
        RequestArgs(method="POST", request_path=POST_ORDER, body=payload, serialized_body=body),
    )
    return _clob_http.post(f"{client.host}{POST_ORDER}", headers=headers, data=body)


def _error_text(exc: PolyApiException) -> str:
    msg = exc.error_msg
    if isinstance(msg, dict):
        return str(msg.get("error") or msg.get("errorMsg") or msg)
    return str(msg)


def translate(exc: Exception, *, order_refusal: bool = False) -> VenueError:
    """One py-clob-client-v2 failure as a venue error.

    ``order_refusal``: the failed request was an order submission, where a 400 is the venue's
    definite "no" (the order does not exist) unless its text says otherwise.
    """
    if isinstance(exc, VenueError):
        return exc
    if isinstance(exc, PolyApiException):
        code = exc.status_code
        text = _error_text(exc)
        if code is None:  # transport failure: the SDK raises inside ``except``, keeping the cause
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, httpx.TimeoutException):
                return VenueTimeout(f"no answer in time: {cause!r}")
            return VenueUnavailable(f"request failed: {cause!r}" if cause else text)
        detail = f"HTTP {code}: {text}"
        if code in (401, 403):
            return VenueAuthError(detail)
        if order_refusal and code == 400:
            if any(marker in text.lower() for marker in _MAY_EXIST):
                return OrderMayExist(detail)
            return VenueRejected(detail)  # including "order_version_mismatch": nothing was placed
        return VenueUnavailable(detail)  # 404 of a route, 425 engine restart, 429, 5xx, ...
    if isinstance(exc, PolyException):  # raised before any request: missing key or credentials
        return VenueAuthError(str(exc.msg))
    if isinstance(exc, httpx.TimeoutException):
        return VenueTimeout(repr(exc))
    return VenueUnavailable(f"unclassified failure: {exc!r}")


def polymarket_client(
    private_key: str,
    host: str,
    chain_id: int = POLYGON,
    creds: ApiCreds | None = None,
    funder: str | None = None,
    *,
    signature_type: int | None = None,
    timeout: float = 10.0,
) -> ClobClient:
    """A level-2 V2 ClobClient; without ``creds`` the API key is derived (or created) by L1 signature.

    Derivation is tried first because it only reads: creating a key when one exists already
    fails, and creating one for a new nonce would leave keys behind. ``signature_type`` is the
    V2 one (0 EOA, 1 proxy, 2 Gnosis safe, 3 POLY_1271 deposit wallet, whose address is ``funder``).
    """
    configure_transport(timeout)
    client = ClobClient(
        host,
        chain_id=chain_id,
        key=private_key,
        creds=creds,
        signature_type=None if signature_type is None else SignatureTypeV2(signature_type),
        funder=funder,
    )
    if creds is None:
        got: ApiCreds | None = None
        try:
            got = client.derive_api_key()
        except PolyApiException as exc:
            if exc.status_code not in (400, 404):
                raise translate(exc) from exc
        if got is None:
            try:
                got = client.create_api_key()
            except Exception as exc:
                raise translate(exc) from exc
        if got is None:
            raise VenueAuthError("the venue gave no API credentials for this key")
        client.set_api_creds(got)
    return client


@dataclass(frozen=True, slots=True)
class MarketTerms:
    """What the venue says about the token: the tick checks the price, the flag picks the domain."""

    tick: Decimal
    neg_risk: bool


@dataclass(frozen=True, slots=True)
class _Known:
    order_id: str
    quantity_raw: int
    journaled: bool = False  # recomputed from a journaled order that had no venue id


def _status_of(word: str, matched_raw: int, original_raw: int) -> OrderStatus:
    s = word.strip().upper().removeprefix("ORDER_STATUS_")
    if s in ("LIVE", "DELAYED", "UNMATCHED"):
        return OrderStatus.PARTIALLY_FILLED if matched_raw else OrderStatus.ACCEPTED
    if s == "MATCHED":
        # a resting order is MATCHED only when complete; a short MATCHED had its rest killed
        return OrderStatus.FILLED if matched_raw >= original_raw else OrderStatus.CANCELED
    if s in ("CANCELED", "CANCELLED", "INVALID"):  # INVALID: removed by the venue (resolution)
        return OrderStatus.CANCELED
    if s == "EXPIRED":
        return OrderStatus.EXPIRED
    return OrderStatus.ACCEPTED  # a word we do not know: not terminal, keep watching


class PolymarketVenue:
    """GTC limit orders on one outcome token (price in (0, 1) on the market's tick, size in shares).

    ``order_lookup`` finds an order by client id after this process forgot it (the gateway's
    journal): its recorded venue id is used, or else the id is recomputed from it. Without it,
    ``query`` knows the orders this object signed and answers None for any other id. The
    instrument should carry 6 size decimals (``size_decimals=6``) because the venue reports
    matched sizes in token units.
    """

    def __init__(
        self,
        client: ClobClient,
        instrument: Instrument,
        token_id: str,
        *,
        name: str = VENUE,
        order_lookup: Callable[[str], Order | None] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.client = client
        self.instrument = instrument
        self.token_id = str(token_id)
        self.name = name
        self._lookup = order_lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, _Known] = {}  # client order id -> what we signed under it

    # --- plumbing -----------------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            raise translate(exc) from exc

    def terms(self) -> MarketTerms:
        """Tick and neg-risk flag, asked once per token (the client caches both)."""
        tick = Decimal(str(self._call(self.client.get_tick_size, self.token_id)))
        neg_risk = bool(self._call(self.client.get_neg_risk, self.token_id))
        return MarketTerms(tick, neg_risk)

    def _qty_raw(self, text: Any) -> int:
        return Quantity.from_str(Decimal(str(text or "0")), self.instrument.size_precision).raw

    @staticmethod
    def _unsupported(order: Order) -> str | None:
        if order.order_type is not OrderType.LIMIT or order.price is None:
            return "only limit orders: Polymarket has no market orders, only marketable limits"
        if order.time_in_force is not TimeInForce.GTC:
            return f"time in force {order.time_in_force.name} is not offered by this adapter (GTC only)"
        return None

    @staticmethod
    def _off_grid(order: Order, tick: Decimal) -> str | None:
        """Why this order cannot be signed as asked (None: it can)."""
        assert order.price is not None
        price = order.price.to_decimal()
        if not tick <= price <= 1 - tick:
            return f"price {price} outside [{tick}, {1 - tick}]"
        if price % tick:
            return f"price {price} is not on the market's tick {tick}"
        size = order.quantity.to_decimal()
        if size % _SHARE_LOT:
            return f"size {size} is finer than the venue's {_SHARE_LOT}-share lot"
        return None

    def signed_order(self, order: Order, terms: MarketTerms) -> tuple[Any, str]:
        """The signed V2 order for ``order`` and its hash, the id the venue will give it."""
        assert order.price is not None
        maker_amount, taker_amount = order_amounts(
            order.side, order.price.to_decimal(), order.quantity.to_decimal()
        )
        signer = self.client.signer
        funder = str(self.client.builder.funder)
        sig_type = SignatureTypeV2(int(self.client.builder.signature_type))
        # a deposit wallet (POLY_1271) is its own order signer; its owner's key makes the signature
        order_signer = funder if sig_type is SignatureTypeV2.POLY_1271 else str(signer.address())
        salt = str(order_salt(order.client_order_id))
        builder = ExchangeOrderBuilderV2(
            exchange_address(signer.get_chain_id(), terms.neg_risk),
            signer.get_chain_id(),
            signer,
            generate_salt=lambda: salt,
            domain_version=str(ORDER_VERSION),
        )
        data = OrderDataV2(
            maker=funder,
            tokenId=self.token_id,
            makerAmount=str(maker_amount),
            takerAmount=str(taker_amount),
            side=ClobSide.BUY if order.side is Side.BUY else ClobSide.SELL,
            signer=order_signer,
            signatureType=sig_type,
            timestamp=str(order_timestamp(order)),  # a string: the builder takes "" / None as "now"
            metadata=BYTES32_ZERO,
            builder=BYTES32_ZERO,
            expiration="0",  # GTC; not signed in V2
        )
        signed = builder.build_signed_order(data)
        return signed, str(builder.build_order_hash(builder.build_order_typed_data(signed))).lower()

    def order_id(self, order: Order) -> str:
        """The venue's id of ``order``, computed without asking the venue about the order."""
        return self.signed_order(order, self.terms())[1]

    def _remember(self, cid: str, order_id: str, quantity_raw: int) -> None:
        with self._lock:
            self._known[cid] = _Known(order_id.lower(), quantity_raw)

    def _recall(self, cid: str) -> _Known | None:
        with self._lock:
            known = self._known.get(cid)
        if known is not None or self._lookup is None:
            return known
        order = self._lookup(cid)
        if order is None or order.price is None:
            return None
        if order.venue_order_id:  # set by submit before sending, journaled with the order
            found = _Known(order.venue_order_id.lower(), order.quantity.raw)
        else:
            found = _Known(self.order_id(order), order.quantity.raw, journaled=True)
        with self._lock:
            self._known.setdefault(cid, found)
        return found

    # --- VenueClient --------------------------------------------------------------------------------
    def submit(self, order: Order) -> OrderEvent | None:
        cid = order.client_order_id
        reason = self._unsupported(order)
        if reason is None:
            try:
                terms = self.terms()
            except (VenueTimeout, VenueUnavailable) as exc:
                raise OrderNotSent(f"not sent, market terms unavailable: {exc}") from exc
            reason = self._off_grid(order, terms.tick)
        if reason is not None:
            return OrderRejected(cid, order.instrument_id, self._clock(), reason)
        try:
            signed, oid = self.signed_order(order, terms)
            payload = order_to_json_v2(
                signed, self.client.creds.api_key if self.client.creds else "", ClobOrderType.GTC
            )
        except Exception as exc:
            raise OrderNotSent(f"not sent, signing failed: {exc!r}") from exc
        # known before sending: whatever happens to the answer, the order can be asked about
        self._remember(cid, oid, order.quantity.raw)
        order.venue_order_id = oid
        try:
            res = post_order_payload(self.client, payload)
        except Exception as exc:
            raise translate(exc, order_refusal=True) from exc
        if not isinstance(res, dict) or "success" not in res:
            raise VenueUnavailable(f"unreadable answer to {cid}: {res!r}")
        if res["success"] is not True:
            msg = str(res.get("errorMsg") or "refused without a message")
            if any(marker in msg.lower() for marker in _MAY_EXIST):
                raise OrderMayExist(f"{cid}: {msg}")
            raise VenueRejected(f"{cid}: {msg}")
        venue_id = str(res.get("orderID") or "")
        if venue_id and venue_id.lower() != oid:
            # the venue's id wins (it is what it will answer to), but query by a recomputed
            # hash would miss this order after a restart: loud, because it means a signing bug
            log.error("polymarket order id %s differs from the computed hash %s (%s)", venue_id, oid, cid)
            self._remember(cid, venue_id, order.quantity.raw)
            order.venue_order_id = venue_id
        return None

    def cancel(self, order: Order) -> None:
        oid = order.venue_order_id
        if not oid:
            known = self._recall(order.client_order_id)
            oid = known.order_id if known is not None else self.order_id(order)
        res = self._call(self.client.cancel_order, OrderPayload(orderID=oid))
        if not isinstance(res, dict):
            raise VenueUnavailable(f"unreadable cancel answer for {order.client_order_id}: {res!r}")
        # "not_canceled" (already matched, already canceled, never there) is not an error:
        # the next query says which, and a cancel must never be retried into a loop

    def query(self, client_order_id: str) -> OrderStatusReport | None:
        """The venue's word on one client id; None when no order with its hash exists there.

        One case stays open instead (:class:`OrderUnverifiable`): a journaled order without a
        venue id whose recomputed id is unknown to the venue. That order was journaled by its
        intent only (a crash between intent and answer), and the journal may have rebuilt its
        ``ts_init`` from the intent's time, not the one that was signed.
        """
        known = self._recall(client_order_id)
        if known is None:
            return None  # never signed under this id, so never sent
        oid = known.order_id
        try:
            doc = self.client.get_order(oid)
        except PolyApiException as exc:
            # documented override: any "not found" text is a 404; a 404 of a wrong route is not
            if not (exc.status_code == 404 and "not found" in _error_text(exc).lower()):
                raise translate(exc) from exc
            doc = None
        except Exception as exc:
            raise translate(exc) from exc
        if isinstance(doc, dict) and doc.get("id"):
            if str(doc["id"]).lower() != oid:
                raise VenueUnavailable(f"asked for {oid}, the venue answered about {doc['id']}")
            matched = self._qty_raw(doc.get("size_matched"))
            original = self._qty_raw(doc.get("original_size")) or known.quantity_raw
            status = _status_of(str(doc.get("status", "")), matched, original)
            return OrderStatusReport(client_order_id, status, matched, str(doc["id"]))
        if doc not in (None, "", "null") and not isinstance(doc, dict):
            raise VenueUnavailable(f"unreadable order answer for {oid}: {doc!r}")
        # not listed: never arrived, or finished and dropped from the order view (seen for matched
        # orders); only the trade history can tell those apart
        matched_raw = self._matched_in_trades(oid)
        if matched_raw is None:
            if known.journaled:
                raise OrderUnverifiable(
                    f"{client_order_id}: no order {oid} at the venue, but its signed timestamp "
                    "is not on record; it may exist under another id"
                )
            return None
        status = OrderStatus.FILLED if matched_raw >= known.quantity_raw else OrderStatus.CANCELED
        return OrderStatusReport(client_order_id, status, matched_raw, oid)

    def _matched_in_trades(self, oid: str) -> int | None:
        trades = self._call(self.client.get_trades, TradeParams(asset_id=self.token_id))
        total = 0
        seen = False
        for t in trades or []:
            if str(t.get("taker_order_id", "")).lower() == oid:
                total += self._qty_raw(t.get("size"))
                seen = True
            for m in t.get("maker_orders") or []:
                if str(m.get("order_id", "")).lower() == oid:
                    total += self._qty_raw(m.get("matched_amount"))
                    seen = True
        return total if seen else None

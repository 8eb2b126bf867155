"""A :class:`~bastion.venues.base.VenueClient` for Hyperliquid perpetuals over the pinned ccxt.

Only Hyperliquid's quirks live here; the shape follows :mod:`bastion.venues.ccxt_venue`.

* **Client ids.** Hyperliquid accepts only a 128-bit hex ``cloid``, while ours are free text. The
  cloid is therefore *derived* (the first 16 bytes of SHA-256 of our id), never stored: a process
  that crashed between sending an order and recording it computes the same cloid again and finds
  the order with ``orderStatus``, which takes a cloid wherever it takes an oid.
* **No builder fee, no referrer.** ccxt's ``create_order``/``cancel_order`` first sign, on the
  user's account, an approval of a fee to ccxt's builder address and ccxt's referral code. A
  trading system must not do that behind the operator's back, so the adapter asks ccxt only to
  build and sign the order/cancel request (``create_orders_request``, ``cancel_orders_request``)
  and posts it through the implicit ``/exchange`` endpoint itself.
* **Exact numbers.** Prices and sizes go out as the exact text of our fixed-point values, and
  come back from the raw response strings (``origSz``/``sz``), never through ccxt's floats. ccxt
  would silently *round* a price to Hyperliquid's grid (5 significant figures, at most
  6 - szDecimals decimals); if its rounding would change ours, the order is refused locally,
  before anything is sent, rather than worked at a price nobody asked for.
* **Errors** follow the one question the gateway asks: may the order exist? Only the venue's
  definite refusals (a per-order ``{"error": ...}`` status inside a 200 answer, which ccxt raises
  as InvalidOrder/InsufficientFunds or, for a wording it does not know, a plain ExchangeError)
  become :class:`VenueRejected`; timeouts, lost connections, 5xx, rate limits and anything else
  say "it may" (retryable), and the gateway verifies by client id.
* **A wrong key is an auth error, not a rejection.** Hyperliquid does not check a key: it
  recovers whichever address signed the action and answers "User or API Wallet 0x... does not
  exist." (ccxt: InvalidOrder). Nothing will work until an operator fixes the key, so that
  answer is a :class:`VenueAuthError`.
* **One budget.** Every request first draws its Hyperliquid weight from the process-wide limiter
  (``limiter_for("hyperliquid")``), so the order path, pollers and reconcilers share one
  allowance; ccxt's own throttle is off in :func:`hyperliquid_client` so nothing counts twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal
from typing import Any

import ccxt

from bastion.model.events import OrderEvent, OrderRejected
from bastion.model.fixed import Quantity
from bastion.model.instruments import Instrument, InstrumentKind
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

VENUE = "hyperliquid"

# Hyperliquid's documented request weights (1200 per minute per address): every /exchange action
# weighs 1; these cheap /info queries weigh 2 and every other /info query 20. The registry's rate
# (20 per second) is that same allowance, so the limiter is charged in weight, not in requests.
_EXCHANGE_WEIGHT = 1.0
_INFO_WEIGHT = {
    "l2Book": 2.0,
    "allMids": 2.0,
    "clearinghouseState": 2.0,
    "orderStatus": 2.0,
    "spotClearinghouseState": 2.0,
    "exchangeStatus": 2.0,
}
_DEFAULT_INFO_WEIGHT = 20.0

_TIF = {TimeInForce.GTC: "Gtc", TimeInForce.IOC: "Ioc", TimeInForce.POST_ONLY: "Alo"}
# the venue's words for "this address signed, but no such user or agent exists": a wrong key
_UNKNOWN_SIGNER = "User or API Wallet"


def cloid_for(client_order_id: str) -> str:
    """Hyperliquid's cloid for our client order id: stable across processes and versions."""
    return "0x" + hashlib.sha256(client_order_id.encode("utf-8")).digest()[:16].hex()


def _wire(value: Decimal) -> str:
    """The venue's number text: plain notation, no trailing zeros ("27121", "0.001")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _status_of(word: str, filled_raw: int) -> OrderStatus:
    if word in ("open", "triggered"):
        return OrderStatus.PARTIALLY_FILLED if filled_raw else OrderStatus.ACCEPTED
    if word == "filled":
        return OrderStatus.FILLED
    if word.endswith("Rejected") or word == "rejected":
        return OrderStatus.REJECTED
    if word.endswith("Canceled") or word in ("canceled", "scheduledCancel"):
        return OrderStatus.CANCELED
    return OrderStatus.ACCEPTED  # a word we do not know: not terminal, keep watching


def _per_order_error(exc: ccxt.BaseError) -> str | None:
    """The per-order ``{"error": ...}`` of a 200 ``status: ok`` answer that ccxt raised on."""
    text = str(exc)
    start = text.find("{")
    if start < 0:
        return None
    try:
        body = json.loads(text[start:])
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("status") != "ok":
        return None
    response = body.get("response")
    data = response.get("data") if isinstance(response, dict) else None
    statuses = data.get("statuses") if isinstance(data, dict) else None
    if not isinstance(statuses, list):
        return None
    for status in statuses:
        if isinstance(status, dict) and isinstance(status.get("error"), str):
            return str(status["error"])
    return None


def _translate(exc: ccxt.BaseError, *, submitting: bool) -> VenueError:
    """ccxt's error as a venue error; only a submit can be *rejected* (a definite refusal)."""
    msg = str(exc)
    if isinstance(exc, ccxt.AuthenticationError) or _UNKNOWN_SIGNER in msg:
        return VenueAuthError(msg)
    if isinstance(exc, ccxt.RequestTimeout):
        return VenueTimeout(msg)
    if isinstance(exc, ccxt.NetworkError):  # ExchangeNotAvailable, DDoSProtection, RateLimitExceeded
        return VenueUnavailable(msg)
    if submitting and (
        isinstance(exc, ccxt.InvalidOrder | ccxt.InsufficientFunds | ccxt.BadRequest | ccxt.BadSymbol)
        or _per_order_error(exc) is not None
    ):
        return VenueRejected(msg)
    # an error we cannot classify: the order may exist, so let the gateway verify it
    return VenueUnavailable(msg)


def hyperliquid_client(
    wallet_address: str, private_key: str, base_url: str | None = None, timeout_ms: int = 10_000
) -> ccxt.hyperliquid:
    """A synchronous ccxt Hyperliquid client for the adapter.

    ccxt's throttle is off because :mod:`bastion.venues.rate_limit` is the one budget; the
    builder-fee and referrer options are off so that nothing but our own orders is ever signed
    (the adapter does not call the ccxt methods that would send them anyway). ``base_url`` points
    both API roots somewhere else: a local contract server in tests.
    """
    ex = ccxt.hyperliquid(
        {
            "walletAddress": wallet_address,
            "privateKey": private_key,
            "enableRateLimit": False,
            "timeout": timeout_ms,
            "options": {"builderFee": False, "approvedBuilderFee": False, "refSet": True},
        }
    )
    if base_url is not None:
        base = base_url.rstrip("/")
        ex.urls["api"] = {**ex.urls["api"], "public": base, "private": base}
    return ex


def instrument_for(market: dict[str, Any], venue: str = "HYPERLIQUID") -> Instrument:
    """The Bastion instrument of one ccxt Hyperliquid perp market (``BTC/USDC:USDC``).

    The lot is the venue's own ``szDecimals``; the tick is ccxt's price precision, which for
    Hyperliquid is derived from the mark price (5 significant figures), so it holds near the
    price the market was loaded at: the adapter still refuses any price ccxt would round.
    """
    info = market["info"]
    lot = Decimal(1).scaleb(-int(str(info["szDecimals"])))
    tick = Decimal(str(market["precision"]["price"]))
    min_cost = ((market.get("limits") or {}).get("cost") or {}).get("min")
    return Instrument(
        symbol=f"{market['base']}{market['quote']}-PERP",
        venue=venue,
        kind=InstrumentKind.LINEAR_PERPETUAL,
        base=str(market["base"]),
        quote=str(market["quote"]),
        settle=str(market.get("settle") or market["quote"]),
        tick_size=tick,
        lot_size=lot,
        min_notional=Decimal(str(min_cost)) if min_cost is not None else Decimal(0),
        maker_fee=Decimal(str(market.get("maker") or 0)),
        taker_fee=Decimal(str(market.get("taker") or 0)),
    )


class HyperliquidVenue:
    """One Hyperliquid perp; ``symbol`` is ccxt's (``BTC/USDC:USDC``), markets already loaded."""

    def __init__(
        self, exchange: ccxt.hyperliquid, instrument: Instrument, symbol: str, name: str = VENUE
    ) -> None:
        self.exchange = exchange
        self.instrument = instrument
        self.symbol = symbol
        self.name = name
        self.wallet = str(exchange.walletAddress)
        self.limiter = limiter_for(VENUE)

    # --- plumbing --------------------------------------------------------------------------------
    def _info(self, request: dict[str, Any]) -> Any:
        self.limiter.acquire(_INFO_WEIGHT.get(str(request.get("type")), _DEFAULT_INFO_WEIGHT))
        return self.exchange.public_post_info(request)

    def _exchange(self, request: dict[str, Any]) -> Any:
        self.limiter.acquire(_EXCHANGE_WEIGHT)
        return self.exchange.private_post_exchange(request)

    def _refused_locally(self, order: Order, reason: str) -> OrderEvent:
        return OrderRejected(order.client_order_id, order.instrument_id, time.time_ns(), reason)

    def _qty_raw(self, text: Any) -> int:
        return Quantity.from_str(str(text), self.instrument.size_precision).raw

    # --- VenueClient -----------------------------------------------------------------------------
    def submit(self, order: Order) -> OrderEvent | None:
        if order.order_type is not OrderType.LIMIT or order.price is None:
            # a Hyperliquid "market" order is an IOC limit at a slippage price ccxt would invent
            return self._refused_locally(order, "hyperliquid: only limit orders (send an IOC limit)")
        tif = _TIF.get(order.time_in_force)
        if tif is None:
            return self._refused_locally(order, f"hyperliquid: no {order.time_in_force.name} orders")
        px = _wire(order.price.to_decimal())
        sz = _wire(order.quantity.to_decimal())
        params: dict[str, Any] = {"clientOrderId": cloid_for(order.client_order_id), "timeInForce": tif}
        if order.reduce_only:
            params["reduceOnly"] = True
        spec = {
            "symbol": self.symbol,
            "type": "limit",
            "side": "buy" if order.side is Side.BUY else "sell",
            "amount": sz,
            "price": px,
            "params": params,
        }
        try:
            request = self.exchange.create_orders_request([spec], {})
        except ccxt.AuthenticationError as exc:
            raise VenueAuthError(str(exc)) from exc
        except ccxt.BaseError as exc:  # built locally: nothing has been sent
            return self._refused_locally(order, str(exc))
        wire = request["action"]["orders"][0]
        if wire["p"] != px or wire["s"] != sz:
            return self._refused_locally(
                order, f"hyperliquid grid would change {sz}@{px} into {wire['s']}@{wire['p']}"
            )
        try:
            res = self._exchange(request)
        except ccxt.BaseError as exc:
            raise _translate(exc, submitting=True) from exc
        status = _first_status(res)
        placed = (status.get("resting") or status.get("filled")) if isinstance(status, dict) else None
        if not isinstance(placed, dict) or placed.get("oid") is None:
            # an answer we cannot read: the order may well exist, so the gateway must verify
            raise VenueUnavailable(f"hyperliquid: unreadable order answer {res!r}")
        order.venue_order_id = str(placed["oid"])
        return None

    def cancel(self, order: Order) -> None:
        try:
            request = self.exchange.cancel_orders_request(
                [], self.symbol, {"clientOrderId": cloid_for(order.client_order_id)}
            )
            self._exchange(request)
        except ccxt.OrderNotFound:
            return  # "never placed, already canceled, or filled": the status query says which
        except ccxt.BaseError as exc:
            raise _translate(exc, submitting=False) from exc

    def query(self, client_order_id: str) -> OrderStatusReport | None:
        """The venue's word on one client id; None only when the venue says it has no such order."""
        request = {"type": "orderStatus", "user": self.wallet, "oid": cloid_for(client_order_id)}
        try:
            res = self._info(request)
        except ccxt.OrderNotFound:  # {"status": "unknownOid"}
            return None
        except ccxt.BaseError as exc:
            raise _translate(exc, submitting=False) from exc
        try:
            entry = res["order"]
            info = entry["order"]
            filled = self._qty_raw(info["origSz"]) - self._qty_raw(info["sz"])
            word = str(entry["status"])
            oid = str(info["oid"])
        except (KeyError, TypeError, ValueError) as exc:
            raise VenueUnavailable(f"hyperliquid: unreadable orderStatus answer {res!r}") from exc
        return OrderStatusReport(client_order_id, _status_of(word, filled), filled, oid)


def _first_status(res: Any) -> Any:
    try:
        return res["response"]["data"]["statuses"][0]
    except (KeyError, IndexError, TypeError):
        return None

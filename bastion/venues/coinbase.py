"""Coinbase Advanced Trade (v3) as a :class:`~bastion.venues.base.VenueClient`, over the pinned
synchronous ``ccxt.coinbase``; only what is peculiar to Coinbase lives here.

Why it looks the way it does:

* Orders go out with *our* client order id as Coinbase's ``client_order_id`` (ccxt would otherwise
  invent ``ccxt-<uuid>``), so after a crash or a lost answer the venue can still be asked "do you
  have chaos-17?". Coinbase has no lookup by client id (the query parameter on Get Order is
  deprecated), so a client id whose venue id we never learnt is found by listing the product's
  orders newest first, page by page, until it turns up or the history ends: ``None`` is only
  said after the venue has shown us every order it has for the product.
* The order is sent through ccxt's signed implicit endpoint with the exact decimal text of our
  fixed-point size and price; ccxt's ``create_order`` takes floats and re-formats them. Everything
  read back (sizes, prices, fees) is the venue's own decimal text, turned into ``Quantity``/
  ``Price`` exactly (a fee is rounded to the money precision, like the engine's own fees), never
  ccxt's float-parsed structures.
* Error mapping follows the one distinction the gateway cares about: may the order exist? Network
  trouble, 5xx, rate limits and anything unrecognised say "it may" (retryable: the gateway keeps
  the money reserved and verifies by client id). Only errors that prove the venue refused the
  order (ccxt's InsufficientFunds, InvalidOrder, BadRequest, BadSymbol) become
  :class:`VenueRejected`. For a repeated client id Coinbase is documented to answer with the
  order it already has (so a retried submit is idempotent); were it to answer with an error
  instead, that error is unclassified and so "may exist", which is safe too.
* Coinbase answers a cancel it will not do with ``success: false`` and a reason code whose meaning
  we have not seen in traffic; rather than trust our reading of those codes, a refused cancel is
  followed by a status read: finished or unknown orders are done with, a live one is a retryable
  failure.
* Every HTTP request, including ccxt's own ``load_markets`` traffic, first draws from the
  process-wide ``coinbase`` budget (:func:`bastion.venues.rate_limit.limiter_for`): Coinbase counts
  requests per key, and ccxt's own throttle only knows about its one instance.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar

import ccxt

from bastion.model.events import OrderEvent
from bastion.model.fixed import Price, Quantity
from bastion.model.instruments import Instrument
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import (
    OrderStatusReport,
    VenueUnavailable,
)
from bastion.venues.ccxt_errors import ccxt_call, venue_error
from bastion.venues.rate_limit import limiter_for

T = TypeVar("T")

VENUE = "coinbase"
_PAGE = 100  # orders per page when searching by client id
_LIMITED = "_bastion_rate_limited"

# Coinbase's order status words; the ones not listed (QUEUED, PENDING, CANCEL_QUEUED, unknown)
# are not terminal, so they are reported as live and watched again
_TERMINAL = {
    "FILLED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELED,
    "EXPIRED": OrderStatus.EXPIRED,
    "FAILED": OrderStatus.REJECTED,
}


def draw_from_shared_limiter(exchange: Any, venue: str = VENUE) -> None:
    """Make every HTTP request of ``exchange`` wait for the venue's shared budget first.

    ``fetch`` is the one place ccxt's synchronous client sends a request from, so wrapping it
    covers implicit endpoints, unified methods and ``load_markets`` alike. The request's JWT is
    signed before the wait; it stays valid for 120 s, far longer than the budget makes anyone
    wait. Idempotent.
    """
    if getattr(exchange, _LIMITED, False):
        return
    send = exchange.fetch

    def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        limiter_for(venue).acquire()  # looked up per request: a reset registry is honoured
        return send(url, method, headers, body)

    exchange.fetch = fetch
    setattr(exchange, _LIMITED, True)


def coinbase_client(api_key: str, api_secret_pem: str, base_url: str | None = None) -> Any:
    """A ``ccxt.coinbase`` for a CDP key (``organizations/.../apiKeys/...`` + EC P-256 PEM).

    ccxt's per-instance throttle is switched off because the shared limiter replaces it (two
    throttled instances would each believe they own the whole budget). ``base_url`` repoints
    only the REST base, so signing and parsing stay exactly what production runs.
    """
    ex = ccxt.coinbase({"apiKey": api_key, "secret": api_secret_pem, "enableRateLimit": False})
    if base_url is not None:
        ex.urls["api"] = {**ex.urls["api"], "rest": base_url.rstrip("/")}
    draw_from_shared_limiter(ex)
    return ex


def _decimal(value: Any) -> Decimal:
    """The venue's decimal text as a Decimal; Coinbase sends numbers as strings."""
    if isinstance(value, float):  # only if a field ever arrives as a JSON number: its shortest text
        return Decimal(repr(value))
    text = str(value) if value is not None else ""
    return Decimal(text) if text else Decimal(0)


def _ns(text: str) -> int:
    """An RFC 3339 UTC time with up to nanosecond digits, exactly, as nanoseconds."""
    body = text.rstrip("Z")
    whole, _, frac = body.partition(".")
    seconds = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9])


def _status_of(info: dict[str, Any], filled_raw: int) -> OrderStatus:
    status = _TERMINAL.get(str(info.get("status", "")))
    if status is not None:
        return status
    return OrderStatus.PARTIALLY_FILLED if filled_raw else OrderStatus.ACCEPTED


class CoinbaseVenue:
    """One instrument on Coinbase Advanced Trade; ``symbol`` is ccxt's (``BTC/USDC``)."""

    def __init__(
        self, exchange: Any, instrument: Instrument, symbol: str, name: str = VENUE, page_size: int = _PAGE
    ) -> None:
        draw_from_shared_limiter(exchange)
        self.exchange = exchange
        self.instrument = instrument
        self.symbol = symbol
        self.name = name
        self.page_size = page_size
        self._product: str | None = None
        self._venue_id_of: dict[str, str] = {}  # client order id -> Coinbase order id

    # --- plumbing --------------------------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one ccxt call, translating its errors to the venue errors (reads and cancels)."""
        return ccxt_call(fn, *args)

    def product_id(self) -> str:
        """Coinbase's product id (``BTC-USDC``) of our symbol, from the loaded markets."""
        if self._product is None:
            if not self.exchange.markets:
                self.call(self.exchange.load_markets)
            market = self.call(self.exchange.market, self.symbol)
            self._product = str(market["id"])
        return self._product

    def _qty(self, text: Any) -> Quantity:
        return Quantity.from_str(_decimal(text), self.instrument.size_precision)

    def _configuration(self, order: Order) -> dict[str, Any]:
        size = str(order.quantity.to_decimal())
        if order.order_type is OrderType.MARKET:
            return {"market_market_ioc": {"base_size": size}}
        assert order.price is not None
        price = str(order.price.to_decimal())
        if order.time_in_force is TimeInForce.IOC:
            return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
        if order.time_in_force is TimeInForce.FOK:
            return {"limit_limit_fok": {"base_size": size, "limit_price": price}}
        post_only = order.time_in_force is TimeInForce.POST_ONLY
        return {"limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": post_only}}

    # --- VenueClient -------------------------------------------------------------------------------
    def submit(self, order: Order) -> OrderEvent | None:
        request = {
            "client_order_id": order.client_order_id,
            "product_id": self.product_id(),
            "side": "BUY" if order.side is Side.BUY else "SELL",
            "order_configuration": self._configuration(order),
        }
        try:
            res = self.exchange.v3PrivatePostBrokerageOrders(request)
        except ccxt.BaseError as exc:
            raise venue_error(exc, submitting=True) from exc
        answer = res if isinstance(res, dict) else {}
        placed = answer.get("success_response") or {}
        venue_id = str(placed.get("order_id") or answer.get("order_id") or "")
        if answer.get("success") is not True or not venue_id:
            # ccxt raises for every failure body it recognises; an answer that is neither a
            # success nor a recognised refusal proves nothing, so the order may exist
            raise VenueUnavailable(f"coinbase gave no order id for {order.client_order_id}: {answer!r}")
        order.venue_order_id = venue_id
        self._venue_id_of[order.client_order_id] = venue_id
        return None

    def cancel(self, order: Order) -> None:
        cid = order.client_order_id
        venue_id = order.venue_order_id or self._venue_id_of.get(cid, "")
        if not venue_id:
            found = self.query(cid)
            if found is None:
                return  # the venue never had it: nothing to cancel
            venue_id = found.venue_order_id
        res = self.call(self.exchange.v3PrivatePostBrokerageOrdersBatchCancel, {"order_ids": [venue_id]})
        results = res.get("results") if isinstance(res, dict) else None
        result = results[0] if isinstance(results, list) and results else {}
        if result.get("success") is True:
            return
        report = self.query(cid)
        if report is None or report.status.is_terminal:
            return  # already finished (or never there): the status read says which
        raise VenueUnavailable(f"coinbase did not cancel {cid}: {result.get('failure_reason', result)}")

    def query(self, client_order_id: str) -> OrderStatusReport | None:
        """The venue's word on one client id; None when it has never had such an order."""
        info = self.order_info(client_order_id)
        if info is None:
            return None
        filled = self._qty(info.get("filled_size")).raw
        return OrderStatusReport(client_order_id, _status_of(info, filled), filled, str(info["order_id"]))

    # --- reads -------------------------------------------------------------------------------------
    def order_info(self, client_order_id: str) -> dict[str, Any] | None:
        """The raw order record Coinbase keeps under our client id, or None."""
        venue_id = self._venue_id_of.get(client_order_id)
        if venue_id:
            res = self.call(
                self.exchange.v3PrivateGetBrokerageOrdersHistoricalOrderId, {"order_id": venue_id}
            )
            info = res.get("order") if isinstance(res, dict) else None
            if isinstance(info, dict) and info.get("client_order_id") == client_order_id:
                return info
        info = self._search(client_order_id)
        if info is not None:
            self._venue_id_of[client_order_id] = str(info["order_id"])
        return info

    def _search(self, client_order_id: str) -> dict[str, Any] | None:
        """Walk the product's order history, newest first, to the first record with this id."""
        params: dict[str, Any] = {"product_ids": [self.product_id()], "limit": self.page_size}
        while True:
            res = self.call(self.exchange.v3PrivateGetBrokerageOrdersHistoricalBatch, dict(params))
            page = res.get("orders") if isinstance(res, dict) else None
            for info in page or []:
                if isinstance(info, dict) and info.get("client_order_id") == client_order_id:
                    return info
            cursor = str(res.get("cursor") or "") if isinstance(res, dict) else ""
            if not page or not cursor or res.get("has_next") is False:
                return None
            params["cursor"] = cursor

    def fills(self, client_order_id: str) -> list[Fill]:
        """Every execution of one order (all pages), exact and keyed by Coinbase's trade id."""
        info = self.order_info(client_order_id)
        if info is None:
            return []
        params: dict[str, Any] = {"order_ids": [str(info["order_id"])], "limit": self.page_size}
        out: dict[str, Fill] = {}
        while True:
            res = self.call(self.exchange.v3PrivateGetBrokerageOrdersHistoricalFills, dict(params))
            page = res.get("fills") if isinstance(res, dict) else None
            for t in page or []:
                fill = self.fill_of(t, client_order_id)
                out[fill.trade_id] = fill
            cursor = str(res.get("cursor") or "") if isinstance(res, dict) else ""
            if not page or not cursor:
                return sorted(out.values(), key=lambda f: (f.ts_event, f.trade_id))
            params["cursor"] = cursor

    def fill_of(self, t: dict[str, Any], client_order_id: str) -> Fill:
        inst = self.instrument
        return Fill(
            client_order_id=client_order_id,
            instrument_id=inst.id,
            side=Side.BUY if str(t["side"]).upper() == "BUY" else Side.SELL,
            price=Price.from_str(_decimal(t["price"]), inst.price_precision),
            quantity=self._qty(t["size"]),
            # Coinbase's commission may carry more digits than our money precision: it is rounded
            # half-even there, as every fee the engine computes itself is (Instrument.fee_raw)
            fee=inst.money(Fraction(_decimal(t.get("commission")))),
            liquidity=Liquidity.MAKER if t.get("liquidity_indicator") == "MAKER" else Liquidity.TAKER,
            ts_event=_ns(str(t["trade_time"])),
            trade_id=str(t["trade_id"]),
        )

    def balances(self) -> dict[str, Fraction]:
        """Account balances by currency code (BTC, USDC), exact, summed over wallets."""
        out: dict[str, Fraction] = {}
        params: dict[str, Any] = {"limit": 250}
        while True:
            res = self.call(self.exchange.v2PrivateGetAccounts, dict(params))
            for account in res.get("data") or []:
                amount = account.get("balance") or {}
                code = self.exchange.safe_currency_code(amount.get("currency"))
                out[code] = out.get(code, Fraction(0)) + Fraction(_decimal(amount.get("amount")))
            after = (res.get("pagination") or {}).get("next_starting_after")
            if not after:
                return out
            params["starting_after"] = after

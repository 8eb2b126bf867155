"""A :class:`~bastion.venues.base.VenueClient` over a synchronous ccxt exchange (Kraken first).

Why it looks the way it does:

* Orders go out through ``create_order`` with the client order id as Kraken's ``cl_ord_id`` (the
  pinned ccxt maps its ``clientOrderId`` param to ``cl_ord_id`` for Kraken), so the venue itself
  can be asked "do you have chaos-17?" after a crash or a lost answer.
* Everything read back (orders, trades, balances) is read from the venue's raw text through
  ccxt's signed implicit endpoints, not from ccxt's float-parsed structures: a fill is booked
  exactly (``Price``/``Quantity``/``Money`` from the strings) and keyed by the venue's trade id,
  which is what makes recording it idempotent.
* Error mapping follows the one distinction the gateway cares about: may the order exist?
  Network trouble, 5xx, rate limits and any error we do not recognise on submit all say "it
  may" (retryable: the gateway keeps the money reserved and verifies by client id). Only
  errors that prove the venue refused the order become :class:`VenueRejected`. A duplicate
  client id means the venue already HAS an order under that id (a retry of something it
  processed), so it is :class:`OrderMayExist`, never a rejection that would release money.
* Kraken takes a ``cl_ord_id`` only as a UUID or as free text of at most 18 printable ASCII
  characters, and refuses the whole order otherwise; our ids (``<strategy id>-<sequence>``) can be
  longer. Such an id goes out as a name-based UUID of it (:func:`venue_client_id`): the same id
  always maps to the same UUID, in any process, so a retry is still a duplicate and a lost answer
  is still found by client id. Ids Kraken accepts go out unchanged.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar

import ccxt

from bastion.model.events import (
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from bastion.model.fixed import Money, Price, Quantity
from bastion.model.instruments import Instrument
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType, Side, TimeInForce
from bastion.venues.base import (
    OrderStatusReport,
    VenueError,
    VenueTimeout,
    VenueUnavailable,
)
from bastion.venues.ccxt_errors import ccxt_call, venue_error
from bastion.venues.retry import with_retries

T = TypeVar("T")

_NS = 1_000_000_000
_PAGE = 50  # Kraken pages ClosedOrders / TradesHistory by 50
_DUPLICATE = "Duplicate order"
# Kraken's cl_ord_id formats: a long or short (32 hex) UUID, or free text up to 18 printable ASCII
_CL_ORD_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)
_CL_ORD_TEXT = re.compile(r"[\x21-\x7e]{1,18}")
_CL_ORD_NAMESPACE = uuid.UUID("5b1d0c6e-8f4a-5d2e-9c7b-3a6f0e1d2c4b")  # fixed: ids must not change


class OrderMayExist(VenueTimeout):
    """The venue answered in a way that says an order under this client id exists already."""


def venue_client_id(client_order_id: str) -> str:
    """The ``cl_ord_id`` sent to the venue for ``client_order_id``: itself if Kraken accepts it,
    else its name-based UUID (32 hex digits), the same in every process."""
    if _CL_ORD_UUID.fullmatch(client_order_id) or _CL_ORD_TEXT.fullmatch(client_order_id):
        return client_order_id
    return uuid.uuid5(_CL_ORD_NAMESPACE, client_order_id).hex


def _cl_ord_key(venue_id: str) -> str:
    """A venue cl_ord_id compared as Kraken does: a UUID in either spelling is one id."""
    return venue_id.replace("-", "").lower() if _CL_ORD_UUID.fullmatch(venue_id) else venue_id


def _seconds_text(ns: int) -> str:
    """Kraken's ``start``: decimal seconds, exact to the nanosecond (no float rounding)."""
    return f"{ns // _NS}.{ns % _NS:09d}"


def _ns(seconds: Any) -> int:
    return int(Decimal(str(seconds)) * _NS)


def _status_of(info: dict[str, Any], filled_raw: int) -> OrderStatus:
    s = str(info.get("status", ""))
    if s in ("pending", "open"):
        return OrderStatus.PARTIALLY_FILLED if filled_raw else OrderStatus.ACCEPTED
    if s == "closed":
        return OrderStatus.FILLED
    if s == "canceled":
        return OrderStatus.CANCELED
    if s == "expired":
        return OrderStatus.EXPIRED
    return OrderStatus.ACCEPTED  # unknown word: not terminal, keep watching


class CcxtVenue:
    """One instrument on one ccxt exchange; ``symbol`` is ccxt's (``BTC/USDT``)."""

    def __init__(self, exchange: ccxt.Exchange, instrument: Instrument, symbol: str, name: str) -> None:
        self.exchange = exchange
        self.instrument = instrument
        self.symbol = symbol
        self.name = name
        # Kraken wants a strictly increasing nonce per key, across processes: microseconds keep a
        # restarted engine (or a checker) ahead of anything a killed one sent in the same second
        exchange.nonce = lambda: time.time_ns() // 1000
        self._cid_of: dict[str, str] = {}  # venue txid -> client order id
        self._cid_by_venue: dict[str, str] = {}  # _cl_ord_key(sent cl_ord_id) -> our id, if they differ
        self._live: set[str] = set()  # txids not yet seen terminal (by this process)
        self._acked: set[str] = set()
        self._done: set[str] = set()
        self.read_attempts = 3  # reads retry with backoff; submits never do (see venues.retry)

    # --- plumbing --------------------------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one ccxt call, translating its errors to the venue errors (reads and cancels)."""
        return ccxt_call(fn, *args)

    def _private(self, method: str, params: dict[str, Any]) -> Any:
        """A signed read: idempotent, so retried with backoff on retryable errors."""
        fn = getattr(self.exchange, method)
        doc = with_retries(
            lambda: self.call(fn, params), attempts=self.read_attempts, base_s=0.1, what=method
        )
        return doc.get("result", {}) if isinstance(doc, dict) else {}

    def _venue_cid(self, client_order_id: str) -> str:
        vid = venue_client_id(client_order_id)
        if vid != client_order_id:
            self._cid_by_venue[_cl_ord_key(vid)] = client_order_id
        return vid

    def _learn(self, txid: str, info: dict[str, Any]) -> str | None:
        cid = info.get("cl_ord_id")
        if cid:
            self._cid_of[txid] = self._cid_by_venue.get(_cl_ord_key(str(cid)), str(cid))
        return self._cid_of.get(txid)

    def _filled_raw(self, info: dict[str, Any]) -> int:
        return Quantity.from_str(str(info.get("vol_exec", "0")), self.instrument.size_precision).raw

    # --- VenueClient -------------------------------------------------------------------------------
    def submit(self, order: Order) -> OrderEvent | None:
        params: dict[str, Any] = {"clientOrderId": self._venue_cid(order.client_order_id)}
        if order.time_in_force is TimeInForce.POST_ONLY:
            params["postOnly"] = True
        elif order.time_in_force is TimeInForce.IOC and order.order_type is OrderType.LIMIT:
            params["timeInForce"] = "IOC"
        kind = "limit" if order.order_type is OrderType.LIMIT else "market"
        side = "buy" if order.side is Side.BUY else "sell"
        price = float(order.price.to_decimal()) if order.price is not None else None
        amount = float(order.quantity.to_decimal())
        try:
            res = self.exchange.create_order(self.symbol, kind, side, amount, price, params)
        except ccxt.BaseError as exc:
            if _DUPLICATE in str(exc):
                raise OrderMayExist(f"{order.client_order_id} already at the venue: {exc}") from exc
            raise venue_error(exc, submitting=True) from exc
        txid = str(res.get("id") or "")
        if txid:
            order.venue_order_id = txid
            self._cid_of[txid] = order.client_order_id
            self._live.add(txid)
        return None

    def cancel(self, order: Order) -> None:
        try:
            vid = self._venue_cid(order.client_order_id)
            self.call(self.exchange.cancel_order, "", self.symbol, {"clientOrderId": vid})
        except VenueUnavailable as exc:
            if "Unknown order" in str(exc):
                return  # already finished (or never there): the status poll says which
            raise

    def query(self, client_order_id: str) -> OrderStatusReport | None:
        """The venue's word on one client id; None when it has never had such an order."""
        vid = self._venue_cid(client_order_id)
        found: dict[str, Any] = {}
        res = self._private("private_post_openorders", {"cl_ord_id": vid})
        found.update(res.get("open", {}))
        if not found:
            res = self._private("private_post_closedorders", {"cl_ord_id": vid})
            found.update(res.get("closed", {}))
        key = _cl_ord_key(vid)
        found = {t: i for t, i in found.items() if _cl_ord_key(str(i.get("cl_ord_id") or "")) == key}
        if not found:
            return None
        txid = max(found, key=lambda t: Decimal(str(found[t].get("opentm", 0))))
        info = found[txid]
        self._learn(txid, info)
        filled = self._filled_raw(info)
        status = _status_of(info, filled)
        if not status.is_terminal:
            self._live.add(txid)
        return OrderStatusReport(client_order_id, status, filled, txid)

    # --- what happened since -----------------------------------------------------------------------
    def open_orders_info(self) -> dict[str, dict[str, Any]]:
        res = self._private("private_post_openorders", {})
        out: dict[str, dict[str, Any]] = res.get("open", {})
        return out

    def query_orders(self, txids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = sorted(set(txids))
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), _PAGE):
            out.update(self._private("private_post_queryorders", {"txid": ",".join(ids[i : i + _PAGE])}))
        return out

    def all_orders(self) -> dict[str, dict[str, Any]]:
        """Every order the account ever had (open and closed, all pages): for audits."""
        out = dict(self.open_orders_info())
        ofs = 0
        while True:
            res = self._private("private_post_closedorders", {"ofs": ofs})
            page = res.get("closed", {})
            out.update(page)
            ofs += len(page)
            if not page or ofs >= int(res.get("count", 0)):
                return out

    def trades(self, since_ns: int = 0) -> dict[str, dict[str, Any]]:
        """Raw trade records newer than ``since_ns`` (all pages), keyed by the venue's trade id."""
        out: dict[str, dict[str, Any]] = {}
        ofs = 0
        base: dict[str, Any] = {"start": _seconds_text(since_ns)} if since_ns > 0 else {}
        while True:
            res = self._private("private_post_tradeshistory", {**base, "ofs": ofs})
            page = res.get("trades", {})
            out.update(page)
            ofs += len(page)
            if not page or ofs >= int(res.get("count", 0)):
                return out

    def fill_of(self, trade_id: str, t: dict[str, Any], cid: str) -> Fill:
        inst = self.instrument
        return Fill(
            client_order_id=cid,
            instrument_id=inst.id,
            side=Side.BUY if t["type"] == "buy" else Side.SELL,
            price=Price.from_str(str(t["price"]), inst.price_precision),
            quantity=Quantity.from_str(str(t["vol"]), inst.size_precision),
            fee=Money.from_str(str(t["fee"]), inst.money_precision, inst.quote),
            liquidity=Liquidity.MAKER if t.get("maker") else Liquidity.TAKER,
            ts_event=_ns(t["time"]),
            trade_id=trade_id,
        )

    def poll_events(self, since: int = 0) -> list[OrderEvent]:
        """Acks, fills (trades newer than ``since`` ns) and terminal states, in that order.

        Order states are read before trades, so every fill of an order reported finished here is
        already in the trade list: a fill is never delivered after its order's terminal event.
        Fills may repeat across calls (the caller records them idempotently by trade id); acks and
        terminal events are delivered once per process.
        """
        iid = self.instrument.id
        now = time.time_ns()
        open_now = self.open_orders_info()
        events: list[OrderEvent] = []
        for txid, info in open_now.items():
            cid = self._learn(txid, info)
            self._live.add(txid)
            if cid and txid not in self._acked:
                self._acked.add(txid)
                events.append(OrderAccepted(cid, iid, now))
        gone = {t for t in self._live if t not in open_now}
        terminal: list[OrderEvent] = []
        for txid, info in self.query_orders(gone).items():
            cid = self._learn(txid, info)
            status = _status_of(info, self._filled_raw(info))
            if not status.is_terminal:
                continue
            self._live.discard(txid)
            if cid is None or txid in self._done:
                continue
            self._done.add(txid)
            if status is OrderStatus.CANCELED:
                terminal.append(OrderCanceled(cid, iid, now))
            elif status is OrderStatus.EXPIRED:
                terminal.append(OrderExpired(cid, iid, now))
            elif status is OrderStatus.REJECTED:
                terminal.append(OrderRejected(cid, iid, now, str(info.get("reason") or "")))
        trades = self.trades(since)
        unknown = {str(t["ordertxid"]) for t in trades.values() if str(t["ordertxid"]) not in self._cid_of}
        if unknown:
            for txid, info in self.query_orders(unknown).items():
                self._learn(txid, info)
        for trade_id, t in sorted(trades.items(), key=lambda kv: Decimal(str(kv[1]["time"]))):
            cid = self._cid_of.get(str(t["ordertxid"]))
            if cid is None:
                continue  # an order placed without a client id: not ours to book
            fill = self.fill_of(trade_id, t, cid)
            events.append(OrderFilled(cid, iid, fill.ts_event, fill))
        return events + terminal

    def balances(self) -> dict[str, Fraction]:
        """Account balances by ccxt currency code (BTC, USDT), exact."""
        res = self._private("private_post_balance", {})
        out: dict[str, Fraction] = {}
        for asset, amount in res.items():
            code = self.exchange.safe_currency_code(asset)
            out[code] = out.get(code, Fraction(0)) + Fraction(Decimal(str(amount)))
        return out


def is_may_exist(exc: VenueError) -> bool:
    """True for the errors after which an order may exist at the venue."""
    return exc.retryable

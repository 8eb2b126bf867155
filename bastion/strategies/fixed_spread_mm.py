"""A symmetric market maker at a fixed distance from the mid: the baseline every smarter one must beat.

It quotes a bid ``ticks`` below and an ask ``ticks`` above the mid (post-only, rounded away
from the mid), one order per side of ``order_qty``, and stops quoting the side that would take
the inventory past ``max_position`` — counting every order still open on that side, since an
order whose cancel is in flight can still fill. A side is cancelled and replaced only when its target price
changes; a side whose request is still in flight is left alone until the venue answers. This is
also the benchmark workload W2 (see ``bench/``), so its rules mirror that definition exactly.
"""

from __future__ import annotations

import math
from typing import Any

from bastion.engine.strategy import SUB_TOP_OF_BOOK, BookView, Strategy
from bastion.model.events import OrderAccepted, OrderDenied, OrderEvent
from bastion.model.fixed import Price
from bastion.model.orders import Fill, OrderStatus, Side, TimeInForce


class FixedSpreadMM(Strategy):
    name = "fixed_spread_mm"

    def __init__(self, strategy_id: str | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__(strategy_id, config)
        cfg = {"ticks": 2, "order_qty": "0.010", "max_position": "0.100", **self.config}
        unknown = set(cfg) - {"ticks", "order_qty", "max_position"}
        if unknown:
            raise ValueError(f"fixed_spread_mm: unknown parameters {sorted(unknown)}")
        self.ticks = int(cfg["ticks"])
        self._qty_text = str(cfg["order_qty"])
        self._max_text = str(cfg["max_position"])
        self.updates = 0

    def on_start(self) -> None:
        self.subscribe(SUB_TOP_OF_BOOK)
        inst = self.instrument
        self._tick_raw = inst.tick_raw
        self._pp = inst.price_precision
        self._qty = inst.qty(self._qty_text)
        self._max_raw = inst.qty(self._max_text).raw
        self._book: BookView | None = None
        self._bid_t = self._ask_t = 0

    def on_book(self, book: BookView) -> None:
        self._book = book
        self._requote()

    def on_order(self, event: OrderEvent) -> None:
        if type(event) is OrderDenied:
            return  # refused by our own gateway: try again on the next book change, not now
        if type(event) is OrderAccepted:
            # An ack changes nothing while the order still sits on its side's target.
            order = self.open_orders.get(event.client_order_id)
            if order is not None and order.price is not None:
                target = self._bid_t if order.side is Side.BUY else self._ask_t
                if order.price.raw == target * self._tick_raw:
                    return
        self._requote()

    def on_fill(self, fill: Fill) -> None:
        self._requote()

    def _requote(self) -> None:
        book = self._book
        if book is None:
            return
        if not book.is_valid():  # no trustworthy book (a gap, one side empty): quote nothing
            self.cancel_all()
            return
        self.updates += 1
        tick = self._tick_raw
        mid2 = (book.bid_raw + book.ask_raw) // tick  # the mid in half ticks
        bid_t = math.floor(mid2 / 2 - self.ticks + 1e-9)
        ask_t = math.ceil(mid2 / 2 + self.ticks - 1e-9)
        self._bid_t, self._ask_t = bid_t, ask_t
        pos = self.position.qty_raw
        q = self._qty.raw
        allow_bid = pos + q <= self._max_raw
        allow_ask = pos - q >= -self._max_raw
        need_bid, need_ask = allow_bid, allow_ask
        bid_px, ask_px = bid_t * tick, ask_t * tick
        # worst case for the limit: every order still open (cancels in flight included) fills
        open_buy = open_sell = 0
        for order in self.open_orders.values():  # cancel() does not remove; submit comes after
            in_flight = order.status is OrderStatus.SUBMITTED or order.cancel_pending
            assert order.price is not None
            left = order.quantity.raw - order.filled_raw
            if order.side is Side.BUY:
                open_buy += left
                if allow_bid and order.price.raw == bid_px:
                    need_bid = False
                elif not in_flight:
                    self.cancel(order)
                else:
                    need_bid = False
            else:
                open_sell += left
                if allow_ask and order.price.raw == ask_px:
                    need_ask = False
                elif not in_flight:
                    self.cancel(order)
                else:
                    need_ask = False
        if need_bid and pos + open_buy + q <= self._max_raw:
            self.submit_limit(Side.BUY, Price(bid_t * tick, self._pp), self._qty, TimeInForce.POST_ONLY)
        if need_ask and pos - open_sell - q >= -self._max_raw:
            self.submit_limit(Side.SELL, Price(ask_t * tick, self._pp), self._qty, TimeInForce.POST_ONLY)

"""The simulated venue: owns the compiled loop's arrays and speaks orders and events.

Python-side work here happens only when the loop stops for something the strategy must see:
writing an order request into a free slot, and turning the loop's notifications into the same
``Order*`` events a real venue adapter produces (with exact prices and fees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
from bastion.model.orders import Fill, Liquidity, Order, OrderStatus, OrderType
from bastion.venues.base import OrderStatusReport
from bastion.venues.sim import kernel
from bastion.venues.sim import layout as L
from bastion.venues.sim.replay import Chunk, StreamSource

MAX_ORDERS = 512
NOTE_CAPACITY = 1 << 14

_REJECT_REASONS = {
    L.REJECT_POST_ONLY: "post-only order would take liquidity",
    L.REJECT_NO_BOOK: "no liquidity on the other side of the book",
    L.REJECT_OUT_OF_RANGE: "price outside the simulated book's range",
}


_TERMINAL_NOTES = (L.NOTE_REJECTED, L.NOTE_CANCELED, L.NOTE_EXPIRED)
_NOTE_STATUS = {
    L.NOTE_REJECTED: OrderStatus.REJECTED,
    L.NOTE_CANCELED: OrderStatus.CANCELED,
    L.NOTE_EXPIRED: OrderStatus.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Order entry, venue response and market-data latencies in ns.

    With ``feed_from_data`` the feed latency of each event is its recorded local time minus its
    venue time (shifted so it is never negative); otherwise ``feed_ns`` applies to every event.
    """

    order_ns: int = 1_000_000
    response_ns: int = 1_000_000
    feed_ns: int = 0
    feed_from_data: bool = False


@dataclass(frozen=True, slots=True)
class SimVenueConfig:
    latency: LatencyModel = LatencyModel()
    partial_fills: bool = True
    venue_name: str = "SIM"


class SimBookView:
    """Reads the best prices straight from the loop's scalar array; no copies per callback."""

    __slots__ = ("_book", "_lo", "_nt", "_s", "_tick")

    def __init__(self, venue: SimVenue) -> None:
        self._s = venue.s
        self._book = venue.book
        self._lo = venue.stream.book_range.lo_raw
        self._tick = venue.stream.book_range.tick_raw
        self._nt = venue.stream.book_range.n_ticks

    @property
    def bid_raw(self) -> int:
        i = int(self._s[L.S_BEST_BID])
        return self._lo + i * self._tick if i >= 0 else 0

    @property
    def ask_raw(self) -> int:
        i = int(self._s[L.S_BEST_ASK])
        return self._lo + i * self._tick if i < self._nt else 0

    @property
    def bid_size_raw(self) -> int:
        i = int(self._s[L.S_BEST_BID])
        return int(self._book[0, i]) if i >= 0 else 0

    @property
    def ask_size_raw(self) -> int:
        i = int(self._s[L.S_BEST_ASK])
        return int(self._book[1, i]) if i < self._nt else 0

    def is_valid(self) -> bool:
        bb = int(self._s[L.S_BEST_BID])
        ba = int(self._s[L.S_BEST_ASK])
        return 0 <= bb < ba < self._nt

    def size_at_raw(self, is_bid: bool, price_raw: int) -> int:
        off = price_raw - self._lo
        if off < 0 or off % self._tick:
            return 0
        i = off // self._tick
        if i >= self._nt:
            return 0
        return int(self._book[0 if is_bid else 1, i])


class SimVenue:
    """One instrument's simulated exchange over one event stream."""

    def __init__(self, stream: StreamSource, config: SimVenueConfig | None = None) -> None:
        self.stream = stream
        self.instrument: Instrument = stream.instrument
        self.config = config or SimVenueConfig()
        rng = stream.book_range
        self.book = np.zeros((2, rng.n_ticks), dtype=np.int64)
        self.orders = np.zeros((MAX_ORDERS, L.O_FIELDS), dtype=np.int64)
        self.orders[:, L.O_CANCEL] = L.NO_TIME
        self.act = np.zeros(MAX_ORDERS, dtype=np.int64)
        self.notes = np.zeros((NOTE_CAPACITY, L.N_FIELDS), dtype=np.int64)
        self.s = np.zeros(L.S_FIELDS, dtype=np.int64)
        s = self.s
        s[L.S_NTICKS] = rng.n_ticks
        s[L.S_BEST_BID] = -1
        s[L.S_BEST_ASK] = rng.n_ticks
        s[L.S_SEEN_BID] = -1
        s[L.S_SEEN_ASK] = rng.n_ticks
        lat = self.config.latency
        s[L.S_ORDER_LAT] = lat.order_ns
        s[L.S_RESP_LAT] = lat.response_ns
        s[L.S_FEED_LAT] = lat.feed_ns
        s[L.S_LAT_FROM_DATA] = 1 if lat.feed_from_data else 0
        s[L.S_TIMER] = L.NO_TIME
        s[L.S_NEXT_ARRIVAL] = L.NO_TIME
        s[L.S_PARTIAL] = 1 if self.config.partial_fills else 0
        s[L.S_MY_BID_LO] = s[L.S_MY_ASK_LO] = 1 << 62  # no resting orders yet
        s[L.S_MY_BID_HI] = s[L.S_MY_ASK_HI] = -1
        self._by_oid: dict[int, Order] = {}
        self._slot_of: dict[int, int] = {}
        self._venue_filled: dict[int, int] = {}
        self._free = list(range(MAX_ORDERS - 1, -1, -1))
        self._next_oid = 1
        # with recorded feed latency, local times are shifted so no event is seen before it happened
        self._local_shift = max(0, -stream.min_feed_lag_ns()) + lat.feed_ns if lat.feed_from_data else 0
        self._evi = np.zeros((L.EVI_ROWS, 0), dtype=np.int64)
        self._evk = np.zeros((L.EVK_ROWS, 0), dtype=np.uint8)
        self._price_raw = np.zeros(0, dtype=np.int64)
        self.view = SimBookView(self)
        self._maker = self.instrument.maker_rate
        self._taker = self.instrument.taker_rate
        self.orders_submitted = 0
        self.cancels_submitted = 0
        self.name = self.config.venue_name
        self._oid_of_cid: dict[str, int] = {}
        self._final: dict[str, tuple[OrderStatus, int]] = {}  # client id -> (terminal status, filled)

    # --- control ---------------------------------------------------------------------------------
    def load_chunk(self, chunk: Chunk) -> None:
        """Hand the loop its next run of events (the book and orders carry over); no copies."""
        self._evi, self._evk, self._price_raw = chunk.evi, chunk.evk, chunk.price_raw
        self.s[L.S_TS_SHIFT] = chunk.ts_shift_ns
        self.s[L.S_LOCAL_SHIFT] = self._local_shift
        self.s[L.S_IDX] = 0
        self.s[L.S_N] = chunk.evi.shape[1]

    def set_subscriptions(self, mask: int) -> None:
        self.s[L.S_SUBS] = mask

    @property
    def now(self) -> int:
        return int(self.s[L.S_NOW])

    def finish(self) -> None:
        """After the data ends: let requests in flight arrive and their answers become due."""
        kernel.drain_after_end(self.book, self.orders, self.act, self.notes, self.s)

    # --- order entry -------------------------------------------------------------------------------
    def submit(self, order: Order) -> OrderEvent | None:
        """Queue a new order; it reaches the matching engine after the order latency.

        Returns an ``OrderRejected`` at once when the venue would refuse it locally (no free
        slot, price off the grid), else None.
        """
        if not self._free:
            return OrderRejected(order.client_order_id, order.instrument_id, self.now, "too many open orders")
        rng = self.stream.book_range
        if order.order_type is OrderType.LIMIT:
            assert order.price is not None
            off = order.price.raw - rng.lo_raw
            if order.price.precision != self.instrument.price_precision or off % rng.tick_raw:
                return OrderRejected(
                    order.client_order_id,
                    order.instrument_id,
                    self.now,
                    f"price {order.price} off the tick grid",
                )
            idx = off // rng.tick_raw
        else:
            idx = 0
        if order.quantity.precision != self.instrument.size_precision or (
            order.quantity.raw % self.instrument.lot_raw
        ):
            return OrderRejected(
                order.client_order_id,
                order.instrument_id,
                self.now,
                f"quantity {order.quantity} off the lot grid",
            )
        slot = self._free.pop()
        oid = self._next_oid
        self._next_oid += 1
        arrive = self.now + int(self.s[L.S_ORDER_LAT])
        # one row write (field order: layout.O_*)
        self.orders[slot] = (
            L.ST_PENDING_NEW, int(order.side), idx, order.quantity.raw, 0, 0,
            int(order.time_in_force), int(order.order_type), arrive, L.NO_TIME, oid, 0,
        )  # fmt: skip
        n = int(self.s[L.S_N_ACT])
        self.act[n] = slot
        self.s[L.S_N_ACT] = n + 1
        if arrive < self.s[L.S_NEXT_ARRIVAL]:
            self.s[L.S_NEXT_ARRIVAL] = arrive
        self._by_oid[oid] = order
        self._slot_of[oid] = slot
        self._oid_of_cid[order.client_order_id] = oid
        order.venue_order_id = str(oid)
        self.orders_submitted += 1
        return None

    def cancel(self, order: Order) -> None:
        oid = int(order.venue_order_id) if order.venue_order_id else 0
        slot = self._slot_of.get(oid)
        if slot is None:
            return  # already done at the venue; the strategy will hear of the fill or cancel
        arrive = self.now + int(self.s[L.S_ORDER_LAT])
        if self.orders[slot, L.O_CANCEL] > arrive:
            self.orders[slot, L.O_CANCEL] = arrive
        if arrive < self.s[L.S_NEXT_ARRIVAL]:
            self.s[L.S_NEXT_ARRIVAL] = arrive
        self.cancels_submitted += 1

    # --- notifications -----------------------------------------------------------------------------
    def pending_notes(self) -> int:
        return int(self.s[L.S_NOTE_TAIL] - self.s[L.S_NOTE_HEAD])

    def drain(self, upto_ns: int) -> list[OrderEvent]:
        """Turn every notification deliverable by ``upto_ns`` into an order event."""
        out: list[OrderEvent] = []
        s = self.s
        head, tail = int(s[L.S_NOTE_HEAD]), int(s[L.S_NOTE_TAIL])
        if head >= tail:
            return out
        cap = self.notes.shape[0]
        a, b = head % cap, tail % cap
        # one bulk copy to Python ints instead of a NumPy scalar read per field
        rows = self.notes[a:b].tolist() if a < b else self.notes[a:].tolist() + self.notes[:b].tolist()
        lo, tick = self.stream.book_range.lo_raw, self.stream.book_range.tick_raw
        inst = self.instrument
        pp, sp = inst.price_precision, inst.size_precision
        mp, settle = inst.money_precision, inst.settle
        consumed = 0
        for kind, oid, ts, price_idx, qty, deliver in rows:
            if deliver > upto_ns:
                break
            consumed += 1
            order = self._by_oid.get(oid)
            if order is None:
                continue
            cid, iid = order.client_order_id, order.instrument_id
            if kind == L.NOTE_FILL_MAKER or kind == L.NOTE_FILL_TAKER:
                price_raw = lo + price_idx * tick
                maker = kind == L.NOTE_FILL_MAKER
                fee = inst.fee_raw(price_raw, qty, self._maker if maker else self._taker)
                fill = Fill(
                    cid,
                    iid,
                    order.side,
                    Price(price_raw, pp),
                    Quantity(qty, sp),
                    Money(fee, mp, settle),
                    Liquidity.MAKER if maker else Liquidity.TAKER,
                    ts,
                    f"{oid}-{head + consumed}",
                )
                out.append(OrderFilled(cid, iid, ts, fill))
                done = self._venue_filled.get(oid, 0) + qty
                self._venue_filled[oid] = done
                if done >= order.quantity.raw:
                    self._release(oid)
                continue
            if kind == L.NOTE_ACCEPTED:
                out.append(OrderAccepted(cid, iid, ts))
                continue
            if kind == L.NOTE_REJECTED:
                out.append(OrderRejected(cid, iid, ts, _REJECT_REASONS.get(qty, "rejected")))
            elif kind == L.NOTE_CANCELED:
                out.append(OrderCanceled(cid, iid, ts))
            elif kind == L.NOTE_EXPIRED:
                out.append(OrderExpired(cid, iid, ts))
            if kind in _TERMINAL_NOTES:
                self._release(oid, _NOTE_STATUS[kind])
        s[L.S_NOTE_HEAD] = head + consumed
        return out

    def query(self, client_order_id: str) -> OrderStatusReport | None:
        """The venue's view of an order by client id (None: never received)."""
        final = self._final.get(client_order_id)
        if final is not None:
            return OrderStatusReport(client_order_id, final[0], final[1])
        oid = self._oid_of_cid.get(client_order_id)
        if oid is None:
            return None
        slot = self._slot_of.get(oid)
        state = int(self.orders[slot, L.O_STATE]) if slot is not None else L.ST_FREE
        status = OrderStatus.SUBMITTED if state == L.ST_PENDING_NEW else OrderStatus.ACCEPTED
        return OrderStatusReport(client_order_id, status, self._venue_filled.get(oid, 0), str(oid))

    def _release(self, oid: int, status: OrderStatus = OrderStatus.FILLED) -> None:
        """The venue is done with this order: its slot can be reused and its id forgotten."""
        slot = self._slot_of.pop(oid)
        order = self._by_oid.pop(oid, None)
        if order is not None:
            self._oid_of_cid.pop(order.client_order_id, None)
            if len(self._final) > 100_000:  # a bounded memory of finished orders for queries
                self._final.pop(next(iter(self._final)))
            self._final[order.client_order_id] = (status, self._venue_filled.get(oid, 0))
        self._venue_filled.pop(oid, None)
        self.orders[slot, L.O_OID] = 0
        self._free.append(slot)

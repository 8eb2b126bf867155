"""The compiled inner loop of the simulated venue: book replay, matching, queue position, latency.

Control stays in this loop for as long as nothing the strategy subscribed to has happened: the
many depth updates behind the touch, trades that do not reach our orders, requests in flight.
It returns to Python only for a subscribed event (top-of-book change, trade, timer, funding) or
an order update the strategy must hear about, with the state left in the arrays for Python to
read. That is what lets a strategy written in plain Python replay millions of events per second.

Fill model (conservative, as in hftbacktest's risk-averse queue model):
- a resting order joins the back of its price level: the displayed quantity there is ahead of it;
- a trade at our price first consumes the quantity ahead of us, then fills us;
- a cancellation at our level shrinks the quantity ahead only as far as the new level size (we
  assume cancels come from behind us unless the level shrank below our queue position);
- a trade through our price, or the opposite best moving through our price, fills us fully;
- our own taker fills do not remove liquidity from the replayed book (there is no market impact).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bastion.venues.sim import layout as L

NO_TIME = L.NO_TIME


@njit(cache=True, inline="always")
def _local_time(evi: np.ndarray, i: int, s: np.ndarray) -> int:  # type: ignore[type-arg]
    if s[L.S_LAT_FROM_DATA] == 1:
        return int(evi[L.EV_TS_LOCAL, i] + s[L.S_TS_SHIFT] + s[L.S_LOCAL_SHIFT])
    return int(evi[L.EV_TS_EVENT, i] + s[L.S_TS_SHIFT] + s[L.S_FEED_LAT])


@njit(cache=True)
def _note(notes, s, kind, oid, ts, price_idx, qty):  # type: ignore[no-untyped-def]
    cap = notes.shape[0]
    k = s[L.S_NOTE_TAIL] % cap
    notes[k, L.N_KIND] = kind
    notes[k, L.N_OID] = oid
    notes[k, L.N_TS] = ts
    notes[k, L.N_PRICE_IDX] = price_idx
    notes[k, L.N_QTY] = qty
    notes[k, L.N_DELIVER] = ts + s[L.S_RESP_LAT]
    s[L.S_NOTE_TAIL] += 1


@njit(cache=True)
def _remove_active(act, s, slot):  # type: ignore[no-untyped-def]
    n = s[L.S_N_ACT]
    for j in range(n):
        if act[j] == slot:
            act[j] = act[n - 1]
            s[L.S_N_ACT] = n - 1
            return


@njit(cache=True)
def _resting_ranges(orders, act, s):  # type: ignore[no-untyped-def]
    """Recompute the price ranges of our resting orders (called when one rests or ends)."""
    blo, bhi, alo, ahi = 1 << 62, -1, 1 << 62, -1
    for j in range(s[L.S_N_ACT]):
        slot = act[j]
        if orders[slot, L.O_STATE] != L.ST_RESTING:
            continue
        p = orders[slot, L.O_PRICE_IDX]
        if orders[slot, L.O_SIDE] > 0:
            blo = min(blo, p)
            bhi = max(bhi, p)
        else:
            alo = min(alo, p)
            ahi = max(ahi, p)
    s[L.S_MY_BID_LO] = blo
    s[L.S_MY_BID_HI] = bhi
    s[L.S_MY_ASK_LO] = alo
    s[L.S_MY_ASK_HI] = ahi


@njit(cache=True)
def _finish(orders, act, s, slot):  # type: ignore[no-untyped-def]
    was_resting = orders[slot, L.O_STATE] == L.ST_RESTING
    orders[slot, L.O_STATE] = L.ST_FREE
    orders[slot, L.O_CANCEL] = NO_TIME
    _remove_active(act, s, slot)
    if was_resting:
        _resting_ranges(orders, act, s)


@njit(cache=True)
def _fill(orders, act, notes, s, slot, price_idx, qty, ts, maker):  # type: ignore[no-untyped-def]
    orders[slot, L.O_FILLED] += qty
    _note(
        notes, s, L.NOTE_FILL_MAKER if maker else L.NOTE_FILL_TAKER, orders[slot, L.O_OID], ts, price_idx, qty
    )
    if orders[slot, L.O_FILLED] >= orders[slot, L.O_QTY]:
        _finish(orders, act, s, slot)


@njit(cache=True)
def _take(book, orders, act, notes, s, slot, ts):  # type: ignore[no-untyped-def]
    """Match an arriving marketable order against the displayed book, best level first."""
    nt = s[L.S_NTICKS]
    side = orders[slot, L.O_SIDE]
    is_market = orders[slot, L.O_TYPE] == 0
    limit = orders[slot, L.O_PRICE_IDX]
    want = orders[slot, L.O_QTY] - orders[slot, L.O_FILLED]
    # first pass: how much is available within the limit (FOK needs it all or nothing)
    avail = 0
    if side > 0:
        j = s[L.S_BEST_ASK]
        while j < nt and avail < want and (is_market or j <= limit):
            avail += book[1, j]
            j += 1
    else:
        j = s[L.S_BEST_BID]
        while j >= 0 and avail < want and (is_market or j >= limit):
            avail += book[0, j]
            j -= 1
    if orders[slot, L.O_TIF] == 2 and avail < want:  # FOK
        _note(notes, s, L.NOTE_EXPIRED, orders[slot, L.O_OID], ts, 0, 0)
        _finish(orders, act, s, slot)
        return
    if side > 0:
        j = s[L.S_BEST_ASK]
        while j < nt and want > 0 and (is_market or j <= limit):
            q = book[1, j]
            if q > 0:
                f = min(q, want)
                want -= f
                _fill(orders, act, notes, s, slot, j, f, ts, False)
            j += 1
    else:
        j = s[L.S_BEST_BID]
        while j >= 0 and want > 0 and (is_market or j >= limit):
            q = book[0, j]
            if q > 0:
                f = min(q, want)
                want -= f
                _fill(orders, act, notes, s, slot, j, f, ts, False)
            j -= 1


@njit(cache=True)
def _arrive_new(book, orders, act, notes, s, slot, ts):  # type: ignore[no-untyped-def]
    nt = s[L.S_NTICKS]
    side = orders[slot, L.O_SIDE]
    tif = orders[slot, L.O_TIF]
    is_market = orders[slot, L.O_TYPE] == 0
    p = orders[slot, L.O_PRICE_IDX]
    bb = s[L.S_BEST_BID]
    ba = s[L.S_BEST_ASK]
    oid = orders[slot, L.O_OID]
    if not is_market and (p < 0 or p >= nt):
        _note(notes, s, L.NOTE_REJECTED, oid, ts, p, L.REJECT_OUT_OF_RANGE)
        _finish(orders, act, s, slot)
        return
    if side > 0:
        marketable = is_market or (ba < nt and p >= ba)
        opposite_empty = ba >= nt
    else:
        marketable = is_market or (bb >= 0 and p <= bb)
        opposite_empty = bb < 0
    if marketable:
        if tif == 3:  # post-only would take liquidity
            _note(notes, s, L.NOTE_REJECTED, oid, ts, p, L.REJECT_POST_ONLY)
            _finish(orders, act, s, slot)
            return
        if is_market and opposite_empty:
            _note(notes, s, L.NOTE_REJECTED, oid, ts, 0, L.REJECT_NO_BOOK)
            _finish(orders, act, s, slot)
            return
        _note(notes, s, L.NOTE_ACCEPTED, oid, ts, p, 0)
        _take(book, orders, act, notes, s, slot, ts)
        if orders[slot, L.O_STATE] == L.ST_FREE:
            return
        if is_market or tif == 1 or tif == 2:  # IOC / market remainder expires
            _note(notes, s, L.NOTE_EXPIRED, oid, ts, p, 0)
            _finish(orders, act, s, slot)
            return
        orders[slot, L.O_STATE] = L.ST_RESTING
        orders[slot, L.O_WAS_MARKETABLE] = 1
        orders[slot, L.O_QUEUE] = 0
        _resting_ranges(orders, act, s)
        return
    if tif == 1 or tif == 2:  # IOC/FOK that cannot trade now
        _note(notes, s, L.NOTE_ACCEPTED, oid, ts, p, 0)
        _note(notes, s, L.NOTE_EXPIRED, oid, ts, p, 0)
        _finish(orders, act, s, slot)
        return
    orders[slot, L.O_STATE] = L.ST_RESTING
    orders[slot, L.O_WAS_MARKETABLE] = 0
    orders[slot, L.O_QUEUE] = book[0, p] if side > 0 else book[1, p]
    _resting_ranges(orders, act, s)
    _note(notes, s, L.NOTE_ACCEPTED, oid, ts, p, 0)


@njit(cache=True)
def _process_arrivals(book, orders, act, notes, s, upto):  # type: ignore[no-untyped-def]
    """Handle every request that reaches the venue at or before ``upto``, in arrival order."""
    while s[L.S_NEXT_ARRIVAL] <= upto:
        best_t = NO_TIME
        best_slot = -1
        best_is_cancel = False
        for j in range(s[L.S_N_ACT]):
            slot = act[j]
            st = orders[slot, L.O_STATE]
            if st == L.ST_PENDING_NEW and orders[slot, L.O_ARRIVE] < best_t:
                best_t = orders[slot, L.O_ARRIVE]
                best_slot = slot
                best_is_cancel = False
            elif st == L.ST_RESTING and orders[slot, L.O_CANCEL] < best_t:
                best_t = orders[slot, L.O_CANCEL]
                best_slot = slot
                best_is_cancel = True
        if best_slot < 0 or best_t > upto:
            s[L.S_NEXT_ARRIVAL] = best_t
            return
        if best_is_cancel:
            _note(notes, s, L.NOTE_CANCELED, orders[best_slot, L.O_OID], best_t, 0, 0)
            _finish(orders, act, s, best_slot)
        else:
            _arrive_new(book, orders, act, notes, s, best_slot, best_t)
        # recompute the next arrival on the next turn of the loop
        s[L.S_NEXT_ARRIVAL] = -1 if s[L.S_N_ACT] > 0 else NO_TIME
        if s[L.S_N_ACT] == 0:
            return


@njit(cache=True)
def next_arrival(orders, act, s):  # type: ignore[no-untyped-def]
    t = NO_TIME
    for j in range(s[L.S_N_ACT]):
        slot = act[j]
        st = orders[slot, L.O_STATE]
        if st == L.ST_PENDING_NEW and orders[slot, L.O_ARRIVE] < t:
            t = orders[slot, L.O_ARRIVE]
        elif st == L.ST_RESTING and orders[slot, L.O_CANCEL] < t:
            t = orders[slot, L.O_CANCEL]
    return t


@njit(cache=True)
def _on_depth_level(orders, act, s, side_row, idx, new_qty):  # type: ignore[no-untyped-def]
    """A level we rest at changed size: the queue ahead of us can only shrink to the new size."""
    want_side = 1 if side_row == 0 else -1
    for j in range(s[L.S_N_ACT]):
        slot = act[j]
        if (
            orders[slot, L.O_STATE] == L.ST_RESTING
            and orders[slot, L.O_SIDE] == want_side
            and orders[slot, L.O_PRICE_IDX] == idx
            and orders[slot, L.O_QUEUE] > new_qty
        ):
            orders[slot, L.O_QUEUE] = new_qty


@njit(cache=True)
def _on_trade(orders, act, notes, s, agg_side, idx, size, ts):  # type: ignore[no-untyped-def]
    partial = s[L.S_PARTIAL] == 1
    j = 0
    while j < s[L.S_N_ACT]:
        slot = act[j]
        j += 1
        if orders[slot, L.O_STATE] != L.ST_RESTING:
            continue
        side = orders[slot, L.O_SIDE]
        if side == agg_side:
            continue
        p = orders[slot, L.O_PRICE_IDX]
        remaining = orders[slot, L.O_QTY] - orders[slot, L.O_FILLED]
        through = (side > 0 and idx < p) or (side < 0 and idx > p)
        fill = 0
        if through:
            fill = min(remaining, size) if partial else remaining
        elif idx == p:
            q = orders[slot, L.O_QUEUE] - size
            if q < 0:
                fill = min(remaining, -q) if partial else remaining
                q = 0
            orders[slot, L.O_QUEUE] = q
        if fill > 0:
            before = s[L.S_N_ACT]
            _fill(orders, act, notes, s, slot, p, fill, ts, True)
            if s[L.S_N_ACT] < before:
                j -= 1  # the slot at j-1 was replaced by the last active slot


@njit(cache=True)
def _on_cross(orders, act, notes, s, ts):  # type: ignore[no-untyped-def]
    """The opposite best moved through a resting order's price: it has been filled (as maker)."""
    bb = s[L.S_BEST_BID]
    ba = s[L.S_BEST_ASK]
    nt = s[L.S_NTICKS]
    j = 0
    while j < s[L.S_N_ACT]:
        slot = act[j]
        j += 1
        if orders[slot, L.O_STATE] != L.ST_RESTING or orders[slot, L.O_WAS_MARKETABLE] == 1:
            continue
        side = orders[slot, L.O_SIDE]
        p = orders[slot, L.O_PRICE_IDX]
        if (side > 0 and ba < nt and ba <= p) or (side < 0 and bb >= 0 and bb >= p):
            remaining = orders[slot, L.O_QTY] - orders[slot, L.O_FILLED]
            before = s[L.S_N_ACT]
            _fill(orders, act, notes, s, slot, p, remaining, ts, True)
            if s[L.S_N_ACT] < before:
                j -= 1


@njit(cache=True)
def advance(evi, evk, book, orders, act, notes, s):  # type: ignore[no-untyped-def]
    """Run until something the strategy must see; return the reason (``layout.R_*``)."""
    n = s[L.S_N]
    nt = s[L.S_NTICKS]
    cap = notes.shape[0]
    subs = s[L.S_SUBS]
    i = s[L.S_IDX]
    while i < n:
        tl = _local_time(evi, i, s)
        # 1. what the strategy must hear before it could see event i
        t_note = (
            notes[s[L.S_NOTE_HEAD] % cap, L.N_DELIVER] if s[L.S_NOTE_HEAD] < s[L.S_NOTE_TAIL] else NO_TIME
        )
        t_timer = s[L.S_TIMER]
        if t_note <= tl or t_timer <= tl:
            s[L.S_IDX] = i
            if t_note <= t_timer:
                s[L.S_NOW] = max(s[L.S_NOW], t_note)
                return L.R_ORDER
            s[L.S_NOW] = max(s[L.S_NOW], t_timer)
            return L.R_TIMER
        te = evi[L.EV_TS_EVENT, i] + s[L.S_TS_SHIFT]
        # 2. the venue handles requests that reached it before this event
        if s[L.S_NEXT_ARRIVAL] <= te:
            _process_arrivals(book, orders, act, notes, s, te)
            if s[L.S_NEXT_ARRIVAL] == -1:
                s[L.S_NEXT_ARRIVAL] = next_arrival(orders, act, s)
        # 3. apply the event
        kind = evk[L.EK_KIND, i]
        flags = evk[L.EK_FLAGS, i]
        idx = evi[L.EV_PRICE_IDX, i]
        size = evi[L.EV_SIZE, i]
        i += 1
        s[L.S_EVENTS] += 1
        s[L.S_LAST_TS_EVENT] = te
        if kind == L.KIND_BID or kind == L.KIND_ASK:
            if flags & L.FLAG_CLEAR:
                book[:, :] = 0
                s[L.S_BEST_BID] = -1
                s[L.S_BEST_ASK] = nt
            if idx >= 0:
                row = 0 if kind == L.KIND_BID else 1
                book[row, idx] = size
                if row == 0:
                    bb = s[L.S_BEST_BID]
                    if size > 0:
                        if idx > bb:
                            s[L.S_BEST_BID] = idx
                    elif idx == bb:
                        while bb >= 0 and book[0, bb] == 0:
                            bb -= 1
                        s[L.S_BEST_BID] = bb
                else:
                    ba = s[L.S_BEST_ASK]
                    if size > 0:
                        if idx < ba:
                            s[L.S_BEST_ASK] = idx
                    elif idx == ba:
                        while ba < nt and book[1, ba] == 0:
                            ba += 1
                        s[L.S_BEST_ASK] = ba
                if row == 0:
                    if s[L.S_MY_BID_LO] <= idx <= s[L.S_MY_BID_HI]:
                        _on_depth_level(orders, act, s, row, idx, size)
                elif s[L.S_MY_ASK_LO] <= idx <= s[L.S_MY_ASK_HI]:
                    _on_depth_level(orders, act, s, row, idx, size)
            if flags & L.FLAG_LAST:
                bb = s[L.S_BEST_BID]
                ba = s[L.S_BEST_ASK]
                if bb >= 0 and ba < nt and bb >= ba:
                    s[L.S_CROSSED] += 1
                if s[L.S_N_ACT] > 0:
                    _on_cross(orders, act, notes, s, te)
                if subs & L.SUB_BOOK_MESSAGES or (
                    subs & L.SUB_TOP_OF_BOOK and (bb != s[L.S_SEEN_BID] or ba != s[L.S_SEEN_ASK])
                ):
                    s[L.S_SEEN_BID] = bb
                    s[L.S_SEEN_ASK] = ba
                    s[L.S_IDX] = i
                    s[L.S_NOW] = max(s[L.S_NOW], tl)
                    return L.R_BOOK
        elif kind == L.KIND_TRADE_BUY or kind == L.KIND_TRADE_SELL or kind == L.KIND_TRADE_UNKNOWN:
            if s[L.S_N_ACT] > 0 and idx >= 0:
                if kind == L.KIND_TRADE_BUY:
                    agg = 1
                elif kind == L.KIND_TRADE_SELL:
                    agg = -1
                else:  # unknown aggressor: infer from which side of the mid it printed
                    agg = 1 if 2 * idx >= s[L.S_BEST_BID] + s[L.S_BEST_ASK] else -1
                _on_trade(orders, act, notes, s, agg, idx, size, te)
            if subs & L.SUB_TRADES:
                s[L.S_TRADE_IDX] = i - 1
                s[L.S_IDX] = i
                s[L.S_NOW] = max(s[L.S_NOW], tl)
                return L.R_TRADE
        elif kind == L.KIND_FUNDING:
            s[L.S_FUNDING_IDX] = i - 1
            s[L.S_IDX] = i
            s[L.S_NOW] = max(s[L.S_NOW], tl)
            return L.R_FUNDING
        if s[L.S_NOTE_TAIL] - s[L.S_NOTE_HEAD] > cap - 64:
            s[L.S_IDX] = i
            s[L.S_NOW] = max(s[L.S_NOW], tl)
            return L.R_ORDER  # drain before the ring overflows
    s[L.S_IDX] = i
    return L.R_CHUNK_DONE


@njit(cache=True)
def drain_after_end(book, orders, act, notes, s):  # type: ignore[no-untyped-def]
    """After the last event: let in-flight requests arrive and pending notes become deliverable."""
    if s[L.S_NEXT_ARRIVAL] < NO_TIME:
        _process_arrivals(book, orders, act, notes, s, NO_TIME - 1)
    return s[L.S_NOTE_TAIL] - s[L.S_NOTE_HEAD]

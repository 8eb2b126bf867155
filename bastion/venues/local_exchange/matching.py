"""Price-time matching of the exchange's own client orders against the replayed market.

The recording is the rest of the world; the client's orders are the only ones the exchange
really owns. So there are two kinds of matching, both in plain Python (correctness over speed:
a local exchange handles a handful of orders, not millions of events per second):

* **Taking**: an incoming order walks the recorded book best price first, consuming what it
  takes (see :class:`MarketBook.take`). Reaching one of the client's own resting orders on the
  other side is a self-trade, which Kraken prevents (``stptype``, default cancel-newest).
* **Resting**: a resting order waits behind the volume that was already at its price when it
  arrived (``queue_ahead``). Recorded trades at its price eat that queue first and then fill the
  order; a level that shrinks below the queue means orders ahead cancelled; a trade through its
  price, or the other side of the book arriving at or through it, fills it completely, because
  the real order would have been hit first. Every resting fill is a maker fill at the order's
  own limit price.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.venues.local_exchange.book import ASK, BID, MarketBook
from bastion.venues.local_exchange.replay import AGGRESSOR_BUY, AGGRESSOR_SELL

STP_CANCEL_NEWEST = "cancel-newest"
STP_CANCEL_OLDEST = "cancel-oldest"
STP_CANCEL_BOTH = "cancel-both"


@dataclass(slots=True)
class Resting:
    """One of the client's orders resting in the book (raw integers at the pair's grid)."""

    txid: str
    side: int  # BID (buy) or ASK (sell)
    price: int
    remaining: int
    queue_ahead: int
    seq: int  # time priority among the client's own orders


@dataclass(frozen=True, slots=True)
class Execution:
    txid: str
    price: int
    qty: int
    maker: bool


@dataclass(slots=True)
class TakeResult:
    fills: list[Execution] = field(default_factory=list)
    remaining: int = 0
    stp_hit: bool = False  # the walk reached one of the client's own orders
    stp_canceled: list[str] = field(default_factory=list)  # own resting orders STP removed


def _crosses(side: int, limit: int | None, price: int) -> bool:
    """Would an order on ``side`` with ``limit`` (None = market) trade at ``price``?"""
    if limit is None:
        return True
    return price <= limit if side == BID else price >= limit


class PairEngine:
    """The client's resting orders of one pair, and the matching rules above."""

    def __init__(self, book: MarketBook) -> None:
        self.book = book
        self.resting: dict[str, Resting] = {}

    # --- the client's own orders ---------------------------------------------------------------
    def add(self, order: Resting) -> None:
        self.resting[order.txid] = order

    def remove(self, txid: str) -> Resting | None:
        return self.resting.pop(txid, None)

    def own(self, side: int) -> list[Resting]:
        """Own resting orders of ``side``, best price first, then time."""
        out = [o for o in self.resting.values() if o.side == side]
        out.sort(key=lambda o: (-o.price if side == BID else o.price, o.seq))
        return out

    def queue_at(self, side: int, price: int) -> int:
        """The recorded volume a new order at ``price`` would wait behind."""
        return self.book.side(side).get(price, 0)

    # --- taking --------------------------------------------------------------------------------
    def would_take(self, side: int, limit: int | None) -> bool:
        """Post-only check: is there anything (recorded or own) this order would trade with?"""
        other = ASK if side == BID else BID
        best = self.book.best(other)
        if best is not None and _crosses(side, limit, best):
            return True
        return any(_crosses(side, limit, o.price) for o in self.own(other))

    def estimate(self, side: int, limit: int | None, qty: int) -> list[tuple[int, int]]:
        """The (price, qty) a taker would get from the recorded book, without taking it."""
        other = ASK if side == BID else BID
        out: list[tuple[int, int]] = []
        left = qty
        for price, size in self.book.sorted_levels(other):
            if left <= 0 or not _crosses(side, limit, price):
                break
            q = min(size, left)
            out.append((price, q))
            left -= q
        return out

    def take(self, txid: str, side: int, limit: int | None, qty: int, stptype: str, ts_ns: int) -> TakeResult:
        other = ASK if side == BID else BID
        res = TakeResult(remaining=qty)
        levels = self.book.sorted_levels(other)
        own = self.own(other)
        li = oi = 0
        while res.remaining > 0:
            lv = levels[li] if li < len(levels) and _crosses(side, limit, levels[li][0]) else None
            ow = own[oi] if oi < len(own) and _crosses(side, limit, own[oi].price) else None
            if lv is None and ow is None:
                break
            # recorded volume at a price goes before our own order at the same price
            if lv is not None and (ow is None or (lv[0] <= ow.price if side == BID else lv[0] >= ow.price)):
                price, size = lv
                q = min(size, res.remaining)
                self.book.take(other, price, q, ts_ns)
                res.fills.append(Execution(txid, price, q, maker=False))
                res.remaining -= q
                li += 1
                continue
            assert ow is not None
            res.stp_hit = True
            if stptype in (STP_CANCEL_OLDEST, STP_CANCEL_BOTH):
                self.remove(ow.txid)
                res.stp_canceled.append(ow.txid)
                oi += 1
            if stptype in (STP_CANCEL_NEWEST, STP_CANCEL_BOTH):
                break
        return res

    # --- resting orders against the recording ---------------------------------------------------
    def on_level(self, side: int, price: int, visible: int, ts_ns: int) -> list[Execution]:
        """A recorded bucket changed; returns the maker fills that follow from it.

        The recording cannot be crossed, so recorded volume resting at or through one of our
        prices means that counterparty would have met our order first: it fills us, up to its
        size, and that size is then taken from the bucket.
        """
        fills: list[Execution] = []
        if visible > 0:
            other = ASK if side == BID else BID
            avail = visible
            for o in self.own(other):
                if avail <= 0 or not _crosses(other, o.price, price):
                    break
                q = min(o.remaining, avail)
                avail -= q
                fills.append(Execution(o.txid, o.price, q, maker=True))
            if avail < visible:
                self.book.take(side, price, visible - avail, ts_ns)
        for o in self.resting.values():
            if o.side == side and o.price == price and o.queue_ahead > visible:
                o.queue_ahead = visible  # volume ahead of us was cancelled
        self._apply(fills)
        return fills

    def on_trade(self, aggressor: int, price: int, qty: int) -> list[Execution]:
        """A recorded print at ``price`` (pair grid); returns the maker fills it causes.

        Our orders priced better than the print were in the aggressor's way and fill first (up to
        the print's size); then, at the print's price, the print eats the queue ahead of each of
        our orders before it reaches them. Our fills never add up to more than the print.
        """
        if aggressor == AGGRESSOR_SELL:
            side = BID  # a seller hit bids: our bids at or above the print are candidates
        elif aggressor == AGGRESSOR_BUY:
            side = ASK
        else:
            return []  # unknown aggressor: no side of the queue can be charged with it
        fills: list[Execution] = []
        left = qty
        at: list[Resting] = []
        for o in self.own(side):
            if o.price == price:
                at.append(o)
            elif _crosses(side, o.price, price) and left > 0:  # better than the print
                f = min(o.remaining, left)
                fills.append(Execution(o.txid, o.price, f, maker=True))
                left -= f
        consumed = 0  # recorded volume this print took from the front of the queue
        for o in at:  # own() keeps time priority within a price
            if left <= 0:
                break
            t = min(max(0, o.queue_ahead - consumed), left)
            consumed += t
            left -= t
            if left <= 0:
                break
            f = min(o.remaining, left)
            fills.append(Execution(o.txid, o.price, f, maker=True))
            left -= f
        for o in at:
            o.queue_ahead = max(0, o.queue_ahead - consumed)
        self._apply(fills)
        return fills

    def _apply(self, fills: list[Execution]) -> None:
        for f in fills:
            o = self.resting[f.txid]
            o.remaining -= f.qty
            if o.remaining <= 0:
                del self.resting[f.txid]

"""A minimal L2 book used only to validate a stream while it is loaded.

A loader has to know whether the book is crossed after each complete venue message, because a
crossed book means the stream is corrupt (a lost delete, a bad level) and replaying it would fill
orders at impossible prices. That needs the best bid and ask after every message, not a full
order book: one dict per side (price -> size) plus a heap per side with lazy deletion gives the
best in amortised O(log n), where ``max(dict)`` would cost O(levels) on every touch of the best.
An undo log lets a loader that skips a bad message put the book back exactly as it was.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

from bastion.data.schema import SIDE_BID


class LightBook:
    __slots__ = ("_ask_heap", "_bid_heap", "_undo", "asks", "bids", "track_undo")

    def __init__(self, *, track_undo: bool = False) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self._bid_heap: list[int] = []  # negated prices
        self._ask_heap: list[int] = []
        self._undo: list[tuple[int, int, int]] = []  # (side, price, old size or -1 if absent)
        self.track_undo = track_undo

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_heap.clear()
        self._ask_heap.clear()
        self._undo.clear()

    def load(
        self, bid_prices: list[int], bid_sizes: list[int], ask_prices: list[int], ask_sizes: list[int]
    ) -> None:
        """Replace the book with a snapshot (sizes are assumed > 0)."""
        self.clear()
        self.bids.update(zip(bid_prices, bid_sizes, strict=True))
        self.asks.update(zip(ask_prices, ask_sizes, strict=True))
        self._bid_heap = [-p for p in self.bids]
        self._ask_heap = list(self.asks)
        heapify(self._bid_heap)
        heapify(self._ask_heap)

    def update(self, side: int, prices: list[int], sizes: list[int]) -> None:
        """Set levels; a size of 0 deletes the level."""
        if side == SIDE_BID:
            book, heap, sign = self.bids, self._bid_heap, -1
        else:
            book, heap, sign = self.asks, self._ask_heap, 1
        undo = self._undo if self.track_undo else None
        for p, q in zip(prices, sizes, strict=True):
            old = book.get(p)
            if undo is not None:
                undo.append((side, p, -1 if old is None else old))
            if q:
                if old is None:
                    heappush(heap, sign * p)
                book[p] = q
            elif old is not None:
                del book[p]
        if len(heap) > 64 and len(heap) > 4 * len(book):
            heap[:] = [sign * p for p in book]
            heapify(heap)

    def commit(self) -> None:
        self._undo.clear()

    def rollback(self) -> None:
        """Undo every update since the last commit (needs ``track_undo``)."""
        for side, p, old in reversed(self._undo):
            if side == SIDE_BID:
                book, heap, sign = self.bids, self._bid_heap, -1
            else:
                book, heap, sign = self.asks, self._ask_heap, 1
            if old < 0:
                book.pop(p, None)
            else:
                if p not in book:
                    heappush(heap, sign * p)
                book[p] = old
        self._undo.clear()

    def best_bid(self) -> int | None:
        heap, book = self._bid_heap, self.bids
        while heap and -heap[0] not in book:
            heappop(heap)
        return -heap[0] if heap else None

    def best_ask(self) -> int | None:
        heap, book = self._ask_heap, self.asks
        while heap and heap[0] not in book:
            heappop(heap)
        return heap[0] if heap else None

    def crossed(self) -> tuple[int, int] | None:
        """(best bid, best ask) if best bid >= best ask, else None."""
        b = self.best_bid()
        if b is None:
            return None
        a = self.best_ask()
        if a is None or b < a:
            return None
        return b, a


def snapshot_crossed(bid_prices: list[int], ask_prices: list[int]) -> tuple[int, int] | None:
    """(best bid, best ask) if a snapshot's own levels cross, else None."""
    if not bid_prices or not ask_prices:
        return None
    b, a = max(bid_prices), min(ask_prices)
    return (b, a) if b >= a else None

"""The replayed market's L2 book, re-gridded onto the listed pair's tick and lot.

A capture from another venue (Binance BTCUSDT, 0.01 tick) is served as a Kraken pair (XBTUSDT,
0.1 tick), so every recorded level is put in the bucket a Kraken order could rest at: bids round
down, asks round up, sizes at one bucket add up. Rounding that way only ever makes the book look
slightly worse to a taker, never better, so strategies are not flattered by the translation.

Liquidity that the exchange's own client takes is removed from the bucket (``taken``) until the
recording next updates that bucket: the recording does not know about our orders, so the next
update is the best available word on what rests there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.venues.local_exchange.replay import AGGRESSOR_SELL, SIDE_BID

BID = 1
ASK = 2


def _floor_div(a: int, b: int) -> int:
    return a // b


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


@dataclass(slots=True)
class Grid:
    """Maps a recording's raw integers onto the pair's raw integers."""

    src_price_precision: int
    src_size_precision: int
    pair_decimals: int
    lot_decimals: int
    tick_raw: int
    inexact_sizes: int = 0  # sizes finer than the pair's lot (floored); counted, not hidden

    def bucket(self, side: int, src_price: int) -> int:
        """The pair-grid price a recorded price belongs to (bids down, asks up)."""
        d = self.src_price_precision - self.pair_decimals
        if d >= 0:
            unit = int(10**d) * self.tick_raw
            q = _floor_div(src_price, unit) if side == BID else _ceil_div(src_price, unit)
            return q * self.tick_raw
        scaled = src_price * int(10 ** (-d))
        q = _floor_div(scaled, self.tick_raw) if side == BID else _ceil_div(scaled, self.tick_raw)
        return q * self.tick_raw

    def size(self, src_size: int) -> int:
        d = self.lot_decimals - self.src_size_precision
        if d >= 0:
            return src_size * int(10**d)
        q, r = divmod(src_size, int(10 ** (-d)))
        if r:
            self.inexact_sizes += 1
        return q


@dataclass(slots=True)
class MarketBook:
    """Replayed levels at the pair grid: ``price_raw -> size_raw`` per side."""

    grid: Grid
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    stamp_ns: dict[tuple[int, int], int] = field(default_factory=dict)  # (side, price) -> last update
    taken: dict[tuple[int, int], int] = field(default_factory=dict)  # (side, price) -> taken by us
    _fine: dict[tuple[int, int], int] = field(default_factory=dict)  # (side, src price) -> size
    _sums: dict[tuple[int, int], int] = field(default_factory=dict)  # (side, bucket) -> recorded size

    def side(self, side: int) -> dict[int, int]:
        return self.bids if side == BID else self.asks

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.stamp_ns.clear()
        self.taken.clear()
        self._fine.clear()
        self._sums.clear()

    def _publish(self, side: int, price: int, ts_ns: int) -> None:
        key = (side, price)
        visible = self._sums.get(key, 0) - self.taken.get(key, 0)
        levels = self.side(side)
        if visible > 0:
            levels[price] = visible
        else:
            levels.pop(price, None)
        self.stamp_ns[key] = ts_ns

    def apply_level(self, side: int, src_price: int, src_size: int, ts_ns: int) -> tuple[int, int]:
        """Set one recorded level; returns (pair price, visible size) of the bucket it lands in."""
        side = BID if side == SIDE_BID else ASK
        price = self.grid.bucket(side, src_price)
        size = self.grid.size(src_size)
        fkey = (side, src_price)
        old = self._fine.pop(fkey, 0)
        if size > 0:
            self._fine[fkey] = size
        key = (side, price)
        total = self._sums.get(key, 0) + size - old
        if total > 0:
            self._sums[key] = total
        else:
            self._sums.pop(key, None)
        self.taken.pop(key, None)  # the recording speaks for this bucket again
        self._publish(side, price, ts_ns)
        return price, self.side(side).get(price, 0)

    def trade_price(self, aggressor: int, src_price: int) -> int:
        """A print's price on the pair grid: it happened on the passive side's bucket."""
        return self.grid.bucket(BID if aggressor == AGGRESSOR_SELL else ASK, src_price)

    def take(self, side: int, price: int, qty: int, ts_ns: int) -> None:
        """Our client took ``qty`` at ``price`` from ``side``; hide it until the recording updates."""
        key = (side, price)
        self.taken[key] = self.taken.get(key, 0) + qty
        self._publish(side, price, ts_ns)

    def restore_taken(self, side: int, price: int, qty: int, ts_ns: int) -> None:
        """Re-apply liquidity taken before a restart (the recording has not refilled it yet)."""
        self.taken[(side, price)] = qty
        self._publish(side, price, ts_ns)

    def best(self, side: int) -> int | None:
        levels = self.side(side)
        if not levels:
            return None
        return max(levels) if side == BID else min(levels)

    def recorded_levels(self, side: int, n: int) -> list[tuple[int, int]]:
        """The best ``n`` buckets as the market data has them, before our client took from them:
        what a comparison with the source of that data must look at."""
        rows = [(p, q) for (s, p), q in self._sums.items() if s == side]
        rows.sort(reverse=side == BID)
        return rows[:n]

    def sorted_levels(self, side: int) -> list[tuple[int, int]]:
        """Best first."""
        levels = self.side(side)
        return sorted(levels.items(), reverse=side == BID)

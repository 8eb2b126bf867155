"""Trend following with an EMA crossover: long while the fast EMA is above the slow one, else flat.

The simplest honest trend follower, and the bar benchmark W1. The EMAs are declared, so the
engine computes them in its compiled loop and calls ``on_bar`` only when their order flips —
the strategy's logic stays ordinary Python and runs a few thousand times instead of a million.
"""

from __future__ import annotations

from typing import Any

from bastion.engine.strategy import BarView, Strategy
from bastion.model.orders import Side


class EmaCross(Strategy):
    name = "ema_cross"

    def __init__(self, strategy_id: str | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__(strategy_id, config)
        cfg = {"fast": 10, "slow": 50, "size": "1", **self.config}
        unknown = set(cfg) - {"fast", "slow", "size"}
        if unknown:
            raise ValueError(f"ema_cross: unknown parameters {sorted(unknown)}")
        self.fast, self.slow = int(cfg["fast"]), int(cfg["slow"])
        if not 0 < self.fast < self.slow:
            raise ValueError(f"ema_cross: need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        self._size_text = str(cfg["size"])
        self.signals = 0

    def on_start(self) -> None:
        self._size = self.instrument.qty(self._size_text)
        self.subscribe_bars(
            {"fast": ("ema", self.fast), "slow": ("ema", self.slow)},
            cross=("fast", "slow"),
            warmup=self.slow - 1,
        )

    def on_bar(self, bar: BarView) -> None:
        self.signals += 1
        fast, slow = bar.indicator("fast"), bar.indicator("slow")
        pos = self.position.qty_raw
        if pos == 0 and fast > slow:
            self.submit_market(Side.BUY, self._size)
        elif pos > 0 and fast < slow:
            self.submit_market(Side.SELL, self.instrument.qty_from_raw(pos))

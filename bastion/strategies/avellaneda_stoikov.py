"""Adaptive market making after Avellaneda & Stoikov (2008), with the GLFT variant.

Why this model: it answers the two questions a market maker has — where to centre the quotes and
how wide to make them — from three quantities that can be measured live: volatility σ, the
decay κ of the rate at which market orders reach a quote as it moves away from the mid, and the
trader's risk aversion γ. Inventory shifts the centre (the reservation price) against the
position, so the book leans towards getting flat instead of accumulating risk.

All model arithmetic is in ticks and seconds, so γ, κ and σ do not depend on the price level:
- reservation price  r = mid − q·γ·σ²·τ
- total spread       δ = γ·σ²·τ + (2/γ)·ln(1 + γ/κ)
- GLFT (Guéant–Lehalle–Fernandez-Tapia, infinite horizon):
  half spread = (1/γ)·ln(1 + γ/κ) + ½·c·σ,  skew = c·σ,
  c = sqrt(γ / (2·A·κ) · (1 + γ/κ)^(1 + κ/γ))
where q is the inventory in order-size units and A, κ come from fitting λ(δ) = A·e^(−κδ) to
where trades print relative to the mid. σ is an EWMA of squared mid changes per second.
Quotes are post-only, rounded away from the mid to the tick grid, and replaced only when their
target moves by at least one tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from bastion.engine.strategy import SUB_TOP_OF_BOOK, SUB_TRADES, BookView, Strategy, TradeView
from bastion.model.events import OrderEvent
from bastion.model.fixed import Price, Quantity
from bastion.model.orders import Fill, Order, Side, TimeInForce

NS = 1_000_000_000


@dataclass(slots=True)
class ASConfig:
    gamma: float = 0.001  # risk aversion, 1/ticks
    horizon_s: float = 1.0  # τ for the AS formulas (rolling horizon)
    order_qty: str | None = None  # per quote, instrument units; None: from order_notional
    order_notional: float = 600.0  # quote-currency value per quote when order_qty is not given
    max_position: str | None = None  # |inventory| limit; None: max_position_orders × order size
    max_position_orders: int = 10
    min_half_spread_ticks: float = 1.0
    sigma_halflife_s: float = 30.0
    kappa_window_s: float = 120.0
    kappa_refit_s: float = 5.0
    kappa_default: float = 0.5  # 1/ticks, used until enough trades were seen
    arrival_default: float = 1.0  # A: trades per second at the touch
    warmup_s: float = 20.0
    model: str = "as"  # "as" or "glft"
    max_depth_ticks: int = 50  # trade distances beyond this are not used for the κ fit

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ASConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"avellaneda_stoikov: unknown parameters {sorted(unknown)}; known: {sorted(known)}"
            )
        cfg = cls(**d)
        if cfg.gamma <= 0 or cfg.horizon_s <= 0:
            raise ValueError("avellaneda_stoikov: gamma and horizon_s must be positive")
        if cfg.model not in ("as", "glft"):
            raise ValueError(f"avellaneda_stoikov: model must be 'as' or 'glft', got {cfg.model!r}")
        return cfg


class IntensityEstimator:
    """Fits λ(δ) = A·e^(−κδ) to trade distances from the mid over a sliding window.

    Counts per integer tick distance are kept in time buckets; the fit is a least-squares line
    through log(count rate) against distance, over the distances that saw trades.
    """

    def __init__(self, window_s: float, max_depth: int) -> None:
        self.window_ns = int(window_s * NS)
        self.max_depth = max_depth
        self.events: list[tuple[int, int]] = []  # (ts, distance)
        self._start = 0

    def add(self, ts: int, distance_ticks: int) -> None:
        if 0 <= distance_ticks <= self.max_depth:
            self.events.append((ts, distance_ticks))

    def fit(self, now: int) -> tuple[float, float] | None:
        cutoff = now - self.window_ns
        while self._start < len(self.events) and self.events[self._start][0] < cutoff:
            self._start += 1
        if self._start > 10_000:
            self.events = self.events[self._start :]
            self._start = 0
        live = self.events[self._start :]
        if len(live) < 30:
            return None
        counts = [0] * (self.max_depth + 1)
        for _, d in live:
            counts[d] += 1
        span_s = max(1e-9, min(self.window_ns, now - live[0][0]) / NS)
        # λ(δ): rate of trades reaching at least δ ticks from the mid (cumulative from the far end)
        cum = 0
        pts: list[tuple[float, float]] = []
        for d in range(self.max_depth, -1, -1):
            cum += counts[d]
            if cum > 0:
                pts.append((float(d), math.log(cum / span_s)))
        if len(pts) < 3:
            return None
        n = len(pts)
        mx = sum(p[0] for p in pts) / n
        my = sum(p[1] for p in pts) / n
        sxx = sum((p[0] - mx) ** 2 for p in pts)
        if sxx <= 0:
            return None
        slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
        kappa = -slope
        if kappa <= 1e-6:
            return None
        arrival = math.exp(my - slope * mx)
        return arrival, kappa


class AvellanedaStoikov(Strategy):
    name = "avellaneda_stoikov"

    def __init__(self, strategy_id: str | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__(strategy_id, config)
        self.cfg = ASConfig.from_dict(self.config)
        self.bid: Order | None = None
        self.ask: Order | None = None
        self._last_mid = 0.0
        self._last_t = 0
        self._var_rate = 0.0  # ticks² per second
        self._started_at = 0
        self._next_fit = 0
        self.kappa = self.cfg.kappa_default
        self.arrival = self.cfg.arrival_default
        self.kappa_fits = 0

    def on_start(self) -> None:
        self.subscribe(SUB_TOP_OF_BOOK, SUB_TRADES)
        inst = self.instrument
        self._tick = float(inst.tick_size)
        self._tick_raw = inst.tick_raw
        self._qty: Quantity | None = None
        self._max_pos_raw = 0
        if self.cfg.order_qty is not None:
            self._set_size(self._checked_qty("order_qty", self.cfg.order_qty))
        self._intensity = IntensityEstimator(self.cfg.kappa_window_s, self.cfg.max_depth_ticks)
        self._started_at = self.now
        self._mid_ticks = 0.0

    def _checked_qty(self, name: str, text: str) -> Quantity:
        try:
            q = self.instrument.qty(text)
        except ValueError as exc:
            raise ValueError(
                f"avellaneda_stoikov: {name}={text} does not fit {self.instrument.id} "
                f"(lot {self.instrument.lot_size}): {exc}"
            ) from None
        if q.raw <= 0:
            raise ValueError(f"avellaneda_stoikov: {name} must be positive")
        return q

    def _set_size(self, qty: Quantity) -> None:
        self._qty = qty
        if self.cfg.max_position is not None:
            self._max_pos_raw = self._checked_qty("max_position", self.cfg.max_position).raw
        else:
            self._max_pos_raw = qty.raw * self.cfg.max_position_orders

    def _size_from_notional(self, mid_raw: int) -> None:
        """Order size worth ``order_notional`` at the first mid, in whole lots (at least one)."""
        inst = self.instrument
        value_of_one_lot = float(inst.notional_value(mid_raw, inst.lot_raw))
        lots = max(1, round(self.cfg.order_notional / value_of_one_lot)) if value_of_one_lot > 0 else 1
        self._set_size(Quantity(lots * inst.lot_raw, inst.size_precision))
        self.config.setdefault("resolved_order_qty", str(self._qty))

    # --- estimation --------------------------------------------------------------------------
    def _update_sigma(self, mid_ticks: float, now: int) -> None:
        if self._last_t:
            dt = (now - self._last_t) / NS
            if dt > 0:
                dm = mid_ticks - self._last_mid
                alpha = 1.0 - math.exp(-dt * math.log(2) / self.cfg.sigma_halflife_s)
                self._var_rate += alpha * (dm * dm / dt - self._var_rate)
        self._last_mid = mid_ticks
        self._last_t = now

    def on_trade(self, trade: TradeView) -> None:
        if self._mid_ticks <= 0:
            return
        dist = abs(trade.price_raw / self._tick_raw - self._mid_ticks)
        self._intensity.add(trade.ts_event, int(dist))
        now = self.now
        if now >= self._next_fit:
            self._next_fit = now + int(self.cfg.kappa_refit_s * NS)
            fit = self._intensity.fit(now)
            if fit is not None:
                self.arrival, self.kappa = fit
                self.kappa_fits += 1

    @property
    def sigma(self) -> float:
        """Volatility of the mid in ticks per sqrt(second)."""
        return math.sqrt(max(self._var_rate, 0.0))

    # --- quoting ---------------------------------------------------------------------------------
    def quotes(self, mid_ticks: float, q_units: float) -> tuple[float, float]:
        """Bid and ask targets (in ticks, before rounding) for a mid and an inventory."""
        g, k, sig = self.cfg.gamma, self.kappa, self.sigma
        if self.cfg.model == "glft":
            c = math.sqrt(g / (2 * self.arrival * k) * (1 + g / k) ** (1 + k / g))
            half = math.log(1 + g / k) / g + 0.5 * c * sig
            skew = c * sig
            half = max(half, self.cfg.min_half_spread_ticks)
            return mid_ticks - half - skew * q_units, mid_ticks + half - skew * q_units
        tau = self.cfg.horizon_s
        r = mid_ticks - q_units * g * sig * sig * tau
        half = 0.5 * (g * sig * sig * tau + (2 / g) * math.log(1 + g / k))
        half = max(half, self.cfg.min_half_spread_ticks)
        return r - half, r + half

    def on_book(self, book: BookView) -> None:
        if not book.is_valid():  # no trustworthy book (a gap, one side empty): quote nothing
            self.cancel_all()
            return
        bid_raw, ask_raw = book.bid_raw, book.ask_raw
        mid = (bid_raw + ask_raw) / (2 * self._tick_raw)
        now = self.now
        self._mid_ticks = mid
        self._update_sigma(mid, now)
        if now - self._started_at < self.cfg.warmup_s * NS:
            return
        if self._qty is None:
            self._size_from_notional((bid_raw + ask_raw) // 2)
        assert self._qty is not None
        pos = self.position.qty_raw
        q_units = pos / self._qty.raw
        b, a = self.quotes(mid, q_units)
        best_bid_t = bid_raw // self._tick_raw
        best_ask_t = ask_raw // self._tick_raw
        bid_t = min(math.floor(b), best_ask_t - 1)  # post-only: never cross
        ask_t = max(math.ceil(a), best_bid_t + 1)
        self.bid = self._quote(Side.BUY, self.bid, bid_t, pos + self._qty.raw <= self._max_pos_raw)
        self.ask = self._quote(Side.SELL, self.ask, ask_t, pos - self._qty.raw >= -self._max_pos_raw)

    def _quote(self, side: Side, current: Order | None, target_t: int, allowed: bool) -> Order | None:
        if current is not None and not current.status.is_open:
            current = None
        if current is not None:
            if current.cancel_pending:
                return current  # wait for the venue's answer before quoting again
            assert current.price is not None
            if allowed and current.price.raw == target_t * self._tick_raw:
                return current
            self.cancel(current)
            return current
        if not allowed:
            return None
        price = Price(target_t * self._tick_raw, self.instrument.price_precision)
        assert self._qty is not None
        return self.submit_limit(side, price, self._qty, TimeInForce.POST_ONLY)

    def on_order(self, event: OrderEvent) -> None:
        pass

    def on_fill(self, fill: Fill) -> None:
        pass

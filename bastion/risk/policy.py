"""Compliance and limits: which venues we may use and how much risk an order may add.

Two principles shape every rule here:

- **A limit must never stop you from getting out.** Exposure rules judge the order by what it
  does: one that leaves a figure no higher than it was passes even when that figure is already
  over its limit (a book over-levered by a price move must still be able to shrink). Reduce-only
  orders cannot add exposure at the venue and skip the exposure rules entirely. Rate limits and
  the venue deny-list still apply to them: a venue ban or a compliance breach stops everything.
- **Every refusal explains itself** with the rule name and the numbers, computed exactly
  (``Fraction``), so an operator can see at once whether the limit or the order is wrong.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.engine.clock import Clock
from bastion.model.instruments import Instrument
from bastion.model.orders import Order, Side
from bastion.risk.decision import Decision, fmt_number, fmt_pair

NS_PER_S = 1_000_000_000

DEFAULT_ALLOWED_VENUES = (
    "coinbase",
    "kraken",
    "gemini",
    "mexc",
    "gateio",
    "hyperliquid",
    "polymarket",
    "sim",
)
DEFAULT_DENIED_VENUES = ("binance", "bybit", "bitget", "okx", "kucoin")
DEFAULT_NON_KYC_VENUES = ("mexc", "gateio", "hyperliquid", "polymarket")


def _venue_names(values: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        name = str(v).strip().lower()
        if not name:
            raise ValueError(f"empty venue name in {list(values)!r}")
        if name not in out:
            out.append(name)
    return tuple(out)


class ComplianceConfig(BaseModel):
    """``risk.compliance``: where the fund may trade. Venue names are case-insensitive; a venue
    in neither list is refused, so a new venue is used only after someone decides it may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_venues: tuple[str, ...] = DEFAULT_ALLOWED_VENUES
    denied_venues: tuple[str, ...] = DEFAULT_DENIED_VENUES
    non_kyc_venues: tuple[str, ...] = DEFAULT_NON_KYC_VENUES
    max_non_kyc_exposure_pct: Decimal = Field(default=Decimal("20"), ge=0, le=100)

    @field_validator("allowed_venues", "denied_venues", "non_kyc_venues", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            return _venue_names(v)
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> Self:
        both = sorted(set(self.allowed_venues) & set(self.denied_venues))
        if both:
            raise ValueError(f"venues both allowed and denied: {both} (denied_venues wins nowhere; pick one)")
        return self


class SymbolLimits(BaseModel):
    """Caps on the whole portfolio's position in one instrument (``None`` = no cap)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_position: Decimal | None = Field(default=None, gt=0)  # instrument units (base or contracts)
    max_notional: Decimal | None = Field(default=None, gt=0)  # capital currency


class LimitsConfig(BaseModel):
    """``risk.limits``: leverage is gross notional / capital; rates are orders per sliding window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capital_currency: str = "USDT"
    # stablecoins counted at par for limit purposes (a depeg is a risk of its own, not of sizing)
    par_currencies: tuple[str, ...] = ("USD", "USDT", "USDC")
    max_portfolio_leverage: Decimal = Field(default=Decimal("2.0"), gt=0)
    max_strategy_leverage: Decimal = Field(default=Decimal("1.5"), gt=0)
    # keyed by instrument id ("BTCUSDT-PERP.KRAKEN") or by symbol ("BTCUSDT-PERP"), id first
    symbols: dict[str, SymbolLimits] = Field(default_factory=dict)
    default_symbol: SymbolLimits = Field(default_factory=SymbolLimits)
    # defaults sit under common venue limits for a retail account (about 10-20 new orders/s),
    # high enough for a market maker that requotes on every top-of-book change
    max_orders_per_second_strategy: int = Field(default=10, ge=1)
    max_orders_per_minute_strategy: int = Field(default=600, ge=1)
    max_orders_per_second_venue: int = Field(default=20, ge=1)
    max_orders_per_minute_venue: int = Field(default=1200, ge=1)

    @field_validator("capital_currency")
    @classmethod
    def _upper(cls, v: str) -> str:
        v = v.strip().upper()
        if not v:
            raise ValueError("capital_currency must not be empty")
        return v

    @field_validator("par_currencies", mode="before")
    @classmethod
    def _upper_all(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            return tuple(str(x).strip().upper() for x in v)
        return v


class PolicyConfig(Protocol):
    """What the checker reads: ``RiskConfig`` (``bastion.risk.config``) satisfies it."""

    @property
    def compliance(self) -> ComplianceConfig: ...

    @property
    def limits(self) -> LimitsConfig: ...


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A new order as the policy sees it. ``price_raw`` is the limit price or, for a market
    order, a reference price (the far touch); ``reduce_only`` means the venue will refuse to grow
    the position with it."""

    strategy_id: str
    venue: str
    instrument: Instrument
    side: Side
    qty_raw: int
    price_raw: int
    reduce_only: bool = False
    # settlement-currency value when the caller has already computed it (a market order valued
    # at its reference price); otherwise ``instrument.notional_value(price_raw, qty_raw)``
    notional: Fraction | None = None

    def settle_value(self) -> Fraction:
        if self.notional is not None:
            return abs(Fraction(self.notional))
        return self.instrument.notional_value(self.price_raw, self.qty_raw)


class ExposureView(Protocol):
    """Current exposure, valued in the capital currency. Notionals of one position are signed
    (long > 0); gross figures are sums of absolute notionals. Venue names are lower-case.
    ``strategy_id=None`` means the whole portfolio."""

    def position_qty_raw(self, instrument_id: str, strategy_id: str | None = None) -> int: ...

    def position_notional(self, instrument_id: str, strategy_id: str | None = None) -> Fraction: ...

    def strategy_gross_notional(self, strategy_id: str) -> Fraction: ...

    def venue_gross_notional(self, venue: str) -> Fraction: ...

    def gross_notional(self) -> Fraction: ...


class SlidingWindowCounter:
    """Timestamps of recent events per key; counts how many fell in the last ``window_ns``."""

    def __init__(self, horizon_ns: int) -> None:
        self._horizon = horizon_ns
        self._events: dict[str, deque[int]] = {}

    def count(self, key: str, now_ns: int, window_ns: int) -> int:
        q = self._events.get(key)
        if not q:
            return 0
        cutoff = now_ns - window_ns
        n = 0
        for ts in reversed(q):  # newest first; a clock step backwards still counts (conservative)
            if ts <= cutoff:
                break
            n += 1
        return n

    def record(self, key: str, now_ns: int) -> None:
        q = self._events.setdefault(key, deque())
        q.append(now_ns)
        cutoff = now_ns - self._horizon
        while q and q[0] <= cutoff:
            q.popleft()


class PolicyChecker:
    """Compliance, exposure and rate rules for new orders (cancels never come here).

    An order that passes is counted against the rate limits at once: ``check`` is called when
    the order is about to be sent, and a later refusal by another gate wastes at most a slot.
    ``fx(currency)`` gives the value of one unit of ``currency`` in the capital currency (for
    settlement currencies other than the capital's and its par stablecoins); without it such
    orders are refused rather than valued at a guess.
    """

    name = "policy"

    def __init__(
        self,
        config: PolicyConfig,
        capital: Fraction,
        clock: Clock,
        *,
        fx: Callable[[str], Fraction | None] | None = None,
    ) -> None:
        self.compliance = config.compliance
        self.limits = config.limits
        self.capital = Fraction(capital)
        self._clock = clock
        self._fx = fx
        self._allowed = frozenset(self.compliance.allowed_venues)
        self._denied = frozenset(self.compliance.denied_venues)
        self._non_kyc = frozenset(self.compliance.non_kyc_venues)
        self._par = frozenset(self.limits.par_currencies)
        self._rates = SlidingWindowCounter(60 * NS_PER_S)

    def set_capital(self, capital: Fraction) -> None:
        self.capital = Fraction(capital)

    # --- helpers ------------------------------------------------------------------------------
    def _ccy(self) -> str:
        return self.limits.capital_currency

    def _money(self, v: Fraction) -> str:
        return f"{fmt_number(v)} {self._ccy()}"

    def _rate(self, currency: str) -> Fraction | None:
        c = currency.upper()
        cap = self._ccy()
        if c == cap or (c in self._par and cap in self._par):
            return Fraction(1)
        if self._fx is None:
            return None
        r = self._fx(c)
        return None if r is None or r <= 0 else Fraction(r)

    def symbol_limits(self, inst: Instrument) -> SymbolLimits:
        s = self.limits.symbols
        return s.get(inst.id) or s.get(inst.symbol) or self.limits.default_symbol

    def venue_allowed(self, venue: str) -> Decision:
        v = venue.strip().lower()
        if v in self._denied:
            return Decision.refuse("venue_denied", f"venue {v!r} is on the compliance deny-list")
        if v not in self._allowed:
            return Decision.refuse(
                "venue_not_allowed",
                f"venue {v!r} is not on the allow-list ({', '.join(sorted(self._allowed))})",
            )
        return Decision.allow("venue_allowed", v)

    def _leverage(self, rule: str, what: str, before: Fraction, after: Fraction, limit: Fraction) -> Decision:
        """Refuse only an order that raises the figure past the limit (getting out always passes)."""
        cap = self.capital
        if after <= before or after <= limit * cap:
            return Decision.allow(rule)
        a, b = fmt_pair(after / cap, limit)
        return Decision.refuse(rule, f"{what} {a}x after order > limit {b}x (capital {self._money(cap)})")

    # --- the check ----------------------------------------------------------------------------
    def check(self, intent: OrderIntent, book: ExposureView) -> Decision:
        inst = intent.instrument
        if intent.qty_raw <= 0 or (intent.price_raw <= 0 and not intent.notional):
            return Decision.refuse(
                "invalid_order",
                f"quantity raw {intent.qty_raw} must be > 0 and price raw {intent.price_raw} "
                f"(or a notional, given {intent.notional}) must be > 0",
            )
        venue = intent.venue.strip().lower()
        d = self.venue_allowed(venue)
        if not d.ok:
            return d
        rate = self._rate(inst.settle)
        if rate is None:
            return Decision.refuse(
                "currency_conversion", f"no rate from {inst.settle} to {self._ccy()} to value the order"
            )
        if not intent.reduce_only:
            d = self._check_exposure(intent, venue, rate, book)
            if not d.ok:
                return d
        d = self._check_rates(intent.strategy_id, venue)
        if not d.ok:
            return d
        now = self._clock.now_ns()
        self._rates.record(f"s:{intent.strategy_id}", now)
        self._rates.record(f"v:{venue}", now)
        return Decision.allow("policy_ok")

    def _check_exposure(
        self, intent: OrderIntent, venue: str, rate: Fraction, book: ExposureView
    ) -> Decision:
        inst, sid = intent.instrument, intent.strategy_id
        sign = 1 if intent.side is Side.BUY else -1
        settle_value = intent.settle_value()
        order_n = settle_value * rate  # capital currency, unsigned

        # the portfolio's position in this instrument (it sits on one venue)
        cur_q = book.position_qty_raw(inst.id)
        new_q = cur_q + sign * intent.qty_raw
        cur_n = Fraction(book.position_notional(inst.id))
        new_n = cur_n + sign * order_n
        grows = abs(new_n) > abs(cur_n) or abs(new_q) > abs(cur_q)
        # the strategy's own book can grow while the portfolio shrinks (another strategy holds
        # the other side), so it is judged on its own figures
        s_cur_n = Fraction(book.position_notional(inst.id, sid))
        s_gross = Fraction(book.strategy_gross_notional(sid))
        s_gross_new = s_gross - abs(s_cur_n) + abs(s_cur_n + sign * order_n)
        if not grows and s_gross_new <= s_gross:
            return Decision.allow("exposure_reduced")
        cap = self.capital
        if cap <= 0:
            return Decision.refuse("no_capital", f"capital {self._money(cap)}: no exposure can be added")

        if grows:
            d = self._check_symbol(intent, settle_value, cur_q, new_q, cur_n, new_n)
            if not d.ok:
                return d
        d = self._leverage(
            "leverage_strategy",
            f"strategy {sid!r} gross",
            s_gross,
            s_gross_new,
            Fraction(self.limits.max_strategy_leverage),
        )
        if not d.ok or not grows:
            return d

        gross = Fraction(book.gross_notional())
        d = self._leverage(
            "leverage_portfolio",
            "gross",
            gross,
            gross - abs(cur_n) + abs(new_n),
            Fraction(self.limits.max_portfolio_leverage),
        )
        if not d.ok:
            return d

        if venue in self._non_kyc:
            total = sum((Fraction(book.venue_gross_notional(v)) for v in sorted(self._non_kyc)), Fraction(0))
            total_new = total - abs(cur_n) + abs(new_n)
            pct = Fraction(self.compliance.max_non_kyc_exposure_pct)
            if total_new > total and total_new * 100 > pct * cap:
                a, b = fmt_pair(total_new * 100 / cap, pct)
                return Decision.refuse(
                    "non_kyc_exposure",
                    f"non-KYC venues exposure {self._money(total_new)} = {a}% of capital after order > "
                    f"limit {b}% (capital {self._money(cap)})",
                )
        return Decision.allow("exposure_ok")

    def _check_symbol(
        self,
        intent: OrderIntent,
        settle_value: Fraction,
        cur_q: int,
        new_q: int,
        cur_n: Fraction,
        new_n: Fraction,
    ) -> Decision:
        inst = intent.instrument
        # the venue minimum binds orders that add; a venue lets a closing remainder through
        if inst.min_notional > 0:
            quote_value = (
                Fraction(intent.qty_raw, 10**inst.size_precision) * Fraction(inst.contract_size)
                if inst.is_inverse
                else settle_value
            )
            min_n = Fraction(inst.min_notional)
            if quote_value < min_n:
                a, b = fmt_pair(quote_value, min_n)
                return Decision.refuse(
                    "min_notional",
                    f"order notional {a} {inst.quote} < minimum {b} {inst.quote} for {inst.id}",
                )
        lim = self.symbol_limits(inst)
        scale = 10**inst.size_precision
        if lim.max_position is not None and abs(new_q) > abs(cur_q):
            max_q = Fraction(lim.max_position)
            if Fraction(abs(new_q), scale) > max_q:
                a, b = fmt_pair(Fraction(abs(new_q), scale), max_q)
                return Decision.refuse(
                    "symbol_max_position", f"{inst.id} position {a} after order > limit {b}"
                )
        if lim.max_notional is not None and abs(new_n) > abs(cur_n):
            max_n = Fraction(lim.max_notional)
            if abs(new_n) > max_n:
                a, b = fmt_pair(abs(new_n), max_n)
                ccy = self._ccy()
                return Decision.refuse(
                    "symbol_max_notional", f"{inst.id} notional {a} {ccy} after order > limit {b} {ccy}"
                )
        return Decision.allow("symbol_ok")

    def _check_rates(self, strategy_id: str, venue: str) -> Decision:
        now = self._clock.now_ns()
        L = self.limits
        checks = (
            ("rate_strategy_per_second", f"s:{strategy_id}", NS_PER_S, L.max_orders_per_second_strategy,
             f"strategy {strategy_id!r}", "1s", "/s"),
            ("rate_strategy_per_minute", f"s:{strategy_id}", 60 * NS_PER_S, L.max_orders_per_minute_strategy,
             f"strategy {strategy_id!r}", "60s", "/min"),
            ("rate_venue_per_second", f"v:{venue}", NS_PER_S, L.max_orders_per_second_venue,
             f"venue {venue!r}", "1s", "/s"),
            ("rate_venue_per_minute", f"v:{venue}", 60 * NS_PER_S, L.max_orders_per_minute_venue,
             f"venue {venue!r}", "60s", "/min"),
        )  # fmt: skip
        for rule, key, window, limit, who, span, unit in checks:
            n = self._rates.count(key, now, window)
            if n >= limit:
                return Decision.refuse(
                    rule, f"{n} orders in the last {span} for {who} >= limit {limit}{unit}"
                )
        return Decision.allow("rate_ok")


class OrderFactsLike(Protocol):
    """What the order gateway already knows about an order (its ``OrderFacts``)."""

    @property
    def venue(self) -> str: ...

    @property
    def instrument(self) -> Instrument: ...

    @property
    def notional(self) -> Fraction: ...


class PolicyGate:
    """The checker in the shape of the gateway's pre-trade check (``name``, ``check(order,
    facts)``), so wiring needs no glue code and the risk layer never imports execution."""

    name = "policy"

    def __init__(self, checker: PolicyChecker, book: ExposureView) -> None:
        self.checker = checker
        self.book = book

    def check(self, order: Order, facts: OrderFactsLike) -> Decision:
        return self.checker.check(
            OrderIntent(
                strategy_id=order.strategy_id,
                venue=facts.venue,
                instrument=facts.instrument,
                side=order.side,
                qty_raw=order.quantity.raw,
                price_raw=order.price.raw if order.price is not None else 0,
                reduce_only=order.reduce_only,
                notional=facts.notional,
            ),
            self.book,
        )

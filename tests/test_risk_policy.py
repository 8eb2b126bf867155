"""Compliance and limits: every rule refuses with its name and numbers; getting out always passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from bastion.engine.clock import SimClock
from bastion.model.instruments import Instrument, InstrumentKind
from bastion.model.orders import Side
from bastion.risk.config import RiskConfig
from bastion.risk.policy import ComplianceConfig, LimitsConfig, OrderIntent, PolicyChecker, PolicyGate

S = 1_000_000_000
CAPITAL = Fraction(10_000)


def spot(venue: str = "kraken", symbol: str = "BTC-USD", min_notional: str = "10") -> Instrument:
    return Instrument(
        symbol,
        venue,
        InstrumentKind.SPOT,
        "BTC",
        "USD",
        Decimal("0.1"),
        Decimal("0.0001"),
        min_notional=Decimal(min_notional),
    )


BTC = spot()
ETH = Instrument("ETH-USD", "kraken", InstrumentKind.SPOT, "ETH", "USD", Decimal("0.01"), Decimal("0.001"))
INVERSE = Instrument(
    "BTCUSD-PERP",
    "kraken",
    InstrumentKind.INVERSE_PERPETUAL,
    "BTC",
    "USD",
    Decimal("0.5"),
    Decimal("1"),
    contract_size=Decimal("100"),
)


@dataclass
class Book:
    """Exposure from a list of positions: (strategy, venue, instrument id, qty_raw, signed notional)."""

    rows: list[tuple[str, str, str, int, Fraction]] = field(default_factory=list)

    def add(self, strategy: str, inst: Instrument, qty_raw: int, notional: int | Fraction) -> Book:
        self.rows.append((strategy, inst.venue.lower(), inst.id, qty_raw, Fraction(notional)))
        return self

    def position_qty_raw(self, instrument_id: str, strategy_id: str | None = None) -> int:
        return sum(r[3] for r in self.rows if r[2] == instrument_id and strategy_id in (None, r[0]))

    def position_notional(self, instrument_id: str, strategy_id: str | None = None) -> Fraction:
        return sum(
            (r[4] for r in self.rows if r[2] == instrument_id and strategy_id in (None, r[0])), Fraction(0)
        )

    def _gross(self, keep: Any) -> Fraction:
        by: dict[str, Fraction] = {}
        for r in self.rows:
            if keep(r):
                by[r[2]] = by.get(r[2], Fraction(0)) + r[4]
        return sum((abs(v) for v in by.values()), Fraction(0))

    def strategy_gross_notional(self, strategy_id: str) -> Fraction:
        by: dict[str, Fraction] = {}
        for r in self.rows:
            if r[0] == strategy_id:
                by[r[2]] = by.get(r[2], Fraction(0)) + r[4]
        return sum((abs(v) for v in by.values()), Fraction(0))

    def venue_gross_notional(self, venue: str) -> Fraction:
        return self._gross(lambda r: r[1] == venue)

    def gross_notional(self) -> Fraction:
        return self._gross(lambda r: True)


def checker(clock: SimClock | None = None, capital: Fraction = CAPITAL, **limits: Any) -> PolicyChecker:
    cfg = RiskConfig(limits=LimitsConfig(**limits))
    return PolicyChecker(cfg, capital, clock or SimClock(1_000 * S))


def buy(inst: Instrument = BTC, qty: str = "0.1", price: str = "50000", **kw: Any) -> OrderIntent:
    return OrderIntent(
        kw.pop("strategy_id", "mm"),
        kw.pop("venue", inst.venue),
        inst,
        kw.pop("side", Side.BUY),
        inst.qty(qty).raw,
        inst.price(price).raw,
        **kw,
    )


def sell(inst: Instrument = BTC, qty: str = "0.1", price: str = "50000", **kw: Any) -> OrderIntent:
    return buy(inst, qty, price, side=Side.SELL, **kw)


# --- compliance ----------------------------------------------------------------------------------
def test_defaults_allow_kraken_and_deny_binance() -> None:
    pc = checker()
    assert pc.check(buy(), Book()).ok
    assert pc.check(buy(venue="Kraken"), Book()).ok  # venue names are case-insensitive
    d = pc.check(buy(venue="BINANCE"), Book())
    assert (d.ok, d.rule) == (False, "venue_denied") and "'binance'" in d.detail
    d = pc.check(buy(venue="ftx"), Book())
    assert (d.ok, d.rule) == (False, "venue_not_allowed") and "'ftx'" in d.detail and "kraken" in d.detail


def test_default_lists() -> None:
    c = ComplianceConfig()
    assert {"coinbase", "kraken", "gemini", "mexc", "gateio", "hyperliquid", "polymarket", "sim"} == set(
        c.allowed_venues
    )
    assert {"binance", "bybit", "bitget", "okx", "kucoin"} == set(c.denied_venues)
    assert {"mexc", "gateio", "hyperliquid", "polymarket"} == set(c.non_kyc_venues)
    assert c.max_non_kyc_exposure_pct == 20
    lim = LimitsConfig()
    assert (lim.max_portfolio_leverage, lim.max_strategy_leverage) == (Decimal("2.0"), Decimal("1.5"))


def test_denied_venue_refuses_even_reduce_only() -> None:
    """Compliance is not a limit: the gateway does not talk to a denied venue at all."""
    d = checker().check(sell(venue="binance", reduce_only=True), Book().add("mm", BTC, 1000, 5000))
    assert d.rule == "venue_denied"


def test_compliance_config_is_case_insensitive_and_rejects_overlap() -> None:
    c = ComplianceConfig(allowed_venues=["Kraken", "KRAKEN", "sim"], denied_venues=["Binance"])
    assert c.allowed_venues == ("kraken", "sim") and c.denied_venues == ("binance",)
    with pytest.raises(ValidationError, match=r"both allowed and denied: \['kraken'\]"):
        ComplianceConfig(allowed_venues=["kraken"], denied_venues=["KRAKEN"])
    with pytest.raises(ValidationError, match="allowed_venuez"):
        ComplianceConfig.model_validate({"allowed_venuez": []})


def test_risk_section_loads_from_yaml() -> None:
    raw = yaml.safe_load(
        """
        breaker: {max_loss_pct: 7.5, cooldown_s: 60}
        compliance: {allowed_venues: [Kraken, sim]}
        limits:
          max_portfolio_leverage: 1.5
          symbols:
            BTC-USD: {max_position: 0.5, max_notional: 20000}
        kill_switch: {flag_path: /tmp/KILL}
        """
    )
    cfg = RiskConfig.model_validate(raw)
    assert cfg.breaker.max_loss_pct == Decimal("7.5")
    assert cfg.compliance.allowed_venues == ("kraken", "sim")
    assert cfg.limits.max_portfolio_leverage == Decimal("1.5")
    assert cfg.limits.symbols["BTC-USD"].max_position == Decimal("0.5")
    with pytest.raises(ValidationError, match="max_portfolio_leverage"):
        RiskConfig.model_validate({"limits": {"max_portfolio_leverage": -1}})


# --- per order and per symbol -------------------------------------------------------------------
def test_min_notional_from_the_instrument() -> None:
    d = checker().check(buy(qty="0.0001"), Book())  # 5 USD
    assert (d.ok, d.rule) == (False, "min_notional")
    assert "5.00 USD < minimum 10.00 USD for BTC-USD.kraken" in d.detail
    # closing a small remainder is not blocked by the venue minimum
    assert checker().check(sell(qty="0.0001"), Book().add("mm", BTC, 1, 5)).ok


def test_symbol_max_position() -> None:
    pc = checker(capital=Fraction(100_000), symbols={"BTC-USD": {"max_position": "0.5"}})
    book = Book().add("mm", BTC, 4500, 22_500)  # long 0.45
    d = pc.check(buy(qty="0.1"), book)
    assert (d.ok, d.rule) == (False, "symbol_max_position")
    assert d.detail == "BTC-USD.kraken position 0.55 after order > limit 0.50"
    assert pc.check(buy(qty="0.05"), book).ok  # exactly at the limit
    assert pc.check(sell(qty="0.1"), book).ok


def test_symbol_limits_by_instrument_id_first() -> None:
    pc = checker(symbols={"BTC-USD.kraken": {"max_notional": "6000"}, "BTC-USD": {"max_notional": "1000000"}})
    d = pc.check(buy(qty="0.1"), Book().add("mm", BTC, 200, Fraction(20001, 20)))  # 1,000.05 + 5,000
    assert (d.ok, d.rule) == (False, "symbol_max_notional")
    assert d.detail == "BTC-USD.kraken notional 6,000.05 USDT after order > limit 6,000.00 USDT"


def test_symbol_max_notional_numbers() -> None:
    pc = checker(default_symbol={"max_notional": "5000"})
    d = pc.check(buy(qty="0.1", price="50000.1"), Book())
    assert (d.ok, d.rule) == (False, "symbol_max_notional")
    assert d.detail == "BTC-USD.kraken notional 5,000.01 USDT after order > limit 5,000.00 USDT"


# --- leverage -------------------------------------------------------------------------------------
def test_portfolio_leverage_refusal_names_the_numbers() -> None:
    book = Book().add("a", ETH, 1000, 9_000).add("b", BTC, 1800, 9_000)
    d = checker().check(buy(qty="0.1", strategy_id="c", price="55000"), book)  # +5,500
    assert d == d.refuse("leverage_portfolio", "gross 2.35x after order > limit 2.00x (capital 10,000 USDT)")


def test_strategy_leverage() -> None:
    book = Book().add("mm", ETH, 1000, 12_000)
    d = checker().check(buy(qty="0.1"), book)  # +5,000 for the same strategy
    assert d.rule == "leverage_strategy"
    assert d.detail == "strategy 'mm' gross 1.70x after order > limit 1.50x (capital 10,000 USDT)"
    assert checker().check(buy(qty="0.1", strategy_id="other"), book).ok


def test_leverage_is_exact_at_the_limit() -> None:
    book = Book().add("a", ETH, 1000, 15_000)
    assert checker().check(buy(qty="0.1", strategy_id="b"), book).ok  # exactly 2.00x
    d = checker().check(buy(qty="0.1", strategy_id="b", price="50000.1"), book)
    assert d.rule == "leverage_portfolio" and "2.000001x after order > limit 2.000000x" in d.detail


def test_reducing_orders_pass_even_when_over_the_limits() -> None:
    """A price move left the book at 3x: selling must still be possible, buying must not."""
    pc = checker(symbols={"BTC-USD": {"max_position": "0.1", "max_notional": "1000"}})
    book = Book().add("mm", BTC, 6000, 30_000)  # long 0.6 BTC = 3.0x, over every limit
    assert pc.check(sell(qty="0.2"), book).ok
    assert pc.check(sell(qty="0.6"), book).ok  # flat
    assert pc.check(sell(qty="0.0001"), book).ok  # below the venue minimum, but closing
    assert pc.check(sell(qty="5", reduce_only=True), book).ok  # the venue clips reduce-only
    assert not pc.check(buy(qty="0.1"), book).ok
    d = pc.check(sell(qty="1.3"), book)  # flips to short 0.7: grows again
    assert not d.ok and d.rule == "symbol_max_position"


def test_no_capital_adds_nothing_but_lets_you_out() -> None:
    pc = checker(capital=Fraction(0))
    d = pc.check(buy(), Book())
    assert (d.ok, d.rule) == (False, "no_capital")
    assert pc.check(sell(), Book().add("mm", BTC, 1000, 5000)).ok


# --- non-KYC venues --------------------------------------------------------------------------------
def test_non_kyc_exposure_is_capped_across_venues() -> None:
    mexc, gate = spot("mexc"), spot("gateio", "BTC-USDT")
    book = Book().add("a", mexc, 200, 1000).add("b", gate, 100, 500)
    assert checker().check(buy(mexc, qty="0.01"), book).ok  # 1,500 + 500 = 20 %
    d = checker().check(buy(gate, qty="0.0102"), book)  # 1,500 + 510
    assert (d.ok, d.rule) == (False, "non_kyc_exposure")
    assert d.detail == (
        "non-KYC venues exposure 2,010 USDT = 20.10% of capital after order > limit 20.00% "
        "(capital 10,000 USDT)"
    )
    assert checker().check(sell(mexc, qty="0.02"), book).ok  # reducing
    assert checker().check(buy(qty="0.2"), book).ok  # kraken is not a non-KYC venue


# --- currencies and bad input --------------------------------------------------------------------
def test_other_settlement_currencies_need_a_rate() -> None:
    d = checker().check(buy(INVERSE, qty="10", price="50000"), Book())
    assert (d.ok, d.rule) == (False, "currency_conversion") and "BTC to USDT" in d.detail
    pc = PolicyChecker(
        RiskConfig(), CAPITAL, SimClock(0), fx=lambda c: Fraction(50_000) if c == "BTC" else None
    )
    assert pc.check(buy(INVERSE, qty="100", price="50000"), Book()).ok  # 10,000 USD = 1.0x
    d = pc.check(buy(INVERSE, qty="160", price="50000"), Book())  # 16,000 USD
    assert d.rule == "leverage_strategy" and "1.60x" in d.detail


def test_invalid_orders() -> None:
    pc = checker()
    bad = OrderIntent("mm", "kraken", BTC, Side.BUY, 0, 500000)
    assert pc.check(bad, Book()).rule == "invalid_order"
    bad = OrderIntent("mm", "kraken", BTC, Side.BUY, 10, 0)
    assert pc.check(bad, Book()).rule == "invalid_order"


# --- rates ---------------------------------------------------------------------------------------
def test_rate_limits_per_strategy_and_venue_with_a_sliding_window() -> None:
    clock = SimClock(1_000 * S)
    pc = checker(
        clock,
        max_orders_per_second_strategy=2,
        max_orders_per_minute_strategy=5,
        max_orders_per_second_venue=3,
        max_orders_per_minute_venue=100,
    )
    book = Book()
    assert pc.check(buy(), book).ok
    assert pc.check(buy(), book).ok
    d = pc.check(buy(), book)
    assert d.rule == "rate_strategy_per_second"
    assert d.detail == "2 orders in the last 1s for strategy 'mm' >= limit 2/s"
    assert pc.check(buy(strategy_id="other"), book).ok  # the venue has room for one more
    d = pc.check(buy(strategy_id="third"), book)
    assert d.rule == "rate_venue_per_second" and "3 orders in the last 1s for venue 'kraken'" in d.detail
    clock.set(clock.now_ns() + S - 1)
    assert not pc.check(buy(), book).ok  # still inside the window
    clock.set(clock.now_ns() + 1)
    assert pc.check(buy(), book).ok
    assert pc.check(buy(), book).ok
    clock.set(clock.now_ns() + S)
    assert pc.check(buy(), book).ok  # the fifth this minute
    d = pc.check(buy(), book)
    assert d.rule == "rate_strategy_per_minute" and "5 orders in the last 60s" in d.detail
    clock.set(1_000 * S + 60 * S)
    assert pc.check(buy(), book).ok  # the first two have left the minute


def test_refused_orders_do_not_use_the_rate() -> None:
    pc = checker(max_orders_per_second_strategy=1)
    for _ in range(5):
        assert not pc.check(buy(venue="binance"), Book()).ok
    assert pc.check(buy(), Book()).ok


def test_reducing_orders_are_rate_limited_too() -> None:
    """A venue ban would stop getting out altogether; the wait is at most a second."""
    pc = checker(max_orders_per_second_strategy=1)
    book = Book().add("mm", BTC, 6000, 30_000)
    assert pc.check(sell(), book).ok
    assert pc.check(sell(reduce_only=True), book).rule == "rate_strategy_per_second"


# --- the gateway's shape -------------------------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    venue: str
    instrument: Instrument
    notional: Fraction
    reducing: bool


def test_policy_gate_checks_gateway_orders() -> None:
    from bastion.model.orders import Order, OrderType

    gate = PolicyGate(checker(), Book().add("a", ETH, 1000, 18_000))
    assert gate.name == "policy"
    market = Order("c1", BTC.id, Side.BUY, OrderType.MARKET, BTC.qty("0.1"), strategy_id="mm")
    d = gate.check(market, Facts("kraken", BTC, Fraction(5_000), False))  # valued by the gateway
    assert d.rule == "leverage_portfolio" and "2.30x" in d.detail
    small = Order("c2", BTC.id, Side.BUY, OrderType.LIMIT, BTC.qty("0.01"), BTC.price("50000"))
    assert gate.check(small, Facts("kraken", BTC, Fraction(500), False)).ok
    assert gate.check(small, Facts("bybit", BTC, Fraction(500), False)).rule == "venue_denied"

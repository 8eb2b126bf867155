"""Wiring the risk layer into a backtest's order gateway.

A backtest runs the same gateway as live trading, with the same breaker and the same
compliance and limit rules, so a strategy that would be halted or refused live is halted or
refused in research too. Only the persistence differs (in memory) and the kill switch (a live
operator's switch does not stop research).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from bastion.engine.clock import Clock
from bastion.model.instruments import Instrument
from bastion.model.position import Position
from bastion.risk.breaker import CircuitBreaker
from bastion.risk.config import RiskConfig
from bastion.risk.persistence import MemoryPersistence
from bastion.risk.policy import PolicyChecker, PolicyGate


class SinglePositionExposure:
    """Exposure of a one-instrument, one-strategy run, valued at the current mark."""

    def __init__(self, instrument: Instrument, position: Position, mark_raw: Callable[[], int]) -> None:
        self._inst = instrument
        self._pos = position
        self._mark = mark_raw

    def _notional(self) -> Fraction:
        q = self._pos.qty_raw
        m = self._mark()
        if q == 0 or m <= 0:
            return Fraction(0)
        v = self._inst.notional_value(m, abs(q))
        return v if q > 0 else -v

    def position_qty_raw(self, instrument_id: str, strategy_id: str | None = None) -> int:
        return self._pos.qty_raw if instrument_id == self._inst.id else 0

    def position_notional(self, instrument_id: str, strategy_id: str | None = None) -> Fraction:
        return self._notional() if instrument_id == self._inst.id else Fraction(0)

    def strategy_gross_notional(self, strategy_id: str) -> Fraction:
        return abs(self._notional())

    def venue_gross_notional(self, venue: str) -> Fraction:
        return abs(self._notional())

    def gross_notional(self) -> Fraction:
        return abs(self._notional())


def backtest_risk(
    risk: RiskConfig,
    *,
    capital: Fraction,
    clock: Clock,
    instrument: Instrument,
    position: Position,
    mark_raw: Callable[[], int],
) -> tuple[CircuitBreaker, list[PolicyGate]]:
    """The breaker and the policy gate for one backtest, from the ``risk`` section of the config."""
    breaker = CircuitBreaker(risk.breaker, MemoryPersistence(), clock, initial_capital=capital)
    checker = PolicyChecker(risk, capital, clock)
    return breaker, [PolicyGate(checker, SinglePositionExposure(instrument, position, mark_raw))]

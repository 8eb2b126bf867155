"""The circuit breaker: every trigger, every state, restarts, and random event sequences."""

from __future__ import annotations

import itertools
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pydantic import ValidationError
from structlog.testing import capture_logs

from bastion.engine.clock import SimClock
from bastion.risk.breaker import (
    LEGAL_TRANSITIONS,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
)
from bastion.risk.persistence import JsonFilePersistence, MemoryPersistence

S = 1_000_000_000
T0 = 1_700_000_000 * S  # 2023-11-14T22:13:20Z
DAY = 86_400 * S
CLOSED, DRAINING, OPEN, HALF_OPEN = (
    BreakerState.CLOSED,
    BreakerState.DRAINING,
    BreakerState.OPEN,
    BreakerState.HALF_OPEN,
)


def make(
    store: Any = None, clock: SimClock | None = None, **cfg: Any
) -> tuple[CircuitBreaker, SimClock, Any]:
    clock = clock or SimClock(T0)
    store = store if store is not None else MemoryPersistence()
    config = BreakerConfig(**cfg)
    return CircuitBreaker(config, store, clock, initial_capital=Fraction(10_000)), clock, store


def advance(clock: SimClock, seconds: float) -> None:
    clock.set(clock.now_ns() + round(seconds * S))


def new(b: CircuitBreaker, *, reduce_only: bool = False, notional: Fraction | None = Fraction(50)) -> Any:
    return b.allow("new", reduce_only=reduce_only, notional=notional)


def to_half_open(b: CircuitBreaker, clock: SimClock) -> None:
    b.trip("test", source="test")
    assert b.state is OPEN
    advance(clock, b.config.cooldown_s)
    d = b.reset("alice")
    assert d.ok, d
    assert b.state is HALF_OPEN


# --- triggers ----------------------------------------------------------------------------------
def test_starts_closed_and_lets_orders_through() -> None:
    b, _, store = make()
    assert b.state is CLOSED
    assert new(b).ok
    assert b.allow("cancel", reduce_only=False, notional=None).ok
    assert store.load("circuit_breaker")["state"] == "closed"  # persisted from the start


def test_loss_from_initial_capital_trips_with_numbers() -> None:
    b, _, _ = make(max_loss_pct=10, max_drawdown_pct=50)
    b.on_equity(Fraction(9_001), T0)
    assert b.state is CLOSED
    b.on_equity(Fraction(9_000), T0 + S)
    assert b.state is OPEN
    d = new(b)
    assert not d.ok and d.rule == "breaker_open"
    assert "max_loss" in d.detail and "10.00%" in d.detail and "10,000" in d.detail
    assert b.history[-1].rule == "max_loss"
    assert "equity 9,000" in b.history[-1].detail


def test_drawdown_from_high_water_mark() -> None:
    b, _, _ = make(max_loss_pct=50, max_drawdown_pct=10, max_daily_loss=100_000)
    b.on_equity(Fraction(12_000), T0)
    b.on_equity(Fraction(10_801), T0 + S)  # 9.99 % below the 12,000 high
    assert b.state is CLOSED
    b.on_equity(Fraction(10_800), T0 + 2 * S)  # 10 % below, though above initial capital
    assert b.state is OPEN
    tr = b.history[-1]
    assert tr.rule == "max_drawdown" and "high-water mark 12,000" in tr.detail and "10.00%" in tr.detail


def test_daily_loss_counts_from_the_utc_day_start() -> None:
    b, _, _ = make(max_loss_pct=50, max_drawdown_pct=50, max_daily_loss=500)
    day1 = (T0 // DAY) * DAY
    b.on_equity(Fraction(10_000), day1 + 3600 * S)
    b.on_equity(Fraction(9_600), day1 + 7200 * S)  # -400 today
    assert b.state is CLOSED
    b.on_equity(Fraction(9_600), day1 + DAY)  # a new UTC day: the baseline moves
    b.on_equity(Fraction(9_200), day1 + DAY + S)  # -400 today, -800 since yesterday
    assert b.state is CLOSED
    b.on_equity(Fraction(9_100), day1 + DAY + 2 * S)  # -500 today
    assert b.state is OPEN
    tr = b.history[-1]
    assert tr.rule == "max_daily_loss" and "day start 9,600" in tr.detail and "limit 500" in tr.detail


def test_consecutive_venue_failures_per_venue_reset_by_success() -> None:
    b, _, _ = make(max_consecutive_venue_failures=3)
    for ok in (False, False, True, False, False):
        b.on_venue_result("kraken", ok)
    b.on_venue_result("coinbase", False)
    b.on_venue_result("coinbase", False)
    assert b.state is CLOSED  # two streaks of two, on two venues
    b.on_venue_result("KRAKEN", False)  # case-insensitive: the third in a row
    assert b.state is OPEN
    tr = b.history[-1]
    assert tr.rule == "venue_failures" and "3 consecutive failures on kraken" in tr.detail
    assert tr.source == "venue:kraken"


def test_reconciliation_mismatch_trips_and_three_need_an_operator() -> None:
    b, _, _ = make(max_consecutive_mismatches=3)
    b.on_reconciliation_mismatch("BTC balance 1.0 vs venue 0.9")
    assert b.state is OPEN and not b.requires_operator
    assert b.history[-1].rule == "reconciliation_mismatch"
    b.on_reconciliation_mismatch("still off")
    assert not b.requires_operator
    b.on_reconciliation_mismatch("still off")
    assert b.state is OPEN and b.requires_operator
    assert "3 consecutive mismatches" in b.reason
    assert "requires operator" in new(b).detail


def test_reconciliation_ok_breaks_the_streak() -> None:
    b, _, _ = make(max_consecutive_mismatches=3, cooldown_s=0)
    b.set_in_flight(1)
    b.on_reconciliation_mismatch("a")
    b.on_reconciliation_mismatch("b")
    b.on_reconciliation_ok()
    b.on_reconciliation_mismatch("c")
    assert b.state is DRAINING and not b.requires_operator


def test_third_mismatch_opens_at_once_even_with_orders_in_flight() -> None:
    b, _, _ = make(max_consecutive_mismatches=3)
    b.set_in_flight(2)
    b.on_reconciliation_mismatch("a")
    assert b.state is DRAINING
    b.on_reconciliation_mismatch("b")
    assert b.state is DRAINING
    b.on_reconciliation_mismatch("c")
    assert b.state is OPEN and b.requires_operator


# --- the state machine -------------------------------------------------------------------------
def test_draining_lets_only_cancels_and_reduce_only_then_opens_at_zero_in_flight() -> None:
    b, _, _ = make()
    b.set_in_flight(2)
    b.trip("operator saw something odd", source="operator:bob")
    assert b.state is DRAINING
    d = new(b)
    assert not d.ok and d.rule == "breaker_draining" and "2 order(s) in flight" in d.detail
    assert "manual_trip" in d.detail
    assert new(b, reduce_only=True).ok
    assert b.allow("cancel", reduce_only=False, notional=None).ok
    b.set_in_flight(1)
    assert b.state is DRAINING
    b.set_in_flight(0)
    assert b.state is OPEN
    assert [(t.from_state, t.to_state) for t in b.history] == [(CLOSED, DRAINING), (DRAINING, OPEN)]
    assert b.reason.startswith("manual_trip")  # the cause survives the drain
    assert not new(b, reduce_only=True).ok  # open: only cancels


def test_drain_timeout_opens_when_an_order_never_resolves() -> None:
    b, clock, _ = make(drain_timeout_s=60)
    b.set_in_flight(1)
    b.trip("x", source="t")
    advance(clock, 59)
    assert b.state is DRAINING
    advance(clock, 1)
    assert b.state is OPEN
    assert b.history[-1].rule == "drain_timeout"


def test_reset_needs_operator_cooldown_and_an_open_breaker() -> None:
    b, clock, _ = make(cooldown_s=300)
    d = b.reset("alice")
    assert not d.ok and d.rule == "reset_not_open"
    b.trip("x", source="t")
    advance(clock, 299.5)
    d = b.reset("alice")
    assert not d.ok and d.rule == "reset_cooldown"
    assert "299.5s < cooldown 300.0s" in d.detail
    assert "reset possible in 0.5s" in new(b).detail
    advance(clock, 0.5)
    assert not b.reset("  ").ok
    d = b.reset("alice")
    assert d.ok and b.state is HALF_OPEN
    assert b.history[-1].source == "operator:alice"


def test_half_open_limits_orders_and_notional() -> None:
    b, clock, _ = make(half_open_max_orders=2, half_open_max_notional=100, half_open_probation_orders=2)
    to_half_open(b, clock)
    d = new(b, notional=Fraction(101))
    assert not d.ok and d.rule == "half_open_max_notional" and "101.00 > half-open limit 100.00" in d.detail
    d = new(b, notional=None)
    assert not d.ok and d.rule == "half_open_max_notional"
    assert new(b, notional=Fraction(100)).ok
    assert new(b, notional=Fraction(-20)).ok  # sign does not matter
    d = new(b)
    assert not d.ok and d.rule == "half_open_max_orders" and "2 of 2" in d.detail
    assert new(b, reduce_only=True, notional=Fraction(10**6)).ok  # getting out is never limited
    assert b.allow("cancel", reduce_only=False, notional=None).ok


def test_half_open_probation_closes_after_enough_successes() -> None:
    b, clock, _ = make(half_open_probation_orders=3, half_open_max_orders=5)
    to_half_open(b, clock)
    for _ in range(2):
        assert new(b).ok
        b.on_order_done(True)
    assert b.state is HALF_OPEN
    b.on_order_done(True)
    assert b.state is CLOSED
    assert b.history[-1].rule == "probation_passed"


@pytest.mark.parametrize("failure", ["order", "venue", "trigger", "mismatch"])
def test_any_failure_in_half_open_reopens(failure: str) -> None:
    b, clock, _ = make(half_open_probation_orders=3)
    to_half_open(b, clock)
    b.set_in_flight(3)  # no draining from half-open: straight back to open
    b.on_order_done(True)
    if failure == "order":
        b.on_order_done(False)
    elif failure == "venue":
        b.on_venue_result("kraken", False)
    elif failure == "trigger":
        b.on_equity(Fraction(8_000), T0)
    else:
        b.on_reconciliation_mismatch("x")
    assert b.state is OPEN
    assert b.history[-1].from_state is HALF_OPEN


def test_reset_refused_while_loss_persists_unless_rebased() -> None:
    b, clock, _ = make(max_loss_pct=10, cooldown_s=1)
    b.on_equity(Fraction(8_500), T0)
    assert b.state is OPEN
    advance(clock, 1)
    d = b.reset("alice")
    assert not d.ok and d.rule == "reset_condition_persists"
    assert "max_loss still holds" in d.detail and "8,500" in d.detail
    d = b.reset("alice", rebase_equity=True)
    assert d.ok and b.state is HALF_OPEN
    b.on_equity(Fraction(8_500), T0 + 2 * S)
    assert b.state is HALF_OPEN  # the new baseline is 8,500
    b.on_equity(Fraction(7_650), T0 + 3 * S)  # 10 % below the new baseline
    assert b.state is OPEN


def test_a_withdrawal_is_not_a_loss() -> None:
    b, _, _ = make(max_loss_pct=10, max_drawdown_pct=10, max_daily_loss=500)
    b.on_equity(Fraction(12_000), T0)
    with pytest.raises(ValueError):
        b.on_capital_flow(Fraction(-5_000), operator="", reason="withdrawal")
    b.on_capital_flow(Fraction(-5_000), operator="alice", reason="withdrew 5,000")
    b.on_equity(Fraction(7_000), T0 + S)
    assert b.state is CLOSED
    assert b.status()["initial_capital"] == "5000"
    b.on_equity(Fraction(6_500), T0 + 2 * S)  # a real loss of 500 after the flow still counts
    assert b.state is OPEN and b.history[-1].rule == "max_daily_loss"
    assert "day start 7,000" in b.history[-1].detail  # 12,000 at the day's start, less 5,000


def test_transitions_are_logged_with_risk_level() -> None:
    b, _, _ = make()
    with capture_logs() as logs:
        b.set_in_flight(1)
        b.trip("x", source="t")
        b.set_in_flight(0)
    moves = [e for e in logs if e["event"] == "breaker_transition"]
    assert [(e["to_state"], e["risk_level"]) for e in moves] == [("draining", "high"), ("open", "critical")]
    assert all(e["log_level"] == "error" for e in moves)


# --- persistence -------------------------------------------------------------------------------
def test_open_stays_open_after_a_restart(tmp_path: Path) -> None:
    store = JsonFilePersistence(tmp_path)
    b, clock, _ = make(store)
    b.on_equity(Fraction(8_000), T0)
    assert b.state is OPEN
    since = b.status()["since_ns"]
    b2 = CircuitBreaker(b.config, JsonFilePersistence(tmp_path), clock)
    assert b2.state is OPEN
    assert b2.status()["since_ns"] == since  # the cooldown is not restarted by a restart
    assert b2.reason.startswith("max_loss")
    assert not b2.allow("new", reduce_only=True, notional=Fraction(1)).ok


def test_draining_restarts_as_open(tmp_path: Path) -> None:
    b, clock, _ = make(JsonFilePersistence(tmp_path))
    b.set_in_flight(3)
    b.trip("x", source="t")
    assert b.state is DRAINING
    b2 = CircuitBreaker(b.config, JsonFilePersistence(tmp_path), clock)
    assert b2.state is OPEN
    assert b2.history[-1].rule == "restart"
    assert b2.reason.startswith("manual_trip")


def test_three_mismatches_still_need_an_operator_after_restart(tmp_path: Path) -> None:
    b, clock, _ = make(JsonFilePersistence(tmp_path), cooldown_s=10)
    for i in range(3):
        b.on_reconciliation_mismatch(f"m{i}")
    b2 = CircuitBreaker(b.config, JsonFilePersistence(tmp_path), clock)
    assert b2.state is OPEN and b2.requires_operator
    advance(clock, 3600)
    assert b2.state is OPEN  # time alone never reopens
    assert b2.reset("carol").ok
    assert not b2.requires_operator


def test_counters_and_baselines_survive_a_restart() -> None:
    b, clock, store = make(max_consecutive_venue_failures=3, max_loss_pct=50, max_drawdown_pct=10)
    b.on_equity(Fraction(12_000), T0)
    b.on_venue_result("kraken", False)
    b.on_venue_result("kraken", False)
    b2 = CircuitBreaker(b.config, store, clock)
    assert b2.status()["high_water_mark"] == "12000"
    b2.on_venue_result("kraken", False)
    assert b2.state is OPEN and b2.history[-1].rule == "venue_failures"


def test_half_open_probation_survives_a_restart() -> None:
    b, clock, store = make(half_open_max_orders=2, half_open_probation_orders=2)
    to_half_open(b, clock)
    assert new(b).ok
    b.on_order_done(True)
    b2 = CircuitBreaker(b.config, store, clock)
    assert b2.state is HALF_OPEN
    assert new(b2).ok
    assert not new(b2).ok  # the slot used before the restart still counts
    b2.on_order_done(True)
    assert b2.state is CLOSED


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 99}', '{"version": 1}'])
def test_unreadable_state_starts_open_for_an_operator(tmp_path: Path, content: str) -> None:
    (tmp_path / "circuit_breaker.json").write_text(content)
    b, _, _ = make(JsonFilePersistence(tmp_path))
    assert b.state is OPEN and b.requires_operator
    assert b.reason.startswith("state_unreadable")


def test_json_persistence_is_atomic_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = JsonFilePersistence(tmp_path)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.save("breaker", {"a": 1})
    store.save("breaker", {"a": 2})
    assert store.load("breaker") == {"a": 2}
    assert store.load("missing") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["breaker.json"]  # no temp files left
    assert str(tmp_path) in synced  # the directory entry (the rename) was made durable
    assert any(p.startswith(str(tmp_path / ".breaker.")) for p in synced)  # data before rename
    with pytest.raises(ValueError):
        store.save("../escape", {})
    assert json.loads((tmp_path / "breaker.json").read_text()) == {"a": 2}


def test_config_errors_name_the_field_and_value() -> None:
    with pytest.raises(ValidationError, match="half_open_probation_orders=6 exceeds"):
        BreakerConfig(half_open_probation_orders=6, half_open_max_orders=5)
    with pytest.raises(ValidationError, match="max_loss_pctt"):
        BreakerConfig.model_validate({"max_loss_pctt": 5})
    with pytest.raises(ValidationError, match="max_drawdown_pct"):
        BreakerConfig(max_drawdown_pct=0)  # type: ignore[arg-type]


# --- random event sequences --------------------------------------------------------------------
PROBATION = 2
COOLDOWN_S = 10


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = SimClock(T0)
        self.store = MemoryPersistence()
        self.config = BreakerConfig(
            max_loss_pct=10,  # type: ignore[arg-type]
            max_drawdown_pct=8,  # type: ignore[arg-type]
            max_daily_loss=300,  # type: ignore[arg-type]
            max_consecutive_venue_failures=2,
            max_consecutive_mismatches=3,
            cooldown_s=COOLDOWN_S,
            drain_timeout_s=30,
            half_open_max_orders=3,
            half_open_max_notional=100,  # type: ignore[arg-type]
            half_open_probation_orders=PROBATION,
        )
        self.b = CircuitBreaker(self.config, self.store, self.clock, initial_capital=Fraction(10_000))
        self.successes = 0  # successful orders reported while half-open, since entering it
        self.tripped = False
        self.closed_by_probation = False

    # events
    @rule(seconds=st.integers(0, 40))
    def advance(self, seconds: int) -> None:
        advance(self.clock, seconds)

    @rule(equity=st.integers(8_000, 12_000))
    def equity(self, equity: int) -> None:
        self.b.on_equity(Fraction(equity), self.clock.now_ns())

    @rule(venue=st.sampled_from(["kraken", "coinbase"]), ok=st.booleans())
    def venue_result(self, venue: str, ok: bool) -> None:
        self.b.on_venue_result(venue, ok)

    @rule(ok=st.booleans())
    def order_done(self, ok: bool) -> None:
        before = self.b.state
        self.b.on_order_done(ok)
        if before is HALF_OPEN and ok:
            self.successes += 1
        if before is HALF_OPEN and self.b.state is CLOSED:
            assert self.successes >= PROBATION
            self.closed_by_probation = True

    @rule()
    def mismatch(self) -> None:
        self.b.on_reconciliation_mismatch("x")
        assert self.b.state in (DRAINING, OPEN)

    @rule()
    def reconciliation_ok(self) -> None:
        self.b.on_reconciliation_ok()

    @rule(n=st.integers(0, 3))
    def in_flight(self, n: int) -> None:
        self.b.set_in_flight(n)

    @rule()
    def trip(self) -> None:
        self.b.trip("random", source="test")
        assert self.b.state in (DRAINING, OPEN)

    @rule(rebase=st.booleans())
    def reset(self, rebase: bool) -> None:
        before = self.b.state
        d = self.b.reset("op", rebase_equity=rebase)
        assert d.ok == (self.b.state is HALF_OPEN and before is OPEN)
        if d.ok:
            self.successes = 0

    @rule(
        kind=st.sampled_from(["new", "cancel"]),
        reduce_only=st.booleans(),
        notional=st.one_of(st.none(), st.integers(-200, 200).map(Fraction)),
    )
    def allow(self, kind: str, reduce_only: bool, notional: Fraction | None) -> None:
        state = self.b.state
        d = self.b.allow("new" if kind == "new" else "cancel", reduce_only=reduce_only, notional=notional)
        if not d.ok:
            assert d.rule and d.detail
        if kind == "cancel":
            assert d.ok
        elif state is OPEN:
            assert not d.ok, "open: only cancels pass"
        elif state is DRAINING:
            assert d.ok == reduce_only, "draining: only cancels and reduce-only pass"
        elif state is HALF_OPEN and d.ok and not reduce_only:
            assert notional is not None and abs(notional) <= 100

    @rule()
    def restart(self) -> None:
        before = self.b.status()
        b2 = CircuitBreaker(self.config, self.store, self.clock)
        after = b2.status()
        if before["state"] == "draining":
            assert after["state"] == "open"
        else:
            for key in ("in_flight", "last_equity"):
                before.pop(key)
                after.pop(key)
            assert after == before
        self.b = b2

    # invariants
    @invariant()
    def transitions_are_legal_and_resets_wait_for_the_cooldown(self) -> None:
        hist = self.b.history
        for t in hist:
            assert (t.from_state, t.to_state) in LEGAL_TRANSITIONS
        for prev, t in itertools.pairwise(hist):
            assert prev.to_state is t.from_state
            if t.to_state is HALF_OPEN:
                assert t.ts_ns - prev.ts_ns >= COOLDOWN_S * S

    @invariant()
    def never_closed_after_a_trigger_without_probation(self) -> None:
        state = self.b.state
        if state is not CLOSED:
            self.tripped = True
            self.closed_by_probation = False
        elif self.tripped:
            assert self.closed_by_probation, "closed again without passing half-open probation"
            assert self.b.history[-1].from_state is HALF_OPEN
            assert self.b.history[-1].rule == "probation_passed"
        if state is not HALF_OPEN:
            self.successes = 0


BreakerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_breaker_state_machine = BreakerMachine.TestCase

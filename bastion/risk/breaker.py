"""The circuit breaker: stop trading when the account or the plumbing says something is wrong.

Losses, drawdowns, a venue that keeps failing or books that no longer reconcile all mean the
system's picture of the world may be wrong, and the cheapest response to being wrong is to stop
adding risk. The breaker therefore halts in two steps and resumes in two steps:

``CLOSED`` (trading) → ``DRAINING`` (orders already sent may finish; only cancels and reduce-only
orders pass) → ``OPEN`` (halted; only cancels pass) → ``HALF_OPEN`` (an operator reset after a
cooldown; a few small orders on probation) → ``CLOSED`` after enough of them succeed, or straight
back to ``OPEN`` on any failure or trigger.

Nothing reopens trading by itself: leaving ``OPEN`` always takes a named operator, and the state
is persisted on every change so a crash or restart cannot quietly turn an open breaker into a
closed one (a draining breaker restarts as open, since what was in flight is no longer known).
"""

from __future__ import annotations

import enum
import functools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, Concatenate, Literal, ParamSpec, Self, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.engine.clock import Clock
from bastion.risk.decision import Decision, fmt_number, fmt_pair
from bastion.risk.persistence import StatePersistence

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
STATE_VERSION = 1


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    DRAINING = "draining"
    OPEN = "open"
    HALF_OPEN = "half_open"


RISK_LEVEL: dict[BreakerState, str] = {
    BreakerState.CLOSED: "normal",
    BreakerState.HALF_OPEN: "elevated",
    BreakerState.DRAINING: "high",
    BreakerState.OPEN: "critical",
}

# The only moves the breaker can make; anything else is a bug (the property test checks it).
LEGAL_TRANSITIONS: frozenset[tuple[BreakerState, BreakerState]] = frozenset(
    {
        (BreakerState.CLOSED, BreakerState.DRAINING),
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.DRAINING, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    }
)


class BreakerConfig(BaseModel):
    """Thresholds of the breaker (``risk.breaker`` in ``bastion.yaml``).

    Percentages are in percent (``10`` = 10 %); money is in the quote currency of the equity the
    caller reports. Defaults suit a small account and err on the side of halting.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_loss_pct: Decimal = Field(default=Decimal("10"), gt=0, le=100)
    max_drawdown_pct: Decimal = Field(default=Decimal("15"), gt=0, le=100)
    max_daily_loss: Decimal = Field(default=Decimal("1000"), gt=0)
    max_consecutive_venue_failures: int = Field(default=5, ge=1)
    max_consecutive_mismatches: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=300.0, ge=0)
    drain_timeout_s: float = Field(default=600.0, gt=0)
    half_open_max_orders: int = Field(default=5, ge=1)
    half_open_max_notional: Decimal = Field(default=Decimal("100"), gt=0)
    half_open_probation_orders: int = Field(default=3, ge=1)
    history_size: int = Field(default=50, ge=1, le=10_000)

    @model_validator(mode="after")
    def _probation_fits(self) -> Self:
        if self.half_open_probation_orders > self.half_open_max_orders:
            raise ValueError(
                f"half_open_probation_orders={self.half_open_probation_orders} exceeds "
                f"half_open_max_orders={self.half_open_max_orders}: probation could never pass"
            )
        return self


@dataclass(frozen=True, slots=True)
class Transition:
    ts_ns: int
    from_state: BreakerState
    to_state: BreakerState
    rule: str
    detail: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts_ns": self.ts_ns,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "rule": self.rule,
            "detail": self.detail,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transition:
        return cls(
            int(d["ts_ns"]),
            BreakerState(d["from"]),
            BreakerState(d["to"]),
            str(d["rule"]),
            str(d["detail"]),
            str(d["source"]),
        )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(
    method: Callable[Concatenate[CircuitBreaker, _P], _R],
) -> Callable[Concatenate[CircuitBreaker, _P], _R]:
    """One breaker may serve several gateways on several threads: a half-open slot must not be
    handed out twice, nor a transition interleave with another."""

    def wrapper(self: CircuitBreaker, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    functools.update_wrapper(wrapper, method)
    return wrapper


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC).isoformat(timespec="seconds")


def _frac(v: str | None) -> Fraction | None:
    return None if v is None else Fraction(v)


def _text(v: Fraction | None) -> str | None:
    return None if v is None else str(v)


class CircuitBreaker:
    """One breaker (typically per account or per venue connection); see the module docstring.

    The caller feeds it facts (``on_equity``, ``on_venue_result``, ``on_order_done``,
    ``on_reconciliation_mismatch``, ``set_in_flight``) and asks it before every order
    (``allow``). ``initial_capital`` anchors the loss rule when nothing is persisted yet;
    otherwise the first equity reported becomes the baseline.
    """

    def __init__(
        self,
        config: BreakerConfig,
        persistence: StatePersistence,
        clock: Clock,
        *,
        name: str = "circuit_breaker",
        initial_capital: Fraction | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._persistence = persistence
        self._clock = clock
        self._lock = threading.RLock()
        self._log = structlog.get_logger("bastion.risk.breaker").bind(breaker=name)
        self._cooldown_ns = round(config.cooldown_s * NS_PER_S)
        self._drain_timeout_ns = round(config.drain_timeout_s * NS_PER_S)
        self._max_loss_pct = Fraction(config.max_loss_pct)
        self._max_dd_pct = Fraction(config.max_drawdown_pct)
        self._max_daily_loss = Fraction(config.max_daily_loss)
        self._ho_max_notional = Fraction(config.half_open_max_notional)

        self._state = BreakerState.CLOSED
        self._rule = ""
        self._reason = ""
        self._source = ""
        self._since_ns = clock.now_ns()
        self._requires_operator = False
        self._initial_capital: Fraction | None = initial_capital
        self._hwm: Fraction | None = None
        self._day: int | None = None
        self._day_start: Fraction | None = None
        self._venue_failures: dict[str, int] = {}
        self._mismatches = 0
        self._ho_orders = 0
        self._ho_successes = 0
        self._history: deque[Transition] = deque(maxlen=config.history_size)
        # not persisted: they describe this process, not the account
        self._in_flight = 0
        self._last_equity: Fraction | None = None
        # told of every transition after it is persisted (alerts); a failing listener is logged
        self.listeners: list[Callable[[Transition], None]] = []
        self._load()

    # --- persistence ----------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "state": self._state.value,
            "rule": self._rule,
            "reason": self._reason,
            "source": self._source,
            "since_ns": self._since_ns,
            "requires_operator": self._requires_operator,
            "initial_capital": _text(self._initial_capital),
            "high_water_mark": _text(self._hwm),
            "day": self._day,
            "day_start_equity": _text(self._day_start),
            "venue_failures": dict(sorted(self._venue_failures.items())),
            "consecutive_mismatches": self._mismatches,
            "half_open_orders": self._ho_orders,
            "half_open_successes": self._ho_successes,
            "history": [t.to_dict() for t in self._history],
        }

    def _save(self) -> None:
        self._persistence.save(self.name, self._snapshot())

    def _load(self) -> None:
        try:
            data = self._persistence.load(self.name)
            if data is not None:
                self._restore(data)
        except Exception as exc:  # unreadable state must halt, never default to trading
            self._state = BreakerState.OPEN
            self._rule = "state_unreadable"
            self._reason = f"persisted breaker state could not be read: {exc}"
            self._source = "startup"
            self._since_ns = self._clock.now_ns()
            self._requires_operator = True
            self._log.error(
                "breaker_state_unreadable",
                error=str(exc),
                state=self._state.value,
                risk_level=RISK_LEVEL[self._state],
            )
            self._save()
            return
        if data is None:
            self._save()
            return
        if self._state is BreakerState.DRAINING:
            self._go(
                BreakerState.OPEN,
                "restart",
                "was draining when the process stopped; what was in flight is no longer known",
                "startup",
            )
        else:
            self._log.info(
                "breaker_loaded",
                state=self._state.value,
                rule=self._rule,
                reason=self._reason,
                risk_level=RISK_LEVEL[self._state],
            )

    def _restore(self, d: dict[str, Any]) -> None:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unknown breaker state version {d.get('version')!r}")
        self._state = BreakerState(d["state"])
        self._rule = str(d["rule"])
        self._reason = str(d["reason"])
        self._source = str(d["source"])
        self._since_ns = int(d["since_ns"])
        self._requires_operator = bool(d["requires_operator"])
        self._initial_capital = _frac(d["initial_capital"])
        self._hwm = _frac(d["high_water_mark"])
        self._day = None if d["day"] is None else int(d["day"])
        self._day_start = _frac(d["day_start_equity"])
        self._venue_failures = {str(k): int(v) for k, v in d["venue_failures"].items()}
        self._mismatches = int(d["consecutive_mismatches"])
        self._ho_orders = int(d["half_open_orders"])
        self._ho_successes = int(d["half_open_successes"])
        self._history.clear()
        self._history.extend(Transition.from_dict(t) for t in d["history"])

    # --- read-only views --------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._check_drain_timeout()
            return self._state

    @property
    def history(self) -> tuple[Transition, ...]:
        return tuple(self._history)

    @property
    def requires_operator(self) -> bool:
        return self._requires_operator

    @property
    def reason(self) -> str:
        return f"{self._rule}: {self._reason}" if self._rule else ""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @_locked
    def status(self) -> dict[str, Any]:
        """Everything an operator needs to decide on a reset (JSON-able)."""
        self._check_drain_timeout()
        snap = self._snapshot()
        snap.pop("version")
        snap["risk_level"] = RISK_LEVEL[self._state]
        snap["in_flight"] = self._in_flight
        snap["last_equity"] = _text(self._last_equity)
        snap["cooldown_remaining_s"] = (
            max(0.0, (self._since_ns + self._cooldown_ns - self._clock.now_ns()) / NS_PER_S)
            if self._state is BreakerState.OPEN
            else None
        )
        return snap

    # --- transitions --------------------------------------------------------------------------
    def _go(self, to: BreakerState, rule: str, detail: str, source: str) -> None:
        now = self._clock.now_ns()
        frm = self._state
        assert (frm, to) in LEGAL_TRANSITIONS, f"illegal breaker transition {frm} -> {to}"
        transition = Transition(now, frm, to, rule, detail, source)
        self._history.append(transition)
        self._state = to
        self._since_ns = now
        self._ho_orders = 0
        self._ho_successes = 0
        if to is not BreakerState.OPEN or frm is not BreakerState.DRAINING:
            # draining -> open keeps the cause that started the halt
            self._rule, self._reason, self._source = rule, detail, source
        self._save()
        level = RISK_LEVEL[to]
        log = self._log.error if to in (BreakerState.OPEN, BreakerState.DRAINING) else self._log.warning
        log(
            "breaker_transition",
            from_state=frm.value,
            to_state=to.value,
            rule=rule,
            detail=detail,
            source=source,
            in_flight=self._in_flight,
            requires_operator=self._requires_operator,
            risk_level=level,
        )
        for fn in self.listeners:
            try:
                fn(transition)
            except Exception as exc:  # an alert channel must never break the breaker
                self._log.error("breaker_listener_failed", error=repr(exc), risk_level="high")

    def _trigger(
        self,
        rule: str,
        detail: str,
        source: str,
        *,
        force_open: bool = False,
        requires_operator: bool = False,
    ) -> None:
        """A reason to halt: tighten the state one way only (never towards trading)."""
        escalated = requires_operator and not self._requires_operator
        if requires_operator:
            self._requires_operator = True
        st = self._state
        if st is BreakerState.CLOSED:
            to = BreakerState.DRAINING if self._in_flight > 0 and not force_open else BreakerState.OPEN
            self._go(to, rule, detail, source)
        elif st is BreakerState.HALF_OPEN or (st is BreakerState.DRAINING and force_open):
            self._go(BreakerState.OPEN, rule, detail, source)
        else:
            if escalated:
                self._rule, self._reason, self._source = rule, detail, source
                self._save()
            self._log.warning(
                "breaker_trigger_while_halted",
                state=st.value,
                rule=rule,
                detail=detail,
                source=source,
                requires_operator=self._requires_operator,
                risk_level=RISK_LEVEL[st],
            )

    def _check_drain_timeout(self) -> None:
        """An order whose fate never resolves must not keep the breaker out of OPEN (and so out of
        an operator's reach) forever."""
        if (
            self._state is BreakerState.DRAINING
            and self._clock.now_ns() - self._since_ns >= self._drain_timeout_ns
        ):
            self._go(
                BreakerState.OPEN,
                "drain_timeout",
                f"{self._in_flight} order(s) still in flight after "
                f"{fmt_number(Fraction(self.config.drain_timeout_s))}s",
                "drain_timer",
            )

    # --- the gate -----------------------------------------------------------------------------
    @_locked
    def allow(
        self, order_kind: Literal["new", "cancel"], *, reduce_only: bool, notional: Fraction | None
    ) -> Decision:
        """May this order go out? In half-open an allowed new order uses one probation slot."""
        if order_kind == "cancel":
            return Decision.allow("breaker_cancel", "cancels always pass")
        if order_kind != "new":
            return Decision.refuse("breaker_order_kind", f"unknown order kind {order_kind!r}")
        self._check_drain_timeout()
        st = self._state
        if st is BreakerState.CLOSED:
            return Decision.allow("breaker_closed")
        cause = f"{self._rule}: {self._reason}"
        if st is BreakerState.DRAINING:
            if reduce_only:
                return Decision.allow("breaker_draining", "reduce-only order while draining")
            return Decision.refuse(
                "breaker_draining",
                f"draining since {_iso(self._since_ns)} ({cause}); {self._in_flight} order(s) in flight; "
                "only cancels and reduce-only orders pass",
            )
        if st is BreakerState.OPEN:
            wait = max(0, self._since_ns + self._cooldown_ns - self._clock.now_ns())
            when = (
                f"operator reset possible in {fmt_number(Fraction(wait, NS_PER_S), 1)}s"
                if wait
                else "awaiting operator reset"
            )
            flag = "; requires operator" if self._requires_operator else ""
            return Decision.refuse(
                "breaker_open",
                f"open since {_iso(self._since_ns)} ({cause}); only cancels pass; {when}{flag}",
            )
        # HALF_OPEN: a few small orders on probation; getting out is never limited
        if reduce_only:
            return Decision.allow("breaker_half_open", "reduce-only order on probation")
        max_orders = self.config.half_open_max_orders
        if self._ho_orders >= max_orders:
            return Decision.refuse(
                "half_open_max_orders",
                f"{self._ho_orders} of {max_orders} half-open orders used; "
                f"{self._ho_successes} of {self.config.half_open_probation_orders} needed have succeeded",
            )
        if notional is None:
            return Decision.refuse(
                "half_open_max_notional",
                "order notional unknown; half-open orders must be at most "
                f"{fmt_number(self._ho_max_notional)}",
            )
        if abs(notional) > self._ho_max_notional:
            a, b = fmt_pair(abs(notional), self._ho_max_notional)
            return Decision.refuse("half_open_max_notional", f"order notional {a} > half-open limit {b}")
        self._ho_orders += 1
        self._save()
        return Decision.allow("breaker_half_open", f"probation order {self._ho_orders} of {max_orders}")

    # --- facts from the caller ----------------------------------------------------------------
    @_locked
    def set_in_flight(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"in-flight order count cannot be negative: {n}")
        self._in_flight = n
        if self._state is BreakerState.DRAINING and n == 0:
            self._go(BreakerState.OPEN, "drained", "no orders in flight", "in_flight")
        else:
            self._check_drain_timeout()

    @_locked
    def on_equity(self, equity: Fraction, ts_ns: int) -> None:
        """Account equity (quote units) at ``ts_ns``: updates the baselines, then checks the rules."""
        eq = Fraction(equity)
        self._last_equity = eq
        changed = False
        if eq > 0 and self._initial_capital is None:
            self._initial_capital = eq
            changed = True
        if eq > 0 and (self._hwm is None or eq > self._hwm):
            self._hwm = eq
            changed = True
        day = ts_ns // NS_PER_DAY
        if day != self._day or self._day_start is None:
            self._day = day
            self._day_start = eq
            changed = True
        if changed:
            self._save()
        self._check_drain_timeout()
        for rule, detail in self._equity_breaches(eq):
            self._trigger(rule, detail, "equity")

    def _equity_breaches(self, eq: Fraction) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        init, hwm, start = self._initial_capital, self._hwm, self._day_start
        if init is not None and init > 0:
            loss_pct = (init - eq) * 100 / init
            if loss_pct >= self._max_loss_pct:
                a, b = fmt_pair(loss_pct, self._max_loss_pct)
                out.append(
                    (
                        "max_loss",
                        f"loss {a}% of initial capital {fmt_number(init)} (equity {fmt_number(eq)}) "
                        f">= limit {b}%",
                    )
                )
        if hwm is not None and hwm > 0:
            dd_pct = (hwm - eq) * 100 / hwm
            if dd_pct >= self._max_dd_pct:
                a, b = fmt_pair(dd_pct, self._max_dd_pct)
                out.append(
                    (
                        "max_drawdown",
                        f"drawdown {a}% from high-water mark {fmt_number(hwm)} (equity {fmt_number(eq)}) "
                        f">= limit {b}%",
                    )
                )
        if start is not None:
            daily = start - eq
            if daily >= self._max_daily_loss:
                a, b = fmt_pair(daily, self._max_daily_loss)
                day = _iso(self._day * NS_PER_DAY)[:10] if self._day is not None else "?"
                out.append(
                    (
                        "max_daily_loss",
                        f"loss {a} on {day} UTC (day start {fmt_number(start)}, equity {fmt_number(eq)}) "
                        f">= limit {b}",
                    )
                )
        return out

    @_locked
    def on_venue_result(self, venue: str, ok: bool) -> None:
        """A success clears the venue's failure streak; a streak reaching the limit trips."""
        v = venue.lower()
        if ok:
            if self._venue_failures.pop(v, 0):
                self._save()
            return
        n = self._venue_failures.get(v, 0) + 1
        self._venue_failures[v] = n
        self._save()
        limit = self.config.max_consecutive_venue_failures
        if n >= limit:
            self._trigger("venue_failures", f"{n} consecutive failures on {v} >= limit {limit}", f"venue:{v}")
        elif self._state is BreakerState.HALF_OPEN:
            self._trigger("half_open_failure", f"venue {v} failed during probation", f"venue:{v}")

    @_locked
    def on_order_done(self, ok: bool) -> None:
        """An order reached its end; in half-open this is what probation counts."""
        if self._state is not BreakerState.HALF_OPEN:
            return
        if not ok:
            self._trigger(
                "half_open_failure",
                f"an order failed during probation ({self._ho_successes} had succeeded)",
                "order",
            )
            return
        self._ho_successes += 1
        need = self.config.half_open_probation_orders
        if self._ho_successes >= need:
            self._go(
                BreakerState.CLOSED,
                "probation_passed",
                f"{self._ho_successes} successful orders without a failure (needed {need})",
                "probation",
            )
        else:
            self._save()

    @_locked
    def on_reconciliation_mismatch(self, detail: str) -> None:
        """Books and venue disagree. Repeated disagreement means our state cannot be trusted at
        all: open at once (without waiting for in-flight orders) and flag it for an operator."""
        self._mismatches += 1
        self._save()
        n, limit = self._mismatches, self.config.max_consecutive_mismatches
        if n >= limit:
            self._trigger(
                "reconciliation_mismatch",
                f"{n} consecutive mismatches (limit {limit}): {detail}",
                "reconciliation",
                force_open=True,
                requires_operator=True,
            )
        else:
            self._trigger("reconciliation_mismatch", f"mismatch {n} of {limit}: {detail}", "reconciliation")

    @_locked
    def on_reconciliation_ok(self) -> None:
        if self._mismatches:
            self._mismatches = 0
            self._save()

    # --- operator actions ---------------------------------------------------------------------
    @_locked
    def trip(self, reason: str, *, source: str, rule: str = "manual_trip") -> None:
        """Halt from outside (an operator, a health check, a failed pre-trading check)."""
        self._trigger(rule, reason, source)

    @_locked
    def reset(self, operator: str, *, rebase_equity: bool = False) -> Decision:
        """Move OPEN → HALF_OPEN once the cooldown has passed.

        A loss, drawdown or daily-loss condition that still holds would trip again on the next
        equity update, so such a reset is refused unless the operator explicitly accepts the
        current equity as the new baseline (``rebase_equity=True``).
        """
        operator = operator.strip()
        if not operator:
            return Decision.refuse("reset_operator", "an operator name is required to reset the breaker")
        self._check_drain_timeout()
        if self._state is not BreakerState.OPEN:
            return Decision.refuse(
                "reset_not_open", f"breaker is {self._state.value}; only an open breaker can be reset"
            )
        elapsed = self._clock.now_ns() - self._since_ns
        if elapsed < self._cooldown_ns:
            a, b = fmt_pair(Fraction(elapsed, NS_PER_S), Fraction(self._cooldown_ns, NS_PER_S), 1)
            return Decision.refuse("reset_cooldown", f"open for {a}s < cooldown {b}s")
        if self._last_equity is not None:
            breaches = self._equity_breaches(self._last_equity)
            if breaches and not rebase_equity:
                rule, detail = breaches[0]
                return Decision.refuse(
                    "reset_condition_persists",
                    f"{rule} still holds: {detail}; reset with rebase_equity=True to accept equity "
                    f"{fmt_number(self._last_equity)} as the new baseline",
                )
        was = f"{self._rule}: {self._reason}"
        if rebase_equity:
            self._rebase()
        self._venue_failures.clear()
        self._mismatches = 0
        self._requires_operator = False
        self._go(
            BreakerState.HALF_OPEN,
            "operator_reset",
            f"reset by {operator} after {fmt_number(Fraction(elapsed, NS_PER_S), 1)}s open"
            f"{' (equity rebased)' if rebase_equity else ''}; was {was}",
            f"operator:{operator}",
        )
        return Decision.allow("operator_reset", self._reason)

    def _rebase(self) -> None:
        eq = self._last_equity
        self._initial_capital = eq if eq is not None and eq > 0 else None
        self._hwm = self._initial_capital
        self._day_start = eq

    @_locked
    def on_capital_flow(self, amount: Fraction, *, operator: str, reason: str) -> None:
        """A deposit (> 0) or withdrawal (< 0) moves every equity baseline by the same amount,
        so it reads as neither gain nor loss. Call it when the ledger books the flow, before the
        next ``on_equity`` that includes it."""
        if not operator.strip():
            raise ValueError("an operator name is required to record a capital flow")
        amt = Fraction(amount)
        if self._initial_capital is not None:
            self._initial_capital += amt
        if self._hwm is not None:
            self._hwm += amt
        if self._day_start is not None:
            self._day_start += amt
        self._save()
        self._log.warning(
            "breaker_capital_flow",
            operator=operator,
            reason=reason,
            amount=str(amt),
            initial_capital=_text(self._initial_capital),
            risk_level=RISK_LEVEL[self._state],
        )

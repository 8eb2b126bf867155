"""``bastion check``: the pre-trading checklist.

Each item is a question an operator would otherwise have to remember to ask before letting the
system trade. The command passes (exit 0) only when every applicable item passes; an item that
cannot apply yet (no venue configured) says so instead of pretending to pass.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.ops.config import BastionConfig
from bastion.risk.breaker import BreakerState, CircuitBreaker
from bastion.risk.kill_switch import KillSwitch
from bastion.risk.persistence import JsonFilePersistence
from bastion.store.sql import Store, StoreError


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: str  # "pass" | "fail" | "n/a"
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def _dir_writable(path: Path) -> str | None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return str(exc)
    return None


def run_checklist(cfg: BastionConfig) -> list[CheckResult]:
    risk = cfg.risk
    state_dir = risk.resolved_state_dir()
    out: list[CheckResult] = []

    def add(name: str, fn: Callable[[], tuple[str, str]]) -> None:
        try:
            status, detail = fn()
        except Exception as exc:  # a check that crashes is a failed check, with the reason
            status, detail = "fail", f"{type(exc).__name__}: {exc}"
        out.append(CheckResult(name, status, detail))

    def kill_switch() -> tuple[str, str]:
        ks = KillSwitch(risk.kill_switch.resolved_flag_path(), risk.kill_switch.resolved_audit_path())
        st = ks.status()
        if st["engaged"]:
            return "fail", f"engaged ({st.get('reason')}); release with `bastion kill --clean`"
        return "pass", f"not engaged ({st['flag_path']})"

    def breaker() -> tuple[str, str]:
        persist = JsonFilePersistence(state_dir)
        from bastion.engine.clock import WallClock

        cb = CircuitBreaker(risk.breaker, persist, WallClock())
        if cb.state is not BreakerState.CLOSED:
            return "fail", f"{cb.state.value}: {cb.reason}"
        return "pass", "CLOSED"

    def limits() -> tuple[str, str]:
        lim = risk.limits
        return "pass", (
            f"leverage ≤ {lim.max_portfolio_leverage}x portfolio, "
            f"≤ {lim.max_strategy_leverage}x per strategy; "
            f"≤ {lim.max_orders_per_second_strategy} orders/s per strategy; "
            f"venues allowed: {', '.join(risk.compliance.allowed_venues)}"
        )

    def store() -> tuple[str, str]:
        url = f"sqlite:///{state_dir / 'bastion.db'}"
        try:
            s = Store(url)
            s.check_writable()
            orphans = s.open_orders()
            s.close()
        except StoreError as exc:
            return "fail", str(exc)
        if orphans:
            ids = ", ".join(r["client_order_id"] for r in orphans[:5])
            return (
                "fail",
                f"{len(orphans)} orders not verified since the last run ({ids}): start the engine to recover",
            )
        return "pass", f"writable ({url}); no orphaned orders"

    def wal_dir() -> tuple[str, str]:
        err = _dir_writable(state_dir / "wal")
        return ("fail", err) if err else ("pass", f"writable ({state_dir / 'wal'})")

    def venues() -> tuple[str, str]:
        if cfg.mode == "backtest":
            return "n/a", "mode is backtest: no venue to reach, reconcile or compare balances with"
        return "fail", f"mode {cfg.mode}: venue adapters are not configured yet"

    def alerts() -> tuple[str, str]:
        return "fail", "no alert channel configured (Slack, Discord, Telegram or e-mail)"

    add("kill switch released", kill_switch)
    add("circuit breaker CLOSED", breaker)
    add("risk limits configured", limits)
    add("store writable, no orphaned orders", store)
    add("WAL directory writable", wal_dir)
    add("venues reachable, reconciliation, balances", venues)
    add("alerts configured", alerts)
    return out

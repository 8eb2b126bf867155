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

from bastion.ops.alerts import Alerter, AlertsConfig, validate_urls
from bastion.ops.config import BastionConfig
from bastion.ops.secrets import Secrets, load_secrets
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


def run_checklist(
    cfg: BastionConfig,
    secrets: Secrets | None = None,
    *,
    send_test_alert: bool = False,
    confirm_live: str | None = None,
) -> list[CheckResult]:
    risk = cfg.risk
    state_dir = risk.resolved_state_dir()
    secrets = secrets if secrets is not None else load_secrets()
    out: list[CheckResult] = []
    # the engine's store for the configured mode (bastion run keeps <state_dir>/<mode>/engine.db)
    engine_db = (
        state_dir / cfg.mode / "engine.db" if cfg.mode in ("paper", "live") else state_dir / "bastion.db"
    )

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
        url = f"sqlite:///{engine_db}"
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
        if cfg.mode == "paper":
            return (
                "n/a",
                "paper mode: bastion run starts the local exchange and reconciles with it at start-up",
            )
        return live_venue_check(cfg, secrets, engine_db, confirm_live)

    def alerts() -> tuple[str, str]:
        urls = secrets.alert_urls
        if not urls:
            return "fail", (
                "no alert channel configured: set BASTION_ALERT_URLS (Apprise URLs: slack://, discord://, "
                "tgram://, mailtos://) or alerts.urls in the secrets file"
            )
        bad = validate_urls(urls)
        if bad:
            return "fail", f"{len(bad)} of {len(urls)} alert URLs not understood: " + ", ".join(
                sorted({u.split("://", 1)[0] + "://…" for u in bad})
            )
        schemes = ", ".join(sorted({u.split("://", 1)[0] for u in urls}))
        if not send_test_alert:
            return "pass", f"{len(urls)} channel(s): {schemes} (--send-test-alert to prove delivery)"
        with tempfile.TemporaryDirectory() as tmp:
            al = Alerter(urls, Path(tmp) / "alerts.jsonl", AlertsConfig(min_level="info", dedupe_s=0))
            al.send("test alert", "bastion check --send-test-alert: if you read this, alerts work", "info")
            al.close()
        if al.failed:
            return (
                "fail",
                f"test alert not delivered on {al.failed} of {len(urls)} channel groups ({schemes})",
            )
        return "pass", f"test alert delivered ({schemes})"

    add("kill switch released", kill_switch)
    add("circuit breaker CLOSED", breaker)
    add("risk limits configured", limits)
    add("store writable, no orphaned orders", store)
    add("WAL directory writable", wal_dir)
    add("venues reachable, reconciliation, balances", venues)
    add("alerts configured", alerts)
    return out


def live_venue_check(
    cfg: BastionConfig, secrets: Secrets, engine_db: Path, confirm: str | None
) -> tuple[str, str]:
    """Live mode: the gate passes, the venue answers, the keys work, nothing unknown rests there,
    and the venue's balances equal the ledger (baseline + recorded fills) when there is one."""
    from fractions import Fraction

    import sqlalchemy as sa

    from bastion.ops.live import instrument_from_market, live_kraken_client, live_refusals
    from bastion.ops.parity import totals_from_fills
    from bastion.ops.runtime import BASELINE_KEY
    from bastion.risk.reconciliation import reconcile
    from bastion.store import schema as S
    from bastion.venues.ccxt_venue import CcxtVenue, venue_client_id

    reasons = [r for r in live_refusals(cfg, confirm or "LIVE", secrets) if "--confirm-live" not in r]
    if reasons:
        return "fail", "; ".join(reasons)
    client = live_kraken_client(cfg, secrets)  # public: markets (reachable)
    inst = instrument_from_market(client.market(cfg.live.symbol), cfg.live.venue)
    venue = CcxtVenue(client, inst, cfg.live.symbol, cfg.live.venue)
    balances = venue.balances()  # private: the keys are accepted
    store = Store(f"sqlite:///{engine_db}")
    try:
        known = {r["client_order_id"] for r in store.open_orders()}
        with store.reading() as tx:
            rows = [dict(r._mapping) for r in tx.conn.execute(sa.select(S.fills))]
        baseline = store.kv_get(BASELINE_KEY)
    finally:
        store.close()
    resting = venue.open_orders_info()
    sent_as = {venue_client_id(c) for c in known}  # long ids travel as their UUID (see ccxt_venue)
    strangers = sorted(
        str(i.get("cl_ord_id") or t) for t, i in resting.items() if str(i.get("cl_ord_id")) not in sent_as
    )
    if strangers:
        return (
            "fail",
            f"{len(strangers)} open orders at {cfg.live.venue} the engine does not know: {strangers[:5]}",
        )
    if baseline is None:
        return (
            "pass",
            f"{cfg.live.venue} reachable, keys accepted, no unknown orders; no ledger yet (first run)",
        )
    totals = totals_from_fills(rows, inst)
    local = {
        f"balance:{c}": Fraction(str(baseline.get(c, "0"))) + totals.balance_delta.get(c, Fraction(0))
        for c in (inst.base, inst.quote)
    }
    remote = {f"balance:{c}": balances.get(c, Fraction(0)) for c in (inst.base, inst.quote)}
    result = reconcile(local, remote)
    if not result.ok:
        return "fail", f"balances differ from the ledger: {result.summary()}"
    return "pass", f"{cfg.live.venue} reachable, keys accepted, no unknown orders, balances match the ledger"

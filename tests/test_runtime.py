"""``bastion run`` in paper mode: the backtest's strategy code trading the local exchange for real.

The run is checked against the venue, not against the engine's own opinion: after the runner
stops, :func:`bastion.ops.chaos.audit` compares every order and trade the exchange has with
what the engine's store recorded (the runner keeps the chaos engine's state layout on purpose).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.ops import chaos
from bastion.ops.runtime import RunnerTiming, paper_strategy, run_paper
from bastion.risk.config import KillSwitchConfig, RiskConfig

PARAMS = {"order_qty": "0.0001", "max_position": "0.001"}  # Kraken's XBTUSDT ordermin is 0.0001


def _risk(tmp: Path) -> RiskConfig:
    """The default limits, with the kill switch in the test's own directory (never ~/.bastion)."""
    ks = KillSwitchConfig(flag_path=str(tmp / "KILL"), audit_path=str(tmp / "kill_audit.jsonl"))
    return RiskConfig(state_dir=str(tmp / "risk"), kill_switch=ks)


def _run(tmp: Path, seconds: float) -> dict[str, Any]:
    chaos.quiet_logs()
    st = paper_strategy("fixed_spread_mm", PARAMS)
    return run_paper(
        tmp / "state", st, _risk(tmp), seconds=seconds, speed=20.0, timing=RunnerTiming(reconcile_s=2.0)
    )


def _audit(tmp: Path) -> tuple[chaos.Audit, list[dict[str, Any]]]:
    """Restart the same exchange state and compare it with the engine's store."""
    exch = chaos.ExchangeProcess(tmp / "state" / "exchange").start()
    try:
        engine = chaos.Engine(tmp / "state", exch.url)
        try:
            found = chaos.audit(engine)
            resting = list(engine.venue.open_orders_info().values())
        finally:
            engine.close()
    finally:
        exch.stop()
    return found, resting


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("paper")
    first = _run(tmp, 8.0)
    second = _run(tmp, 3.0)  # same state dir: recovery, then trading again
    return tmp, first, second


def test_paper_run_trades_and_stops_clean(two_runs: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    _, first, _ = two_runs
    assert first["orders"] > 0, first
    assert first["recovery"]["ok"] and first["recovery"]["in_flight"] == 0, first
    assert first["reconciliation"]["ok"], first
    assert first["parity"]["ok"], first  # the ledger equals the recorded fills, exactly
    # the private executions stream (websocket v2) fed the run; REST polling backed it up
    stream = first["executions_stream"]
    assert stream["events"] > 0 and stream["subscribed"], stream
    assert first["reconciliations"] >= 2, first  # periodic, not only at start and stop
    assert first["open_orders"] == 0, first
    assert first["breaker"] == "closed", first


def test_second_run_recovers_on_the_same_state(
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    _, _, second = two_runs
    rec = second["recovery"]
    assert rec["ok"] and rec["unknown"] == 0 and rec["resumed"] == 0, second
    assert second["reconciliation"]["ok"], second
    assert second["orders"] > 0 and second["open_orders"] == 0, second


def test_venue_and_engine_agree_after_both_runs(
    two_runs: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    tmp, first, second = two_runs
    found, resting = _audit(tmp)
    assert found.duplicates == [], found.duplicates  # every venue order is a journaled intent
    assert found.lost_fills == [], found.lost_fills  # recorded fills == venue trades, exactly
    assert found.leaked_reservations == [], found.leaked_reservations
    assert found.ledger_mismatches == [], found.ledger_mismatches
    assert resting == []  # the clean stops left nothing working at the venue
    # intents the venue refused (a post-only that would cross) never became venue orders
    assert 0 < found.orders <= first["orders"] + second["orders"], (found, first, second)
    assert found.fills == first["fills"] + second["fills"], (found, first, second)

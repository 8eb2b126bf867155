"""`bastion check`: each item fails for the reason it should, and the exit code follows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bastion.model import KNOWN_INSTRUMENTS
from bastion.model.orders import Order, OrderStatus, OrderType, Side
from bastion.ops.checklist import run_checklist
from bastion.ops.config import load_config
from bastion.store.sql import Store

REPO = Path(__file__).resolve().parents[1]


def cfg_file(tmp: Path) -> Path:
    p = tmp / "bastion.yaml"
    p.write_text(
        f"risk:\n  state_dir: {tmp}/state\n  kill_switch:\n    flag_path: {tmp}/KILL\n"
        f"    audit_path: {tmp}/audit.jsonl\n"
    )
    return p


def by_name(tmp: Path) -> dict[str, str]:
    return {r.name: r.status for r in run_checklist(load_config(cfg_file(tmp), environ={}))}


def test_fresh_state_passes_all_but_alerts(tmp_path: Path) -> None:
    st = by_name(tmp_path)
    assert st["kill switch released"] == "pass" and st["circuit breaker CLOSED"] == "pass"
    assert st["store writable, no orphaned orders"] == "pass" and st["WAL directory writable"] == "pass"
    assert st["venues reachable, reconciliation, balances"] == "n/a"
    assert st["alerts configured"] == "fail"


def test_engaged_kill_switch_and_orphaned_orders_fail(tmp_path: Path) -> None:
    (tmp_path / "KILL").write_text("{}")
    inst = KNOWN_INSTRUMENTS["BTCUSDT-PERP.BINANCE"]
    s = Store(f"sqlite:///{tmp_path}/state/bastion.db")
    o = Order("mm-7", inst.id, Side.BUY, OrderType.LIMIT, inst.qty("0.010"), inst.price("60000.0"))
    o.status = OrderStatus.PENDING_VERIFICATION
    s.upsert_order(o, "kraken")
    s.close()
    st = by_name(tmp_path)
    assert st["kill switch released"] == "fail"
    assert st["store writable, no orphaned orders"] == "fail"


def test_cli_exit_code_and_json(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bastion.ops.cli", "check", "--json", "--config", str(cfg_file(tmp_path))]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, env=dict(os.environ))
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["ok"] is False and len(out["checks"]) == 7

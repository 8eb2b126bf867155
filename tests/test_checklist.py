"""`bastion check`: each item fails for the reason it should, and the exit code follows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bastion.model import KNOWN_INSTRUMENTS
from bastion.model.orders import Order, OrderStatus, OrderType, Side
from bastion.ops.checklist import run_checklist
from bastion.ops.config import load_config
from bastion.ops.secrets import Secrets, load_secrets
from bastion.store.sql import Store

REPO = Path(__file__).resolve().parents[1]


def cfg_file(tmp: Path) -> Path:
    p = tmp / "bastion.yaml"
    p.write_text(
        f"risk:\n  state_dir: {tmp}/state\n  kill_switch:\n    flag_path: {tmp}/KILL\n"
        f"    audit_path: {tmp}/audit.jsonl\n"
    )
    return p


def no_secrets(tmp: Path) -> Secrets:
    return load_secrets(environ={"BASTION_SECRETS_FILE": str(tmp / "absent.yaml")})


def by_name(tmp: Path) -> dict[str, str]:
    return {r.name: r.status for r in run_checklist(load_config(cfg_file(tmp), environ={}), no_secrets(tmp))}


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
    env = {k: v for k, v in os.environ.items() if k != "BASTION_ALERT_URLS"}
    env["BASTION_SECRETS_FILE"] = str(tmp_path / "absent.yaml")
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["ok"] is False and len(out["checks"]) == 7


def test_alerts_check_follows_the_configured_channels(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = load_config(cfg_file(tmp_path), environ={})

    def alerts(urls: str, send: bool) -> tuple[str, str]:
        sec = load_secrets(
            environ={"BASTION_SECRETS_FILE": str(tmp_path / "x.yaml"), "BASTION_ALERT_URLS": urls}
        )
        r = {c.name: c for c in run_checklist(cfg, sec, send_test_alert=send)}["alerts configured"]
        return r.status, r.detail

    try:
        url = f"json://127.0.0.1:{srv.server_address[1]}/"
        assert alerts(url, False)[0] == "pass" and got == []
        assert alerts(url, True) == ("pass", "test alert delivered (json)") and len(got) == 1
        assert alerts("json://127.0.0.1:9/", True)[0] == "fail"  # nobody listens: not delivered
        status, detail = alerts("bogus://tok-123456", False)
        assert status == "fail" and "tok-123456" not in detail
    finally:
        srv.shutdown()


def test_live_venue_items_against_the_local_exchange(tmp_path: Path) -> None:
    from bastion.ops import chaos

    chaos.quiet_logs()
    exch = chaos.ExchangeProcess(tmp_path / "exchange").start()
    try:
        p = tmp_path / "live.yaml"
        p.write_text(
            cfg_file(tmp_path).read_text()
            + f"mode: live\nlive: {{venue: kraken, symbol: BTC/USDT, api_url: '{exch.url}'}}\n"
        )
        cfg = load_config(p, environ={})
        keys = {"BASTION_SECRETS_FILE": str(tmp_path / "x.yaml")}
        name = "venues reachable, reconciliation, balances"
        r = {c.name: c for c in run_checklist(cfg, load_secrets(environ=keys))}[name]
        assert r.status == "fail" and "no credentials for kraken" in r.detail
        keys |= {"BASTION_KRAKEN_API_KEY": chaos.KEY, "BASTION_KRAKEN_API_SECRET": chaos.SECRET}
        r = {c.name: c for c in run_checklist(cfg, load_secrets(environ=keys))}[name]
        assert r.status == "pass" and "keys accepted" in r.detail, r.detail
        # an order placed behind the engine's back is found
        client = chaos.make_client(exch.url)
        client.nonce = lambda: time.time_ns() // 1000  # the adapter's nonce: microseconds
        client.create_order("BTC/USDT", "limit", "buy", 0.01, 1000.0, {"clientOrderId": "manual-1"})
        r = {c.name: c for c in run_checklist(cfg, load_secrets(environ=keys))}[name]
        assert r.status == "fail" and "manual-1" in r.detail, r.detail
    finally:
        exch.stop()

"""Live mode: the gate (config + typed confirmation + policy + keys), secrets, alerts, parity.

The live run itself trades the local Kraken-protocol exchange (``live.api_url`` pointed at
127.0.0.1): the same code path a real account takes, with nothing leaving this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bastion.ops import chaos
from bastion.ops.alerts import AlertConfigError, Alerter, AlertsConfig
from bastion.ops.config import BastionConfig, load_config
from bastion.ops.live import LiveModeRefused, check_live, live_refusals
from bastion.ops.logs import clear_registered_secrets, redact_text
from bastion.ops.parity import compare, totals_from_fills
from bastion.ops.runtime import RunnerTiming, paper_strategy, run_live
from bastion.ops.secrets import MissingCredentials, Secrets, SecretsError, load_secrets
from bastion.risk.config import KillSwitchConfig, RiskConfig

KRAKEN_KEYS = {"BASTION_KRAKEN_API_KEY": "k-123456789", "BASTION_KRAKEN_API_SECRET": "c2VjcmV0c2VjcmV0"}


def _cfg(**live: Any) -> BastionConfig:
    return BastionConfig.model_validate({"mode": "live", "live": live})


# --- the gate --------------------------------------------------------------------------------------
def test_every_reason_to_refuse_is_reported_together() -> None:
    reasons = live_refusals(_cfg(), None, load_secrets(environ={}, path=None))
    text = "\n".join(reasons)
    assert "--confirm-live LIVE" in text and "got nothing" in text
    assert "BASTION_KRAKEN_API_KEY" in text and "BASTION_KRAKEN_API_SECRET" in text
    assert len(reasons) == 2


def test_confirmation_must_be_typed_exactly() -> None:
    secrets = load_secrets(environ=KRAKEN_KEYS)
    assert live_refusals(_cfg(), "LIVE", secrets) == []
    for wrong in ("live", "yes", "LIVE "):
        assert any("typed exactly" in r for r in live_refusals(_cfg(), wrong, secrets)), wrong
    paper = BastionConfig.model_validate({"mode": "paper"})
    assert any("not 'live'" in r for r in live_refusals(paper, "LIVE", secrets))


def test_denied_and_unsupported_venues_are_refused_with_the_rule() -> None:
    env = {
        **KRAKEN_KEYS,
        "BASTION_BINANCE_API_KEY": "b-123456789",
        "BASTION_BINANCE_API_SECRET": "b-secret-xx",
    }
    reasons = live_refusals(_cfg(venue="binance"), "LIVE", load_secrets(environ=env))
    assert any("venue_denied" in r for r in reasons), reasons
    reasons = live_refusals(_cfg(venue="coinbase"), "LIVE", load_secrets(environ=env))
    assert any("not available in this version" in r for r in reasons), reasons
    assert any("BASTION_COINBASE_API_KEY" in r for r in reasons), reasons
    with pytest.raises(LiveModeRefused, match="unknown venue"):
        check_live(_cfg(venue="mtgox"), "LIVE", load_secrets(environ={}))


def test_cli_refuses_before_starting_anything(tmp_path: Path) -> None:
    cfg_path = tmp_path / "bastion.yaml"
    cfg_path.write_text("mode: live\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_KRAKEN")}
    env["BASTION_SECRETS_FILE"] = str(tmp_path / "none.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "bastion.ops.cli", "run", "--config", str(cfg_path), "--seconds", "1",
         "--state-dir", str(tmp_path / "state"), "--confirm-live", "yes"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())
    assert "refusing to trade live" in err and "typed exactly" in err and "no credentials for kraken" in err
    assert not (tmp_path / "state").exists()  # refused before anything started


# --- secrets ---------------------------------------------------------------------------------------
def test_secrets_file_must_be_private_and_outside_git(tmp_path: Path) -> None:
    f = tmp_path / "secrets.yaml"
    f.write_text(
        "kraken: {api_key: file-key-123, api_secret: file-secret-456}\nalerts: {urls: ['json://127.0.0.1:9']}\n"
    )
    f.chmod(0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        load_secrets(environ={}, path=f)
    f.chmod(0o600)
    s = load_secrets(environ={"BASTION_KRAKEN_API_KEY": "env-key-789"}, path=f)
    assert s.credentials("kraken") == {"api_key": "env-key-789", "api_secret": "file-secret-456"}  # env wins
    assert s.alert_urls == ["json://127.0.0.1:9"]
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    inside = repo / "secrets.yaml"
    inside.write_text(f.read_text())
    inside.chmod(0o600)
    with pytest.raises(SecretsError, match="inside the git working tree"):
        load_secrets(environ={}, path=inside)


def test_loaded_secrets_never_reach_a_log_line() -> None:
    clear_registered_secrets()
    try:
        s = load_secrets(environ={**KRAKEN_KEYS, "BASTION_ALERT_URLS": "tgram://123456:ABCDEF-token/987"})
        line = f"calling with {s.credentials('kraken')} and {s.alert_urls}"
        out = redact_text(line)
        for v in (*KRAKEN_KEYS.values(), "tgram://123456:ABCDEF-token/987"):
            assert v not in out, out
    finally:
        clear_registered_secrets()
    with pytest.raises(MissingCredentials, match="BASTION_HYPERLIQUID_PRIVATE_KEY"):
        Secrets().credentials("hyperliquid")


# --- alerts ----------------------------------------------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        type(self).received.append(json.loads(self.rfile.read(n)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Hook.received = []
    srv = HTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"json://127.0.0.1:{srv.server_address[1]}/", _Hook.received
    finally:
        srv.shutdown()


def test_alerts_are_recorded_delivered_and_folded(tmp_path: Path, webhook: tuple[str, list[Any]]) -> None:
    url, received = webhook
    now = [1000.0]
    al = Alerter([url], tmp_path / "alerts.jsonl", AlertsConfig(dedupe_s=60), clock=lambda: now[0])
    assert al.send("breaker open", "3 consecutive venue failures", "critical")
    assert not al.send("breaker open", "again", "critical")  # folded
    assert not al.send("noise", "below the level", "info")
    now[0] += 61
    assert al.send("breaker open", "still failing", "critical")
    al.close()
    assert [r["title"] for r in received] == ["[bastion critical] breaker open"] * 2
    assert received[0]["type"] == "failure" and "3 consecutive" in received[0]["message"]
    assert "1 similar alerts folded" in received[1]["message"]
    rows = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [r["repeats"] for r in rows] == [0, 1]
    assert (al.sent, al.failed, al.suppressed) == (2, 0, 1)


def test_a_dead_channel_is_counted_not_raised(tmp_path: Path) -> None:
    al = Alerter(["json://127.0.0.1:9/"], tmp_path / "a.jsonl")  # nothing listens on port 9
    assert al.send("reconciliation mismatch", "BTC differs", "critical")
    al.close()
    assert (al.sent, al.failed) == (0, 1)
    assert "BTC differs" in (tmp_path / "a.jsonl").read_text()  # the record survives


def test_bad_alert_urls_are_refused_without_echoing_tokens(tmp_path: Path) -> None:
    with pytest.raises(AlertConfigError) as exc:
        Alerter(["nosuchscheme://secret-token-123"], tmp_path / "a.jsonl")
    assert "secret-token-123" not in str(exc.value) and "nosuchscheme://" in str(exc.value)


# --- parity ----------------------------------------------------------------------------------------
def test_parity_names_what_diverged() -> None:
    inst = chaos.INSTRUMENT
    rows = [
        {"side": "BUY", "quantity": "0.0002", "price": "60000.0", "fee": "0.03", "fee_currency": "USDT"},
        {"side": "SELL", "quantity": "0.0001", "price": "60010.0", "fee": "0.02", "fee_currency": "USDT"},
    ]
    t = totals_from_fills(rows, inst)
    base = {"BTC": Fraction(1), "USDT": Fraction(100000)}
    exact = {c: base[c] + t.balance_delta[c] for c in base}
    assert compare(t, t.position_raw, exact, base).ok
    off = {**exact, "USDT": exact["USDT"] + Fraction(1, 100)}
    res = compare(t, t.position_raw + 1, off, base)
    assert not res.ok and "position" in res.detail and "USDT" in res.detail and "BTC" not in res.detail


# --- a live run, against the local exchange ----------------------------------------------------------
def _live_setup(tmp_path: Path, api_url: str) -> tuple[BastionConfig, Secrets, Any]:
    """A live config pointed at the local exchange, its keys, and a small market maker."""
    ks = KillSwitchConfig(flag_path=str(tmp_path / "KILL"), audit_path=str(tmp_path / "kill.jsonl"))
    cfg = BastionConfig(
        mode="live",
        live={"venue": "kraken", "symbol": "BTC/USDT", "api_url": api_url},  # type: ignore[arg-type]
        risk=RiskConfig(state_dir=str(tmp_path / "risk"), kill_switch=ks),
    )
    secrets = Secrets(venues={"kraken": {"api_key": chaos.KEY, "api_secret": chaos.SECRET}})
    return cfg, secrets, paper_strategy("fixed_spread_mm", {"order_qty": "0.0001", "max_position": "0.001"})


def test_live_run_trades_through_the_same_path(tmp_path: Path, webhook: tuple[str, list[Any]]) -> None:
    chaos.quiet_logs()
    url, received = webhook
    exch = chaos.ExchangeProcess(tmp_path / "exchange", speed=20.0).start()
    try:
        cfg, secrets, st = _live_setup(tmp_path, exch.url)
        alerter = Alerter([url], tmp_path / "alerts.jsonl")
        statuses: list[dict[str, Any]] = []
        out = run_live(
            tmp_path / "live", st, cfg, secrets, "LIVE", seconds=5.0,
            timing=RunnerTiming(reconcile_s=1.0), on_status=statuses.append, alerter=alerter,
        )  # fmt: skip
        alerter.close()
        with pytest.raises(LiveModeRefused):
            run_live(tmp_path / "live2", st, cfg, secrets, "live", seconds=1.0)
    finally:
        exch.stop()
    assert out["mode"] == "live" and out["venue"] == "kraken", out
    assert out["orders"] > 0 and out["open_orders"] == 0, out
    assert out["reconciliation"]["ok"] and out["parity"]["ok"], out
    assert out["reconciliations"] >= 3
    # what the Rich live view shows, every second
    assert statuses and {"balances", "position", "open_orders", "recent_fills", "net_pnl", "breaker"} <= set(
        statuses[-1]
    )
    assert received == []  # nothing went wrong, nobody was paged
    # the order book came from the public websocket v2 book of the same (local) venue
    assert out["book"]["source"] == "ws" and statuses[-1]["book"] == "live (ws)", out["book"]
    ws = out["book"]["ws"]
    assert ws["snapshots"] >= 1 and ws["updates"] > 0 and ws["checksum_failures"] == 0, ws
    assert out["book"]["rest_polls"] < out["book"]["changes"]["ws"], out["book"]


def test_status_table_shows_what_an_operator_needs() -> None:
    from rich.console import Console

    from bastion.ops.runtime import status_table

    s = {
        "mode": "live", "balances": {"BTC": "1.0", "USDT": "100000"}, "position": "0.0002",
        "open_orders": 2, "orders": 10, "fills": 3, "recent_fills": ["buy 0.0001 @ 60000.0"],
        "realized_pnl": "0.5", "net_pnl": "0.4", "mid": "60001.0", "breaker": "closed",
        "reconciliation": "ok", "parity": "ok",
    }  # fmt: skip
    con = Console(record=True, width=120)
    con.print(status_table(s))
    text = con.export_text()
    for want in (
        "bastion run (live)",
        "BTC",
        "0.0002",
        "open_orders",
        "buy 0.0001 @ 60000.0",
        "net_pnl",
        "closed",
    ):
        assert want in text, want


def test_live_config_fields_validate(tmp_path: Path) -> None:
    p = tmp_path / "b.yaml"
    p.write_text("mode: live\nlive: {venue: kraken, symbol: ETH/USDT}\nalerts: {min_level: critical}\n")
    cfg = load_config(p, environ={})
    assert cfg.live.symbol == "ETH/USDT" and cfg.alerts.min_level == "critical"
    p.write_text("live: {api_key: nope}\n")  # keys never go in bastion.yaml
    with pytest.raises(ValueError, match="api_key"):
        load_config(p, environ={})


def test_a_stalled_book_pulls_quotes_and_holds_new_orders(tmp_path: Path) -> None:
    """The exchange's feed freezes mid-run: quotes are cancelled, new ones refused, then it resumes.

    The exchange's ``stale_book`` fault freezes REST ``Depth`` only, so this run reads its book
    from REST (``ws_book=False``): the source a websocket book falls back to when it is not LIVE.
    """
    from bastion.venues.local_exchange.faults import FaultConfig

    chaos.quiet_logs()
    exch = chaos.ExchangeProcess(tmp_path / "exchange", speed=5.0).start()  # 11 min of data: ~130 s
    seen: list[dict[str, Any]] = []
    phase = ["quoting"]

    def on_status(s: dict[str, Any]) -> None:
        seen.append(s)
        if phase[0] == "quoting" and s["open_orders"] > 0:
            exch.set_faults(FaultConfig(stale_book=1.0, stale_s=60.0))  # the feed freezes
            phase[0] = "stalled"
        elif phase[0] == "stalled" and s["book"].startswith("STALE"):
            phase[0] = "held"
        elif phase[0] == "held":
            held = [x for x in seen if x["book"].startswith("STALE")]
            if len(held) >= 3:
                exch.set_faults(FaultConfig())  # the feed recovers
                phase[0] = "recovered"

    try:
        cfg, secrets, st = _live_setup(tmp_path, exch.url)
        out = run_live(
            tmp_path / "live", st, cfg, secrets, "LIVE", seconds=14.0,
            timing=RunnerTiming(book_stale_s=2.0, status_s=0.5), on_status=on_status, ws_book=False,
        )  # fmt: skip
    finally:
        exch.stop()
    assert phase[0] == "recovered", (phase, [x["book"] for x in seen])
    assert out["book_stale_episodes"] >= 1
    stale = [x for x in seen if x["book"].startswith("STALE")]
    # within a status tick of going stale nothing of ours rests at the venue any more
    assert all(x["open_orders"] == 0 for x in stale[1:]), stale
    assert seen[-1]["book"] == "live (rest)" and out["book"]["source"] == "rest", (seen[-1], out["book"])
    assert all(x["book"].endswith("; rest)") for x in stale), stale
    assert out["open_orders"] == 0 and out["reconciliation"]["ok"] and out["parity"]["ok"], out

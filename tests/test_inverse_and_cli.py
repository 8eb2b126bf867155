"""Inverse contracts end to end, and the command line as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from bastion.data.binance_ws import load_binance_ws
from bastion.model import KNOWN_INSTRUMENTS
from bastion.ops.config import ConfigError, load_config
from bastion.research.backtest import BacktestRun
from bastion.research.streams import build_stream
from bastion.strategies import load_strategy

REPO = Path(__file__).resolve().parents[1]


def test_inverse_perpetual_settles_in_base(shared_data: Path) -> None:
    files = [shared_data / "ticks_l2/binance_ws_hftbacktest/cm/btcusd_perp_20240808.gz"]
    tables = load_binance_ws(files)
    inst = KNOWN_INSTRUMENTS["BTCUSD-PERP.BINANCE"]
    r = BacktestRun(
        build_stream(tables, inst), load_strategy("fixed_spread_mm", {"order_qty": "1", "max_position": "5"})
    ).run()
    assert r.settle_currency == "BTC"
    assert len(r.fills) > 0
    # fees in BTC: 2 bp of each fill's value, 100 USD per contract / price, rounded to 1e-8
    expected = sum(
        (Fraction(int(Decimal(f.qty)) * 100) / Fraction(f.price) * Fraction(2, 10_000) for f in r.fills),
        Fraction(0),
    )
    assert abs(Decimal(r.fees) - Decimal(float(expected))) < Decimal("1e-7") * len(r.fills)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASTION_RUNS_DIR": str(REPO / ".pytest-runs")}
    return subprocess.run(
        [sys.executable, "-m", "bastion.ops.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_cli_backtest_json_on_real_file(shared_data: Path, tmp_path: Path) -> None:
    p = _cli(
        "backtest",
        "--json",
        "--out",
        str(tmp_path),
        "--data",
        str(shared_data / "ticks_l2/binance_ws_hftbacktest/usdm/btcusdt_20240808.gz"),
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("strategy", "events", "orders", "fills", "net_pnl", "fees", "max_drawdown", "result_hash"):
        assert key in summary
    assert summary["strategy"] == "avellaneda_stoikov"
    assert summary["events"] > 400_000
    assert (tmp_path / "report.html").read_text().count(summary["result_hash"]) >= 1
    assert json.loads((tmp_path / "summary.json").read_text())["result_hash"] == summary["result_hash"]


def test_cli_refuses_bad_input_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("hello,world\n1,2\n")
    p = _cli("backtest", "--data", str(bad))
    assert p.returncode != 0
    assert "x.csv" in p.stderr
    p = _cli("backtest", "--strategy", "no_such_strategy")
    assert p.returncode != 0 and "unknown strategy" in p.stderr


def test_config_errors_name_field_and_value(tmp_path: Path) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("mode: sideways\n")
    with pytest.raises(ConfigError, match="mode") as e:
        load_config(cfg)
    assert "sideways" in str(e.value)
    cfg.write_text("backtest:\n  strategy: ema_cross\n  params: {fast: 5}\n")
    assert load_config(cfg, environ={}).backtest.params == {"fast": 5}
    env = {"BASTION_BACKTEST__STRATEGY": "fixed_spread_mm"}
    assert load_config(cfg, environ=env).backtest.strategy == "fixed_spread_mm"
    cfg.write_text("backtest:\n  strategy: ema_cross\n  unknown_key: 1\n")
    with pytest.raises(ConfigError, match="unknown_key"):
        load_config(cfg, environ={})


def test_cli_import_then_backtest_from_catalog_same_hash(shared_data: Path, tmp_path: Path) -> None:
    raw = shared_data / "ticks_l2/binance_ws_hftbacktest/usdm/btcusdt_20240808.gz"
    cat = tmp_path / "catalog"
    p = _cli("data", "import", str(raw), "--catalog", str(cat))
    assert p.returncode == 0, p.stderr
    assert "466,575" in p.stdout
    p = _cli("data", "list", "--catalog", str(cat))
    assert "BTCUSDT-PERP.BINANCE" in p.stdout and "book_delta" in p.stdout
    a = _cli("backtest", "--json", "--out", str(tmp_path / "a"), "--data", str(raw), "--param", "model=glft")
    b = _cli("backtest", "--json", "--out", str(tmp_path / "b"), "--data", str(cat), "--param", "model=glft")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ha = json.loads(a.stdout.strip().splitlines()[-1])["result_hash"]
    hb = json.loads(b.stdout.strip().splitlines()[-1])["result_hash"]
    assert ha == hb


def test_cli_exchange_serves_kraken_protocol_on_real_data(tmp_path: Path) -> None:
    import base64
    import socket
    import time

    import ccxt

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = base64.b64encode(b"test-secret-0123456789").decode()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.ops.cli", "exchange", "--host", "127.0.0.1", "--port", str(port),
         "--api-key", "k", "--api-secret", secret, "--state-dir", str(tmp_path), "--speed", "0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        ex = ccxt.kraken({"apiKey": "k", "secret": secret, "enableRateLimit": False})
        base = f"http://127.0.0.1:{port}"
        ex.urls["api"] = {**ex.urls["api"], "public": base, "private": base}
        deadline = time.time() + 60
        while True:
            try:
                ex.load_markets()
                break
            except ccxt.NetworkError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.time() < deadline
                time.sleep(0.3)
        book = ex.fetch_order_book("BTC/USDT")
        assert book["bids"] and book["asks"] and book["bids"][0][0] < book["asks"][0][0]
        assert 50_000 < book["bids"][0][0] < 70_000  # the real Binance capture, on Kraken's grid
    finally:
        proc.terminate()
        proc.wait(timeout=30)

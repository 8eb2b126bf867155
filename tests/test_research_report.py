"""Reports render for ordinary, empty and oversized runs, and stay single self-contained files."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from bastion.research.metrics import NS_PER_SECOND, summarize
from bastion.research.report import MAX_FILL_ROWS, write_html, write_json, write_reports
from bastion.research.result import BacktestResult, FillRecord

T0 = 1_704_067_200 * NS_PER_SECOND  # 2024-01-01T00:00:00Z
HASH = "c0ffee" * 10 + "beef"

REQUIRED = {
    "strategy",
    "instrument",
    "events",
    "orders",
    "cancels",
    "fills",
    "net_pnl",
    "fees",
    "funding",
    "realized_pnl",
    "final_position",
    "maker_share",
    "taker_share",
    "traded_qty",
    "traded_notional",
    "sharpe",
    "sharpe_note",
    "max_drawdown",
    "max_drawdown_pct",
    "inventory",
    "start",
    "end",
    "duration_s",
    "result_hash",
    "run_seconds",
    "events_per_s",
    "params",
    "notes",
}


def _fills(n: int, ts: np.ndarray, mid: np.ndarray) -> list[FillRecord]:
    step = max(1, ts.size // max(n, 1))
    out = []
    for k in range(n):
        i = min(k * step, ts.size - 1)
        side = "buy" if k % 2 == 0 else "sell"
        out.append(
            FillRecord(
                ts=int(ts[i]),
                client_order_id=f"mm-{k}<&>",
                side=side,
                price=f"{mid[i]:.2f}",
                qty="0.001",
                fee="-0.0001" if k % 3 else "0.0003",
                liquidity="maker" if k % 3 else "taker",
            )
        )
    return out


def _result(n_points: int = 500, n_fills: int = 5) -> BacktestResult:
    rng = np.random.default_rng(42)
    ts = T0 + np.cumsum(rng.integers(100_000_000, 2 * NS_PER_SECOND, n_points)).astype(np.int64)
    equity = np.cumsum(rng.normal(0.001, 0.05, n_points))
    inventory = np.round(np.cumsum(rng.normal(0, 0.001, n_points)), 3)
    mid = 42_000 + np.cumsum(rng.normal(0, 3, n_points))
    fills = _fills(n_fills, ts, mid) if n_points else []
    return BacktestResult(
        strategy="avellaneda_stoikov",
        instrument_id="BTCUSDT.BINANCE",
        settle_currency="USDT",
        data_source="shared/data/binance/btcusdt",
        start_ns=int(ts[0]) if n_points else T0,
        end_ns=int(ts[-1]) if n_points else T0,
        events=123_456,
        orders=42,
        cancels=30,
        fills=fills,
        net_pnl="1.23456789",
        fees="-0.0004",
        funding="0",
        realized_pnl="1.2",
        final_position="0.001",
        ts=ts,
        equity=equity,
        inventory=inventory,
        mid=mid,
        result_hash=HASH,
        run_seconds=1.5,
        params={"gamma": 0.1, "name": "<script>alert(1)</script>"},
    )


def _empty() -> BacktestResult:
    r = _result(n_points=0, n_fills=0)
    r.fills = []
    return r


def _check_json(path: Path) -> dict[str, object]:
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert isinstance(data, dict)
    assert data.keys() >= REQUIRED
    assert list(data) == sorted(data)
    return data


def _check_html(path: Path) -> str:
    doc = path.read_text(encoding="utf-8")
    assert doc.startswith("<!DOCTYPE html>")
    assert HASH in doc
    # Self-contained: no scripts, no links or sources pointing outside the file.
    assert "<script" not in doc
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", doc)
    assert "http://" not in doc and "https://" not in doc
    for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", doc):
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    return doc


def test_report_with_fills(tmp_path: Path) -> None:
    result = _result()
    summary, json_path, html_path = write_reports(result, tmp_path / "out" / "run1", capital=1_000)
    assert json_path == tmp_path / "out" / "run1" / "summary.json"
    assert html_path == tmp_path / "out" / "run1" / "report.html"
    data = _check_json(json_path)
    assert data["result_hash"] == HASH
    assert data["fills"] == 5
    assert data["net_pnl"] == "1.23456789"
    assert data["sharpe_note"] == summary["sharpe_note"]
    doc = _check_html(html_path)
    assert doc.count("data:image/png;base64,") == 3
    assert summary["sharpe_note"] in doc
    # Every user-supplied string is escaped.
    assert "<script>alert(1)</script>" not in doc
    assert "&lt;script&gt;" in doc
    assert "mm-0&lt;&amp;&gt;" in doc


def test_report_without_fills(tmp_path: Path) -> None:
    result = _result(n_fills=0)
    _, json_path, html_path = write_reports(result, tmp_path, capital=1_000)
    data = _check_json(json_path)
    assert data["fills"] == 0
    assert data["maker_share"] is None and data["taker_share"] is None
    assert data["traded_qty"] == "0"
    doc = _check_html(html_path)
    assert "No fills" in doc
    assert doc.count("data:image/png;base64,") == 3


def test_report_empty_run(tmp_path: Path) -> None:
    _, json_path, html_path = write_reports(_empty(), tmp_path, capital=1_000)
    data = _check_json(json_path)
    assert data["sharpe"] is None
    assert data["samples"] == 0
    doc = _check_html(html_path)
    assert "no series samples" in doc
    assert "No fills" in doc
    assert "data:image/png;base64," not in doc


def test_report_flat_pnl_has_no_nan(tmp_path: Path) -> None:
    result = _result(n_fills=0)
    result.equity = np.zeros(result.ts.size)
    result.inventory = np.zeros(result.ts.size)
    _, json_path, html_path = write_reports(result, tmp_path, capital=1_000)
    data = _check_json(json_path)
    assert data["sharpe"] is None
    assert data["max_drawdown"] == 0.0
    assert not re.search(r"\bnan\b", html_path.read_text(encoding="utf-8"), re.IGNORECASE)


def test_report_caps_fill_table_and_markers(tmp_path: Path) -> None:
    result = _result(n_points=5_000, n_fills=6_000)
    _, _, html_path = write_reports(result, tmp_path, capital=10_000)
    doc = _check_html(html_path)
    assert f"first {MAX_FILL_ROWS:,} of 6,000 fills" in doc
    assert "showing 5,000 of 6,000 fills" in doc
    assert doc.count('<tr><td class="num">') == MAX_FILL_ROWS


def test_report_is_deterministic(tmp_path: Path) -> None:
    result = _result()
    write_reports(result, tmp_path / "a", capital=1_000)
    write_reports(result, tmp_path / "b", capital=1_000)
    for name in ("summary.json", "report.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_write_json_scrubs_nan(tmp_path: Path) -> None:
    path = write_json({"b": math.nan, "a": [math.inf, 1.0], "c": {"d": -math.inf}}, tmp_path / "s.json")
    assert json.loads(path.read_text()) == {"a": [None, 1.0], "b": None, "c": {"d": None}}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')


def test_write_html_accepts_foreign_summary(tmp_path: Path) -> None:
    # A summary rebuilt elsewhere (fewer keys, NaN values) must still render.
    result = _result()
    summary = {"result_hash": HASH, "sharpe": math.nan, "notes": ["rebuilt"]}
    doc = write_html(result, summary, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "rebuilt" in doc and HASH in doc


def test_misaligned_series_still_render(tmp_path: Path) -> None:
    result = _result()
    result.mid = result.mid[:10]
    summary, _, html_path = write_reports(result, tmp_path, capital=1_000)
    assert any("mid has 10 samples" in n for n in summary["notes"])
    doc = _check_html(html_path)
    assert "mid has 10 samples" in doc


def test_summary_matches_summarize(tmp_path: Path) -> None:
    result = _result()
    summary, json_path, _ = write_reports(result, tmp_path, capital=1_000)
    assert summary == summarize(result, 1_000)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(summary))

"""Backtest reports: a ``summary.json`` for machines and one self-contained ``report.html`` for people.

The HTML carries its plots as base64 PNGs and no scripts or external URLs, so it can be mailed,
archived next to the run, or opened offline years later and still look the same. Nothing in it
depends on the time it was written: the same result gives the same bytes, so reports can be
diffed and hashed like the results they describe.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bastion.research.metrics import aligned_series, iso_utc, max_drawdown, summarize
from bastion.research.result import BacktestResult, FillRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MAX_FILL_MARKERS", "MAX_FILL_ROWS", "write_html", "write_json", "write_reports"]

MAX_FILL_MARKERS = 5_000  # beyond this, markers hide each other and slow the render
MAX_FILL_ROWS = 200  # the table is for eyeballing, the full list belongs in the result store
MAX_LINE_POINTS = 20_000  # lines are decimated (keeping each bucket's min and max) beyond this

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None all the way down: JSON has no NaN and readers choke on it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, Decimal):
        return format(obj, "f")
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a report behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the summary with sorted keys so two runs' summaries diff line by line."""
    out = Path(path)
    text = json.dumps(_clean(summary), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False)
    _write_atomic(out, text + "\n")
    return out


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _new_figure(height: float) -> Figure:
    # The object API (Figure + Agg canvas) renders headless without pyplot: no global backend
    # switch that would disturb an interactive session, and no figure registry to leak into.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_b64(fig: Figure) -> str:
    buf = io.BytesIO()
    # No "Software" metadata: the bytes then depend on the data only, not the matplotlib build.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _utc_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    # matplotlib ships these two constructors unannotated.
    locator = mdates.AutoDateLocator(tz=mdates.UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=mdates.UTC))  # type: ignore[no-untyped-call]
    ax.set_xlabel("time (UTC)")
    ax.grid(True, alpha=0.3)


def _dt(ts_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.datetime64]:
    return ts_ns.astype("datetime64[ns]")


def _decimate(n: int, y: FloatArray, max_points: int = MAX_LINE_POINTS) -> npt.NDArray[np.intp]:
    """Indices to draw: all of them, or each bucket's first, min, max and last sample.

    Plain striding would skip the trough a reader is looking for; keeping extremes preserves the
    envelope, so a drawdown visible in the data is visible in the picture.
    """
    if n <= max_points:
        return np.arange(n)
    width = math.ceil(n / (max_points // 4))
    starts = np.arange(0, n, width)
    picks = [starts, np.minimum(starts + width, n) - 1]
    safe = np.where(np.isfinite(y), y, np.nan)
    for s in starts:
        chunk = safe[s : s + width]
        if np.all(np.isnan(chunk)):
            continue
        picks.append(np.array([s + int(np.nanargmin(chunk)), s + int(np.nanargmax(chunk))]))
    return np.unique(np.concatenate(picks))


def _plot_equity(ts: npt.NDArray[np.int64], equity: FloatArray, currency: str) -> str:
    fig = _new_figure(3.6)
    ax = fig.add_subplot()
    idx = _decimate(ts.size, equity)
    t = _dt(ts[idx])
    eq = equity[idx]
    peak = np.maximum.accumulate(equity)[idx]
    # Steps, not interpolation: between samples the PnL is the last value, not a guess.
    ax.step(t, eq, where="post", color="#1f4e9c", linewidth=1.0, label="PnL")
    ax.fill_between(
        t, eq, peak, where=peak > eq, step="post", color="#d62728", alpha=0.25, linewidth=0, label="drawdown"
    )
    dd, start, end = max_drawdown(equity)
    if dd > 0.0:
        ax.axvspan(_dt(ts[start : start + 1])[0], _dt(ts[end : end + 1])[0], color="#d62728", alpha=0.08)
        ax.annotate(
            f"max drawdown {dd:,.6g}",
            xy=(_dt(ts[end : end + 1])[0], equity[end]),
            # Label on the side with room, so a trough at the end of the run is not clipped.
            xytext=(-6, 6) if end > equity.size // 2 else (6, 6),
            textcoords="offset points",
            ha="right" if end > equity.size // 2 else "left",
            fontsize=8,
            color="#a01010",
        )
    ax.axhline(0.0, color="black", linewidth=0.6, alpha=0.5)
    ax.set_ylabel(f"PnL ({currency})" if currency else "PnL")
    ax.set_title("Equity (mark-to-market PnL) with drawdown shaded")
    ax.legend(loc="best", fontsize=8)
    _utc_axis(ax)
    return _png_b64(fig)


def _plot_inventory(ts: npt.NDArray[np.int64], inventory: FloatArray) -> str:
    fig = _new_figure(2.8)
    ax = fig.add_subplot()
    idx = _decimate(ts.size, inventory)
    t = _dt(ts[idx])
    inv = inventory[idx]
    ax.step(t, inv, where="post", color="#6a3d9a", linewidth=1.0)
    ax.fill_between(t, inv, 0.0, step="post", color="#6a3d9a", alpha=0.15, linewidth=0)
    ax.axhline(0.0, color="black", linewidth=0.6, alpha=0.5)
    ax.set_ylabel("position")
    ax.set_title("Inventory (signed position)")
    _utc_axis(ax)
    return _png_b64(fig)


def _fill_arrays(
    fills: Sequence[FillRecord],
) -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.bool_]]:
    ts = np.fromiter((f.ts for f in fills), dtype=np.int64, count=len(fills))
    px = np.fromiter((float(f.price) for f in fills), dtype=np.float64, count=len(fills))
    buy = np.fromiter((f.side == "buy" for f in fills), dtype=np.bool_, count=len(fills))
    return ts, px, buy


def _plot_price(
    ts: npt.NDArray[np.int64], mid: FloatArray, fills: Sequence[FillRecord]
) -> tuple[str, str | None]:
    """Mid price with fills; returns (png, note) where the note says when markers were thinned."""
    fig = _new_figure(3.6)
    ax = fig.add_subplot()
    note: str | None = None
    if ts.size:
        idx = _decimate(ts.size, mid)
        ax.step(_dt(ts[idx]), mid[idx], where="post", color="#555555", linewidth=0.9, label="mid")
    if fills:
        fts, fpx, buy = _fill_arrays(fills)
        if len(fills) > MAX_FILL_MARKERS:
            # Even stride over the fill sequence: deterministic and keeps the time density honest.
            keep = np.unique(np.linspace(0, len(fills) - 1, MAX_FILL_MARKERS).astype(np.intp))
            fts, fpx, buy = fts[keep], fpx[keep], buy[keep]
            note = f"showing {keep.size:,} of {len(fills):,} fills (evenly thinned)"
        sell = ~buy
        if buy.any():
            ax.scatter(
                _dt(fts[buy]), fpx[buy], marker="^", s=18, color="#2ca02c", alpha=0.85, label="buy", zorder=3
            )
        if sell.any():
            ax.scatter(
                _dt(fts[sell]),
                fpx[sell],
                marker="v",
                s=18,
                color="#d62728",
                alpha=0.85,
                label="sell",
                zorder=3,
            )
    ax.set_ylabel("price")
    ax.set_title("Mid price and fills")
    if ts.size or fills:
        ax.legend(loc="best", fontsize=8)
    _utc_axis(ax)
    return _png_b64(fig), note


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1140px; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0 32px; }
.note { background: #fff8e1; border-left: 3px solid #f0b400; padding: 6px 10px; margin: 6px 0; }
.buy { color: #1a7f1a; } .sell { color: #b01a1a; }
img { max-width: 100%; }
code { font-size: 0.9em; }
"""

_SUMMARY_ORDER = [
    "strategy",
    "instrument",
    "settle_currency",
    "data_source",
    "start",
    "end",
    "duration_s",
    "capital",
    "net_pnl",
    "realized_pnl",
    "fees",
    "funding",
    "final_position",
    "sharpe",
    "max_drawdown",
    "max_drawdown_pct",
    "max_drawdown_start",
    "max_drawdown_end",
    "events",
    "orders",
    "cancels",
    "fills",
    "buys",
    "sells",
    "maker_share",
    "taker_share",
    "traded_qty",
    "traded_notional",
    "run_seconds",
    "events_per_s",
    "samples",
    "result_hash",
]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 1e6 else f"{value:.10g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(_clean(value), sort_keys=True, ensure_ascii=False)
    return str(value)


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    out = []
    for key, value in pairs:
        cls = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
        out.append(f"<tr><th>{html.escape(key)}</th><td{cls}>{html.escape(_fmt(value))}</td></tr>")
    return "\n".join(out)


def _summary_tables(summary: dict[str, Any]) -> str:
    shown = [k for k in _SUMMARY_ORDER if k in summary]
    rest = sorted(
        k
        for k in summary
        if k not in _SUMMARY_ORDER and k not in ("inventory", "params", "notes", "sharpe_note")
    )
    main = [(k, summary[k]) for k in shown + rest]
    inventory = summary.get("inventory") or {}
    params = summary.get("params") or {}
    inv_rows = (
        [(f"inventory.{k}", inventory[k]) for k in sorted(inventory)] if isinstance(inventory, dict) else []
    )
    par_rows = [(str(k), params[k]) for k in sorted(params)] if isinstance(params, dict) else []
    right = "<h3>Inventory</h3><table>" + _rows(inv_rows) + "</table>"
    right += "<h3>Parameters</h3>"
    right += "<table>" + _rows(par_rows) + "</table>" if par_rows else '<p class="sub">none</p>'
    return f'<div class="grid"><div><table>{_rows(main)}</table></div><div>{right}</div></div>'


def _fills_table(fills: Sequence[FillRecord]) -> str:
    if not fills:
        return '<p class="note">No fills: the strategy never traded in this run.</p>'
    head = "<tr><th>#</th><th>time (UTC)</th><th>side</th><th>price</th><th>qty</th><th>fee</th>"
    head += "<th>liquidity</th><th>client order id</th></tr>"
    rows = []
    for i, f in enumerate(fills[:MAX_FILL_ROWS]):
        side = html.escape(f.side)
        side_cls = "buy" if f.side == "buy" else "sell" if f.side == "sell" else ""
        rows.append(
            f'<tr><td class="num">{i + 1}</td><td>{html.escape(iso_utc(f.ts))}</td>'
            f'<td class="{side_cls}">{side}</td><td class="num">{html.escape(f.price)}</td>'
            f'<td class="num">{html.escape(f.qty)}</td><td class="num">{html.escape(f.fee)}</td>'
            f"<td>{html.escape(f.liquidity)}</td><td><code>{html.escape(f.client_order_id)}</code></td></tr>"
        )
    caption = f"first {MAX_FILL_ROWS:,} of {len(fills):,} fills" if len(fills) > MAX_FILL_ROWS else ""
    cap_html = f'<p class="sub">{html.escape(caption)}</p>' if caption else ""
    return f"{cap_html}<table>{head}\n" + "\n".join(rows) + "</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def write_html(result: BacktestResult, summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render one self-contained HTML report (inline CSS, base64 PNG plots, no scripts or URLs)."""
    out = Path(path)
    ts, equity, inventory, mid, _ = aligned_series(result)
    notes = [str(n) for n in summary.get("notes", [])]
    esc = html.escape

    sections: list[str] = []
    if ts.size == 0 and not any("no series samples" in n for n in notes):
        notes.append("no series samples were recorded, so there are no equity or inventory plots")
    if equity.size:
        sections.append("<h2>Equity</h2>" + _img(_plot_equity(ts, equity, result.settle_currency), "equity"))
    if inventory.size:
        sections.append("<h2>Inventory</h2>" + _img(_plot_inventory(ts, inventory), "inventory"))
    if mid.size or result.fills:
        png, thin_note = _plot_price(ts if mid.size else ts[:0], mid, result.fills)
        sections.append(
            "<h2>Price and fills</h2>"
            + (f'<p class="sub">{esc(thin_note)}</p>' if thin_note else "")
            + _img(png, "price and fills")
        )
    if not result.fills:
        sections.append('<p class="note">No fills to mark on the price chart.</p>')

    title = f"{result.strategy} · {result.instrument_id}"
    sharpe_note = str(summary.get("sharpe_note", ""))
    notes_html = "".join(f'<p class="note">{esc(n)}</p>' for n in dict.fromkeys(notes))
    doc = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} — Bastion backtest</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p class="sub">{esc(iso_utc(result.start_ns))} → {esc(iso_utc(result.end_ns))} ·
data: {esc(result.data_source)} · result hash <code>{esc(result.result_hash)}</code></p>
{notes_html}
<h2>Summary</h2>
<p class="sub">{esc(sharpe_note)}. Max drawdown % is relative to the starting capital.</p>
{_summary_tables(summary)}
{"".join(sections)}
<h2>Fills</h2>
{_fills_table(result.fills)}
</body>
</html>
"""
    _write_atomic(out, doc)
    return out


def write_reports(
    result: BacktestResult, out_dir: str | os.PathLike[str], capital: float | Decimal
) -> tuple[dict[str, Any], Path, Path]:
    """Summarise a run and write ``summary.json`` and ``report.html`` into ``out_dir``."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    summary = summarize(result, capital)
    json_path = write_json(summary, directory / "summary.json")
    html_path = write_html(result, summary, directory / "report.html")
    return summary, json_path, html_path

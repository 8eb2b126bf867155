"""The ``bastion`` command line.

Progress and human-readable output go to stderr, machine output (``--json``) to stdout, so
``bastion backtest --json | jq`` works while a person still sees the progress bar.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from bastion.ops.paths import resolve_data_path, runs_dir, shared_data_dir

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Bastion: research, backtest and trade.")
data_app = typer.Typer(no_args_is_help=True, help="Import, list and inspect market data.")
app.add_typer(data_app, name="data")

err = Console(stderr=True)


def _parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--param expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet,
    )


@app.command()
def backtest(
    strategy: Annotated[
        str, typer.Option(help="Strategy module in bastion/strategies.")
    ] = "avellaneda_stoikov",
    data: Annotated[
        list[str] | None,
        typer.Option(
            help="Raw data file(s) in replay order, or a Parquet catalog directory. "
            "Default: the Binance USDT-M BTCUSDT L2 capture in shared/data."
        ),
    ] = None,
    instrument: Annotated[str | None, typer.Option(help="Instrument id when the data holds several.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Strategy parameter key=value (repeatable).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (see bastion.example.yaml).")] = None,
    order_latency_ms: Annotated[float, typer.Option(help="Order entry latency.")] = 1.0,
    response_latency_ms: Annotated[float, typer.Option(help="Venue response latency.")] = 1.0,
    feed_latency_from_data: Annotated[
        bool, typer.Option(help="Feed latency from local-vs-venue timestamps.")
    ] = False,
    capital: Annotated[float, typer.Option(help="Capital base for Sharpe and drawdown %.")] = 10_000.0,
    out: Annotated[Path | None, typer.Option(help="Directory for summary.json and report.html.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip (count and log) bad rows instead of stopping.")
    ] = False,
) -> None:
    """Backtest a strategy on recorded data in the simulated venue and write its report."""
    from bastion.ops.config import load_config
    from bastion.research.report import write_reports
    from bastion.research.run import BacktestSpec, run_backtest

    cfg = load_config(config)
    bt = cfg.backtest
    params = {**bt.params, **_parse_params(param or [])}
    paths = [resolve_data_path(p) for p in (data or bt.data or [None])]  # type: ignore[list-item]
    spec = BacktestSpec(
        strategy=strategy or bt.strategy,
        data=paths,
        instrument=instrument or bt.instrument,
        params=params,
        order_latency_ms=order_latency_ms,
        response_latency_ms=response_latency_ms,
        feed_latency_from_data=feed_latency_from_data,
        skip_bad=skip_bad,
        capital=capital,
        risk=cfg.risk,
    )
    with _progress(as_json and not sys.stderr.isatty()) as prog:
        task = prog.add_task("loading", total=1)

        def on_progress(stage: str, done: int, total: int) -> None:
            prog.update(task, description=stage, completed=done, total=max(total, 1))

        result = run_backtest(spec, on_progress)
    out_dir = out or runs_dir() / f"{result.strategy}-{result.instrument_id}-{result.result_hash[:12]}"
    summary, json_path, html_path = write_reports(result, out_dir, capital)
    if as_json:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
        return
    _print_summary(summary)
    err.print(f"report: [bold]{html_path}[/]  summary: {json_path}")


def _print_summary(summary: dict[str, Any]) -> None:
    t = RichTable(title=f"{summary.get('strategy')} on {summary.get('instrument')}", show_header=False)
    keys = [
        "events",
        "orders",
        "cancels",
        "fills",
        "net_pnl",
        "fees",
        "realized_pnl",
        "funding",
        "final_position",
        "maker_share",
        "sharpe",
        "sharpe_note",
        "max_drawdown",
        "max_drawdown_pct",
        "duration_s",
        "run_seconds",
        "events_per_s",
        "result_hash",
    ]
    for k in keys:
        if k in summary:
            t.add_row(k, str(summary[k]))
    for note in summary.get("notes") or []:
        t.add_row("note", str(note))
    Console().print(t)


@data_app.command("import")
def data_import(
    path: Annotated[str, typer.Argument(help="A data file or directory (recursively).")],
    catalog: Annotated[Path, typer.Option(help="Catalog directory.")] = Path("catalog"),
    skip_bad: Annotated[bool, typer.Option(help="Skip (count and log) bad rows.")] = False,
) -> None:
    """Convert raw files into the Parquet catalog (one schema per data type)."""
    from bastion.data.catalog import Catalog

    src = resolve_data_path(path)
    cat = Catalog(catalog)
    with _progress(False) as prog:
        task = prog.add_task("importing", total=1)

        def on_progress(done: int, total: int, name: str) -> None:
            prog.update(task, description=f"importing {name}", completed=done, total=max(total, 1))

        summary = cat.import_path(src, skip_bad=skip_bad, progress=on_progress)
    failed = summary.by_status("error")
    t = RichTable("file", "format", "status", "rows", "bad rows", "gaps", "note")
    for f in summary.files:
        t.add_row(
            ", ".join(Path(p).name for p in f.paths),
            str(f.format or ""),
            f.status,
            f"{f.rows:,}",
            str(f.bad_rows),
            str(f.gaps),
            f.error or "",
        )
    Console().print(t)
    Console().print(
        f"{summary.rows:,} rows into {catalog}; {summary.bad_rows} bad rows skipped, {summary.gaps} gaps"
    )
    if failed:
        raise typer.Exit(1)


@data_app.command("list")
def data_list(catalog: Annotated[Path, typer.Option(help="Catalog directory.")] = Path("catalog")) -> None:
    """List what a catalog holds."""
    from bastion.data.catalog import Catalog

    t = RichTable("data type", "instrument", "rows")
    for data_type, instrument_id, rows in Catalog(catalog).list():
        t.add_row(str(data_type), instrument_id, f"{rows:,}")
    Console().print(t)


@data_app.command("inspect")
def data_inspect(path: Annotated[str, typer.Argument(help="A raw data file.")]) -> None:
    """Recognise a file's format and show what it holds."""
    from bastion.data.detect import detect_format, load_any

    p = resolve_data_path(path)
    fmt = detect_format(p)
    t = RichTable("data type", "instrument", "rows", "first", "last")
    for tab in load_any(p):
        ts = tab.columns["ts_event"]
        t.add_row(
            tab.data_type.value,
            tab.instrument_id,
            f"{len(tab):,}",
            str(int(ts[0])) if len(tab) else "",
            str(int(ts[-1])) if len(tab) else "",
        )
    Console().print(f"{p}: format [bold]{fmt}[/]")
    Console().print(t)


@data_app.command("download")
def data_download(
    venue: Annotated[str, typer.Option(help="Venue: kraken, hyperliquid, ... (the venue table).")],
    symbols: Annotated[
        list[str], typer.Option(help="ccxt symbols, comma-separated or repeated (BTC/USDT, BTC/USDC:USDC).")
    ],
    since: Annotated[str, typer.Option(help="Start, ISO date or date-time (UTC unless it says otherwise).")],
    kind: Annotated[str, typer.Option(help="candles, trades or funding.")] = "candles",
    until: Annotated[str | None, typer.Option(help="End (exclusive), ISO; default: now.")] = None,
    timeframe: Annotated[str, typer.Option(help="Candle interval (candles only).")] = "1m",
    catalog: Annotated[Path, typer.Option(help="Catalog directory.")] = Path("catalog"),
    chunk_rows: Annotated[int, typer.Option(help="Rows per catalog part (and per checkpoint).")] = 50_000,
    api_url: Annotated[
        str | None, typer.Option(hidden=True, help="Send the REST requests to this base URL (testing).")
    ] = None,
) -> None:
    """Download public market data (no keys) through ccxt into the catalog; rerun to resume.

    Public data is not trading, so every venue in the venue table may be used. See docs/data.md.
    """
    from datetime import UTC, datetime

    from bastion.research.download import DownloadError, download

    def ns(text: str, option: str) -> int:
        try:
            dt = datetime.fromisoformat(text.strip())
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not an ISO date or date-time", param_hint=option) from None
        dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000

    wanted = [s.strip() for item in symbols for s in item.split(",") if s.strip()]
    since_ns, until_ns = ns(since, "--since"), (ns(until, "--until") if until else None)
    try:
        with _progress(False) as prog:
            task = prog.add_task(f"{venue} {kind}", total=1)

            def on_progress(desc: str, done: int, total: int) -> None:
                prog.update(task, description=desc, completed=done, total=max(total, 1))

            summary = download(
                venue, wanted, kind, since_ns, until_ns, catalog, progress=on_progress,
                timeframe=timeframe, api_url=api_url, chunk_rows=chunk_rows,
            )  # fmt: skip
    except DownloadError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:  # network or venue error: what is written stays, a rerun resumes
        err.print(f"[red]download stopped:[/] {type(exc).__name__}: {exc}")
        err.print("what was downloaded is in the catalog; run the same command again to resume")
        raise typer.Exit(1) from None

    def when(ts: int | None) -> str:
        return datetime.fromtimestamp(ts / 1e9, UTC).isoformat(timespec="seconds") if ts is not None else ""

    t = RichTable("symbol", "instrument", "new rows", "requests", "total rows", "first", "last", "note")
    for r in summary.symbols:
        note = "; ".join(r.notes + ([f"{r.inexact_values} values not exact"] if r.inexact_values else []))
        t.add_row(
            r.symbol, r.instrument_id, f"{r.rows:,}", str(r.pages), f"{r.total_rows:,}",
            when(r.first_ts), when(r.last_ts), note,
        )  # fmt: skip
    Console().print(t)
    Console().print(f"{summary.rows:,} new {summary.kind} rows into {catalog}")


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): still say something
        return "unknown"


@app.command()
def kill(
    reason: Annotated[
        str, typer.Option(help="Why trading must stop (kept in the audit log).")
    ] = "operator request",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")
    ] = False,
    clean: Annotated[
        bool, typer.Option("--clean", help="Release the kill switch (trading may resume).")
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Only show whether the switch is engaged.")
    ] = False,
    config: Annotated[Path | None, typer.Option(help="YAML config (kill switch paths).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Engage the kill switch: every gateway refuses new orders and cancels resting ones.

    The switch is a flag file (``risk.kill_switch.flag_path``) seen by every process; each
    action, dry runs included, is appended to the audit log.
    """
    from bastion.ops.config import load_config
    from bastion.risk import kill_switch as ks

    kc = load_config(config).risk.kill_switch
    flag, audit = kc.resolved_flag_path(), kc.resolved_audit_path()
    if status:
        result = ks.kill_status(flag, audit)
    elif clean:
        result = ks.kill_clean(flag, audit, operator=_operator(), dry_run=dry_run)
    elif dry_run:
        result = ks.kill_dry_run(flag, audit, reason=reason, operator=_operator())
    else:
        result = ks.kill(flag, audit, reason=reason, operator=_operator())
    if as_json:
        sys.stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
        return
    t = RichTable(show_header=False, title="kill switch")
    for k, v in result.items():
        t.add_row(str(k), "\n".join(map(str, v)) if isinstance(v, list) else str(v))
    Console().print(t)


@app.command()
def check(
    config: Annotated[Path | None, typer.Option(help="YAML config.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    send_test_alert: Annotated[
        bool, typer.Option("--send-test-alert", help="Send a test alert and pass only if it is delivered.")
    ] = False,
) -> None:
    """The pre-trading checklist; exit code 0 only when every applicable check passes."""
    from bastion.ops.checklist import run_checklist
    from bastion.ops.config import load_config

    results = run_checklist(load_config(config), send_test_alert=send_test_alert)
    ok = all(r.ok for r in results)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "ok": ok,
                    "checks": [{"name": r.name, "status": r.status, "detail": r.detail} for r in results],
                }
            )
            + "\n"
        )
    else:
        t = RichTable("check", "status", "detail", title="pre-trading checklist")
        colour = {"pass": "green", "fail": "red", "n/a": "yellow"}
        for r in results:
            t.add_row(r.name, f"[{colour[r.status]}]{r.status}[/]", r.detail)
        Console().print(t)
        Console().print("[green]ready to trade[/]" if ok else "[red]not ready to trade[/]")
    raise typer.Exit(0 if ok else 1)


chaos_app = typer.Typer(no_args_is_help=True, help="Fault injection: prove a crash cannot lose money.")
app.add_typer(chaos_app, name="chaos")


@chaos_app.command("faults")
def chaos_faults(
    seconds: Annotated[float, typer.Option(help="How long to trade through the faulty venue.")] = 20.0,
    rate: Annotated[float, typer.Option(help="Share of private requests that fail (all kinds).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seeds the venue's faults.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    state_dir: Annotated[Path | None, typer.Option(help="State directory (default: a temp dir).")] = None,
) -> None:
    """Trade through timeouts, 5xx, 429s, dropped connections, lost answers, stalled books and partial fills.

    Passes when nothing is duplicated, lost or leaked, every order is settled after recovery and
    agrees with the venue on how much of it traded, no order was priced off a stalled book, and
    the breaker tripped and stopped new orders while the venue was down.
    """
    import tempfile

    from bastion.ops import chaos

    chaos.quiet_logs()
    state = state_dir or Path(tempfile.mkdtemp(prefix="bastion-faults-"))
    result = chaos.run_faults(seconds, seed, state, fault_rate=rate)
    bad = (
        chaos.failed(result)
        or result["unsettled_orders"]
        or result["orders_sent_into_stale_book"]
        or not result["breaker_stopped_new_orders"]
    )
    if as_json:
        print(json.dumps(result))
    else:
        t = RichTable(show_header=False, title="chaos faults")
        for k, v in result.items():
            t.add_row(k, str(v))
        Console().print(t)
    raise typer.Exit(1 if bad else 0)


@chaos_app.command("kill")
def chaos_kill(
    iterations: Annotated[int, typer.Option(help="How many times the engine is SIGKILLed.")] = 100,
    seed: Annotated[int, typer.Option(help="Seeds kill points, kill moments and venue faults.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    state_dir: Annotated[
        Path | None, typer.Option(help="Where the exchange and engine keep state (default: a temp dir).")
    ] = None,
    fault_rate: Annotated[float, typer.Option(help="Lost answers per AddOrder/CancelOrder.")] = 0.03,
) -> None:
    """SIGKILL the engine at every gateway step and at random moments; audit against the venue.

    Exits non-zero when any duplicate order, lost fill, leaked reservation or ledger mismatch is
    found: the run is the evidence for the first promise in docs/safety.md.
    """
    import tempfile

    from bastion.ops import chaos  # ccxt is slow to import: only when this command runs

    chaos.quiet_logs()
    state = state_dir or Path(tempfile.mkdtemp(prefix="bastion-chaos-"))
    result = chaos.run_kill(
        iterations, seed, state, fault_rate=fault_rate,
        log=None if as_json else (lambda m: err.print(m)),
    )  # fmt: skip
    if as_json:
        print(json.dumps(result))
    else:
        for k in ("iterations", *chaos.COUNTERS, "orders", "fills", "kills_by_point", "seconds"):
            Console().print(f"{k}: {result[k]}")
        Console().print(f"state: {state}")
    raise typer.Exit(1 if chaos.failed(result) else 0)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def exchange(ctx: typer.Context) -> None:
    """The local Kraken-protocol exchange over real market data (127.0.0.1 only).

    ``bastion exchange --host 127.0.0.1 --port P --api-key KEY --api-secret SECRET_B64
    --state-dir DIR [--data PATH] [--speed X] [--market-data replay|live|auto --market-url URL
    --probe-s S]``; ``bastion exchange --help`` lists every flag.
    """
    from bastion.ops.chaos import exchange_main

    exchange_main(list(ctx.args))


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="YAML config (mode, risk, kill switch).")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="Strategy module in bastion/strategies (default: fixed_spread_mm).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Strategy parameter key=value (repeatable).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: until Ctrl-C).")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Engine and exchange state (default: <risk.state_dir>/paper).")
    ] = None,
    exchange_speed: Annotated[
        float, typer.Option(help="Replay speed of the local exchange (data seconds per second).")
    ] = 1.0,
    market_data: Annotated[
        str | None,
        typer.Option(
            help="Paper market: auto (live where reachable, else the replay), live or replay. "
            "Default: paper.market_data (auto)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the end-of-run summary as one JSON object on stdout.")
    ] = False,
    confirm_live: Annotated[
        str | None, typer.Option("--confirm-live", help="Type LIVE to trade real money (with mode: live).")
    ] = None,
) -> None:
    """Paper trading by default; live trading with ``mode: live`` and ``--confirm-live LIVE``.

    Paper: the local Kraken-protocol exchange on 127.0.0.1 (no keys) fills orders against Kraken's
    live XBTUSDT book where reachable, else the recorded BTCUSDT market replayed as XBTUSDT
    (``--market-data``; ``BASTION_OFFLINE=1`` never connects). Live: the operator's Kraken
    account, keys from the environment or the secrets file (docs/operations.md). Either way
    every order goes through the gateway, the durable journal, the breaker, the policy and the
    kill switch, and the PnL parity watchdog checks the ledger against the recorded fills.
    Ctrl-C (or SIGTERM) stops cleanly: open orders are cancelled and confirmed first.
    """
    from bastion.ops.config import load_config
    from bastion.ops.live import check_live
    from bastion.ops.secrets import load_secrets

    cfg = load_config(config)
    paper = cfg.paper
    if market_data is not None:
        if market_data not in ("auto", "replay", "live"):
            raise typer.BadParameter("expected auto, replay or live", param_hint="--market-data")
        paper = paper.model_copy(update={"market_data": market_data})
    secrets = load_secrets()
    if cfg.mode == "live" or confirm_live is not None:
        check_live(cfg, confirm_live, secrets)  # before anything starts or connects
    from bastion.ops import chaos
    from bastion.ops.alerts import Alerter
    from bastion.ops.runtime import paper_strategy, run_live, run_paper, status_line, status_table

    chaos.quiet_logs()
    name = strategy or "fixed_spread_mm"
    params = {**(cfg.backtest.params if name == cfg.backtest.strategy else {}), **_parse_params(param or [])}
    st = paper_strategy(name, params)
    live_mode = cfg.mode == "live"
    state = state_dir or cfg.risk.resolved_state_dir() / ("live" if live_mode else "paper")
    alerter = Alerter(secrets.alert_urls, state / "alerts.jsonl", cfg.alerts)

    def go(on_status: Any) -> dict[str, Any]:
        if live_mode:
            return run_live(
                state, st, cfg, secrets, confirm_live, seconds=seconds, on_status=on_status, alerter=alerter
            )
        return run_paper(
            state, st, cfg.risk, seconds=seconds, speed=exchange_speed, on_status=on_status, alerter=alerter,
            market_data=paper.market_data, market_url=paper.market_url, probe_s=paper.probe_s,
        )  # fmt: skip

    try:
        if err.is_terminal:
            from rich.live import Live

            with Live(console=err, refresh_per_second=4, transient=False) as live:
                out = go(lambda s: live.update(status_table(s)))
        else:
            out = go(lambda s: print(status_line(s), file=sys.stderr, flush=True))
    finally:
        alerter.close()
    if as_json:
        sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    else:
        t = RichTable(show_header=False, title=f"{out['mode']} run: {out['strategy']} on {out['instrument']}")
        for k, v in out.items():
            t.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
        Console().print(t)
    rec = out.get("reconciliation") or {}
    parity = out.get("parity") or {"ok": True}
    raise typer.Exit(0 if rec.get("ok") and parity.get("ok") and not out["open_orders"] else 1)


@app.command()
def info() -> None:
    """Show where Bastion looks for data and writes runs."""
    Console().print(f"shared data: {shared_data_dir()}\nruns: {runs_dir().resolve()}")


def main() -> None:
    from bastion.ops.logs import configure

    configure()
    try:
        app()
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

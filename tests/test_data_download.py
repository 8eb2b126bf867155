"""``bastion data download``: ccxt against a local server that replays recorded public responses.

The server (aiohttp on 127.0.0.1, in a thread) serves the recorded bodies only, cut into pages:
Kraken ``OHLC``/``Trades`` (the ccxt fixture's bodies and the nautilus samples in shared/data,
windows of the recorded rows filtered by ``since`` the way Kraken filters them) and Hyperliquid
``POST /info`` ``candleSnapshot``/``fundingHistory`` (the SDK's cassettes of mainnet traffic,
windows by ``startTime``/``endTime``). Rows are re-sent with their original text, so a value in the
catalog can be compared with the recorded text exactly. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
import yaml
from aiohttp import web
from ccxt_fixture_kit import fixtures_dir
from typer.testing import CliRunner

from bastion.data.catalog import Catalog
from bastion.data.kraken import load_kraken_ohlc, load_kraken_trades
from bastion.data.schema import AGGRESSOR_BUY, AGGRESSOR_SELL, FUNDING_RATE_PRECISION, DataType, Table
from bastion.ops.cli import app
from bastion.research import download as dl
from bastion.research.run import BacktestSpec, run_backtest
from bastion.venues.rate_limit import RateLimiter, limiter_for, reset_limiters

FIX = fixtures_dir()
CASSETTES = FIX / "hyperliquid" / "cassettes" / "info_test"
NS = 1_000_000_000


# --- recorded bodies -------------------------------------------------------------------------


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"recorded fixture missing: {path} (see shared/fixtures/README.md)")
    return path


def _json(path: Path) -> Any:
    return json.loads(_need(path).read_text(encoding="utf-8"), parse_float=Decimal)


def _enc(v: Any) -> str:
    """JSON text of a recorded value, numbers with the digits they were recorded with."""
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, list):
        return "[" + ",".join(_enc(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_enc(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def _kraken_body(pair: str, rows: list[Any], last: Any) -> str:
    return '{"error":[],"result":{' + f'"{pair}":{_enc(rows)},"last":{_enc(last)}' + "}}"


def _cassette(name: str, req_type: str) -> tuple[list[Any], list[Any]]:
    """(meta universe, recorded rows of the ``req_type`` interaction) of one SDK cassette."""
    doc = yaml.safe_load(_need(CASSETTES / name).read_text(encoding="utf-8"))
    meta: list[Any] = []
    rows: list[Any] = []
    for it in doc["interactions"]:
        body = json.loads(it["request"]["body"])
        resp = json.loads(it["response"]["body"]["string"], parse_float=Decimal)
        if body["type"] == "meta":
            meta = resp["universe"]
        elif body["type"] == req_type:
            rows = resp
    assert meta and rows
    return meta, rows


class ReplayServer:
    """Recorded bodies served in pages on 127.0.0.1; can drop connections to simulate an outage."""

    def __init__(self, page: int = 100) -> None:
        self.page = page
        self.kraken_ohlc: dict[str, tuple[list[Any], int]] = {}  # pair -> (rows, recorded last)
        self.kraken_trades: dict[str, tuple[list[Any], str]] = {}
        self.hl_candles: dict[str, list[Any]] = {}
        self.hl_funding: dict[str, list[Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.drop: Callable[[int], bool] = lambda n: False  # n = 1-based request number
        self.loop = asyncio.new_event_loop()
        web_app = web.Application()
        web_app.router.add_get("/0/public/OHLC", self._ohlc)
        web_app.router.add_get("/0/public/Trades", self._trades)
        web_app.router.add_get("/0/public/AssetPairs", self._asset_pairs)
        web_app.router.add_get("/0/public/Assets", self._assets)
        web_app.router.add_post("/info", self._info)
        self.runner = web.AppRunner(web_app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _log(self, request: web.Request, what: dict[str, Any]) -> web.Response | None:
        self.requests.append({"path": request.path, **what})
        if self.drop(len(self.requests)):
            assert request.transport is not None
            request.transport.close()  # the client sees the connection die mid-request
            return web.Response(text="")
        return None

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r["path"] == path)

    # Kraken: OHLC rows with time > since; Trades with time >= since (seconds) or > since (the
    # ns cursor); a page ends after a whole timestamp, and ``last`` is where the next page starts.
    async def _ohlc(self, request: web.Request) -> web.Response:
        q = request.query
        dropped = self._log(request, dict(q))
        if dropped:
            return dropped
        rows, last = self.kraken_ohlc[q["pair"]]
        since = int(q.get("since", 0))
        window = [r for r in rows if r[0] > since][: self.page]
        at_end = bool(window) and window[-1] is rows[-1]
        page_last = last if at_end or not window else window[-1][0]
        return web.Response(text=_kraken_body(q["pair"], window, page_last), content_type="application/json")

    async def _trades(self, request: web.Request) -> web.Response:
        q = request.query
        dropped = self._log(request, dict(q))
        if dropped:
            return dropped
        rows, last = self.kraken_trades[q["pair"]]
        since = int(q.get("since", 0))
        times = [int(Decimal(r[2]).scaleb(9)) for r in rows]
        if since < 10**12:  # seconds
            idx = [i for i, t in enumerate(times) if t >= since * NS]
        else:  # Kraken's ns cursor
            idx = [i for i, t in enumerate(times) if t > since]
        idx = idx[: self.page]
        while idx and idx[-1] + 1 < len(rows) and times[idx[-1] + 1] == times[idx[-1]]:
            idx.append(idx[-1] + 1)
        window = [rows[i] for i in idx]
        page_last = last if (not idx or idx[-1] == len(rows) - 1) else str(times[idx[-1]])
        return web.Response(text=_kraken_body(q["pair"], window, page_last), content_type="application/json")

    async def _asset_pairs(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path})
        body = _need(FIX / "ccxt" / "extracts" / "kraken_AssetPairs.json").read_text(encoding="utf-8")
        return web.Response(text=body, content_type="application/json")

    async def _assets(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path})
        # no recorded Assets body: an empty asset list (ccxt then names the markets from AssetPairs)
        return web.json_response({"error": [], "result": {}})

    async def _info(self, request: web.Request) -> web.Response:
        body = await request.json()
        dropped = self._log(request, body)
        if dropped:
            return dropped
        if body["type"] == "candleSnapshot":
            req = body["req"]
            rows = [
                r
                for r in self.hl_candles[req["coin"]]
                if req["startTime"] <= int(r["t"]) <= req["endTime"] and r["i"] == req["interval"]
            ]
        elif body["type"] == "fundingHistory":
            end = body.get("endTime", 2**62)
            rows = [r for r in self.hl_funding[body["coin"]] if body["startTime"] <= r["time"] <= end]
        else:
            return web.json_response({"error": f"not recorded: {body['type']}"}, status=400)
        return web.Response(text=_enc(rows[: self.page]), content_type="application/json")


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    s = ReplayServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(autouse=True)
def fast_limiters() -> Iterator[dict[str, RateLimiter]]:
    """The shared per-venue limiters, created with a budget no test ever waits on."""
    reset_limiters()
    lims = {v: limiter_for(v, rate=1e9, burst=1_000_000) for v in ("kraken", "hyperliquid")}
    yield lims
    reset_limiters()


@pytest.fixture
def nautilus(shared_data: Path) -> Path:
    return shared_data / "ticks_l2" / "nautilus_samples"


def kraken(server: ReplayServer) -> Any:
    ex = ccxt.kraken({"enableRateLimit": False})
    ex.urls["api"] = {**ex.urls["api"], "public": server.url, "private": server.url}
    ex.set_markets(list(_json(FIX / "ccxt" / "markets" / "kraken.json").values()))
    return ex


def hyperliquid(server: ReplayServer, universe: list[Any]) -> Any:
    """Markets from the cassette's recorded ``meta`` universe, parsed by ccxt itself."""
    ex = ccxt.hyperliquid({"enableRateLimit": False})
    ex.urls["api"] = {**ex.urls["api"], "public": server.url, "private": server.url}
    markets = [ex.parse_market({**m, "baseId": i}) for i, m in enumerate(universe)]
    ex.set_markets(markets)
    return ex


def serve_kraken_file(server: ReplayServer, path: Path) -> tuple[str, list[Any], Any]:
    doc = _json(path)
    (pair,) = [k for k in doc["result"] if k != "last"]
    rows, last = doc["result"][pair], doc["result"]["last"]
    if isinstance(rows[0][0], int):
        server.kraken_ohlc[pair] = (rows, last)
    else:
        server.kraken_trades[pair] = (rows, last)
    return pair, rows, last


def dec(raw: Any, precision: int) -> Decimal:
    return Decimal(int(raw)).scaleb(-precision)


def table_dump(t: Table) -> dict[str, Any]:
    """A table's content as exact decimals (independent of the precision it is stored at)."""
    from bastion.data.catalog import PRICE_COLUMNS, SIZE_COLUMNS

    out: dict[str, Any] = {}
    for c, v in t.columns.items():
        if c in PRICE_COLUMNS[t.data_type]:
            out[c] = [dec(x, t.price_precision) for x in v]
        elif c in SIZE_COLUMNS[t.data_type]:
            out[c] = [dec(x, t.size_precision) for x in v]
        else:
            out[c] = [int(x) for x in v]
    return out


def catalog_dump(root: Path) -> dict[str, Any]:
    cat = Catalog(root)
    out: dict[str, Any] = {}
    for data_type, iid, rows in cat.list():
        t = cat.read(data_type, iid)
        assert len(t) == rows, "parts overlap: some rows were written twice"
        assert t.meta.get("duplicates_dropped", 0) == 0
        out[f"{data_type}/{iid}"] = (t.price_precision, t.size_precision, table_dump(t))
    return out


# --- exact values, pagination ----------------------------------------------------------------


def test_kraken_candles_equal_the_recorded_body_and_are_paginated(
    server: ReplayServer, tmp_path: Path
) -> None:
    body = _json(FIX / "ccxt" / "response" / "kraken.json")["methods"]["fetchOHLCV"][0]["httpResponse"]
    rows, last = body["result"]["XBTUSDT"], body["result"]["last"]
    server.kraken_ohlc["XBTUSDT"] = (rows, last)
    server.page = 2
    first = rows[0][0] * NS
    s = dl.download("kraken", ["BTC/USDT"], "candles", first, None, tmp_path, kraken(server), timeframe="1h")
    committed = [r for r in rows if r[0] <= int(last)]  # the row after ``last`` is the bar still forming
    assert len(committed) == len(rows) - 1
    (res,) = s.symbols
    assert res.instrument_id == "XBTUSDT.KRAKEN" and res.rows == len(committed)
    t = Catalog(tmp_path).read(DataType.BAR, "XBTUSDT.KRAKEN")
    d = table_dump(t)
    assert d["ts_event"] == [r[0] * NS for r in committed]
    assert d["ts_local"] == [(r[0] + 3600) * NS for r in committed]
    for i, col in ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (6, "volume")):
        assert d[col] == [Decimal(r[i]) for r in committed], col
    assert t.price_precision == 1 and t.size_precision == 8  # the market's tick and lot
    assert server.count("/0/public/OHLC") >= 3
    sinces = [int(r["since"]) for r in server.requests if r["path"] == "/0/public/OHLC"]
    assert sinces == sorted(sinces) and len(set(sinces)) == len(sinces)


def test_kraken_candles_match_the_file_loader(server: ReplayServer, nautilus: Path, tmp_path: Path) -> None:
    """721 recorded 1m bars in pages of 100: the download equals importing the same body."""
    path = nautilus / "kraken_spot_xbtusdt_ohlc1m_20251110.json"
    _, rows, _ = serve_kraken_file(server, path)
    since = rows[0][0] * NS
    s = dl.download("kraken", ["XBTUSDT"], "candles", since, None, tmp_path, kraken(server), chunk_rows=250)
    assert s.symbols[0].rows == 720 and len(s.symbols[0].parts) == 3
    assert server.count("/0/public/OHLC") >= 8
    got = Catalog(tmp_path).read(DataType.BAR, "XBTUSDT.KRAKEN")
    want = load_kraken_ohlc(path, instrument_id="XBTUSDT.KRAKEN")
    assert table_dump(got) == table_dump(want)


def test_kraken_trades_equal_the_recorded_body(server: ReplayServer, tmp_path: Path) -> None:
    body = _json(FIX / "ccxt" / "response" / "kraken.json")["methods"]["fetchTrades"][0]["httpResponse"]
    rows = body["result"]["XBTUSDT"]
    server.kraken_trades["XBTUSDT"] = (rows, body["result"]["last"])
    since = int(Decimal(rows[0][2])) * NS
    dl.download("kraken", ["BTC/USDT"], "trades", since, since + 60 * NS, tmp_path, kraken(server))
    t = Catalog(tmp_path).read(DataType.TRADE, "XBTUSDT.KRAKEN")
    (r,) = rows  # ['73324.40000', '0.01030900', 1710327959.1733468, 'b', 'm', '', 6324366]
    assert len(t) == 1
    assert dec(t.columns["price"][0], t.price_precision) == Decimal(r[0])
    assert dec(t.columns["size"][0], t.size_precision) == Decimal(r[1])
    assert int(t.columns["ts_event"][0]) == 1710327959173346800  # every digit of the recorded time
    assert int(t.columns["trade_id"][0]) == r[6] and t.columns["aggressor"][0] == AGGRESSOR_BUY


def test_kraken_trades_match_the_file_loader(server: ReplayServer, nautilus: Path, tmp_path: Path) -> None:
    """1,000 recorded trades through Kraken's cursor, 100 a page: equal to importing the body."""
    path = nautilus / "kraken_spot_xbtusdt_trades_20251110.json"
    _, rows, _ = serve_kraken_file(server, path)
    since = int(Decimal(rows[0][2])) * NS
    s = dl.download("kraken", ["BTC/USDT"], "trades", since, None, tmp_path, kraken(server), chunk_rows=300)
    assert s.symbols[0].rows == 1000
    assert server.count("/0/public/Trades") >= 10
    cursors = [r["since"] for r in server.requests][1:]
    assert all(int(c) > 10**18 for c in cursors)  # after the first page: Kraken's ns cursor
    got = Catalog(tmp_path).read(DataType.TRADE, "XBTUSDT.KRAKEN")
    want = load_kraken_trades(path, instrument_id="XBTUSDT.KRAKEN")
    g, w = table_dump(got), table_dump(want)
    for col in ("ts_event", "ts_local", "price", "size", "aggressor", "trade_id"):
        assert g[col] == w[col], col
    assert set(g["aggressor"]) == {AGGRESSOR_BUY, AGGRESSOR_SELL}


def test_hyperliquid_candles_equal_the_cassette(server: ReplayServer, tmp_path: Path) -> None:
    universe, rows = _cassette("test_get_candles_snapshot.yaml", "candleSnapshot")
    server.hl_candles["kPEPE"] = rows
    server.page = 10
    ex = hyperliquid(server, universe)
    since, until = rows[0]["t"] * 1_000_000, (rows[-1]["t"] + 3_600_000) * 1_000_000
    s = dl.download("hyperliquid", ["KPEPE/USDC:USDC"], "candles", since, until, tmp_path, ex, timeframe="1h")
    assert s.symbols[0].instrument_id == "kPEPE-PERP.HYPERLIQUID"
    assert s.symbols[0].rows == len(rows) == 24
    snaps = [r for r in server.requests if r.get("type") == "candleSnapshot"]
    assert len(snaps) >= 3 and all(r["req"]["coin"] == "kPEPE" for r in snaps)
    t = Catalog(tmp_path).read(DataType.BAR, "kPEPE-PERP.HYPERLIQUID")
    d = table_dump(t)
    assert d["ts_event"] == [r["t"] * 1_000_000 for r in rows]
    for k, col in (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close"), ("v", "volume")):
        assert d[col] == [Decimal(r[k]) for r in rows], col
    assert t.price_precision == 6  # '0.001604': finer than ccxt's 1e-05 tick from the meta record


def test_hyperliquid_funding_equals_the_cassette(server: ReplayServer, tmp_path: Path) -> None:
    universe, rows = _cassette("test_get_funding_history[None].yaml", "fundingHistory")
    server.hl_funding["BTC"] = rows
    server.page = 500  # Hyperliquid's own page size for fundingHistory
    ex = hyperliquid(server, universe)
    since, until = rows[0]["time"] * 1_000_000, (rows[-1]["time"] + 1) * 1_000_000
    s = dl.download("hyperliquid", ["BTC/USDC:USDC"], "funding", since, until, tmp_path, ex)
    assert s.symbols[0].rows == len(rows) == 1038
    calls = [r for r in server.requests if r.get("type") == "fundingHistory"]
    assert len(calls) >= 3 and all(c["coin"] == "BTC" and "endTime" in c for c in calls)
    t = Catalog(tmp_path).read(DataType.FUNDING, "BTC-PERP.HYPERLIQUID")
    assert t.price_precision == FUNDING_RATE_PRECISION
    assert [int(x) for x in t.columns["ts_event"]] == [r["time"] * 1_000_000 for r in rows]
    assert [dec(x, FUNDING_RATE_PRECISION) for x in t.columns["rate"]] == [
        Decimal(r["fundingRate"]) for r in rows
    ]


def test_rerun_after_completion_writes_nothing(
    server: ReplayServer, tmp_path: Path, fast_limiters: dict[str, RateLimiter]
) -> None:
    universe, rows = _cassette("test_get_funding_history[1684811870000].yaml", "fundingHistory")
    server.hl_funding["BTC"] = rows
    server.page = 10
    since, until = rows[0]["time"] * 1_000_000, (rows[-1]["time"] + 1) * 1_000_000
    first = dl.download(
        "hyperliquid", ["BTC/USDC:USDC"], "funding", since, until, tmp_path, hyperliquid(server, universe)
    )
    assert first.rows == len(rows) == 34
    assert fast_limiters["hyperliquid"].requests == first.pages == len(server.requests)  # one token each
    before = catalog_dump(tmp_path)
    again = dl.download(
        "hyperliquid", ["BTC/USDC:USDC"], "funding", since, until, tmp_path, hyperliquid(server, universe)
    )
    assert again.rows == 0 and again.symbols[0].resumed_from_ns == rows[-1]["time"] * 1_000_000
    assert catalog_dump(tmp_path) == before
    cp = json.loads(
        (tmp_path / "_downloads" / "hyperliquid" / "funding" / "BTC-PERP.HYPERLIQUID.json").read_text()
    )
    assert cp["last_ts"] == rows[-1]["time"] * 1_000_000 and cp["rows"] == 34


# --- interruption and resume -----------------------------------------------------------------


def _kraken_trades_job(server: ReplayServer, nautilus: Path) -> Callable[[Path, int], dl.DownloadSummary]:
    path = nautilus / "kraken_spot_xbtusdt_trades_20251110.json"
    _, rows, _ = serve_kraken_file(server, path)
    since = int(Decimal(rows[0][2])) * NS

    def run(root: Path, retries: int = 0) -> dl.DownloadSummary:
        return dl.download(
            "kraken", ["BTC/USDT"], "trades", since, None, root, kraken(server),
            chunk_rows=130, retries=retries, sleep=lambda s: None,
        )  # fmt: skip

    return run


def _hl_funding_job(server: ReplayServer) -> Callable[[Path, int], dl.DownloadSummary]:
    universe, rows = _cassette("test_get_funding_history[None].yaml", "fundingHistory")
    server.hl_funding["BTC"] = rows
    server.page = 150
    since, until = rows[0]["time"] * 1_000_000, (rows[-1]["time"] + 1) * 1_000_000

    def run(root: Path, retries: int = 0) -> dl.DownloadSummary:
        return dl.download(
            "hyperliquid", ["BTC/USDC:USDC"], "funding", since, until, root, hyperliquid(server, universe),
            chunk_rows=200, retries=retries, sleep=lambda s: None,
        )  # fmt: skip

    return run


def _kraken_candles_job(server: ReplayServer, nautilus: Path) -> Callable[[Path, int], dl.DownloadSummary]:
    _, rows, _ = serve_kraken_file(server, nautilus / "kraken_spot_xbtusdt_ohlc1m_20251110.json")
    server.page = 60

    def run(root: Path, retries: int = 0) -> dl.DownloadSummary:
        return dl.download(
            "kraken", ["BTC/USDT"], "candles", rows[0][0] * NS, None, root, kraken(server),
            chunk_rows=90, retries=retries, sleep=lambda s: None,
        )  # fmt: skip

    return run


@pytest.mark.parametrize("job", ["kraken-trades", "kraken-candles", "hyperliquid-funding"])
def test_dropped_connection_then_rerun_equals_one_run(
    server: ReplayServer, nautilus: Path, tmp_path: Path, job: str
) -> None:
    run = {
        "kraken-trades": lambda: _kraken_trades_job(server, nautilus),
        "kraken-candles": lambda: _kraken_candles_job(server, nautilus),
        "hyperliquid-funding": lambda: _hl_funding_job(server),
    }[job]()
    whole = tmp_path / "whole"
    run(whole)
    reference = catalog_dump(whole)
    assert reference and all(len(v[2]["ts_event"]) > 300 for v in reference.values())

    cut = tmp_path / "cut"
    server.requests.clear()
    server.drop = lambda n: n >= 5  # the venue goes away after four pages
    with pytest.raises(ccxt.NetworkError):
        run(cut)
    partial = catalog_dump(cut)
    (key,) = reference
    n_partial = len(partial[key][2]["ts_event"])
    assert 0 < n_partial < len(reference[key][2]["ts_event"])  # written as it went, not all

    server.drop = lambda n: False
    resumed = run(cut)
    assert resumed.symbols[0].resumed_from_ns is not None
    assert resumed.rows == len(reference[key][2]["ts_event"]) - n_partial
    assert catalog_dump(cut) == reference  # no duplicates, no gaps, same seq


def test_crash_between_part_and_checkpoint_is_repaired(
    server: ReplayServer, nautilus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after a part is in place but before the checkpoint moved: the parts win."""
    run = _kraken_trades_job(server, nautilus)
    run(tmp_path / "whole")
    reference = catalog_dump(tmp_path / "whole")
    saves = {"n": 0}
    real_save = dl._save_state

    def crashing_save(root: Path, job: Any, state: Any) -> None:
        saves["n"] += 1
        if saves["n"] == 3:
            raise KeyboardInterrupt("killed")
        real_save(root, job, state)

    monkeypatch.setattr(dl, "_save_state", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(dl, "_save_state", real_save)
    cp = json.loads(next((tmp_path / "cut" / "_downloads").rglob("*.json")).read_text())
    assert cp["rows"] == 2 * 130  # the checkpoint lags the third part
    resumed = run(tmp_path / "cut")
    assert any("checkpoint behind" in n for n in resumed.symbols[0].notes)
    assert catalog_dump(tmp_path / "cut") == reference


def test_a_dropped_request_is_retried(server: ReplayServer, nautilus: Path, tmp_path: Path) -> None:
    run = _hl_funding_job(server)
    server.drop = lambda n: n == 2
    s = run(tmp_path, 2)
    assert s.rows == 1038 and s.pages == len(server.requests)


# --- the backtester reads it -----------------------------------------------------------------


def test_backtest_reads_downloaded_candles(server: ReplayServer, nautilus: Path, tmp_path: Path) -> None:
    run = _kraken_candles_job(server, nautilus)
    run(tmp_path)
    assert len(Catalog(tmp_path).parts(DataType.BAR, "XBTUSDT.KRAKEN")) > 1
    spec = BacktestSpec(strategy="ema_cross", data=[tmp_path], params={"fast": 5, "slow": 20, "size": "0.01"})
    result = run_backtest(spec)
    assert result.instrument_id == "XBTUSDT.KRAKEN"
    assert result.events == 720
    assert result.start_ns == 1762777020 * NS
    assert result.orders > 0


# --- the command line and the refusals -------------------------------------------------------


def test_cli_downloads_end_to_end(server: ReplayServer, nautilus: Path, tmp_path: Path) -> None:
    serve_kraken_file(server, nautilus / "kraken_spot_xbtusdt_trades_20251110.json")
    cat = tmp_path / "cat"
    args = [
        "data", "download", "--venue", "kraken", "--symbols", "BTC/USDT", "--kind", "trades",
        "--since", "2025-11-10T17:00:00Z", "--until", "2025-11-11T01:00", "--catalog", str(cat),
        "--chunk-rows", "400", "--api-url", server.url,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1,000 new trades rows" in result.output
    assert server.count("/0/public/AssetPairs") == 1  # markets from the (served) AssetPairs body
    assert [(dt, iid, n) for dt, iid, n in Catalog(cat).list()] == [(DataType.TRADE, "XBTUSDT.KRAKEN", 1000)]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 new trades rows" in again.output
    assert Catalog(cat).list()[0][2] == 1000


def test_cli_refuses_clearly(server: ReplayServer, tmp_path: Path) -> None:
    base = ["data", "download", "--since", "2024-01-01", "--catalog", str(tmp_path), "--api-url", server.url]
    r = CliRunner().invoke(app, [*base, "--venue", "nosuchvenue", "--symbols", "BTC/USDT"])
    assert r.exit_code == 2 and "unknown venue 'nosuchvenue'" in r.output and "kraken" in r.output
    r = CliRunner().invoke(app, [*base, "--venue", "kraken", "--symbols", "BTC/USDT", "--kind", "funding"])
    assert r.exit_code == 2 and "fetchFundingRateHistory" in r.output
    r = CliRunner().invoke(app, [*base, "--venue", "kraken", "--symbols", "BTC/USDT,NOPE/USD"])
    assert r.exit_code == 2 and "no market 'NOPE/USD'" in r.output
    r = CliRunner().invoke(app, [*base, "--venue", "kraken", "--symbols", "BTC/USDT", "--since", "yesterday"])
    assert r.exit_code != 0 and "ISO" in r.output
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # nothing was written


def test_refusals(server: ReplayServer, tmp_path: Path) -> None:
    ex = kraken(server)
    with pytest.raises(dl.DownloadError, match=r"unknown venue 'mtgox'; known: .*kraken"):
        dl.download("mtgox", ["BTC/USDT"], "candles", 0, NS, tmp_path, ex)
    with pytest.raises(dl.DownloadError, match="unknown kind 'quotes'; one of: candles, trades, funding"):
        dl.download("kraken", ["BTC/USDT"], "quotes", 0, NS, tmp_path, ex)
    with pytest.raises(dl.DownloadError, match=r"kraken cannot download funding: .*fetchFundingRateHistory"):
        dl.download("kraken", ["BTC/USDT"], "funding", 0, NS, tmp_path, ex)
    with pytest.raises(dl.DownloadError, match="polymarket is not reached through ccxt"):
        dl.download("polymarket", ["X"], "trades", 0, NS, tmp_path)
    universe, _ = _cassette("test_get_candles_snapshot.yaml", "candleSnapshot")
    hl = hyperliquid(server, universe)
    with pytest.raises(
        dl.DownloadError, match=r"hyperliquid cannot download trades: .*no public trade history"
    ):
        dl.download("hyperliquid", ["BTC/USDC:USDC"], "trades", 0, NS, tmp_path, hl)
    with pytest.raises(dl.DownloadError, match="has no 7m candles"):
        dl.download("kraken", ["BTC/USDT"], "candles", 0, NS, tmp_path, ex, timeframe="7m")
    assert server.requests == [] and not any(tmp_path.iterdir())


def test_instrument_ids_follow_the_file_loaders() -> None:
    assert (
        dl.instrument_id_for("kraken", {"id": "XBTUSDT", "base": "BTC", "quote": "USDT"}) == "XBTUSDT.KRAKEN"
    )
    hl = {"id": "0", "baseName": "BTC", "base": "BTC", "quote": "USDC", "swap": True}
    assert dl.instrument_id_for("hyperliquid", hl) == "BTC-PERP.HYPERLIQUID"
    spot = {"id": "@142", "base": "UBTC", "quote": "USDC", "swap": False}
    assert dl.instrument_id_for("hyperliquid", spot) == "UBTCUSDC.HYPERLIQUID"
    assert dl.instrument_id_for("binance", {"id": "BTCUSDT", "swap": True}) == "BTCUSDT-PERP.BINANCE"


def test_floats_without_text_convert_through_their_shortest_repr() -> None:
    ex = dl._Exact()
    assert ex.of(43437.5) == Decimal("43437.5")
    assert ex.of(0.1) == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    assert ex.of(18.7543011, ["43437.5", "18.75430110"]) == Decimal("18.75430110")  # the venue's text
    assert ex.inexact == 0
    assert ex.of(0.1 + 0.2) == Decimal("0.3")  # 17 digits: cannot be the venue's text, rounded
    assert ex.inexact == 1


def test_without_the_response_text_values_come_from_ccxt_floats(
    server: ReplayServer, nautilus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path every other venue takes: ccxt's floats (through repr, or the text in ``info``)."""
    monkeypatch.setattr(dl, "_body", lambda ex: None)
    ohlc = nautilus / "kraken_spot_xbtusdt_ohlc1m_20251110.json"
    trades = nautilus / "kraken_spot_xbtusdt_trades_20251110.json"
    _, bars, _ = serve_kraken_file(server, ohlc)
    _, rows, _ = serve_kraken_file(server, trades)
    until = (bars[-1][0]) * NS  # the recorded bar still forming is not committed: stop before it
    s = dl.download("kraken", ["BTC/USDT"], "candles", bars[0][0] * NS, until, tmp_path, kraken(server))
    assert s.symbols[0].inexact_values == 0
    got = table_dump(Catalog(tmp_path).read(DataType.BAR, "XBTUSDT.KRAKEN"))
    assert got == table_dump(load_kraken_ohlc(ohlc, instrument_id="XBTUSDT.KRAKEN"))
    # without Kraken's cursor, pages go by ``since`` in whole seconds: Kraken's own page size
    # (1,000) is needed to get past the second with more than 100 trades in this recording
    server.page = 1000
    since = int(Decimal(rows[0][2])) * NS
    s = dl.download("kraken", ["BTC/USDT"], "trades", since, None, tmp_path, kraken(server))
    assert s.symbols[0].rows == 1000 and s.symbols[0].inexact_values == 0
    g = table_dump(Catalog(tmp_path).read(DataType.TRADE, "XBTUSDT.KRAKEN"))
    w = table_dump(load_kraken_trades(trades, instrument_id="XBTUSDT.KRAKEN"))
    for col in ("price", "size", "aggressor", "trade_id"):
        assert g[col] == w[col], col
    assert g["ts_event"] == [t // 1_000_000 * 1_000_000 for t in w["ts_event"]]  # ccxt keeps ms


def test_a_late_first_candle_is_explained(server: ReplayServer, tmp_path: Path) -> None:
    body = _json(FIX / "ccxt" / "response" / "kraken.json")["methods"]["fetchOHLCV"][0]["httpResponse"]
    rows = body["result"]["XBTUSDT"]
    server.kraken_ohlc["XBTUSDT"] = (rows, body["result"]["last"])
    since = (rows[0][0] - 30 * 86400) * NS
    s = dl.download(
        "kraken", ["BTC/USDT", "XBTUSDT"], "candles", since, None, tmp_path, kraken(server), timeframe="1h"
    )
    (res,) = s.symbols  # the same market named twice is downloaded once
    assert res.rows == len(rows) - 1 and "no candles before 2024-01-30T15:00:00+00:00" in res.notes[0]

"""Helpers for the ccxt parser tier (tests/test_ccxt_fixtures.py).

Runs one case of a ccxt static REST fixture (``shared/fixtures/ccxt/response/*.json``)
through the pinned ccxt with ``ex.fetch`` replaced, so nothing leaves the process.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXCHANGES = ("kraken", "coinbase", "hyperliquid", "polymarket")

# Dummy credentials (the same kind ccxt's own static tests use). The secret is valid
# base64 because Kraken decodes it; the private key is a throwaway test key.
DUMMY_CREDENTIALS: dict[str, Any] = {
    "apiKey": "key",
    "secret": "c2VjcmV0c2VjcmV0",
    "password": "password",
    "uid": "uid",
    "walletAddress": "0x15f43D1f2DeE81424aFd891943262aa90F22cc2A",
    "privateKey": "0xff3bdd43534543d421f05aec535965b5050ad6ac15345435345435453495e771",
    "enableRateLimit": False,
    # coinbase resolves account ids per currency from here instead of a request
    "accounts": [{"id": "myAccount", "code": "USDT"}, {"id": "myAccount", "code": "USDC"}],
}


def fixtures_dir() -> Path:
    shared_data = Path(os.environ.get("BASTION_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared_data.parent / "fixtures"


def response_file(exchange_id: str) -> Path:
    return fixtures_dir() / "ccxt" / "response" / f"{exchange_id}.json"


def markets_file(exchange_id: str) -> Path:
    return fixtures_dir() / "ccxt" / "markets" / f"{exchange_id}.json"


def missing_fixtures() -> list[Path]:
    return [p for p in map(response_file, EXCHANGES) if not p.is_file()]


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def iter_cases(exchange_id: str):
    """Yield (case_id, file_data, case) for every case of one response fixture, in file order."""
    data = load_json(response_file(exchange_id))
    for method, cases in data["methods"].items():
        for index, case in enumerate(cases):
            yield f"{exchange_id}-{method}-{index}", data, case


def _polymarket_markets() -> list[dict]:
    """Polymarket has no markets fixture: the cases need the one outcome they address.

    ccxt's own runner loads it from an events fixture (not copied here), so rebuild the
    single market with ccxt's own ``parse_event_to_markets`` from values that appear in
    the recorded responses (conditionId, YES token id, market slug). Only the YES token is
    known; tick size 0.001 is what the recorded book uses.
    """
    import ccxt.prediction as ccxt_prediction

    slug = "will-jd-vance-win-the-2028-us-presidential-election"
    yes_token = "16040015440196279900485035793550429453516625694844857319147506590755961451627"
    event = {
        "slug": slug,
        "markets": [
            {
                "conditionId": "0x7ad403c3508f8e3912940fd1a913f227591145ca0614074208e0b962d5fcc422",
                "slug": slug,
                "active": True,
                "closed": False,
                "outcomes": '["Yes"]',
                "clobTokenIds": json.dumps([yes_token]),
                "orderPriceMinTickSize": "0.001",
            }
        ],
    }
    return ccxt_prediction.polymarket({}).parse_event_to_markets(event)


def make_exchange(exchange_id: str, file_data: dict):
    config = {**copy.deepcopy(DUMMY_CREDENTIALS), "options": copy.deepcopy(file_data.get("options") or {})}
    if exchange_id == "polymarket":
        # ccxt 4.5.90 keeps the CLOB class under ccxt.prediction (async)
        import ccxt.prediction as ccxt_prediction

        ex = ccxt_prediction.polymarket(config)
        ex.set_markets(_polymarket_markets())
    else:
        import ccxt.async_support as ccxt_async

        ex = getattr(ccxt_async, exchange_id)(config)
        ex.set_markets(load_json(markets_file(exchange_id)))
    ex.timeout_on_exit = 0  # close() otherwise sleeps 250 ms per instance
    return ex


def install_fake_fetch(ex, case: dict) -> list[tuple[str, str]]:
    """Replace ``ex.fetch`` by the recorded body; returns the (method, url) log."""
    calls: list[tuple[str, str]] = []
    by_url = case.get("httpResponseByUrl")

    async def fetch(url, method="GET", headers=None, body=None):
        calls.append((method, url))
        if by_url is not None:
            for fragment, response in by_url.items():
                if fragment in url:
                    return copy.deepcopy(response)
            raise AssertionError(f"no httpResponseByUrl entry matches {url}")
        return copy.deepcopy(case["httpResponse"])

    ex.fetch = fetch
    return calls


async def run_case(exchange_id: str, file_data: dict, case: dict) -> Any:
    ex = make_exchange(exchange_id, file_data)
    try:
        install_fake_fetch(ex, case)
        result = await getattr(ex, case["method"])(*case["input"])
        assert ex.session is None, "an HTTP session was opened: the fake fetch was bypassed"
        return result
    finally:
        await ex.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(computed: Any, stored: Any, skip_keys: set[str], path: str = "$") -> list[str]:
    """Differences between a unified result and ``parsedResponse``.

    ``info`` and ``skip_keys`` are ignored at every level (presence and value); numbers
    compare with ``math.isclose``; everything else must be equal, including key sets.
    """
    if isinstance(stored, dict):
        if not isinstance(computed, dict):
            return [f"{path}: computed {type(computed).__name__}, stored dict"]
        ignored = skip_keys | {"info"}
        got = {k for k in computed if k not in ignored}
        want = {k for k in stored if k not in ignored}
        diffs = [f"{path}.{k}: extra key (computed {computed[k]!r})" for k in sorted(got - want)]
        diffs += [f"{path}.{k}: missing key (stored {stored[k]!r})" for k in sorted(want - got)]
        for key in sorted(got & want):
            diffs += compare(computed[key], stored[key], skip_keys, f"{path}.{key}")
        return diffs
    if isinstance(stored, list):
        if not isinstance(computed, list):
            return [f"{path}: computed {type(computed).__name__}, stored list"]
        if len(computed) != len(stored):
            return [f"{path}: length {len(computed)} != stored {len(stored)}"]
        diffs = []
        for i, (c, s) in enumerate(zip(computed, stored, strict=True)):
            diffs += compare(c, s, skip_keys, f"{path}[{i}]")
        return diffs
    if _is_number(stored) and _is_number(computed):
        if math.isclose(computed, stored, rel_tol=1e-9, abs_tol=1e-12):
            return []
    elif type(computed) is type(stored) and computed == stored:
        return []
    return [f"{path}: computed {computed!r} != stored {stored!r}"]

"""``python -m bastion.venues.local_exchange``: the exchange without market data.

Loading a recording is the data layer's job, which this package may not import, so here every
pair starts with an empty book; ``bastion exchange --data PATH`` (ops) loads real data and calls
:func:`~bastion.venues.local_exchange.server.serve` with it. :func:`build_parser` holds the flags
both share.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.venues.local_exchange.exchange import DEFAULT_BALANCES
from bastion.venues.local_exchange.faults import FaultConfig
from bastion.venues.local_exchange.pairs import DEFAULT_PAIRS
from bastion.venues.local_exchange.server import serve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastion exchange", description="Local Kraken-compatible exchange")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1 or ::1)")
    p.add_argument("--port", type=int, default=8790)
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True, help="base64, like a Kraken secret")
    p.add_argument("--state-dir", required=True, type=Path, help="where the SQLite state lives")
    p.add_argument("--speed", type=float, default=1.0, help="data seconds per second; 0 = step manually")
    p.add_argument("--pairs", default=",".join(DEFAULT_PAIRS), help="Kraken pair ids to list")
    p.add_argument(
        "--balance",
        action="append",
        default=[],
        metavar="ASSET=AMOUNT",
        help="starting balance for a new state dir (repeatable; Kraken asset ids: XXBT, ZUSD, USDT)",
    )
    p.add_argument("--clordid-scope", choices=("all", "open"), default="all")
    p.add_argument("--faults", default="", help="FaultConfig as JSON, or a path to a JSON file")
    return p


def parse_common(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``serve`` that the shared flags determine (all but ``market``)."""
    balances = dict(DEFAULT_BALANCES)
    if args.balance:
        balances = {}
        for item in args.balance:
            asset, _, amount = item.partition("=")
            if not asset or not amount:
                raise SystemExit(f"--balance expects ASSET=AMOUNT, got {item!r}")
            balances[asset] = amount
    faults = None
    if args.faults:
        text = args.faults.strip()
        if not text.startswith("{"):  # a path to a JSON file, else inline JSON
            text = Path(args.faults).read_text()
        faults = FaultConfig.from_dict(json.loads(text))
    return {
        "host": args.host,
        "port": args.port,
        "api_key": args.api_key,
        "api_secret": args.api_secret,
        "state_dir": args.state_dir,
        "speed": args.speed,
        "pairs": tuple(p for p in args.pairs.split(",") if p),
        "initial_balances": balances,
        "clordid_scope": args.clordid_scope,
        "faults": faults,
    }


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    args = build_parser().parse_args(argv)
    serve(market=None, **parse_common(args))


if __name__ == "__main__":
    main()

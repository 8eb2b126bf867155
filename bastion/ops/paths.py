"""Where Bastion finds its data and writes its runs, with defaults that work on a fresh clone."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_BACKTEST_DATA = "ticks_l2/binance_ws_hftbacktest/usdm/btcusdt_20240808.gz"


def shared_data_dir() -> Path:
    """The real-data directory: ``$BASTION_SHARED_DATA``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("BASTION_SHARED_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), REPO_ROOT):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return REPO_ROOT.parent / "shared" / "data"


def resolve_data_path(path: str | None) -> Path:
    """A user path as given, or a path relative to the shared data directory."""
    if not path:
        return shared_data_dir() / DEFAULT_BACKTEST_DATA
    p = Path(path).expanduser()
    if p.exists():
        return p
    q = shared_data_dir() / path
    if q.exists():
        return q
    raise FileNotFoundError(
        f"data not found: {path} (looked in the current directory and in {shared_data_dir()}); "
        "set BASTION_SHARED_DATA or give a full path"
    )


def runs_dir() -> Path:
    return Path(os.environ.get("BASTION_RUNS_DIR", "runs"))

"""Shared test setup: where the real market data lives (never copied into the repo).

``BASTION_OFFLINE=1`` for the whole session, set at import so every subprocess inherits it: no
test may send traffic anywhere but 127.0.0.1 (paper's ``auto`` market is then the replay, and a
live market URL off this machine is refused).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BASTION_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BASTION_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real market data not found at {SHARED_DATA}: set BASTION_SHARED_DATA")
    return SHARED_DATA

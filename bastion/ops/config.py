"""``bastion.yaml``: one validated configuration, overridable from the environment.

Every option has a default that works on a fresh machine, so the file is optional. A bad value
stops start-up with the field, the value and what was expected, rather than failing later in
the middle of a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.ops.alerts import AlertsConfig
from bastion.risk.config import RiskConfig

ENV_PREFIX = "BASTION_"


class ConfigError(ValueError):
    pass


class BacktestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str = "avellaneda_stoikov"
    data: list[str] = Field(default_factory=list)
    instrument: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class LiveConfig(BaseModel):
    """``live``: which venue and market ``mode: live`` trades. Keys are not here (see secrets)."""

    model_config = ConfigDict(extra="forbid")

    venue: str = "kraken"
    symbol: str = "BTC/USDT"
    # the venue's REST base URL; only for pointing a live run at a local exchange in tests
    api_url: str | None = None


class PaperConfig(BaseModel):
    """``paper``: the market paper trading fills against (docs/operations.md, "Paper").

    ``auto`` takes Kraken's live book when it answers within ``probe_s`` and the recorded replay
    otherwise (saying why); ``live`` refuses to start without the live book; ``replay`` never
    connects. ``BASTION_OFFLINE=1`` makes ``auto`` the replay without trying.
    """

    model_config = ConfigDict(extra="forbid")

    market_data: Literal["auto", "replay", "live"] = "auto"
    market_url: str = "wss://ws.kraken.com/v2"  # Kraken's public websocket v2
    probe_s: float = Field(default=5.0, gt=0)


class BastionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str = Field(default="backtest", pattern="^(backtest|paper|live)$")
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """``BASTION_BACKTEST__STRATEGY=x`` sets ``backtest.strategy`` (``__`` separates levels)."""
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or (
            "__" not in key and key[len(ENV_PREFIX) :].lower() not in ("mode",)
        ):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        try:
            node[path[-1]] = json.loads(value)
        except json.JSONDecodeError:
            node[path[-1]] = value
    return raw


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> BastionConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        raw = loaded
    raw = _apply_env(raw, dict(os.environ if environ is None else environ))
    try:
        return BastionConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            lines.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
        where = f"{path}" if path else "configuration"
        raise ConfigError(f"{where} is invalid:\n  " + "\n  ".join(lines)) from None

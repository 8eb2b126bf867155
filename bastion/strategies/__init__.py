"""Strategies, one module each; found by module name so adding one touches nothing else."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from bastion.engine.strategy import Strategy


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_strategy(
    name: str, config: dict[str, Any] | None = None, strategy_id: str | None = None
) -> Strategy:
    """Instantiate the strategy defined in ``bastion/strategies/<name>.py``."""
    if name not in available():
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(available())}")
    module = importlib.import_module(f"{__name__}.{name}")
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Strategy) and obj is not Strategy and obj.name == name:
            return obj(strategy_id, config)
    raise ValueError(f"bastion/strategies/{name}.py defines no Strategy subclass named {name!r}")

"""The layers of DESIGN.md: imports point downward only (checked on the source, not by convention)."""

from __future__ import annotations

import ast
from pathlib import Path

BASTION = Path(__file__).resolve().parents[1] / "bastion"

# package -> bastion packages it may import (DESIGN.md, "Layers")
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "engine": {"model"},
    "venues": {"model", "engine"},
    "execution": {"model", "engine", "venues"},
    "risk": {"model", "engine"},
    "portfolio": {"model", "engine"},
    "strategies": {"model", "engine", "portfolio"},
    "data": {"model"},
    "store": {"model"},
    "research": {
        "model",
        "engine",
        "venues",
        "execution",
        "risk",
        "portfolio",
        "strategies",
        "data",
        "store",
    },
    "ops": {
        "model",
        "engine",
        "venues",
        "execution",
        "risk",
        "portfolio",
        "strategies",
        "data",
        "store",
        "research",
    },
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "bastion" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_imports_point_downward_only() -> None:
    bad = []
    for pkg, allowed in ALLOWED.items():
        for f in (BASTION / pkg).rglob("*.py"):
            for used in _imports(f) - allowed - {pkg}:
                if used in ALLOWED:
                    bad.append(f"{f.relative_to(BASTION.parent)} imports bastion.{used}")
    assert not bad, "\n".join(bad)


def test_strategies_cannot_reach_a_venue() -> None:
    """Orders go through the order path only: no strategy imports a venue."""
    for f in (BASTION / "strategies").rglob("*.py"):
        assert "venues" not in _imports(f), f

"""Where risk state survives a restart.

A circuit breaker that forgets it was open when the process dies is worse than none: the crash
that followed a fault would silently re-enable trading. The protocol is deliberately tiny (load
and save one JSON-able dict by name) so the SQL store can back it with its key-value table and
tests can back it with memory, without the risk layer importing either.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class PersistenceError(RuntimeError):
    """Stored state exists but cannot be read; callers must fail safe, never assume a default."""


class StatePersistence(Protocol):
    def load(self, name: str) -> dict[str, Any] | None: ...

    def save(self, name: str, state: dict[str, Any]) -> None: ...


def _check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"state name {name!r} must match {_NAME.pattern} (it becomes a file name)")
    return name


class JsonFilePersistence:
    """One JSON file per name, replaced atomically so a crash leaves the old or the new state.

    Write to a temporary file in the same directory, fsync it, rename it over the old file, then
    fsync the directory so the rename itself is durable: a power cut cannot leave a half-written
    or empty state file that would read as "no state" (and so as a closed breaker).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, name: str) -> Path:
        return self.directory / f"{_check_name(name)}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.path_for(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PersistenceError(f"{path}: cannot read state: {exc}") from exc
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PersistenceError(f"{path}: state is not valid JSON: {exc}") from exc
        if not isinstance(state, dict):
            raise PersistenceError(f"{path}: state must be a JSON object, got {type(state).__name__}")
        return state

    def save(self, name: str, state: dict[str, Any]) -> None:
        path = self.path_for(name)
        data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(self.directory)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or an unlink in ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class MemoryPersistence:
    """For tests: same contract as the file store, including "only JSON survives a restart"."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.saves = 0

    def load(self, name: str) -> dict[str, Any] | None:
        text = self.states.get(_check_name(name))
        if text is None:
            return None
        loaded: dict[str, Any] = json.loads(text)  # a fresh copy: callers cannot alias stored state
        return loaded

    def save(self, name: str, state: dict[str, Any]) -> None:
        self.states[_check_name(name)] = json.dumps(state, sort_keys=True)
        self.saves += 1

"""The kill switch: one file whose existence stops all new orders, in every process.

A file is the one signal every process, script and human can see and set without the system
being healthy: an operator can ``touch`` it over SSH while the control plane is down, and a
check costs a single ``stat``. The gateway refuses new orders and cancels resting ones while it
exists. Every action (and every dry run) is appended to an audit log and fsynced, so who stopped
or restarted trading, when and why, survives any crash that follows.

Engaging writes the flag first and audits after; releasing audits first and removes the flag
after. A failure half-way therefore leaves trading stopped, never running without a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.engine.clock import Clock, WallClock
from bastion.risk.persistence import fsync_dir

NS_PER_S = 1_000_000_000


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=UTC).isoformat(timespec="milliseconds")


class KillSwitch:
    def __init__(
        self,
        flag_path: str | os.PathLike[str],
        audit_path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
    ) -> None:
        self.flag_path = Path(flag_path)
        self.audit_path = Path(audit_path)
        self._flag = os.fspath(self.flag_path)  # is_engaged is on the hot path: no Path work there
        self._clock: Clock = clock or WallClock()

    def is_engaged(self) -> bool:
        return os.path.exists(self._flag)

    __call__ = is_engaged  # the gateway takes a ``Callable[[], bool]``

    def status(self) -> dict[str, Any]:
        """Engaged or not, and the who/when/why stored in the flag when it was set by ``engage``
        (a flag created by hand is just as engaged, only without the details)."""
        out: dict[str, Any] = {"engaged": self.is_engaged(), "flag_path": self._flag}
        if out["engaged"]:
            try:
                info = json.loads(self.flag_path.read_text(encoding="utf-8") or "null")
            except (OSError, ValueError):
                info = None
            if isinstance(info, dict):
                out.update({k: info.get(k) for k in ("reason", "operator", "ts_ns", "time", "host", "pid")})
            else:
                out["reason"] = "flag file present (no details: created outside bastion?)"
        return out

    # --- actions ------------------------------------------------------------------------------
    def engage(self, reason: str, operator: str, *, dry_run: bool = False) -> dict[str, Any]:
        reason, operator = _required(reason, "reason"), _required(operator, "operator")
        before = self.is_engaged()
        now = self._clock.now_ns()
        if before:
            result = "already_engaged"
            effects = [f"flag {self._flag} already present: left as it is (keeps the original reason)"]
        else:
            result = "would_engage" if dry_run else "engaged"
            verb = "would create" if dry_run else "created"
            effects = [
                f"{verb} flag {self._flag}",
                f"{'would stop' if dry_run else 'stops'} new orders in every process; "
                "gateways cancel resting orders",
            ]
        if not before and not dry_run:
            self._write_flag({"reason": reason, "operator": operator, **_who(now)})
        rec = self._audit("engage", operator, now, dry_run, result, reason=reason)
        return self._result(rec, before, effects)

    def release(self, operator: str, *, dry_run: bool = False) -> dict[str, Any]:
        operator = _required(operator, "operator")
        before = self.is_engaged()
        now = self._clock.now_ns()
        if not before:
            result, effects = "not_engaged", [f"flag {self._flag} absent: nothing to release"]
        else:
            result = "would_release" if dry_run else "released"
            effects = [
                f"{'would remove' if dry_run else 'removed'} flag {self._flag}",
                f"{'would allow' if dry_run else 'allows'} new orders again "
                "(breakers and limits still apply)",
            ]
        previous = self.status() if before else None
        # audit before removing: trading must never resume without a record of who resumed it
        rec = self._audit("release", operator, now, dry_run, result, previous=previous)
        if before and not dry_run:
            with contextlib.suppress(FileNotFoundError):
                self.flag_path.unlink()
            fsync_dir(self.flag_path.parent)
        return self._result(rec, before, effects)

    # --- files --------------------------------------------------------------------------------
    def _write_flag(self, info: dict[str, Any]) -> None:
        d = self.flag_path.parent
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".kill.", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(info, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.flag_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(d)

    def _audit(
        self, action: str, operator: str, ts_ns: int, dry_run: bool, result: str, **extra: Any
    ) -> dict[str, Any]:
        """Append one JSON line and fsync it: one ``write`` on an O_APPEND descriptor, so lines
        from concurrent processes never interleave."""
        rec: dict[str, Any] = {
            "action": action,
            "operator": operator,
            "dry_run": dry_run,
            "result": result,
            "flag_path": self._flag,
            **_who(ts_ns),
            **extra,
        }
        line = (json.dumps(rec, sort_keys=True, default=str) + "\n").encode("utf-8")
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{self.audit_path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        return rec

    def _result(self, rec: dict[str, Any], before: bool, effects: list[str]) -> dict[str, Any]:
        return {
            **rec,
            "engaged_before": before,
            "engaged_after": self.is_engaged(),
            "effects": effects,
            "audit_path": os.fspath(self.audit_path),
        }


def _required(value: str, what: str) -> str:
    v = value.strip()
    if not v:
        raise ValueError(f"kill switch: {what} must not be empty")
    return v


def _who(ts_ns: int) -> dict[str, Any]:
    return {"ts_ns": ts_ns, "time": _iso(ts_ns), "host": socket.gethostname(), "pid": os.getpid()}


# --- what the command line calls (ops imports risk, never the reverse) -------------------------
def kill(
    flag_path: str | os.PathLike[str], audit_path: str | os.PathLike[str], *, reason: str, operator: str
) -> dict[str, Any]:
    """``bastion kill``: stop all new orders now."""
    return KillSwitch(flag_path, audit_path).engage(reason, operator)


def kill_dry_run(
    flag_path: str | os.PathLike[str], audit_path: str | os.PathLike[str], *, reason: str, operator: str
) -> dict[str, Any]:
    """``bastion kill --dry-run``: say what engaging would do; audited, nothing changed."""
    return KillSwitch(flag_path, audit_path).engage(reason, operator, dry_run=True)


def kill_clean(
    flag_path: str | os.PathLike[str],
    audit_path: str | os.PathLike[str],
    *,
    operator: str,
    dry_run: bool = False,
) -> dict[str, Any]:
    """``bastion kill --clean``: release the switch (breakers and limits still apply)."""
    return KillSwitch(flag_path, audit_path).release(operator, dry_run=dry_run)


def kill_status(flag_path: str | os.PathLike[str], audit_path: str | os.PathLike[str]) -> dict[str, Any]:
    return KillSwitch(flag_path, audit_path).status()

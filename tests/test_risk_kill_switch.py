"""The kill switch: a flag file any process sees, and an fsynced audit line for every action."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.risk.kill_switch import KillSwitch, kill, kill_clean, kill_dry_run, kill_status


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "run" / "KILL", tmp_path / "audit" / "kill_audit.jsonl"


def audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_engage_and_release(paths: tuple[Path, Path]) -> None:
    flag, log = paths
    sw = KillSwitch(flag, log)
    assert not sw.is_engaged() and not sw()
    r = sw.engage("runaway quoting on kraken", "alice")
    assert r["result"] == "engaged" and r["engaged_after"] and not r["engaged_before"]
    assert flag.exists() and sw.is_engaged() and sw()
    st = sw.status()
    assert st["engaged"] and st["reason"] == "runaway quoting on kraken" and st["operator"] == "alice"
    r = sw.release("bob")
    assert r["result"] == "released" and not r["engaged_after"]
    assert not flag.exists() and not sw.is_engaged()
    lines = audit(log)
    assert [(x["action"], x["operator"], x["result"], x["dry_run"]) for x in lines] == [
        ("engage", "alice", "engaged", False),
        ("release", "bob", "released", False),
    ]
    assert lines[0]["reason"] == "runaway quoting on kraken"
    assert lines[1]["previous"]["reason"] == "runaway quoting on kraken"  # what was released
    assert all({"ts_ns", "time", "host", "pid"} <= set(x) for x in lines)


def test_dry_runs_change_nothing_but_are_audited(paths: tuple[Path, Path]) -> None:
    flag, log = paths
    sw = KillSwitch(flag, log)
    r = sw.engage("drill", "alice", dry_run=True)
    assert r["result"] == "would_engage" and r["dry_run"] and not flag.exists()
    assert any(e.startswith("would create flag") for e in r["effects"])
    sw.engage("real", "alice")
    r = sw.release("bob", dry_run=True)
    assert r["result"] == "would_release" and flag.exists() and sw.is_engaged()
    assert any(e.startswith("would remove flag") for e in r["effects"])
    assert [(x["result"], x["dry_run"]) for x in audit(log)] == [
        ("would_engage", True),
        ("engaged", False),
        ("would_release", True),
    ]


def test_engaging_twice_keeps_the_first_reason(paths: tuple[Path, Path]) -> None:
    sw = KillSwitch(*paths)
    sw.engage("first", "alice")
    r = sw.engage("second", "bob")
    assert r["result"] == "already_engaged"
    assert sw.status()["reason"] == "first"
    assert KillSwitch(*paths).release("carol")["result"] == "released"
    assert KillSwitch(*paths).release("carol")["result"] == "not_engaged"
    assert [x["result"] for x in audit(paths[1])] == ["engaged", "already_engaged", "released", "not_engaged"]


def test_a_touched_flag_is_engaged(paths: tuple[Path, Path]) -> None:
    flag, log = paths
    flag.parent.mkdir(parents=True)
    flag.touch()  # an operator over ssh, control plane down
    st = KillSwitch(flag, log).status()
    assert st["engaged"] and "no details" in st["reason"]


def test_seen_by_another_instance_and_another_process(paths: tuple[Path, Path]) -> None:
    flag, log = paths
    KillSwitch(flag, log).engage("stop", "alice")
    assert KillSwitch(flag, log).is_engaged()
    code = (
        "import sys; from bastion.risk.kill_switch import KillSwitch; "
        "print(KillSwitch(sys.argv[1], sys.argv[2]).is_engaged())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(flag), str(log)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
    # and the other way round: another process releases, this one sees it at once
    code = (
        "import sys; from bastion.risk.kill_switch import kill_clean; "
        "kill_clean(sys.argv[1], sys.argv[2], operator='bob')"
    )
    subprocess.run([sys.executable, "-c", code, str(flag), str(log)], check=True)
    assert not KillSwitch(flag, log).is_engaged()


def _fsync_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_every_action_is_fsynced(paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    flag, log = paths
    synced = _fsync_spy(monkeypatch)
    sw = KillSwitch(flag, log)
    sw.engage("x", "alice", dry_run=True)
    assert synced == [str(log)]  # a dry run: the audit line only
    synced.clear()
    sw.engage("x", "alice")
    assert synced.count(str(log)) == 1
    assert str(flag.parent) in synced  # the flag's directory entry is durable
    assert any(p.startswith(str(flag.parent / ".kill.")) for p in synced)  # flag content before rename
    synced.clear()
    sw.release("bob")
    assert synced == [str(log), str(flag.parent)]  # audited first, then the unlink made durable


def test_release_without_an_audit_line_does_not_release(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sw = KillSwitch(*paths)
    sw.engage("x", "alice")

    def broken(*a: Any, **k: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(KillSwitch, "_audit", broken)
    with pytest.raises(OSError, match="disk full"):
        sw.release("bob")
    assert sw.is_engaged()  # fail safe: still stopped


def test_engage_stops_trading_even_if_the_audit_fails(
    paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sw = KillSwitch(*paths)

    def broken(*a: Any, **k: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(KillSwitch, "_audit", broken)
    with pytest.raises(OSError):
        sw.engage("x", "alice")
    assert sw.is_engaged()


def test_is_engaged_is_one_stat(paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    sw = KillSwitch(*paths)
    calls: list[str] = []
    real = os.path.exists

    def exists(p: Any) -> bool:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(os.path, "exists", exists)
    sw.is_engaged()
    assert calls == [str(paths[0])]


def test_names_are_required(paths: tuple[Path, Path]) -> None:
    sw = KillSwitch(*paths)
    with pytest.raises(ValueError, match="operator"):
        sw.engage("x", " ")
    with pytest.raises(ValueError, match="reason"):
        sw.engage("", "alice")
    assert not paths[1].exists()


def test_cli_functions(paths: tuple[Path, Path]) -> None:
    flag, log = paths
    r = kill_dry_run(flag, log, reason="drill", operator="alice")
    assert r["result"] == "would_engage" and not flag.exists()
    r = kill(flag, log, reason="venue down", operator="alice")
    assert r["result"] == "engaged" and kill_status(flag, log)["engaged"]
    r = kill_clean(flag, log, operator="bob", dry_run=True)
    assert r["result"] == "would_release" and flag.exists()
    r = kill_clean(flag, log, operator="bob")
    assert r["result"] == "released" and not kill_status(flag, log)["engaged"]
    assert len(audit(log)) == 4
    json.dumps(r)  # results are JSON-able for `--json`

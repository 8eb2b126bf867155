"""The write-ahead log keeps every acknowledged record through crashes, and says so when it cannot."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bastion.model.fixed import Price, Quantity
from bastion.model.orders import Order, OrderType, Side
from bastion.store.wal import (
    FILE_HEADER,
    WalCorruptError,
    WalError,
    WalFailedError,
    WalLockedError,
    WriteAheadLog,
)

REPO = Path(__file__).resolve().parents[1]
HDR = 28  # record header bytes


def _only_segment(wal_dir: Path) -> Path:
    (seg,) = sorted(wal_dir.glob("*.wal"))
    return seg


def test_append_replay_round_trip_with_model_objects(tmp_path: Path) -> None:
    order = Order("c-1", "BTCUSDT", Side.BUY, OrderType.LIMIT, Quantity(5, 3), Price(6180030, 2))
    with WriteAheadLog(tmp_path / "wal") as w:
        assert w.append("submit", {"order": order, "venue": "BINANCE"}) == 1
        assert w.append("note", {"type": "user field", "n": [1, 2]}) == 2
        recs = list(w.replay())
    assert [r.seq for r in recs] == [1, 2]
    assert recs[0].kind == "submit" and recs[0].payload == {"order": order, "venue": "BINANCE"}
    assert recs[1].payload == {"type": "user field", "n": [1, 2]}
    assert recs[0].ts_ns > 0 and recs[1].ts_ns >= recs[0].ts_ns


def test_sequence_continues_after_reopen_and_replay_after(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path / "wal", fsync=False) as w:
        for i in range(5):
            w.append("k", {"i": i})
    with WriteAheadLog(tmp_path / "wal", fsync=False) as w:
        assert w.last_seq == 5
        assert w.append("k", {"i": 5}) == 6
        assert [r.payload["i"] for r in w.replay(after_seq=3)] == [3, 4, 5]


def test_append_fsyncs_file_and_directory_before_returning(tmp_path: Path, monkeypatch: Any) -> None:
    calls: list[str] = []
    real_fsync, real_write = os.fsync, os.write

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync")
        real_fsync(fd)

    def write(fd: int, data: Any) -> int:
        calls.append("write")
        return real_write(fd, data)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "write", write)
    w = WriteAheadLog(tmp_path / "wal")
    assert "fsync-dir" in calls  # the new segment's directory entry is durable
    calls.clear()
    w.append("a", {})
    assert calls == ["write", "fsync"]
    calls.clear()
    w.append_batch([("a", {}), ("b", {})])
    assert calls == ["write", "fsync"]  # one fsync for the whole batch
    w.close()

    calls.clear()
    with WriteAheadLog(tmp_path / "nofsync", fsync=False) as w2:
        calls.clear()
        w2.append("a", {})
    assert calls == ["write"]


@pytest.mark.parametrize("chop", [1, 5, HDR - 1, HDR, HDR + 3])
def test_torn_tail_is_truncated_and_reported(tmp_path: Path, chop: int) -> None:
    wal_dir = tmp_path / "wal"
    with WriteAheadLog(wal_dir) as w:
        for i in range(3):
            w.append("k", {"i": i, "pad": "x" * 10})
    seg = _only_segment(wal_dir)
    size = seg.stat().st_size
    os.truncate(seg, size - chop)
    with capture_logs() as logs, WriteAheadLog(wal_dir) as w:
        assert [r.payload["i"] for r in w.replay()] == [0, 1]
        assert w.last_seq == 2
        assert w.torn_tail is not None and w.torn_tail[0] == seg
        assert w.append("k", {"i": 99}) == 3  # the torn record's number is reused: it never existed
        assert [r.payload["i"] for r in w.replay()] == [0, 1, 99]
    assert any(e["event"] == "wal.torn_tail_truncated" for e in logs)


def test_zero_filled_and_garbage_tails_are_torn_tails(tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    with WriteAheadLog(wal_dir) as w:
        w.append("k", {"i": 0})
    seg = _only_segment(wal_dir)
    good = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)
    with WriteAheadLog(wal_dir) as w:
        assert w.last_seq == 1
    assert seg.stat().st_size == good
    with open(seg, "ab") as f:  # a whole record whose body was only partly persisted
        f.write(
            b"\x1e\x0aW\xb4" + b"\x10\0\0\0" + b"\1\2\3\4" + b"\x02" + b"\0" * 7 + b"\0" * 8 + b"garbage!"
        )
    with WriteAheadLog(wal_dir) as w:
        assert w.last_seq == 1 and [r.seq for r in w.replay()] == [1]


def test_corruption_in_the_middle_is_an_error_with_the_offset(tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    with WriteAheadLog(wal_dir) as w:
        for i in range(3):
            w.append("k", {"i": i})
    seg = _only_segment(wal_dir)
    data = bytearray(seg.read_bytes())
    first_len = int.from_bytes(data[len(FILE_HEADER) + 4 : len(FILE_HEADER) + 8], "little")
    second = len(FILE_HEADER) + HDR + first_len
    data[second + HDR + 2] ^= 0xFF  # flip a bit in the 2nd record's body
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as ei:
        WriteAheadLog(wal_dir)
    assert ei.value.offset == second and str(second) in str(ei.value) and ei.value.path == seg
    assert seg.stat().st_size == len(data)  # nothing was truncated away


def test_rotation_checkpoint_compaction(tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    with WriteAheadLog(wal_dir, fsync=False, segment_bytes=300) as w:
        for i in range(20):
            w.append("k", {"i": i, "pad": "y" * 40})
        segs = w.segments()
        assert len(segs) > 3
        assert [r.payload["i"] for r in w.replay()] == list(range(20))
        with pytest.raises(ValueError):
            w.compact(5)  # past the checkpoint (0)
        w.checkpoint(12)
        removed = w.compact()
        assert removed and all(int(p.stem) <= 12 for p in removed)
        left = w.segments()
        assert int(left[0].stem) <= 13  # record 13 is still there
        assert [r.seq for r in w.replay(after_seq=12)] == list(range(13, 21))
        with pytest.raises(WalError, match="compacted"):
            list(w.replay())
        with pytest.raises(ValueError):
            w.checkpoint(3)  # never backwards
    with WriteAheadLog(wal_dir, fsync=False, segment_bytes=300) as w:
        assert w.checkpointed_seq == 12 and w.last_seq == 20
        assert w.append("k", {"i": 20}) == 21
        assert [r.seq for r in w.replay(after_seq=w.checkpointed_seq)] == list(range(13, 22))


def test_truncated_older_segment_is_corruption_on_replay(tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    with WriteAheadLog(wal_dir, fsync=False, segment_bytes=200) as w:
        for i in range(10):
            w.append("k", {"i": i, "pad": "z" * 40})
    first = sorted(wal_dir.glob("*.wal"))[0]
    os.truncate(first, first.stat().st_size - 3)
    with WriteAheadLog(wal_dir, fsync=False, segment_bytes=200) as w, pytest.raises(WalCorruptError):
        list(w.replay())


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path / "wal"), pytest.raises(WalLockedError):
        WriteAheadLog(tmp_path / "wal")
    WriteAheadLog(tmp_path / "wal").close()  # released on close


def test_failed_fsync_poisons_the_log(tmp_path: Path, monkeypatch: Any) -> None:
    w = WriteAheadLog(tmp_path / "wal")
    w.append("k", {})

    def broken(fd: int) -> None:
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(WalFailedError):
        w.append("k", {})
    monkeypatch.undo()
    with pytest.raises(WalFailedError):
        w.append("k", {})  # even though fsync "works" again
    w.close()


def test_concurrent_appends_get_distinct_consecutive_seqs(tmp_path: Path) -> None:
    seen: list[int] = []
    lock = threading.Lock()
    with WriteAheadLog(tmp_path / "wal", fsync=False, segment_bytes=4096) as w:

        def worker(t: int) -> None:
            for i in range(50):
                s = w.append("k", {"t": t, "i": i})
                with lock:
                    seen.append(s)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seen) == list(range(1, 401))
        assert [r.seq for r in w.replay()] == list(range(1, 401))


def test_bad_payloads_are_refused_before_writing(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path / "wal") as w:
        with pytest.raises(TypeError):
            w.append("k", {"x": object()})
        with pytest.raises(ValueError):
            w.append("", {})
        assert w.last_seq == 0 and list(w.replay()) == []


CHILD = textwrap.dedent(
    """
    import sys
    from bastion.store.wal import WriteAheadLog
    w = WriteAheadLog(sys.argv[1], segment_bytes=256 * 1024)
    i = w.last_seq
    while True:
        i += 1
        pad = "p" * ((i * 7919) % 50_000)  # some records span many pages: kills land mid-write
        seq = w.append("tick", {"i": i, "pad": pad})
        assert seq == i
        print(seq, flush=True)
    """
)


def test_sigkill_mid_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    wal_dir = tmp_path / "wal"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(wal_dir)], stdout=subprocess.PIPE, env=env, text=True
        )
        assert proc.stdout is not None
        acked: list[int] = []
        first = proc.stdout.readline()  # wait until it is appending
        assert first, "child died before appending"
        acked.append(int(first))
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acked += [int(x) for x in out.split()]
        assert proc.returncode == -signal.SIGKILL

        with WriteAheadLog(wal_dir, segment_bytes=256 * 1024) as w:
            recs = {r.seq: r for r in w.replay()}
        assert set(acked) <= set(recs), f"lost acknowledged seqs: {sorted(set(acked) - set(recs))[:5]}"
        assert sorted(recs) == list(range(1, len(recs) + 1))
        for seq, r in recs.items():
            assert r.payload["i"] == seq and len(r.payload["pad"]) == (seq * 7919) % 50_000

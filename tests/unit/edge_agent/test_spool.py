"""The spool: durable across reopen, deletes on PUBACK, evicts routine frames before alerts."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from edge_agent.spool import Priority, Spool


def test_frames_survive_a_reopen_after_flush(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=10_000, commit_interval_s=60.0)
    ids = [spool.append("t/up/telemetry", bytes([i]) * 10, readings=i) for i in range(5)]
    spool.flush()
    spool.delete(ids[0])
    spool.close()
    reopened = Spool(tmp_path / "spool.db", max_bytes=10_000)
    frames = reopened.oldest(10)
    assert [f.id for f in frames] == ids[1:]
    assert frames[0].envelope == b"\x01" * 10
    stats = reopened.stats()
    assert (stats.frames, stats.bytes) == (4, 40)
    reopened.close()


def test_only_sealed_bytes_rest_on_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=10_000)
    spool.append("t", b"\x92\xc4ciphertext", readings=3)
    spool.flush()
    with contextlib.closing(sqlite3.connect(tmp_path / "spool.db")) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(frames)")]
    assert columns == ["id", "priority", "created_ns", "topic", "envelope", "readings"]
    spool.close()


def test_eviction_takes_the_oldest_routine_frames_before_any_alert(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=100, commit_interval_s=0.0)
    alert = spool.append("t/up/alerts", b"A" * 20, readings=0, priority=Priority.CRITICAL)
    routine = [spool.append("t/up/telemetry", b"R" * 20, readings=7) for _ in range(10)]
    remaining = [frame.id for frame in spool.oldest(100)]
    assert remaining[0] == alert  # critical frames are also sent first
    assert remaining[1:] == routine[-4:]
    assert (spool.evicted_frames, spool.evicted_readings) == (6, 42)
    assert spool.stats().bytes <= 100
    spool.close()
    # The eviction counters are the gateway's `dropped_total`: they survive a restart.
    reopened = Spool(tmp_path / "spool.db", max_bytes=100)
    reopened.append("t/up/telemetry", b"R" * 20, readings=5)
    reopened.flush()
    stats = reopened.stats()
    assert (stats.evicted_frames, stats.evicted_readings) == (7, 49)
    reopened.close()


def test_oldest_skips_frames_already_in_flight(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=10_000)
    ids = [spool.append("t", b"x", readings=1) for _ in range(4)]
    assert [f.id for f in spool.oldest(2, exclude=frozenset(ids[:1]))] == ids[1:3]
    spool.close()

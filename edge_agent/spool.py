"""Durable spool of sealed frames: SQLite in WAL mode, ciphertext only, bounded, priority eviction.

A frame enters the spool as soon as it is sealed and leaves it only after the broker's PUBACK.
Writes are group-committed (at most every `commit_interval_s`), so an SD card sees one fsync per
group rather than per frame. When the spool exceeds `max_bytes`, the oldest routine frames go
first; alert and binding frames are evicted only when nothing routine is left.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Final

from edge_agent.errors import EdgeAgentError

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS frames (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    priority    INTEGER NOT NULL,
    created_ns  INTEGER NOT NULL,
    topic       TEXT    NOT NULL,
    envelope    BLOB    NOT NULL,
    readings    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_by_priority ON frames (priority, id);
CREATE TABLE IF NOT EXISTS meta (
    key         TEXT    PRIMARY KEY,
    value       INTEGER NOT NULL
);
"""
# The intake journal's sequence number of the newest reading in a spooled frame, written in the
# same transaction as that frame (edge_agent.journal).
JOURNAL_MARK: Final = "journal_seq"
EVICTED_FRAMES: Final = "evicted_frames"
EVICTED_READINGS: Final = "evicted_readings"


class Priority(IntEnum):
    """Lower numbers survive longer; alerts and bindings outrank routine vitals."""

    CRITICAL = 0
    ROUTINE = 1


class SpoolError(EdgeAgentError):
    """The spool file cannot be opened or written; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"spool {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True, frozen=True)
class SpooledFrame:
    id: int
    priority: Priority
    created_ns: int
    topic: str
    envelope: bytes
    readings: int


@dataclass(slots=True, frozen=True)
class SpoolStats:
    frames: int
    bytes: int
    oldest_created_ns: int | None
    evicted_frames: int
    evicted_readings: int


class Spool:
    """Thread-safe; every method does blocking I/O, so call it through `asyncio.to_thread`."""

    def __init__(self, path: Path, max_bytes: int, commit_interval_s: float = 0.2) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.commit_interval_s = commit_interval_s
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on the card when it returns (the group commit keeps that rare).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(envelope)), 0) FROM frames"
            ).fetchone()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise SpoolError(path, f"cannot open: {exc}") from exc
        self._frames, self._bytes = int(row[0]), int(row[1])
        self.committed_journal_seq = int(meta.get(JOURNAL_MARK, 0))
        """Every journaled reading up to this sequence number is in a committed frame."""
        self._pending_journal_seq = self.committed_journal_seq
        self._lock = threading.Lock()
        self._in_transaction = False
        self._last_commit = time.monotonic()
        # Evictions are kept in the spool itself, in the evicting transaction, so the gateway's
        # `dropped_total` survives restarts and counts what was really given up.
        self.evicted_frames = int(meta.get(EVICTED_FRAMES, 0))
        self.evicted_readings = int(meta.get(EVICTED_READINGS, 0))

    def _begin(self) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True

    def _commit_if_due(self, force: bool) -> None:
        due = time.monotonic() - self._last_commit >= self.commit_interval_s
        if self._in_transaction and (force or due):
            self._db.execute("COMMIT")
            self._in_transaction = False
            self._last_commit = time.monotonic()
            self.committed_journal_seq = self._pending_journal_seq

    def append(
        self,
        topic: str,
        envelope: bytes,
        readings: int,
        priority: Priority = Priority.ROUTINE,
        *,
        journal_seq: int | None = None,
    ) -> int:
        """Store one sealed frame; durable at the next group commit (or `flush`).

        `journal_seq` is the intake journal's number of the frame's newest reading; it becomes
        durable with the frame, and `committed_journal_seq` follows it after the commit.
        """
        with self._lock:
            try:
                self._begin()
                cursor = self._db.execute(
                    "INSERT INTO frames (priority, created_ns, topic, envelope, readings) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (int(priority), time.time_ns(), topic, envelope, readings),
                )
                if journal_seq is not None and journal_seq > self._pending_journal_seq:
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        (JOURNAL_MARK, journal_seq),
                    )
                    self._pending_journal_seq = journal_seq
                self._frames += 1
                self._bytes += len(envelope)
                self._evict()
                self._commit_if_due(force=False)
            except sqlite3.Error as exc:
                raise SpoolError(self.path, f"append failed: {exc}") from exc
            return int(cursor.lastrowid or 0)

    def _evict(self) -> None:
        evicted = self.evicted_frames
        while self._bytes > self.max_bytes and self._frames > 1:
            row = self._db.execute(
                "SELECT id, LENGTH(envelope), readings FROM frames "
                "ORDER BY priority DESC, id LIMIT 1"
            ).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM frames WHERE id = ?", (row[0],))
            self._frames -= 1
            self._bytes -= int(row[1])
            self.evicted_frames += 1
            self.evicted_readings += int(row[2])
        if self.evicted_frames != evicted:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                ((EVICTED_FRAMES, self.evicted_frames), (EVICTED_READINGS, self.evicted_readings)),
            )

    def flush(self) -> None:
        """Commit whatever is pending now (shutdown, tests)."""
        with self._lock:
            try:
                self._commit_if_due(force=True)
            except sqlite3.Error as exc:
                raise SpoolError(self.path, f"commit failed: {exc}") from exc

    def tick(self) -> None:
        """Commit a group that has waited long enough; call it from a timer."""
        with self._lock:
            try:
                self._commit_if_due(force=False)
            except sqlite3.Error as exc:
                raise SpoolError(self.path, f"commit failed: {exc}") from exc

    def oldest(self, limit: int, exclude: frozenset[int] = frozenset()) -> list[SpooledFrame]:
        """The oldest frames not in `exclude` (those already in flight), critical ones first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, priority, created_ns, topic, envelope, readings FROM frames "
                "ORDER BY priority, id LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        frames = [
            SpooledFrame(int(r[0]), Priority(r[1]), int(r[2]), str(r[3]), bytes(r[4]), int(r[5]))
            for r in rows
            if r[0] not in exclude
        ]
        return frames[:limit]

    def delete(self, frame_id: int) -> None:
        """Forget a frame once the broker has acknowledged it."""
        with self._lock:
            try:
                self._begin()
                row = self._db.execute(
                    "SELECT LENGTH(envelope) FROM frames WHERE id = ?", (frame_id,)
                ).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM frames WHERE id = ?", (frame_id,))
                    self._frames -= 1
                    self._bytes -= int(row[0])
                self._commit_if_due(force=False)
            except sqlite3.Error as exc:
                raise SpoolError(self.path, f"delete failed: {exc}") from exc

    def stats(self) -> SpoolStats:
        with self._lock:
            row = self._db.execute("SELECT MIN(created_ns) FROM frames").fetchone()
            return SpoolStats(
                self._frames,
                self._bytes,
                None if row[0] is None else int(row[0]),
                self.evicted_frames,
                self.evicted_readings,
            )

    def close(self) -> None:
        with self._lock:
            if self._in_transaction:
                self._db.execute("COMMIT")
                self._in_transaction = False
                self.committed_journal_seq = self._pending_journal_seq
            self._db.close()

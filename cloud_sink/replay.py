"""Anti-replay windows per (gateway, key epoch): each sequence number is accepted once.

A window remembers the highest sequence number seen and a bitmap of the WINDOW numbers below it
(RFC 4303 §3.4.3 / RFC 6479 style, widened so a gateway's spooled backlog, which arrives after its
live frames, still fits). A number is marked only after its tag verified, and the marks are made
durable only after the frame's points are in InfluxDB: a crash in between lets the broker's
redelivery through once more, which the idempotent write absorbs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloud_sink.errors import CloudSinkError

WINDOW: Final = 1 << 16
_WINDOW_MASK: Final = (1 << WINDOW) - 1
STATE_VERSION: Final = 1


class ReplayStateError(CloudSinkError):
    """The persisted windows cannot be read; the sink refuses to start rather than forget them."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"replay state {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True)
class _Window:
    highest: int = -1
    seen: int = 0  # bit i set: highest - i was accepted

    def contains(self, seq: int) -> bool:
        if seq > self.highest:
            return False
        offset = self.highest - seq
        return offset >= WINDOW or bool(self.seen >> offset & 1)

    def mark(self, seqs: Iterable[int]) -> None:
        """Accept a batch's numbers: the bitmap moves at most once, whatever their order."""
        seqs = list(seqs)
        if not seqs:
            return
        top = max(seqs)
        if top > self.highest:
            shift = top - self.highest if self.highest >= 0 else WINDOW
            # Never build a huge integer: a jump of a window or more forgets everything below.
            self.seen = (self.seen << shift) & _WINDOW_MASK if shift < WINDOW else 0
            self.highest = top
        bits = 0
        for seq in seqs:
            offset = self.highest - seq
            # One older than the window is already refused by `contains`: no bit needed.
            if offset < WINDOW:
                bits |= 1 << offset
        self.seen |= bits


Key = tuple[str, int]
Mark = tuple[str, int, int]
"""(gateway, key epoch, sequence number) of one accepted envelope."""


class ReplayGuard:
    """Committed windows plus the marks of the batches in flight.

    Each batch commits only its own marks, once its own points are written: a mark must never be
    durable before its points are, or a crash would turn the broker's redelivery into a loss.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._windows: dict[Key, _Window] = {}
        self._pending: set[Mark] = set()
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReplayStateError(path, f"unreadable ({exc})") from exc
        if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
            raise ReplayStateError(path, f"not a version-{STATE_VERSION} replay state file")
        try:
            for entry in document["windows"]:
                window = _Window(int(entry["highest"]), int(entry["seen"], 16))
                self._windows[(str(entry["gateway"]), int(entry["epoch"]))] = window
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReplayStateError(path, f"unreadable ({exc})") from exc

    def seen(self, gateway: str, epoch: int, seq: int) -> bool:
        """True for a number already accepted (committed, or earlier in this batch)."""
        if (gateway, epoch, seq) in self._pending:
            return True
        window = self._windows.get((gateway, epoch))
        return window is not None and window.contains(seq)

    def accept(self, gateway: str, epoch: int, seq: int) -> Mark:
        """Mark a verified envelope as taken; durable after `commit` of the returned mark."""
        mark = (gateway, epoch, seq)
        self._pending.add(mark)
        return mark

    def commit(self, marks: Iterable[Mark] | None = None) -> None:
        """A batch is written: fold its marks (all pending ones if None) and persist them."""
        if self.fold(list(self._pending) if marks is None else marks) and self.path is not None:
            self.persist(self.snapshot())

    def fold(self, marks: Iterable[Mark]) -> bool:
        """Move written marks from in flight into the windows; True if any was in flight.

        In memory only (call it from the thread that calls `seen`); `persist` makes it durable.
        """
        by_key: dict[Key, list[int]] = {}
        for mark in marks:
            if mark in self._pending:
                gateway, epoch, seq = mark
                by_key.setdefault((gateway, epoch), []).append(seq)
        for key, seqs in by_key.items():
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window()
            window.mark(seqs)
        for key, seqs in by_key.items():
            self._pending.difference_update((key[0], key[1], seq) for seq in seqs)
        return bool(by_key)

    def snapshot(self) -> dict[str, object]:
        """The committed windows as the state file's document (cheap; no I/O)."""
        return {
            "version": STATE_VERSION,
            "windows": [
                {"gateway": g, "epoch": e, "highest": w.highest, "seen": format(w.seen, "x")}
                for (g, e), w in sorted(self._windows.items())
            ],
        }

    def persist(self, document: dict[str, object]) -> None:
        """Write a snapshot durably (temp file, fsync, rename); blocking, safe in a worker thread
        because it touches nothing but the file."""
        if self.path is not None:
            self._save(self.path, document)

    @staticmethod
    def _save(path: Path, document: dict[str, object]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

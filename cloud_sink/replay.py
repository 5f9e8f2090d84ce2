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
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloud_sink.errors import CloudSinkError

WINDOW: Final = 1 << 16
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

    def mark(self, seq: int) -> None:
        if seq > self.highest:
            shift = seq - self.highest if self.highest >= 0 else WINDOW
            kept = self.seen << shift if shift < WINDOW else 0  # never build a huge integer
            self.seen = (kept | 1) & ((1 << WINDOW) - 1)
            self.highest = seq
        else:
            self.seen |= 1 << (self.highest - seq)


Key = tuple[str, int]


class ReplayGuard:
    """Committed windows plus the marks of the batch in flight."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._windows: dict[Key, _Window] = {}
        self._pending: set[tuple[str, int, int]] = set()
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

    def accept(self, gateway: str, epoch: int, seq: int) -> None:
        """Mark a verified envelope as taken; durable after `commit`."""
        self._pending.add((gateway, epoch, seq))

    def commit(self) -> None:
        """The batch is written: fold its marks into the windows and persist them."""
        if not self._pending:
            return
        for gateway, epoch, seq in sorted(self._pending):
            self._windows.setdefault((gateway, epoch), _Window()).mark(seq)
        self._pending.clear()
        if self.path is not None:
            self._save(self.path)

    def _save(self, path: Path) -> None:
        document = {
            "version": STATE_VERSION,
            "windows": [
                {"gateway": g, "epoch": e, "highest": w.highest, "seen": format(w.seen, "x")}
                for (g, e), w in sorted(self._windows.items())
            ],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

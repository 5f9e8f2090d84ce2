"""Ground-truth ledger: every reading a simulated device produced, one JSON line each."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self


@dataclass(slots=True, frozen=True)
class LedgerEntry:
    """A reading's identity (patient, metric, device, ts_ns) and its value (DESIGN §3)."""

    patient: str
    metric: str
    device: str
    ts_ns: int
    value: float

    @property
    def identity(self) -> tuple[str, str, str, int]:
        return (self.patient, self.metric, self.device, self.ts_ns)


class Ledger:
    """Append-only writer; lines are flushed as written so a killed run keeps what it produced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("a", encoding="utf-8")
        self.count = 0

    def record(self, entry: LedgerEntry) -> None:
        self._handle.write(
            json.dumps(
                [entry.patient, entry.metric, entry.device, entry.ts_ns, entry.value],
                separators=(",", ":"),
            )
            + "\n"
        )
        self._handle.flush()
        self.count += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_ledger(path: Path) -> list[LedgerEntry]:
    """Read a ledger back; a torn last line (killed writer) is ignored, nothing else is."""
    entries: list[LedgerEntry] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            patient, metric, device, ts_ns, value = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise
        entries.append(LedgerEntry(patient, metric, device, int(ts_ns), float(value)))
    return entries


@dataclass(slots=True, frozen=True)
class Reconciliation:
    """Ledger against store, reading by reading."""

    generated: int
    stored: int
    duplicate_identities: int
    missing: int
    extra: int
    value_mismatches: int

    @property
    def exact(self) -> bool:
        return not (
            self.duplicate_identities or self.missing or self.extra or self.value_mismatches
        )


def reconcile(
    entries: list[LedgerEntry], stored: Mapping[tuple[str, str, str, int], float]
) -> Reconciliation:
    """Compare by identity; values must be equal exactly (floats travel as IEEE-754 doubles)."""
    expected = {entry.identity: entry.value for entry in entries}
    missing = sum(1 for identity in expected if identity not in stored)
    extra = sum(1 for identity in stored if identity not in expected)
    mismatches = sum(
        1
        for identity, value in expected.items()
        if identity in stored and stored[identity] != value
    )
    duplicates = len(entries) - len(expected)
    return Reconciliation(len(entries), len(stored), duplicates, missing, extra, mismatches)

"""Ground-truth ledger: every reading a simulated device delivered, one JSON line each.

A line is `[patient, metric, device, ts_ns, value, device_clock, device_kind]`. With
`device_clock` 1 the device put `ts_ns` in its payload, so the stored reading must carry exactly
that time stamp (its identity, DESIGN §3). With 0 the device has no clock (a heart-rate strap,
a room sensor): the gateway stamps the reading on receipt, `ts_ns` is when the device sent it,
and reconciliation pairs such readings in order within each (patient, metric, device) series,
each received no earlier than sent and within a receipt window.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Self

Identity = tuple[str, str, str, int]
"""(patient, metric, device, ts_ns): a stored reading's identity."""

RECEIPT_WINDOW_NS: Final = 2_000_000_000
"""Longest accepted delay from a clockless device's send to the gateway's receipt stamp."""


@dataclass(slots=True, frozen=True)
class LedgerEntry:
    """A reading's identity (patient, metric, device, ts_ns), its value and who stamped it."""

    patient: str
    metric: str
    device: str
    ts_ns: int
    value: float
    device_clock: bool = True
    device_kind: str = ""
    """The simulated model (`firmware-sims list`), for reports; not part of the identity."""

    @property
    def identity(self) -> Identity:
        return (self.patient, self.metric, self.device, self.ts_ns)

    @property
    def series(self) -> tuple[str, str, str]:
        return (self.patient, self.metric, self.device)


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
                [
                    entry.patient,
                    entry.metric,
                    entry.device,
                    entry.ts_ns,
                    entry.value,
                    int(entry.device_clock),
                    entry.device_kind,
                ],
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
            patient, metric, device, ts_ns, value, device_clock, kind = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise
        entries.append(
            LedgerEntry(patient, metric, device, int(ts_ns), float(value), bool(device_clock), kind)
        )
    return entries


@dataclass(slots=True, frozen=True)
class Reconciliation:
    """Ledger against store, reading by reading."""

    generated: int
    """Distinct readings the devices delivered (a record sent again counts once)."""
    stored: int
    duplicate_identities: int
    """Identities the ledger holds with two different values (a simulator bug)."""
    missing: int
    extra: int
    value_mismatches: int
    receipt_stamped: int = 0
    """Readings of clockless devices, paired in order (see the module docstring)."""

    @property
    def exact(self) -> bool:
        return not (
            self.duplicate_identities or self.missing or self.extra or self.value_mismatches
        )


def _pair_in_order(
    sent: list[LedgerEntry], got: list[tuple[int, float]], window_ns: int
) -> tuple[int, int, int, int]:
    """(paired, missing, extra, value mismatches) of one receipt-stamped series."""
    paired = missing = extra = mismatches = 0
    i = j = 0
    while i < len(sent) and j < len(got):
        lag_ns = got[j][0] - sent[i].ts_ns
        if lag_ns < 0:
            extra += 1
            j += 1
        elif lag_ns > window_ns:
            missing += 1
            i += 1
        else:
            paired += 1
            mismatches += got[j][1] != sent[i].value
            i += 1
            j += 1
    return paired, missing + len(sent) - i, extra + len(got) - j, mismatches


def reconcile(
    entries: list[LedgerEntry],
    stored: Mapping[Identity, float],
    *,
    receipt_window_ns: int = RECEIPT_WINDOW_NS,
) -> Reconciliation:
    """Ledger against store; values must be equal exactly (floats travel as IEEE-754 doubles).

    Device-stamped readings are matched by identity. What is left of the store is matched
    against the receipt-stamped readings series by series, in time order: a stored reading
    stamped before the next expected one was sent is extra, one more than the window after it
    means the expected one is missing.
    """
    expected: dict[Identity, float] = {}
    by_series: defaultdict[tuple[str, str, str], list[LedgerEntry]] = defaultdict(list)
    conflicts = 0
    for entry in entries:
        if entry.device_clock:
            # A record sent again (an implant's trend days, after a restart) is one reading;
            # two different values under one identity cannot both be stored.
            if expected.setdefault(entry.identity, entry.value) != entry.value:
                conflicts += 1
        else:
            by_series[entry.series].append(entry)
    leftover = dict(stored)
    missing = mismatches = 0
    for identity, value in expected.items():
        if identity not in leftover:
            missing += 1
        elif leftover.pop(identity) != value:
            mismatches += 1
    stored_series: defaultdict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
    for (patient, metric, device, ts_ns), value in leftover.items():
        stored_series[(patient, metric, device)].append((ts_ns, value))
    extra = paired = 0
    for series in by_series.keys() | stored_series.keys():
        counts = _pair_in_order(
            sorted(by_series.get(series, []), key=lambda entry: entry.ts_ns),
            sorted(stored_series.get(series, [])),
            receipt_window_ns,
        )
        paired += counts[0]
        missing += counts[1]
        extra += counts[2]
        mismatches += counts[3]
    return Reconciliation(
        generated=len(expected) + sum(len(series) for series in by_series.values()),
        stored=len(stored),
        duplicate_identities=conflicts,
        missing=missing,
        extra=extra,
        value_mismatches=mismatches,
        receipt_stamped=paired,
    )

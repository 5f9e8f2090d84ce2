"""Builds the simulated ward: N patients sharing one ground-truth ledger."""

from __future__ import annotations

from pathlib import Path

from firmware_sims.ledger import Ledger
from firmware_sims.patient import SimulatedPatient


def simulated_ward(
    patients: int, seed: int, ledger_file: Path | None, interval_scale: float = 1.0
) -> tuple[list[SimulatedPatient], Ledger | None]:
    """Patients 1..N, seeded; the caller closes the ledger once the sources have stopped."""
    ledger = Ledger(ledger_file) if ledger_file is not None else None
    ward = [SimulatedPatient(i, seed, ledger, interval_scale) for i in range(1, patients + 1)]
    return ward, ledger

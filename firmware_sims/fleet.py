"""Builds the simulated ward: N patients sharing one ground-truth ledger, with their events."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from firmware_sims.events import EventSchedule
from firmware_sims.ledger import Ledger
from firmware_sims.patient import SimulatedPatient

DAY_S = 86_400.0


def simulated_ward(
    patients: int,
    seed: int,
    ledger_file: Path | None,
    *,
    interval_scale: float = 1.0,
    events_per_hour: float = 0.0,
    scripted_event: str | None = None,
) -> tuple[list[SimulatedPatient], Ledger | None]:
    """Patients 1..N, seeded; the caller closes the ledger once the sources have stopped.

    `events_per_hour` draws random clinical events for every patient over the next day;
    `scripted_event` gives patient 1 one episode of that kind that is already under way at start
    and resolves within about ten seconds, so a short demo shows an alert raised and cleared.
    """
    now_s = time.time()
    ledger = Ledger(ledger_file) if ledger_file is not None else None
    ward = []
    for index in range(1, patients + 1):
        rng = np.random.default_rng([seed, index, 1])
        schedule = EventSchedule.draw(rng, now_s, DAY_S, events_per_hour)
        if scripted_event is not None and index == 1:
            schedule.scripted(scripted_event, start_s=now_s - 5.0, onset_s=1.0, plateau_s=12.0)
        ward.append(SimulatedPatient(index, seed, ledger, interval_scale, schedule))
    return ward, ledger

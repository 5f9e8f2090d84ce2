"""Offline cohorts replay exactly and carry their events and artifacts."""

from __future__ import annotations

import math

from edge_agent.protocol import by_name
from firmware_sims.cohort import PROBE_OFF_QUALITY, simulate_patient

T0 = 1_767_225_600.0


def test_a_cohort_patient_replays_exactly_and_is_time_ordered() -> None:
    first = simulate_patient(1, 5, T0, 2.0, events_per_hour=1.0)
    again = simulate_patient(1, 5, T0, 2.0, events_per_hour=1.0)
    assert first.readings == again.readings
    assert first.truths == again.truths
    stamps = [r.ts_ns for r in first.readings]
    assert stamps == sorted(stamps)
    hr = by_name("heart_rate").code
    assert sum(1 for r in first.readings if r.metric_code == hr) == 2 * 3600


def test_probe_off_readings_carry_the_quality_bit_and_no_value() -> None:
    patient = simulate_patient(2, 9, T0, 6.0, events_per_hour=0.0)
    assert patient.artifacts > 0
    assert patient.truths == []
    flagged = [r for r in patient.readings if r.quality == PROBE_OFF_QUALITY]
    assert flagged
    assert all(math.isnan(r.value) for r in flagged)  # the oximeter has no reading

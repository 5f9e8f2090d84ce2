"""Seeded offline cohorts: hours of readings per patient, with events, artifacts and the truth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from edge_agent.devices import quality
from edge_agent.protocol import by_name
from edge_agent.sources.base import Reading
from firmware_sims.events import EventSchedule, GroundTruth
from firmware_sims.patient import mint_token
from firmware_sims.physiology import MODELS, VitalGenerator, quantise

NS: Final = 1_000_000_000
# (device kind, metrics, interval): the ward kit at the rates real devices report.
DEVICE_PLAN: Final = (
    ("hr-strap", ("heart_rate",), 1.0),
    ("pulse-oximeter", ("spo2",), 1.0),
    ("resp-patch", ("resp_rate",), 4.0),
    ("thermometer", ("body_temp",), 10.0),
    ("bp-cuff", ("bp_systolic", "bp_diastolic"), 900.0),
)
PROBE_OFF_QUALITY: Final = quality.PROBE_OFF  # what a pulse oximeter reports with the probe off


@dataclass(slots=True, frozen=True)
class ArtifactRates:
    """Per-hour rates of the artifacts that must not become clinical alerts."""

    probe_off_per_h: float = 0.5
    hr_spike_per_h: float = 6.0
    spo2_motion_per_h: float = 4.0


@dataclass(slots=True)
class CohortPatient:
    token: str
    readings: list[Reading] = field(default_factory=list)
    truths: list[GroundTruth] = field(default_factory=list)
    artifacts: int = 0


def _poisson_times(
    rng: np.random.Generator, start_s: float, span_s: float, per_h: float
) -> list[float]:
    if per_h <= 0:
        return []
    count = int(rng.poisson(per_h * span_s / 3600.0))
    return sorted(float(t) for t in rng.uniform(start_s, start_s + span_s, size=count))


def simulate_patient(
    index: int,
    seed: int,
    start_s: float,
    hours: float,
    *,
    events_per_hour: float,
    artifacts: ArtifactRates | None = None,
) -> CohortPatient:
    """One patient's readings in time order, with injected events and artifacts."""
    rng = np.random.default_rng([seed, index, 7])
    artifacts = artifacts or ArtifactRates()
    span_s = hours * 3600.0
    patient = CohortPatient(mint_token(rng))
    schedule = EventSchedule.draw(rng, start_s, span_s, events_per_hour)
    patient.truths = schedule.ground_truth(patient.token)
    probe_off = [
        (t, t + float(rng.uniform(10, 60)))
        for t in _poisson_times(rng, start_s, span_s, artifacts.probe_off_per_h)
    ]
    hr_spikes = {round(t) for t in _poisson_times(rng, start_s, span_s, artifacts.hr_spike_per_h)}
    motion = [
        (t, t + float(rng.integers(2, 5)))
        for t in _poisson_times(rng, start_s, span_s, artifacts.spo2_motion_per_h)
    ]
    patient.artifacts = len(probe_off) + len(hr_spikes) + len(motion)
    for kind, metrics, interval_s in DEVICE_PLAN:
        device = mint_token(rng)
        generators = {metric: VitalGenerator(MODELS[metric], rng) for metric in metrics}
        for step in range(int(span_s / interval_s)):
            t_s = start_s + step * interval_s
            for metric, generator in generators.items():
                value = quantise(MODELS[metric], schedule.apply(metric, t_s, generator.sample(t_s)))
                quality = 0
                if metric == "spo2" and any(a <= t_s < b for a, b in probe_off):
                    value, quality = math.nan, PROBE_OFF_QUALITY
                elif metric == "spo2" and any(a <= t_s < b for a, b in motion):
                    value = float(rng.integers(72, 86))
                elif metric == "heart_rate" and round(t_s) in hr_spikes:
                    value = min(250.0, value + float(rng.integers(45, 80)))
                patient.readings.append(
                    Reading(
                        device,
                        patient.token,
                        kind,
                        by_name(metric).code,
                        int(t_s * NS),
                        value,
                        quality,
                    )
                )
    patient.readings.sort(key=lambda r: r.ts_ns)
    return patient

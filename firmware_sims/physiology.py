"""Seeded vital-sign generators (baseline + circadian cosinor + Ornstein-Uhlenbeck drift + noise),
the room's climate, and the heart rate's response to a warm room."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from edge_agent.protocol import by_name
from firmware_sims.events import EventSchedule

SECONDS_PER_DAY: Final = 86_400.0


@dataclass(slots=True, frozen=True)
class VitalModel:
    """Parameters of one vital sign for an average adult inpatient at rest (DESIGN §7)."""

    metric: str
    baseline: float
    between_patient_sd: float
    circadian_amplitude: float
    acrophase_h: float
    drift_sd: float
    drift_tau_s: float
    noise_sd: float
    resolution: float
    low: float
    high: float


# `low`..`high` bound a stable ward patient's physiology (no event under way); events may leave
# it, up to the catalogue's plausible range. Resolutions are the devices' own.
MODELS: Final[dict[str, VitalModel]] = {
    m.metric: m
    for m in (
        VitalModel("heart_rate", 74.0, 7.0, 5.0, 16.0, 4.0, 300.0, 1.0, 1.0, 50.0, 115.0),
        VitalModel("spo2", 97.0, 1.0, 0.3, 4.0, 0.8, 600.0, 0.4, 1.0, 93.0, 100.0),
        VitalModel("resp_rate", 16.0, 1.5, 1.0, 15.0, 1.0, 600.0, 0.7, 1.0, 10.0, 40.0),
        VitalModel("body_temp", 36.8, 0.2, 0.3, 18.0, 0.15, 1800.0, 0.05, 0.1, 35.8, 37.9),
        VitalModel("bp_systolic", 122.0, 8.0, 6.0, 14.0, 4.0, 900.0, 3.0, 1.0, 96.0, 175.0),
        VitalModel("bp_diastolic", 78.0, 6.0, 4.0, 14.0, 3.0, 900.0, 2.0, 1.0, 55.0, 105.0),
    )
}


class VitalGenerator:
    """Draws successive values of one vital for one patient; seeded, so a run is replayable."""

    def __init__(self, model: VitalModel, rng: np.random.Generator) -> None:
        self.model = model
        self._rng = rng
        self._personal_mean = model.baseline + rng.normal(0.0, model.between_patient_sd)
        self._drift = rng.normal(0.0, model.drift_sd)
        self._last_t_s: float | None = None

    def _advance_drift(self, t_s: float) -> None:
        # Exact OU transition over dt: mean-reverting with stationary sd = drift_sd.
        if self._last_t_s is not None:
            dt_s = max(0.0, t_s - self._last_t_s)
            decay = math.exp(-dt_s / self.model.drift_tau_s)
            step_sd = self.model.drift_sd * math.sqrt(1.0 - decay * decay)
            self._drift = self._drift * decay + self._rng.normal(0.0, step_sd)
        self._last_t_s = t_s

    def sample(self, t_s: float, offset: float = 0.0) -> float:
        """The measured value at UNIX time `t_s` (plus `offset`), clipped and quantised."""
        m = self.model
        self._advance_drift(t_s)
        hour = (t_s % SECONDS_PER_DAY) / 3600.0
        circadian = m.circadian_amplitude * math.cos(2.0 * math.pi * (hour - m.acrophase_h) / 24.0)
        raw = self._personal_mean + circadian + self._drift + offset
        raw += self._rng.normal(0.0, m.noise_sd)
        return _round(min(m.high, max(m.low, raw)), m.resolution)


# A ward room held near 22 °C by its ventilation, rooms 1 °C apart (sd), warmest in the afternoon.
ROOM_MEAN_C: Final = 22.0
ROOM_BETWEEN_SD_C: Final = 1.0
ROOM_CIRCADIAN_AMPLITUDE_C: Final = 0.8
ROOM_ACROPHASE_H: Final = 15.0

# The simulation's ground truth for the heart rate's response to the room (docs/report.md,
# "Checked against the simulation"): at rest the rate does not depend on the room up to
# THERMONEUTRAL_C and rises by HEART_RATE_BPM_PER_C for every degree above it, at once and for
# every patient alike.
# Heat makes the heart beat faster to carry blood to the skin; laboratory heat exposures at rest
# raise it by tens of beats per minute (Meade et al., "Meta-analysis of heat-induced changes in
# cardiac function from over 400 laboratory-based heat exposure studies", Nat Commun 2025;
# 16:2543). The 3 /min per °C is a round value of that order chosen for the simulation, not an
# estimate taken from the paper; 25 °C is where the population report starts its regression.
THERMONEUTRAL_C: Final = 25.0
HEART_RATE_BPM_PER_C: Final = 3.0


def heat_response_bpm(room_c: float) -> float:
    """How much faster the heart beats in a room at `room_c` than in a thermoneutral one."""
    return HEART_RATE_BPM_PER_C * max(0.0, room_c - THERMONEUTRAL_C)


class RoomClimate:
    """The air temperature of one room (the bay a gateway serves) over time.

    A deterministic function of time, so the room sensor and every patient in the room read the
    same temperature at any moment, in any order: the room's own level, a daily cosinor, and
    its events (a warm room) pulling it towards their targets. Ventilation keeps the room from
    drifting otherwise; the sensor adds its measurement noise.
    """

    def __init__(
        self,
        mean_c: float = ROOM_MEAN_C,
        *,
        circadian_amplitude_c: float = ROOM_CIRCADIAN_AMPLITUDE_C,
        events: EventSchedule | None = None,
    ) -> None:
        self.mean_c = mean_c
        self.circadian_amplitude_c = circadian_amplitude_c
        self.events = events if events is not None else EventSchedule.none()

    @classmethod
    def draw(cls, rng: np.random.Generator, events: EventSchedule | None = None) -> RoomClimate:
        """A room of a seeded ward: its own level drawn around ROOM_MEAN_C."""
        return cls(ROOM_MEAN_C + float(rng.normal(0.0, ROOM_BETWEEN_SD_C)), events=events)

    def temp_c(self, t_s: float) -> float:
        """The room's air temperature at UNIX time `t_s`, events included (not quantised)."""
        hour = (t_s % SECONDS_PER_DAY) / 3600.0
        phase = 2.0 * math.pi * (hour - ROOM_ACROPHASE_H) / 24.0
        base = self.mean_c + self.circadian_amplitude_c * math.cos(phase)
        return self.events.apply("room_temp", t_s, base)


def quantise(model: VitalModel, value: float) -> float:
    """Clip to the catalogue's plausible range and round to the device resolution."""
    metric = by_name(model.metric)
    return _round(min(metric.plausible_max, max(metric.plausible_min, value)), model.resolution)


def _round(value: float, resolution: float) -> float:
    steps = round(value / resolution)
    # Round through the decimal string so 36.800000000000004 is stored as 36.8.
    return float(f"{steps * resolution:.6g}")

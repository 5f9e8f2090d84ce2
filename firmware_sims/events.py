"""Injected clinical events with ground-truth intervals: what a detector should find, and when.

Each event adds a smooth envelope to one or more vitals: a linear onset, a plateau and a linear
recovery (DESIGN §7). AF also makes the heart rate irregular. Everything is drawn from a seeded
generator, so a cohort replays exactly, and every event is returned as a `GroundTruth` interval
(onset start to recovery end) for scoring sensitivity, PPV and detection latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np


@dataclass(slots=True, frozen=True)
class EventKind:
    """How one kind of event moves the vitals (deltas at the plateau, in catalogue units)."""

    name: str
    deltas: tuple[tuple[str, float], ...]
    onset_s: tuple[float, float]
    plateau_s: tuple[float, float]
    recovery_s: tuple[float, float]
    irregular_sd: float = 0.0


# Magnitudes are those of ward deteriorations that early-warning scores are meant to catch.
EVENT_KINDS: Final[dict[str, EventKind]] = {
    k.name: k
    for k in (
        EventKind("desaturation", (("spo2", -11.0),), (20, 60), (60, 240), (30, 90)),
        EventKind("tachycardia", (("heart_rate", 55.0),), (30, 90), (120, 600), (60, 180)),
        EventKind("bradycardia", (("heart_rate", -42.0),), (10, 30), (60, 300), (20, 60)),
        EventKind("fever", (("body_temp", 2.2),), (600, 1200), (1800, 3600), (900, 1800)),
        EventKind(
            "hypotension",
            (("bp_systolic", -42.0), ("bp_diastolic", -22.0)),
            (120, 300),
            (600, 1800),
            (300, 600),
        ),
        EventKind("af", (("heart_rate", 38.0),), (5, 15), (300, 1200), (5, 15), irregular_sd=12.0),
    )
}


@dataclass(slots=True, frozen=True)
class GroundTruth:
    """One injected event: its kind and the interval in which it affects the vitals (UTC ns)."""

    patient: str
    kind: str
    start_ns: int
    end_ns: int
    plateau_start_ns: int
    plateau_end_ns: int


@dataclass(slots=True, frozen=True)
class _Scheduled:
    kind: EventKind
    start_s: float
    onset_s: float
    plateau_s: float
    recovery_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.onset_s + self.plateau_s + self.recovery_s

    def envelope(self, t_s: float) -> float:
        """0 outside the event, rising linearly to 1 over the onset, 1 on the plateau, then down."""
        x = t_s - self.start_s
        if x <= 0.0 or t_s >= self.end_s:
            return 0.0
        if x < self.onset_s:
            return x / self.onset_s
        x -= self.onset_s
        if x <= self.plateau_s:
            return 1.0
        return max(0.0, 1.0 - (x - self.plateau_s) / self.recovery_s)


class EventSchedule:
    """The events of one patient over a time span; `delta(metric, t_s)` is what they add."""

    def __init__(self, events: list[_Scheduled], rng: np.random.Generator) -> None:
        self._events = sorted(events, key=lambda e: e.start_s)
        self._rng = rng

    @classmethod
    def none(cls) -> EventSchedule:
        return cls([], np.random.default_rng(0))

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        start_s: float,
        duration_s: float,
        events_per_hour: float,
        *,
        kinds: tuple[str, ...] = tuple(EVENT_KINDS),
        gap_s: float = 600.0,
    ) -> EventSchedule:
        """Poisson arrivals of randomly chosen kinds; events of one patient never overlap."""
        events: list[_Scheduled] = []
        t_s = start_s + rng.exponential(3600.0 / events_per_hour) if events_per_hour > 0 else 1e18
        while t_s < start_s + duration_s:
            kind = EVENT_KINDS[kinds[int(rng.integers(len(kinds)))]]
            event = _Scheduled(
                kind,
                t_s,
                float(rng.uniform(*kind.onset_s)),
                float(rng.uniform(*kind.plateau_s)),
                float(rng.uniform(*kind.recovery_s)),
            )
            if event.end_s <= start_s + duration_s:
                events.append(event)
            t_s = event.end_s + gap_s + rng.exponential(3600.0 / events_per_hour)
        return cls(events, rng)

    def delta(self, metric: str, t_s: float) -> float:
        """What the events add to `metric` at time `t_s` (0 outside every event)."""
        total = 0.0
        for event in self._events:
            if event.start_s > t_s:
                break
            weight = event.envelope(t_s)
            if weight == 0.0:
                continue
            for name, delta in event.kind.deltas:
                if name == metric:
                    total += weight * delta
                    if event.kind.irregular_sd:
                        total += weight * float(self._rng.normal(0.0, event.kind.irregular_sd))
        return total

    def ground_truth(self, patient: str) -> list[GroundTruth]:
        ns = 1_000_000_000
        return [
            GroundTruth(
                patient,
                e.kind.name,
                int(e.start_s * ns),
                int(e.end_s * ns),
                int((e.start_s + e.onset_s) * ns),
                int((e.start_s + e.onset_s + e.plateau_s) * ns),
            )
            for e in self._events
        ]

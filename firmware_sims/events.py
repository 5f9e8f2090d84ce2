"""Injected clinical events with ground-truth intervals: what a detector should find, and when.

Each event pulls one or more vitals towards a target level drawn for that episode, through a
smooth envelope: a linear onset, a plateau and a linear recovery (DESIGN §7). AF also makes the
heart rate irregular. Everything is drawn from a seeded
generator, so a cohort replays exactly, and every event is returned as a `GroundTruth` interval
(onset start to recovery end) for scoring sensitivity, PPV and detection latency.

Room events (`ROOM_EVENT_KINDS`: a warm room) move the room's air temperature, not a vital of
one patient; they run on a room's own schedule (`firmware_sims.physiology.RoomClimate`) and are
kept out of `EVENT_KINDS`, the mix the detection evaluation draws from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np


@dataclass(slots=True, frozen=True)
class EventKind:
    """How one kind of event moves the vitals: plateau target ranges, in catalogue units."""

    name: str
    targets: tuple[tuple[str, float, float], ...]
    onset_s: tuple[float, float]
    plateau_s: tuple[float, float]
    recovery_s: tuple[float, float]
    irregular_sd: float = 0.0


# Magnitudes are those of ward deteriorations that early-warning scores are meant to catch.
EVENT_KINDS: Final[dict[str, EventKind]] = {
    k.name: k
    for k in (
        EventKind("desaturation", (("spo2", 82.0, 87.0),), (20, 60), (60, 240), (30, 90)),
        EventKind("tachycardia", (("heart_rate", 138.0, 160.0),), (30, 90), (120, 600), (60, 180)),
        EventKind("bradycardia", (("heart_rate", 30.0, 37.0),), (10, 30), (60, 300), (20, 60)),
        EventKind("fever", (("body_temp", 38.8, 40.0),), (600, 1200), (1800, 3600), (900, 1800)),
        EventKind(
            "hypotension",
            (("bp_systolic", 72.0, 86.0), ("bp_diastolic", 40.0, 52.0)),
            (120, 300),
            (900, 2400),
            (300, 600),
        ),
        EventKind(
            "af", (("heart_rate", 136.0, 155.0),), (5, 15), (300, 1200), (5, 15), irregular_sd=10.0
        ),
    )
}


# A room warming above the 25 °C from which the population report relates heart rate to room
# temperature (cloud_sink/report.py ROOM_WARM_C): a failed cooling unit or a sunny afternoon,
# over a few minutes, then back. Not a patient event: the detection evaluation's cohorts
# (firmware_sims.cohort) draw from EVENT_KINDS only, so adding a room kind changes none of them.
ROOM_EVENT_KINDS: Final[dict[str, EventKind]] = {
    k.name: k
    for k in (
        EventKind("warm_room", (("room_temp", 28.0, 31.0),), (120, 300), (300, 1200), (300, 900)),
    )
}
_ALL_KINDS: Final[dict[str, EventKind]] = {**EVENT_KINDS, **ROOM_EVENT_KINDS}


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
    targets: tuple[tuple[str, float], ...]

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
        """Poisson arrivals of randomly chosen kinds; events of one patient never overlap.

        `kinds` names clinical kinds (default: every one of EVENT_KINDS) or, for a room's own
        schedule, ROOM_EVENT_KINDS.
        """
        events: list[_Scheduled] = []
        t_s = start_s + rng.exponential(3600.0 / events_per_hour) if events_per_hour > 0 else 1e18
        while t_s < start_s + duration_s:
            kind = _ALL_KINDS[kinds[int(rng.integers(len(kinds)))]]
            event = _Scheduled(
                kind,
                t_s,
                float(rng.uniform(*kind.onset_s)),
                float(rng.uniform(*kind.plateau_s)),
                float(rng.uniform(*kind.recovery_s)),
                tuple((m, float(rng.uniform(low, high))) for m, low, high in kind.targets),
            )
            if event.end_s <= start_s + duration_s:
                events.append(event)
            t_s = event.end_s + gap_s + rng.exponential(3600.0 / events_per_hour)
        return cls(events, rng)

    def apply(self, metric: str, t_s: float, value: float) -> float:
        """`value` pulled towards the target of any event under way (unchanged outside events)."""
        for event in self._events:
            if event.start_s > t_s:
                break
            weight = event.envelope(t_s)
            if weight == 0.0:
                continue
            for name, target in event.targets:
                if name == metric:
                    value = value + weight * (target - value)
                    if event.kind.irregular_sd:
                        value += weight * float(self._rng.normal(0.0, event.kind.irregular_sd))
        return value

    def scripted(self, kind: str, start_s: float, onset_s: float, plateau_s: float) -> None:
        """Add one event at a fixed time, at the middle of its kind's target ranges (demos); the
        recovery lasts as long as the onset."""
        event_kind = _ALL_KINDS[kind]
        targets = tuple((m, (low + high) / 2.0) for m, low, high in event_kind.targets)
        self._events.append(_Scheduled(event_kind, start_s, onset_s, plateau_s, onset_s, targets))
        self._events.sort(key=lambda e: e.start_s)

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

"""Seeded physiology and injected events."""

from __future__ import annotations

import numpy as np

from firmware_sims.events import EVENT_KINDS, EventSchedule
from firmware_sims.physiology import MODELS, VitalGenerator

T0 = 1_767_225_600.0


def test_generators_replay_exactly_from_a_seed_and_stay_in_range() -> None:
    def series(seed: int) -> list[float]:
        gen = VitalGenerator(MODELS["heart_rate"], np.random.default_rng(seed))
        return [gen.sample(T0 + t) for t in range(600)]

    assert series(3) == series(3)
    assert series(3) != series(4)
    model = MODELS["heart_rate"]
    assert all(model.low <= v <= model.high and v == round(v) for v in series(3))


def test_event_pulls_the_vital_only_inside_its_ground_truth() -> None:
    rng = np.random.default_rng(1)
    schedule = EventSchedule.draw(rng, T0, 6 * 3600.0, events_per_hour=1.0, kinds=("desaturation",))
    truths = schedule.ground_truth("p")
    assert truths
    low, high = EVENT_KINDS["desaturation"].targets[0][1:]
    for truth in truths:
        plateau_s = (truth.plateau_start_ns + truth.plateau_end_ns) / 2e9
        assert low <= schedule.apply("spo2", plateau_s, 97.0) <= high
        assert schedule.apply("spo2", truth.start_ns / 1e9 - 1.0, 97.0) == 97.0
        assert schedule.apply("spo2", truth.end_ns / 1e9 + 1.0, 97.0) == 97.0
        assert schedule.apply("heart_rate", plateau_s, 70.0) == 70.0
    starts = [t.start_ns for t in truths]
    ends = [t.end_ns for t in truths]
    assert all(end < start for end, start in zip(ends, starts[1:], strict=False))


def test_offset_is_clipped_and_quantised_with_the_value() -> None:
    gen = VitalGenerator(MODELS["spo2"], np.random.default_rng(2))
    values = [gen.sample(T0 + t, offset=-40.0) for t in range(100)]
    assert min(values) >= MODELS["spo2"].low
    assert all(v == round(v) for v in values)

"""The kernels over any chunking of interleaved series give exactly the reference's flags."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.filters import FilterBank, Presets
from edge_agent.filters import flags as fl
from edge_agent.filters.presets import ALL_DETECTORS, DETECT_DROPOUT, MetricPreset
from edge_agent.filters.reference import ReferenceSeries, run_series

S = 1_000_000_000
T0 = 1_767_225_600 * S
METRICS = ("heart_rate", "spo2", "resp_rate")


@st.composite
def presets(draw: st.DrawFn, metric: str) -> MetricPreset:
    """Small windows and short times, so short series reach every detector's interesting states.

    Whole seconds and round thresholds make readings land exactly on the boundaries.
    """
    h = draw(st.sampled_from([1.0, 2.0, 4.5]))
    return MetricPreset(
        metric=metric,
        detectors=draw(st.integers(0, ALL_DETECTORS)),
        plausible_min=40.0,
        plausible_max=200.0,
        sentinels=draw(st.sampled_from([(), (72.0,), (150.0, 73.0)])),
        bad_quality_mask=draw(st.sampled_from([0, 1, 0b110, 0xFFFF_FFFF])),
        expected_interval_s=1.0,
        dropout_factor=draw(st.sampled_from([1.0, 2.0, 3.5])),
        hampel_window=draw(st.integers(3, 7)),
        hampel_threshold=draw(st.sampled_from([1.0, 2.0, 4.0])),
        hampel_floor=draw(st.sampled_from([0.5, 1.0, 3.0])),
        ewma_alpha=draw(st.sampled_from([0.05, 0.3, 1.0])),
        ewma_warmup=draw(st.integers(1, 6)),
        ewma_z_high=draw(st.sampled_from([1.0, 3.0])),
        ewma_z_low=draw(st.sampled_from([1.0, 3.0])),
        ewma_sd_floor=draw(st.sampled_from([0.5, 2.0])),
        ewma_winsor_z=draw(st.sampled_from([0.5, 3.0])),
        baseline_samples=draw(st.integers(1, 8)),
        baseline_sd_floor=draw(st.sampled_from([0.5, 2.0])),
        cusum_k=draw(st.sampled_from([0.0, 0.5, 1.0])),
        cusum_h=h,
        cusum_clamp=h * draw(st.sampled_from([1.0, 2.0])),
        rate_window_s=draw(st.sampled_from([0.5, 1.0, 3.0, 10.0])),
        rate_max_delta=draw(st.sampled_from([1.0, 5.0])),
        flatline_s=draw(st.sampled_from([0.5, 1.0, 2.0, 5.0])),
    )


# Readings: mostly integers near 72 (flat runs and MAD 0), some noise, spikes, NaN, inf,
# out-of-range values and sentinels; timestamps mostly 1 s apart, with gaps, repeats and returns.
INTEGERS = st.integers(70, 74).map(float)
VALUES = st.one_of(
    INTEGERS,
    INTEGERS,
    INTEGERS,
    st.floats(60.0, 90.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 10.0, 500.0, 150.0, 72.0, 120.0, 45.0]),
)
STEPS_NS = st.one_of(
    st.just(S),
    st.sampled_from([0, 1, S // 2, 2 * S, 7 * S, 60 * S, -S]),
    st.integers(-3, 12).map(lambda seconds: seconds * S),
    st.integers(-3 * S, 40 * S),
)
READING = st.tuples(
    st.integers(1, 4), VALUES, STEPS_NS, st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 4])
)


@st.composite
def series_readings(draw: st.DrawFn) -> tuple[list[int], list[float], list[int]]:
    """One series as runs of repeated readings (flat runs are what the MAD floor is for)."""
    runs = draw(st.lists(READING, min_size=1, max_size=30))
    ts_ns: list[int] = []
    values: list[float] = []
    quality: list[int] = []
    now = T0
    for repeat, value, step_ns, bits in runs:
        for _ in range(repeat):
            now += step_ns
            ts_ns.append(now)
            values.append(value)
            quality.append(bits)
    return ts_ns, values, quality


def assert_same_state(bank_state: object, reference_state: object) -> None:
    got = dataclasses.asdict(bank_state)  # type: ignore[call-overload]
    want = dataclasses.asdict(reference_state)  # type: ignore[call-overload]
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert _close(got[key], value), (key, got[key], value)


def _close(got: Any, want: Any) -> bool:
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=0.0, abs_tol=1e-9)
    if isinstance(want, tuple):
        return (
            isinstance(got, tuple)
            and len(got) == len(want)
            and all(_close(g, w) for g, w in zip(got, want, strict=True))
        )
    return bool(got == want)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_chunking_of_interleaved_series_gives_the_reference_flags(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 3), label="series")
    chosen = [data.draw(presets(METRICS[i]), label=f"preset{i}") for i in range(count)]
    streams = [data.draw(series_readings(), label=f"series{i}") for i in range(count)]
    # Interleave the series in a random order that keeps each one's own order.
    labels = [i for i, stream in enumerate(streams) for _ in stream[0]]
    order = data.draw(st.permutations(labels), label="interleaving")
    cursor = [0] * count
    rows: list[tuple[int, int, float, int]] = []
    for i in order:
        ts_ns, values, quality = streams[i]
        at = cursor[i]
        rows.append((i, ts_ns[at], values[at], quality[at]))
        cursor[i] += 1
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=8), label="cuts"))
    bank_detectors = data.draw(st.sampled_from([ALL_DETECTORS, ALL_DETECTORS, 0b010101]))

    bank = FilterBank(Presets.of(*chosen), detectors=bank_detectors, initial_capacity=1)
    ids = [bank.series_id(f"device-{i}", preset.metric) for i, preset in enumerate(chosen)]
    flags: list[int] = []
    for start, end in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        chunk = rows[start:end]
        out = bank.process(
            np.array([ids[row[0]] for row in chunk], np.int64),
            np.array([row[1] for row in chunk], np.int64),
            np.array([row[2] for row in chunk], np.float64),
            np.array([row[3] for row in chunk], np.uint32),
        )
        flags.extend(int(bits) for bits in out)

    for i, preset in enumerate(chosen):
        mine = [bits for row, bits in zip(rows, flags, strict=True) if row[0] == i]
        want, state = run_series(preset, *streams[i], detectors=bank_detectors)
        assert mine == want
        assert_same_state(bank.snapshot(ids[i]), state)


@settings(max_examples=100, deadline=None)
@given(preset=presets("heart_rate"), stream=series_readings())
def test_unusable_readings_leave_the_other_readings_flags_alone(
    preset: MetricPreset, stream: tuple[list[int], list[float], list[int]]
) -> None:
    """NaNs, implausible and bad-quality readings never poison state: dropping them changes no
    other reading's statistical flags (dropout is left out: removing readings makes gaps)."""
    ts_ns, values, quality = stream
    preset = dataclasses.replace(preset, detectors=preset.detectors & ~DETECT_DROPOUT)
    full, _ = run_series(preset, ts_ns, values, quality)
    bank = FilterBank(Presets.of(preset))
    series = bank.series_id("device", preset.metric)
    assert bank.process(series, ts_ns, values, quality).tolist() == full
    reference = ReferenceSeries(preset)
    for i, bits in enumerate(full):
        if not bits & fl.UNUSABLE:
            assert reference.step(ts_ns[i], values[i], quality[i]) == bits

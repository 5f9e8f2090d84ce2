"""Each detector on hand-made series, run against both the numba kernels and the reference."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent.filters import FilterBank, Presets
from edge_agent.filters import flags as fl
from edge_agent.filters.presets import (
    DETECT_CUSUM,
    DETECT_DROPOUT,
    DETECT_EWMA,
    DETECT_FLATLINE,
    DETECT_HAMPEL,
    DETECT_RATE,
    MetricPreset,
)
from edge_agent.filters.reference import ReferenceSeries

Runner = Callable[[MetricPreset, Sequence[int], Sequence[float], Sequence[int]], list[int]]
S = 1_000_000_000
T0 = 1_767_225_600 * S
STATISTICAL = (
    fl.SPIKE
    | fl.EWMA_HIGH
    | fl.EWMA_LOW
    | fl.CUSUM_HIGH
    | fl.CUSUM_LOW
    | fl.RATE_HIGH
    | fl.FLATLINE
    | fl.WARMUP
)


def every_second(count: int, start_s: float = 0.0) -> list[int]:
    return [T0 + int((start_s + i) * S) for i in range(count)]


def only(preset: MetricPreset, detectors: int, **changes: Any) -> MetricPreset:
    """The preset with just these detectors and a few changed values."""
    return dataclasses.replace(preset, detectors=detectors, **changes)


def indices(flags: list[int], bit: int) -> list[int]:
    return [i for i, bits in enumerate(flags) if bits & bit]


def test_a_spike_is_flagged_and_the_readings_around_it_are_not(
    run: Runner, shipped: Presets
) -> None:
    values = [70.0, 71, 70, 69, 70, 71, 70, 70, 69, 70, 71, 70, 130, 70, 71]
    flags = run(shipped.get("heart_rate"), every_second(len(values)), values, [0] * len(values))
    assert indices(flags, fl.SPIKE) == [12]


def test_a_flat_integer_heart_rate_of_72_is_never_a_spike(run: Runner, shipped: Presets) -> None:
    values = [73.0 if i % 7 == 0 else 71.0 if i % 11 == 0 else 72.0 for i in range(600)]
    flags = run(shipped.get("heart_rate"), every_second(600), values, [0] * 600)
    assert indices(flags, fl.SPIKE) == []


def test_the_mad_floor_sets_the_smallest_spike(run: Runner, shipped: Presets) -> None:
    # heart_rate: threshold 4 x floor 3 bpm = 12 bpm from the median of a flat window.
    hr = shipped.get("heart_rate")
    assert run(hr, every_second(21), [72.0] * 20 + [84.0], [0] * 21)[20] & fl.SPIKE == 0
    assert run(hr, every_second(21), [72.0] * 20 + [85.0], [0] * 21)[20] & fl.SPIKE


def test_a_60_s_gap_raises_dropout_on_the_first_reading_after_it(
    run: Runner, shipped: Presets
) -> None:
    ts_ns = every_second(30) + every_second(10, start_s=90.0)
    flags = run(shipped.get("heart_rate"), ts_ns, [70.0] * 40, [0] * 40)
    assert indices(flags, fl.DROPOUT) == [30]


def test_dropout_needs_a_gap_longer_than_k_intervals(run: Runner, shipped: Presets) -> None:
    hr = shipped.get("heart_rate")  # 10 x 1 s
    exactly = [T0, T0 + 10 * S, T0 + 10 * S + 10 * S + 1]
    assert run(hr, exactly, [70.0] * 3, [0] * 3) == [
        fl.WARMUP,
        fl.WARMUP,
        fl.WARMUP | fl.DROPOUT,
    ]


def test_nan_is_missing_and_changes_no_detector_state(shipped: Presets) -> None:
    hr = shipped.get("heart_rate")
    bank = FilterBank(Presets.of(hr))
    series = bank.series_id("hr-01", "heart_rate")
    reference = ReferenceSeries(hr)
    values = [70.0 + (i % 3) for i in range(40)]
    bank.process(series, every_second(40), values, [0] * 40)
    for t, v in zip(every_second(40), values, strict=True):
        reference.step(t, v, 0)
    before = dataclasses.asdict(bank.snapshot(series))
    reference_before = dataclasses.asdict(reference.state())
    nan_ts = T0 + 40 * S
    flags = bank.process(series, [nan_ts], [math.nan], [0])
    assert flags.tolist() == [fl.IMPLAUSIBLE | fl.MISSING]
    assert reference.step(nan_ts, math.nan, 0) == fl.IMPLAUSIBLE | fl.MISSING
    after = dataclasses.asdict(bank.snapshot(series))
    reference_after = dataclasses.asdict(reference.state())
    for state_before, state_after in ((before, after), (reference_before, reference_after)):
        assert state_after.pop("samples_seen") == state_before.pop("samples_seen") + 1
        assert state_after.pop("last_ts_ns") == nan_ts
        state_before.pop("last_ts_ns")
        assert state_after == state_before


def test_out_of_range_infinity_and_sentinels_are_implausible_not_missing(
    run: Runner, shipped: Presets
) -> None:
    values = [70.0, 255.0, math.inf, -math.inf, 19.9, 300.1, 300.0, 20.0]
    flags = run(shipped.get("pulse_rate"), every_second(8), values, [0] * 8)
    assert indices(flags, fl.IMPLAUSIBLE) == [1, 2, 3, 4, 5]
    assert indices(flags, fl.MISSING) == []


def test_quality_bits_in_the_mask_make_a_reading_unusable(run: Runner, shipped: Presets) -> None:
    preset = dataclasses.replace(shipped.get("spo2"), bad_quality_mask=0b10)
    flags = run(preset, every_second(4), [97.0] * 4, [0, 1, 2, 3])
    assert indices(flags, fl.QUALITY_BAD) == [2, 3]


def test_late_and_repeated_timestamps_are_out_of_order_and_change_nothing(
    run: Runner, shipped: Presets
) -> None:
    hr = shipped.get("heart_rate")
    ts_ns = [T0 + s * S for s in (0, 1, 2, 2, 1, 3, 4)]
    values = [70.0, 71.0, 70.0, 90.0, 50.0, 71.0, 70.0]
    flags = run(hr, ts_ns, values, [0] * 7)
    assert indices(flags, fl.OUT_OF_ORDER) == [3, 4]
    kept = [0, 1, 2, 5, 6]
    without = run(hr, [ts_ns[i] for i in kept], [values[i] for i in kept], [0] * 5)
    assert [flags[i] for i in kept] == without


def test_ewma_flags_levels_far_from_the_recent_mean_after_warm_up(
    run: Runner, shipped: Presets
) -> None:
    preset = only(
        shipped.get("heart_rate"), DETECT_EWMA, ewma_alpha=0.1, ewma_warmup=5, ewma_sd_floor=1.0
    )
    flags = run(preset, every_second(12), [70.0] * 10 + [80.0, 60.0], [0] * 12)
    assert indices(flags, fl.WARMUP) == [0, 1, 2, 3, 4]
    assert indices(flags, fl.EWMA_HIGH) == [10]
    assert indices(flags, fl.EWMA_LOW) == [11]
    quiet = run(preset, every_second(11), [70.0] * 10 + [73.0], [0] * 11)
    assert indices(quiet, fl.EWMA_HIGH | fl.EWMA_LOW) == []


def test_ewma_updates_are_winsorised(shipped: Presets) -> None:
    preset = only(
        shipped.get("heart_rate"), DETECT_EWMA, ewma_alpha=0.1, ewma_warmup=5, ewma_sd_floor=1.0
    )
    bank = FilterBank(Presets.of(preset))
    series = bank.series_id("hr-01", "heart_rate")
    flags = bank.process(series, every_second(12), [70.0] * 10 + [200.0, 70.0], [0] * 12)
    # The outlier counted as mean + 3 sd = 73: the level moved 0.3, so 70 is not low afterwards.
    assert flags[10] & fl.EWMA_HIGH
    assert flags[11] & fl.EWMA_LOW == 0
    assert math.isclose(bank.snapshot(series).ewma_mean, 70.27, abs_tol=1e-9)


def test_cusum_raises_on_a_sustained_shift_and_clears_after_it(
    run: Runner, shipped: Presets
) -> None:
    preset = only(
        shipped.get("heart_rate"),
        DETECT_CUSUM,
        baseline_samples=10,
        baseline_sd_floor=2.0,
        cusum_k=1.0,
        cusum_h=5.0,
        cusum_clamp=10.0,
    )
    # Baseline 70 (sd floor 2); 76 is z = 3, +2 per reading: 2, 4, 6 > 5 at the third; the sum
    # saturates at 10, then falls by k = 1 per reading at baseline: 9, 8, 7, 6 are still above 5.
    values = [70.0] * 10 + [76.0] * 8 + [70.0] * 6
    flags = run(preset, every_second(len(values)), values, [0] * len(values))
    assert indices(flags, fl.WARMUP) == list(range(10))
    assert indices(flags, fl.CUSUM_HIGH) == [*range(12, 18), 18, 19, 20, 21]
    low = [70.0] * 10 + [64.0] * 3
    assert indices(run(preset, every_second(13), low, [0] * 13), fl.CUSUM_LOW) == [12]


def test_rate_of_change_is_measured_over_time_not_readings(run: Runner, shipped: Presets) -> None:
    preset = only(shipped.get("spo2"), DETECT_RATE, rate_window_s=60.0, rate_max_delta=4.0)
    falling = [97.0 - i for i in range(8)]  # one point every 10 s
    ts_ns = [T0 + i * 10 * S for i in range(8)]
    # Against the oldest reading within 60 s: 5 points at 50 s, still 5 within the window after.
    assert indices(run(preset, ts_ns, falling, [0] * 8), fl.RATE_HIGH) == [5, 6, 7]
    # The same readings a minute and a half apart never change by more than 1 within a window.
    slow = [T0 + i * 90 * S for i in range(8)]
    assert indices(run(preset, slow, falling, [0] * 8), fl.RATE_HIGH) == []
    # The window includes its edge: 60 s apart still counts, 60 s + 1 ns does not.
    edge = run(preset, [T0, T0 + 60 * S], [97.0, 90.0], [0, 0])
    past = run(preset, [T0, T0 + 60 * S + 1], [97.0, 90.0], [0, 0])
    assert (indices(edge, fl.RATE_HIGH), indices(past, fl.RATE_HIGH)) == ([1], [])


def test_flatline_after_identical_values_for_longer_than_the_limit(
    run: Runner, shipped: Presets
) -> None:
    preset = only(shipped.get("heart_rate"), DETECT_FLATLINE, flatline_s=5.0)
    values = [70.0] * 11 + [71.0] * 8
    flags = run(preset, every_second(19), values, [0] * 19)
    assert indices(flags, fl.FLATLINE) == [6, 7, 8, 9, 10, 17, 18]


def test_detectors_left_out_of_a_preset_never_flag(run: Runner, shipped: Presets) -> None:
    preset = only(shipped.get("heart_rate"), 0)
    values = [70.0] * 30 + [150.0, math.nan, 70.0, 70.0] + [40.0] * 30
    ts_ns = every_second(34) + every_second(30, start_s=200.0)
    flags = run(preset, ts_ns, values, [0] * len(values))
    assert all(bits & (STATISTICAL | fl.DROPOUT) == 0 for bits in flags)
    assert indices(flags, fl.MISSING) == [31]


def test_a_spike_feeds_the_hampel_window_and_nothing_else(shipped: Presets) -> None:
    preset = only(shipped.get("heart_rate"), DETECT_HAMPEL | DETECT_EWMA | DETECT_RATE)
    bank = FilterBank(Presets.of(preset))
    series = bank.series_id("hr-01", "heart_rate")
    bank.process(series, every_second(20), [70.0] * 20, [0] * 20)
    before = bank.snapshot(series)
    flags = bank.process(series, [T0 + 20 * S], [150.0], [0])
    after = bank.snapshot(series)
    assert flags[0] & fl.SPIKE
    assert after.hampel_window[-1] == 150.0
    assert (after.ewma_count, after.ewma_mean, after.rate_window) == (
        before.ewma_count,
        before.ewma_mean,
        before.rate_window,
    )


def test_warmup_lasts_until_every_statistical_detector_is_ready(
    run: Runner, shipped: Presets
) -> None:
    preset = only(
        shipped.get("heart_rate"),
        DETECT_HAMPEL | DETECT_EWMA | DETECT_CUSUM | DETECT_DROPOUT,
        ewma_warmup=3,
        baseline_samples=12,
    )
    flags = run(preset, every_second(20), [70.0] * 20, [0] * 20)
    # Hampel needs 9 readings, EWMA 3, the baseline 12: the 13th reading is the first armed one.
    assert indices(flags, fl.WARMUP) == list(range(12))

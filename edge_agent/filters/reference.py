"""Plain-Python reference of every detector: the executable specification the kernels must match.

One `ReferenceSeries` filters one series, one reading at a time, with ordinary lists, deques and
`sorted`. It is written for a reader, not for speed; the tests check that the numba kernels give
exactly its flags for any chunking of any series, and `scripts/bench-filters.py` times both.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Final

from edge_agent.filters.flags import (
    CUSUM_HIGH,
    CUSUM_LOW,
    DROPOUT,
    EWMA_HIGH,
    EWMA_LOW,
    FLATLINE,
    IMPLAUSIBLE,
    MISSING,
    OUT_OF_ORDER,
    QUALITY_BAD,
    RATE_HIGH,
    SPIKE,
    UNUSABLE,
    WARMUP,
)
from edge_agent.filters.presets import (
    ALL_DETECTORS,
    DETECT_CUSUM,
    DETECT_DROPOUT,
    DETECT_EWMA,
    DETECT_FLATLINE,
    DETECT_HAMPEL,
    DETECT_RATE,
    RATE_CAPACITY,
    MetricPreset,
)
from edge_agent.filters.state import SeriesSnapshot

# Scales a MAD to a standard deviation for normal data (Rousseeuw & Croux 1993: 1/Φ⁻¹(3/4)).
MAD_TO_SIGMA: Final = 1.4826


def median(ordered: Sequence[float]) -> float:
    """Median of ascending values; the mean of the middle two when their count is even."""
    half = len(ordered) // 2
    if len(ordered) % 2 == 1:
        return ordered[half]
    return (ordered[half - 1] + ordered[half]) / 2.0


def robust_centre_and_sd(values: Sequence[float]) -> tuple[float, float]:
    """Median, and 1.4826 * the median absolute deviation from it (unfloored)."""
    ordered = sorted(values)
    centre = median(ordered)
    mad = median(sorted(abs(value - centre) for value in ordered))
    return centre, MAD_TO_SIGMA * mad


class ReferenceSeries:
    """Every detector of the bank for one series, in the order the bank applies them."""

    def __init__(self, preset: MetricPreset, detectors: int = ALL_DETECTORS) -> None:
        self.preset = preset
        self.detectors = preset.detectors & detectors
        # Ordering and dropout.
        self.samples_seen = 0
        self.last_ts_ns: int | None = None
        # Hampel: the last W usable values, oldest first.
        self.hampel_window: deque[float] = deque(maxlen=preset.hampel_window)
        # EWMA level and spread.
        self.ewma_count = 0
        self.ewma_mean = 0.0
        self.ewma_var = 0.0
        # Personal baseline, learned from the first N usable values, and the CUSUM sums.
        self.baseline_values: list[float] = []
        self.baseline_progress = 0
        self.baseline: float | None = None
        self.baseline_sd: float | None = None
        self.baseline_at_ns: int | None = None
        self.cusum_high = 0.0
        self.cusum_low = 0.0
        # Rate of change: (timestamp, value) pairs within the time window, oldest first.
        self.rate_window: deque[tuple[int, float]] = deque(maxlen=RATE_CAPACITY)
        # Flatline: the current run of identical values and when it started.
        self.flat_value: float | None = None
        self.flat_start_ns: int | None = None

    def uses(self, detector: int) -> bool:
        return bool(self.detectors & detector)

    def restore_baseline(self, value: float, sd: float, samples: int, learned_at_ns: int) -> None:
        """Adopt a saved baseline, as `FilterBank.restore_baselines` does."""
        self.baseline = value
        self.baseline_sd = sd
        self.baseline_progress = samples
        self.baseline_at_ns = learned_at_ns
        self.cusum_high = 0.0
        self.cusum_low = 0.0

    def step(self, ts_ns: int, value: float, quality: int) -> int:
        """Filter one reading and return its flags."""
        flags = 0
        if self.last_ts_ns is not None and ts_ns <= self.last_ts_ns:
            flags |= OUT_OF_ORDER
        else:
            if self.uses(DETECT_DROPOUT) and self.dropout(ts_ns):
                flags |= DROPOUT
            self.last_ts_ns = ts_ns
            self.samples_seen += 1
        flags |= self.plausibility(value, quality)
        if flags & UNUSABLE:
            return flags
        if self.warming_up():
            flags |= WARMUP
        if self.uses(DETECT_HAMPEL) and self.hampel(value):
            # An artifact: it stays in the Hampel window but teaches nothing else.
            return flags | SPIKE
        if self.uses(DETECT_EWMA):
            flags |= self.ewma(value)
        if self.uses(DETECT_CUSUM):
            if self.baseline is None or self.baseline_sd is None:
                self.learn_baseline(value, ts_ns)
            else:
                flags |= self.cusum(value, self.baseline, self.baseline_sd)
        if self.uses(DETECT_RATE) and self.rate(ts_ns, value):
            flags |= RATE_HIGH
        if self.uses(DETECT_FLATLINE) and self.flatline(ts_ns, value):
            flags |= FLATLINE
        return flags

    def dropout(self, ts_ns: int) -> bool:
        """A gap longer than dropout_factor * expected_interval_s since the last reading."""
        return self.last_ts_ns is not None and ts_ns - self.last_ts_ns > self.preset.dropout_ns

    def plausibility(self, value: float, quality: int) -> int:
        preset = self.preset
        flags = 0
        if math.isnan(value):
            flags = IMPLAUSIBLE | MISSING
        elif (
            math.isinf(value)
            or not preset.plausible_min <= value <= preset.plausible_max
            or value in preset.sentinels
        ):
            flags = IMPLAUSIBLE
        if quality & preset.bad_quality_mask:
            flags |= QUALITY_BAD
        return flags

    def warming_up(self) -> bool:
        return (
            (self.uses(DETECT_HAMPEL) and len(self.hampel_window) < self.preset.hampel_window)
            or (self.uses(DETECT_EWMA) and self.ewma_count < self.preset.ewma_warmup)
            or (self.uses(DETECT_CUSUM) and self.baseline is None)
        )

    def hampel(self, value: float) -> bool:
        preset = self.preset
        spike = False
        if len(self.hampel_window) == preset.hampel_window:
            centre, scale = robust_centre_and_sd(self.hampel_window)
            scale = max(scale, preset.hampel_floor)
            spike = abs(value - centre) > preset.hampel_threshold * scale
        self.hampel_window.append(value)
        return spike

    def ewma(self, value: float) -> int:
        preset = self.preset
        flags = 0
        if self.ewma_count >= preset.ewma_warmup:
            sd = max(math.sqrt(self.ewma_var), preset.ewma_sd_floor)
            z = (value - self.ewma_mean) / sd
            if z > preset.ewma_z_high:
                flags = EWMA_HIGH
            elif z < -preset.ewma_z_low:
                flags = EWMA_LOW
            low = self.ewma_mean - preset.ewma_winsor_z * sd
            high = self.ewma_mean + preset.ewma_winsor_z * sd
            update = min(max(value, low), high)
            weight = preset.ewma_alpha
        else:
            update = value
            weight = max(1.0 / (self.ewma_count + 1), preset.ewma_alpha)
        delta = update - self.ewma_mean
        self.ewma_mean = self.ewma_mean + weight * delta
        self.ewma_var = (1.0 - weight) * (self.ewma_var + weight * delta * delta)
        self.ewma_count += 1
        return flags

    def learn_baseline(self, value: float, ts_ns: int) -> None:
        self.baseline_values.append(value)
        self.baseline_progress += 1
        if len(self.baseline_values) == self.preset.baseline_samples:
            centre, sd = robust_centre_and_sd(self.baseline_values)
            self.baseline = centre
            self.baseline_sd = max(sd, self.preset.baseline_sd_floor)
            self.baseline_at_ns = ts_ns

    def cusum(self, value: float, baseline: float, baseline_sd: float) -> int:
        preset = self.preset
        z = (value - baseline) / baseline_sd
        self.cusum_high = min(max(self.cusum_high + z - preset.cusum_k, 0.0), preset.cusum_clamp)
        self.cusum_low = min(max(self.cusum_low - z - preset.cusum_k, 0.0), preset.cusum_clamp)
        flags = 0
        if self.cusum_high > preset.cusum_h:
            flags |= CUSUM_HIGH
        if self.cusum_low > preset.cusum_h:
            flags |= CUSUM_LOW
        return flags

    def rate(self, ts_ns: int, value: float) -> bool:
        window = self.rate_window
        while window and ts_ns - window[0][0] > self.preset.rate_window_ns:
            window.popleft()
        too_fast = bool(window) and abs(value - window[0][1]) > self.preset.rate_max_delta
        window.append((ts_ns, value))  # a full deque drops its oldest pair
        return too_fast

    def flatline(self, ts_ns: int, value: float) -> bool:
        if self.flat_start_ns is not None and value == self.flat_value:
            return ts_ns - self.flat_start_ns > self.preset.flatline_ns
        self.flat_value = value
        self.flat_start_ns = ts_ns
        return False

    def state(self) -> SeriesSnapshot:
        return SeriesSnapshot(
            samples_seen=self.samples_seen,
            last_ts_ns=self.last_ts_ns,
            hampel_window=tuple(self.hampel_window),
            ewma_count=self.ewma_count,
            ewma_mean=self.ewma_mean,
            ewma_var=self.ewma_var,
            baseline_progress=self.baseline_progress,
            baseline=self.baseline,
            baseline_sd=self.baseline_sd,
            baseline_at_ns=self.baseline_at_ns,
            cusum_high=self.cusum_high,
            cusum_low=self.cusum_low,
            rate_window=tuple(self.rate_window),
            flat_value=self.flat_value,
            flat_start_ns=self.flat_start_ns,
        )


def run_series(
    preset: MetricPreset,
    ts_ns: Sequence[int],
    values: Sequence[float],
    quality: Sequence[int],
    *,
    detectors: int = ALL_DETECTORS,
) -> tuple[list[int], SeriesSnapshot]:
    """Filter a whole series at once: its flags, and the state after its last reading."""
    series = ReferenceSeries(preset, detectors)
    flags = [
        series.step(int(ts), float(value), int(bits))
        for ts, value, bits in zip(ts_ns, values, quality, strict=True)
    ]
    return flags, series.state()

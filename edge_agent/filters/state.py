"""The per-series state of the filters, as both the bank and the reference report it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class SeriesSnapshot:
    """Every state value of one series, for inspection and for the equivalence tests."""

    samples_seen: int
    last_ts_ns: int | None
    hampel_window: tuple[float, ...]
    ewma_count: int
    ewma_mean: float
    ewma_var: float
    baseline_progress: int
    baseline: float | None
    baseline_sd: float | None
    baseline_at_ns: int | None
    cusum_high: float
    cusum_low: float
    rate_window: tuple[tuple[int, float], ...]
    flat_value: float | None
    flat_start_ns: int | None

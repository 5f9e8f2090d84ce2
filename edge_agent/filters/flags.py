"""Filter flag bits: what the filter bank found about one reading, carried in frame v1 `flags`."""

from __future__ import annotations

from typing import Final

# These bits travel in frame v1 (the `flags` column of a device block) and are stored in InfluxDB's
# `vital.flags` field: never renumber one, only append new bits above the last.

IMPLAUSIBLE: Final = 1 << 0
"""The value is not a usable number: NaN, ±inf, outside the metric's range or a device sentinel."""

MISSING: Final = 1 << 1
"""Refines IMPLAUSIBLE (always set with it): the value is NaN, the device sent "no reading"."""

QUALITY_BAD: Final = 1 << 2
"""A quality bit in the metric's `bad_quality_mask` is set (probe off, poor signal, no contact)."""

OUT_OF_ORDER: Final = 1 << 3
"""The timestamp is not after the series' previous one (duplicate or late); state is untouched."""

SPIKE: Final = 1 << 4
"""Causal Hampel: far from the median of the preceding window; treated as an artifact."""

EWMA_HIGH: Final = 1 << 5
"""EWMA z-score above the metric's `ewma_z_high`: unusually high against the recent level."""

EWMA_LOW: Final = 1 << 6
"""EWMA z-score below minus `ewma_z_low`: unusually low against the recent level."""

CUSUM_HIGH: Final = 1 << 7
"""Upper CUSUM above `cusum_h`: a sustained rise above the patient's personal baseline."""

CUSUM_LOW: Final = 1 << 8
"""Lower CUSUM above `cusum_h`: a sustained fall below the patient's personal baseline."""

RATE_HIGH: Final = 1 << 9
"""The value moved by more than `rate_max_delta` within the last `rate_window_s` seconds."""

FLATLINE: Final = 1 << 10
"""The value has been identical for longer than `flatline_s`: a stuck sensor or a frozen device."""

DROPOUT: Final = 1 << 11
"""This reading follows a gap longer than `dropout_factor` * `expected_interval_s`."""

WARMUP: Final = 1 << 12
"""A statistical detector of this series is still learning (window, EWMA or baseline not ready)."""

UNUSABLE: Final = IMPLAUSIBLE | MISSING | QUALITY_BAD | OUT_OF_ORDER
"""Readings with any of these bits feed no statistical detector and never drive clinical alerts."""

ARTIFACT: Final = UNUSABLE | SPIKE
"""Readings to keep out of physiological alerting (a spike is an artifact until it persists)."""

NAMES: Final[dict[int, str]] = {
    IMPLAUSIBLE: "implausible",
    MISSING: "missing",
    QUALITY_BAD: "quality_bad",
    OUT_OF_ORDER: "out_of_order",
    SPIKE: "spike",
    EWMA_HIGH: "ewma_high",
    EWMA_LOW: "ewma_low",
    CUSUM_HIGH: "cusum_high",
    CUSUM_LOW: "cusum_low",
    RATE_HIGH: "rate_high",
    FLATLINE: "flatline",
    DROPOUT: "dropout",
    WARMUP: "warmup",
}


def names(flags: int) -> tuple[str, ...]:
    """The names of the bits set in `flags`, lowest bit first; unknown bits read `bit<n>`."""
    found: list[str] = []
    for bit in range(32):
        mask = 1 << bit
        if flags & mask:
            found.append(NAMES.get(mask, f"bit{bit}"))
    return tuple(found)

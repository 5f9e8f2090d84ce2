"""Streaming anomaly filters of the edge agent: numba kernels, their typed bank and presets."""

from edge_agent.filters import flags
from edge_agent.filters.aot import KernelBuild
from edge_agent.filters.bank import (
    Baseline,
    BaselineStore,
    FilterBank,
    KernelCacheInfo,
    SeriesKey,
    kernel_cache_info,
    kernels_in_use,
    warm_up,
)
from edge_agent.filters.errors import (
    AheadOfTimeError,
    BaselineFileError,
    FilterError,
    FilterInputError,
    PresetError,
    UnknownMetricError,
)
from edge_agent.filters.presets import (
    ALL_DETECTORS,
    DETECTOR_BITS,
    MetricPreset,
    Presets,
    load_presets,
)
from edge_agent.filters.state import SeriesSnapshot

__all__ = [
    "ALL_DETECTORS",
    "DETECTOR_BITS",
    "AheadOfTimeError",
    "Baseline",
    "BaselineFileError",
    "BaselineStore",
    "FilterBank",
    "FilterError",
    "FilterInputError",
    "KernelBuild",
    "KernelCacheInfo",
    "MetricPreset",
    "PresetError",
    "Presets",
    "SeriesKey",
    "SeriesSnapshot",
    "UnknownMetricError",
    "flags",
    "kernel_cache_info",
    "kernels_in_use",
    "load_presets",
    "warm_up",
]

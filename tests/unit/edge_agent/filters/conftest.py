"""Fixtures of the filter tests: the shipped presets and a runner for either implementation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from edge_agent.filters import FilterBank, Presets, load_presets
from edge_agent.filters.presets import MetricPreset
from edge_agent.filters.reference import run_series

PRESETS_FILE = Path(__file__).resolve().parents[4] / "configs" / "filters.toml"

Runner = Callable[[MetricPreset, Sequence[int], Sequence[float], Sequence[int]], list[int]]


@pytest.fixture(scope="session")
def shipped() -> Presets:
    return load_presets(PRESETS_FILE)


def _run_bank(
    preset: MetricPreset, ts_ns: Sequence[int], values: Sequence[float], quality: Sequence[int]
) -> list[int]:
    bank = FilterBank(Presets.of(preset))
    series = bank.series_id("device", preset.metric)
    out = bank.process(
        series,
        np.asarray(ts_ns, np.int64),
        np.asarray(values, np.float64),
        np.asarray(quality, np.uint32),
    )
    return [int(bits) for bits in out]


def _run_reference(
    preset: MetricPreset, ts_ns: Sequence[int], values: Sequence[float], quality: Sequence[int]
) -> list[int]:
    return run_series(preset, ts_ns, values, quality)[0]


@pytest.fixture(params=["bank", "reference"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Each hand-made detector test runs against the kernels and against the reference."""
    return _run_bank if request.param == "bank" else _run_reference

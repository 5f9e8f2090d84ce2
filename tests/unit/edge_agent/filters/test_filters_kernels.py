"""The kernels' own helpers against their plain definitions (the bank's tests cover the rest)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.filters import kernels as k

# Few distinct values, so windows hold many duplicates, as a flat integer vital does.
VALUES = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6))


@settings(max_examples=300, deadline=None)
@given(
    window=st.lists(VALUES, min_size=1, max_size=31),
    leaving=st.integers(0, 30),
    new=VALUES,
)
def test_sorted_replace_swaps_one_value_and_keeps_the_row_sorted(
    window: list[float], leaving: int, new: float
) -> None:
    old = window[leaving % len(window)]
    row = np.array([*sorted(window), 1e300])  # the value beyond n must stay where it is
    k.sorted_replace(row, len(window), old, new)
    expected = sorted(window)
    expected.remove(old)
    assert row[: len(window)].tolist() == sorted([*expected, new])
    assert row[-1] == 1e300


@settings(max_examples=100, deadline=None)
@given(
    series=st.lists(st.integers(-2, 5), min_size=1, max_size=40),
    negative_at=st.one_of(st.none(), st.integers(0, 39)),
)
def test_first_invalid_finds_the_first_bad_reading(
    series: list[int], negative_at: int | None
) -> None:
    count = 4
    ts_ns = [1_000 + i for i in range(len(series))]
    if negative_at is not None and negative_at < len(series):
        ts_ns[negative_at] = -1
    bad = [
        i for i, (s, t) in enumerate(zip(series, ts_ns, strict=True)) if t < 0 or not 0 <= s < count
    ]
    found = k.first_invalid(np.array(series, np.int64), np.array(ts_ns, np.int64), count)
    assert found == (bad[0] if bad else -1)

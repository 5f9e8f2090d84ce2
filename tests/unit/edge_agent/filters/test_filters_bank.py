"""FilterBank: input validation, growth, snapshots and personal baselines that survive a restart."""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import EdgeAgentError
from edge_agent.filters import (
    Baseline,
    BaselineFileError,
    BaselineStore,
    FilterBank,
    FilterInputError,
    Presets,
    SeriesKey,
    UnknownMetricError,
)
from edge_agent.filters import flags as fl
from edge_agent.filters.bank import _kernel_ready
from edge_agent.filters.reference import run_series

S = 1_000_000_000
T0 = 1_767_225_600 * S


def seconds(count: int, start_s: int = 0) -> npt.NDArray[np.int64]:
    return T0 + (np.arange(count, dtype=np.int64) + start_s) * S


@pytest.fixture
def bank(shipped: Presets) -> FilterBank:
    return FilterBank(shipped)


def test_series_ids_are_stable_and_unknown_metrics_are_refused(bank: FilterBank) -> None:
    first = bank.series_id("hr-01", "heart_rate")
    assert bank.series_id("ox-01", "spo2") == first + 1
    assert bank.series_id("hr-01", "heart_rate") == first
    assert bank.key_of(first) == SeriesKey("hr-01", "heart_rate")
    with pytest.raises(UnknownMetricError) as caught:
        bank.series_id("bat-01", "battery")
    assert caught.value.metric == "battery"
    assert "heart_rate" in caught.value.known


def test_the_bank_grows_past_its_initial_capacity(shipped: Presets) -> None:
    bank = FilterBank(shipped, initial_capacity=1)
    ids = [bank.series_id(f"hr-{n:02d}", "heart_rate") for n in range(40)]
    values = np.array([70.0 + (i % 3) for i in range(50)] + [140.0])
    for series in ids:
        flags = bank.process(series, seconds(51), values, np.zeros(51, np.uint32))
        assert flags[-1] & fl.SPIKE
    assert bank.series_count == 40


@pytest.mark.parametrize(
    ("arguments", "argument", "index"),
    [
        ((0, [T0, -5], [70.0, 70.0], [0, 0]), "ts_ns", 1),
        ((0, [T0, T0 + S], [70.0], [0, 0]), "values", None),
        ((0, [T0], [70.0], [0, 0]), "quality", None),
        ((0, [T0], [70.0], [-1]), "quality", 0),
        ((0, [T0, T0 + S], [70.0, 70.0], [0, 2**32]), "quality", 1),
        ((0, [[T0]], [[70.0]], [[0]]), "ts_ns", None),
        ((0, [float(T0)], [70.0], [0]), "ts_ns", None),
        ((0, [T0], ["70"], [0]), "values", None),
        ((5, [T0], [70.0], [0]), "series", None),
        (([0, 9], [T0, T0 + S], [70.0, 70.0], [0, 0]), "series", 1),
        (([0], [T0, T0 + S], [70.0, 70.0], [0, 0]), "series", None),
    ],
)
def test_bad_input_raises_filter_input_error_naming_the_argument(
    bank: FilterBank, arguments: tuple[object, ...], argument: str, index: int | None
) -> None:
    bank.series_id("hr-01", "heart_rate")
    series, ts_ns, values, quality = arguments
    with pytest.raises(FilterInputError) as caught:
        bank.process(series, ts_ns, values, quality)  # type: ignore[arg-type]
    assert (caught.value.argument, caught.value.index) == (argument, index)
    assert isinstance(caught.value, EdgeAgentError)
    assert argument in str(caught.value)


def test_an_empty_call_changes_nothing(bank: FilterBank) -> None:
    series = bank.series_id("hr-01", "heart_rate")
    out = bank.process(series, [], [], [])
    assert out.dtype == np.uint32
    assert out.shape == (0,)
    assert bank.snapshot(series).samples_seen == 0


@pytest.mark.parametrize(
    ("ts_ns", "ids", "argument", "index"),
    [
        ([T0, T0 + S, -1, T0 + 3 * S], [0, 1, 0, 1], "ts_ns", 2),
        ([T0, T0 + S, T0 + 2 * S, T0 + 3 * S], [0, 1, 2, 1], "series", 2),
        ([T0, T0 + S, T0 + 2 * S, -1], [0, 1, -1, 1], "ts_ns", 3),
    ],
)
def test_a_chunk_the_kernel_rejects_changes_no_state(
    bank: FilterBank, ts_ns: list[int], ids: list[int], argument: str, index: int
) -> None:
    first = bank.series_id("hr-01", "heart_rate")
    second = bank.series_id("ox-01", "spo2")
    values = np.array([70.0, 97.0, 71.0, 96.0])
    with pytest.raises(FilterInputError) as caught:
        bank.process(
            np.array(ids, np.int64), np.array(ts_ns, np.int64), values, np.zeros(4, np.uint32)
        )
    assert (caught.value.argument, caught.value.index) == (argument, index)
    assert bank.snapshot(first).samples_seen == 0
    assert bank.snapshot(second).samples_seen == 0


def test_read_only_and_strided_inputs_are_copied_into_the_kernel_layout() -> None:
    values = np.arange(10, dtype=np.float64)
    values.flags.writeable = False
    ready = _kernel_ready(values, np.float64)
    assert ready.flags.writeable
    assert np.array_equal(ready, values)
    strided = np.arange(20, dtype=np.int64)[::2]
    assert _kernel_ready(strided, np.int64).flags.c_contiguous
    fine = np.zeros(4, np.uint32)
    assert _kernel_ready(fine, np.uint32) is fine


def test_the_bank_takes_read_only_arrays(bank: FilterBank, shipped: Presets) -> None:
    series = bank.series_id("hr-01", "heart_rate")
    ts_ns = seconds(30)
    values = np.array([70.0] * 29 + [150.0])
    quality = np.zeros(30, np.uint32)
    for array in (ts_ns, values, quality):
        array.flags.writeable = False
    flags = bank.process(series, ts_ns, values, quality)
    expected, _ = run_series(shipped.get("heart_rate"), ts_ns.tolist(), values.tolist(), [0] * 30)
    assert flags.tolist() == expected


def _learn(bank: FilterBank, device: str, start_s: int = 0) -> int:
    """Feed 5 min of heart rate around 80 bpm: enough to learn the 300-reading baseline."""
    series = bank.series_id(device, "heart_rate")
    values = np.array([80.0 + (i % 5) - 2 for i in range(320)])
    bank.process(series, seconds(320, start_s), values, np.zeros(320, np.uint32))
    return series


def test_learned_baselines_survive_a_restart(shipped: Presets, tmp_path: Path) -> None:
    before = FilterBank(shipped)
    series = _learn(before, "hr-01")
    learned = before.snapshot(series)
    assert learned.baseline == 80.0
    assert learned.baseline_sd == 5.0  # 1.4826 * MAD 1 is below the 5 bpm floor
    path = tmp_path / "state" / "baselines.json"
    before.baselines().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["baselines.json"]

    after = FilterBank(shipped)
    assert after.restore_baselines(BaselineStore.load(path)) == 1
    restored = after.snapshot(after.series_id("hr-01", "heart_rate"))
    assert (restored.baseline, restored.baseline_sd, restored.baseline_at_ns) == (
        learned.baseline,
        learned.baseline_sd,
        learned.baseline_at_ns,
    )
    # CUSUM runs from the first reading after the restart: no baseline warm-up again.
    series = after.series_id("hr-01", "heart_rate")
    flags = after.process(series, seconds(30, 400), np.full(30, 120.0), np.zeros(30, np.uint32))
    assert flags[-1] & fl.CUSUM_HIGH


def test_saving_replaces_the_old_file_whole(shipped: Presets, tmp_path: Path) -> None:
    path = tmp_path / "baselines.json"
    path.write_text("old contents", encoding="utf-8")
    bank = FilterBank(shipped)
    _learn(bank, "hr-01")
    _learn(bank, "hr-02")
    bank.baselines().save(path)
    loaded = BaselineStore.load(path)
    assert [key.device for key, _ in loaded] == ["hr-01", "hr-02"]
    assert sorted(os.listdir(tmp_path)) == ["baselines.json"]


def test_a_save_that_cannot_write_raises_baseline_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(BaselineFileError) as caught:
        BaselineStore().save(blocker / "baselines.json")
    assert "not-a-folder" in caught.value.path


def test_missing_file_is_an_error_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(BaselineFileError, match="does not exist"):
        BaselineStore.load(tmp_path / "absent.json")
    assert len(BaselineStore.load(tmp_path / "absent.json", missing_ok=True)) == 0


def test_restoring_skips_metrics_without_a_preset(shipped: Presets) -> None:
    store = BaselineStore(
        {
            SeriesKey("bat-01", "battery"): Baseline(80.0, 5.0, 10, T0),
            SeriesKey("ox-01", "spo2"): Baseline(96.0, 1.5, 300, T0),
        }
    )
    bank = FilterBank(shipped)
    assert bank.restore_baselines(store) == 1
    assert bank.series_count == 1


def test_reset_baseline_starts_learning_again(bank: FilterBank) -> None:
    series = _learn(bank, "hr-01")
    bank.reset_baseline(series)
    snapshot = bank.snapshot(series)
    assert (snapshot.baseline, snapshot.baseline_progress, snapshot.cusum_high) == (None, 0, 0.0)
    flags = bank.process(series, seconds(1, 500), [80.0], [0])
    assert flags[0] & fl.WARMUP


def _document(**row: object) -> str:
    base: dict[str, object] = {
        "device": "hr-01",
        "metric": "heart_rate",
        "value": 80.0,
        "sd": 5.0,
        "samples": 300,
        "learned_at_ns": T0,
    }
    base.update(row)
    return json.dumps(
        {"format": BaselineStore.FORMAT, "version": BaselineStore.VERSION, "baselines": [base]}
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"format": "other", "version": 1, "baselines": []}', "format/version"),
        (
            json.dumps({"format": BaselineStore.FORMAT, "version": 1, "baselines": {}}),
            "must be a list",
        ),
        (_document(sd=0.0), "sd must be above 0"),
        (_document(value="80"), "value must be a number"),
        (_document(value=True), "value must be a number"),
        (_document(samples=-1), "samples must be within"),
        (_document(learned_at_ns=1.5), "learned_at_ns must be an integer"),
        (_document(device=""), "non-empty strings"),
        (_document(extra=1), "exactly the keys"),
        (_document().replace("80.0", "NaN"), "must be finite"),
    ],
)
def test_corrupt_baseline_files_raise_baseline_file_error(text: str, reason: str) -> None:
    with pytest.raises(BaselineFileError, match=reason):
        BaselineStore.from_json(text, source="baselines.json")


def test_a_duplicate_series_is_refused() -> None:
    document = json.loads(_document())
    document["baselines"] *= 2
    with pytest.raises(BaselineFileError, match="duplicate"):
        BaselineStore.from_json(json.dumps(document))


@settings(max_examples=200)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(repr)))
def test_arbitrary_text_raises_only_baseline_file_error(text: str) -> None:
    with contextlib.suppress(BaselineFileError):
        BaselineStore.from_json(text)


@settings(max_examples=100)
@given(
    entries=st.dictionaries(
        st.builds(
            SeriesKey, st.text(min_size=1, max_size=8), st.sampled_from(["spo2", "heart_rate"])
        ),
        st.builds(
            Baseline,
            st.floats(allow_nan=False, allow_infinity=False),
            st.floats(min_value=1e-300, allow_infinity=False),
            st.integers(0, 2**63 - 1),
            st.integers(0, 2**63 - 1),
        ),
        max_size=5,
    )
)
def test_baselines_round_trip_exactly_through_json(entries: dict[SeriesKey, Baseline]) -> None:
    loaded = BaselineStore.from_json(BaselineStore(entries).to_json())
    assert dict(loaded) == entries
    for key, baseline in loaded:
        assert math.copysign(1.0, baseline.value) == math.copysign(1.0, entries[key].value)

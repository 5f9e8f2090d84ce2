"""Presets: the shipped configs/filters.toml, and errors that name the file, line and key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edge_agent.devices.quality import BAD_QUALITY_MASK
from edge_agent.errors import ConfigError
from edge_agent.filters import PresetError, Presets, UnknownMetricError, load_presets
from edge_agent.filters import flags as fl
from edge_agent.filters.presets import ALL_DETECTORS, DETECT_FLATLINE, KNOWN_KEYS, MetricPreset

CATALOGUE_METRICS = {
    "heart_rate",
    "spo2",
    "resp_rate",
    "body_temp",
    "bp_systolic",
    "bp_diastolic",
    "bp_mean",
    "pulse_rate",
    "glucose",
    "room_temp",
    "humidity",
}
PRESETS_FILE = Path(__file__).resolve().parents[4] / "configs" / "filters.toml"


def test_the_shipped_presets_cover_every_catalogue_vital(shipped: Presets) -> None:
    assert set(shipped.metrics) == CATALOGUE_METRICS
    hr = shipped.get("heart_rate")
    assert (hr.plausible_min, hr.plausible_max) == (20.0, 300.0)  # from the catalogue
    assert hr.dropout_ns == 10 * 1_000_000_000
    assert shipped.get("pulse_rate").sentinels == (255.0,)


def test_every_key_in_the_shipped_file_is_commented() -> None:
    lines = PRESETS_FILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        key = re.match(r"^([a-z_]+)\s*=", line)
        if key is None:
            continue
        previous = lines[number - 1].strip()
        assert key.group(1) in KNOWN_KEYS, line
        # A key is commented on its own line, or belongs to a commented group of consecutive keys.
        group_start = number
        while re.match(r"^[a-z_]+\s*=", lines[group_start - 1]):
            group_start -= 1
        assert lines[group_start - 1].startswith("#") or "#" in line, (number + 1, previous)


def test_unknown_presets_are_named(shipped: Presets) -> None:
    with pytest.raises(UnknownMetricError, match="battery"):
        shipped.get("battery")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "filters.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _shipped_with(tmp_path: Path, old: str, new: str) -> Path:
    text = PRESETS_FILE.read_text(encoding="utf-8")
    assert old in text
    return _write(tmp_path, text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ("ewma_alpha = 0.04", "ewma_alpha = 2.0", "resp_rate.ewma_alpha", "within (0, 1]"),
        ("ewma_alpha = 0.02", "ewma_alpha = 0.0", "defaults.ewma_alpha", "within (0, 1]"),
        ("hampel_window = 9", "hampel_window = 9.5", "defaults.hampel_window", "an integer"),
        ("hampel_window = 7", "hampel_window = 64", "resp_rate.hampel_window", "3..31"),
        ("cusum_clamp = 40.0", "cusum_clamp = 4.0", "defaults.cusum_clamp", "cusum_h"),
        ("rate_window_s = 60.0", "rate_window_s = 600.0", "heart_rate.rate_window_s", "128"),
        ("flatline_s = 600.0", "flatlines = 600.0", "heart_rate.flatlines", "unknown key"),
        ('"dropout"]', '"dropouts"]', "defaults.detectors", "not a detector"),
        ("sentinels = [255.0]", 'sentinels = ["x"]', "pulse_rate.sentinels", "not a number"),
        ("sentinels = []", "sentinels = 0", "defaults.sentinels", "must be a list"),
        ("[humidity]", "[humidity_pct]", "humidity_pct", "not in the catalogue"),
        ("expected_interval_s = 900.0", "expected_interval_s = nan", "bp_systolic", "nan"),
        ("bad_quality_mask = 0x25F8B", "bad_quality_mask = -1", "defaults.bad", "32-bit"),
    ],
)
def test_a_bad_preset_names_file_line_key_and_reason(
    tmp_path: Path, old: str, new: str, key: str, reason: str
) -> None:
    path = _shipped_with(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        load_presets(path)
    error = caught.value
    assert error.key.startswith(key)
    assert reason in error.reason
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if new in text)
    if error.key != "humidity_pct":
        assert error.file == f"{path}:{line}"


def test_a_key_missing_everywhere_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "[spo2]\nexpected_interval_s = 1.0\n")
    with pytest.raises(ConfigError, match=r"spo2\.[a-z_]+: missing"):
        load_presets(path)


def test_a_file_without_metrics_or_readable_syntax_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no metric table"):
        load_presets(_write(tmp_path, "[defaults]\nhampel_window = 9\n"))
    with pytest.raises(ConfigError, match="syntax"):
        load_presets(_write(tmp_path, "[spo2\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_presets(tmp_path / "absent.toml")


def test_a_metric_table_overrides_the_defaults(tmp_path: Path, shipped: Presets) -> None:
    path = _shipped_with(tmp_path, "[room_temp]\n", '[room_temp]\ndetectors = ["hampel"]\n')
    presets = load_presets(path)
    assert presets.get("room_temp").detectors == 1
    assert shipped.get("room_temp").detectors == ALL_DETECTORS


def test_presets_built_in_code_are_validated_too(shipped: Presets) -> None:
    with pytest.raises(PresetError) as caught:
        dataclasses.replace(shipped.get("spo2"), ewma_warmup=0)
    assert (caught.value.metric, caught.value.key) == ("spo2", "ewma_warmup")
    with pytest.raises(PresetError, match="detectors"):
        dataclasses.replace(shipped.get("spo2"), detectors=ALL_DETECTORS + 1)
    preset: MetricPreset = dataclasses.replace(shipped.get("spo2"), detectors=DETECT_FLATLINE)
    assert preset.detectors == DETECT_FLATLINE


def test_flag_bits_are_distinct_single_bits_with_names() -> None:
    bits = list(fl.NAMES)
    assert all(bit & (bit - 1) == 0 for bit in bits)
    assert len(set(bits)) == len(bits) == 13
    assert fl.names(fl.SPIKE | fl.WARMUP) == ("spike", "warmup")
    assert fl.names(1 << 30) == ("bit30",)
    assert fl.UNUSABLE & fl.SPIKE == 0
    assert fl.ARTIFACT == fl.UNUSABLE | fl.SPIKE


def test_shipped_presets_use_the_device_bad_quality_mask() -> None:
    presets = load_presets(Path(__file__).resolve().parents[4] / "configs" / "filters.toml")
    assert {presets.get(m).bad_quality_mask for m in presets.metrics} == {BAD_QUALITY_MASK}

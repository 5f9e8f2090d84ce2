"""The simulators' BLE encoders: 20-byte payloads, refused misuse, independence from the agent."""

from __future__ import annotations

import ast
import math
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sims.ble import encoders as sim


def test_encoders_never_import_the_agent() -> None:
    # DESIGN §2: the device codecs are written twice so that a symmetric bug shows up.
    tree = ast.parse(Path(sim.__file__).read_text(encoding="utf-8"))
    imported = [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert not [name for name in imported if name.startswith("edge_agent")]


def test_rr_interval_capacity_fills_but_never_exceeds_a_notification() -> None:
    for uint16_format in (False, True):
        for energy in (False, True):
            count = sim.max_rr_intervals(uint16_format=uint16_format, energy=energy)
            sample = sim.HeartRateSample(
                72,
                energy_expended_kj=10 if energy else None,
                rr_intervals_s=(0.8,) * count,
                uint16_format=uint16_format,
            )
            assert len(sample.encode()) in (sim.MAX_PAYLOAD_BYTES - 1, sim.MAX_PAYLOAD_BYTES)
            too_many = sim.HeartRateSample(
                72,
                energy_expended_kj=10 if energy else None,
                rr_intervals_s=(0.8,) * (count + 1),
                uint16_format=uint16_format,
            )
            with pytest.raises(ValueError, match="exceeds 20"):
                too_many.encode()


def test_energy_expended_saturates_at_the_field_maximum() -> None:
    assert sim.HeartRateSample(60, energy_expended_kj=70_000).encode() == bytes.fromhex(
        "08 3c ff ff"
    )


def test_float_nan_and_infinities_become_their_specials() -> None:
    assert sim.sfloat(math.nan) == bytes.fromhex("ff 07")
    assert sim.sfloat(math.inf) == bytes.fromhex("fe 07")
    assert sim.float32(-math.inf) == bytes.fromhex("02 00 80 00")


def test_date_time_not_known_is_all_zero() -> None:
    assert sim.date_time(None) == bytes(7)
    assert sim.date_time(datetime(2026, 11, 22, 18, 45, 1)) == bytes.fromhex(  # noqa: DTZ001
        "ea 07 0b 16 12 2d 01"
    )


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (sim.HeartRateSample(60, sensor_contact="maybe"), "sensor_contact"),
        (sim.TemperatureSample(37.0, unit="K"), "unit"),
        (sim.BloodPressureSample(120, 80, 93, unit="bar"), "unit"),
        (sim.GlucoseSample(1, None, glucose_mg_dl=90, unit="mg/dL"), "unit"),
        (sim.GlucoseSample(1, None, glucose_mg_dl=90, sample_type=16), "4-bit"),
        (sim.PlxContinuousSample(97, 72, spo2_fast_pct=96), "both"),
        (sim.BatteryLevelSample(101), "outside 0..100"),
        (sim.HumiditySample(100.01), "outside 0..100"),
        (sim.EnvironmentTemperatureSample(-273.16), "outside"),
        (sim.EnvironmentTemperatureSample(1e30), "outside"),
        (sim.HumiditySample(math.nan), "outside"),
        (sim.DeviceInformationSample(0x2A37, "x"), "not a Device Information"),
        (sim.DeviceInformationSample(0x2A29, "x" * 21), "exceeds 20"),
        (sim.TemperatureSample(37.0, exponent=128), "exponent"),
        (sim.PlxSpotCheckSample(97, 72, timestamp=datetime(1500, 1, 1)), "1582"),  # noqa: DTZ001
    ],
)
def test_misuse_is_refused(sample: sim.Sample, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample.encode()


def test_sample_types_cover_every_measurement_characteristic() -> None:
    assert set(sim.SAMPLE_TYPES) == {
        0x2A37,
        0x2A5E,
        0x2A5F,
        0x2A1C,
        0x2A35,
        0x2A18,
        0x2A6E,
        0x2A6F,
        0x2A19,
    }
    for uuid16, cls in sim.SAMPLE_TYPES.items():
        assert uuid16 == cls.UUID16


quantities = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(list(sim.Special))


@settings(max_examples=150, deadline=None)
@given(value=quantities, exponent=st.integers(-8, 7))
def test_any_quantity_encodes_to_two_bytes(value: sim.Quantity, exponent: int) -> None:
    # Values too large for the resolution are sent as NRes, never raised.
    assert len(sim.sfloat(value, exponent)) == 2
    assert len(sim.float32(value, exponent)) == 4

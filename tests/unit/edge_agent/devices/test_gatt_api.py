"""The GATT codec API the CLI and the BLE source call: names, errors, quality, time."""

from __future__ import annotations

from datetime import datetime

import pytest

from edge_agent.devices import (
    CHARACTERISTIC_NAMES,
    BatteryLevel,
    DecodeFault,
    DeviceDecodeError,
    GlucoseMeasurement,
    NoValue,
    NoValueReason,
    UnknownCharacteristicError,
    characteristic_label,
    decode,
    measurement_time,
    resolve_characteristic,
    to_json_dict,
    to_readings,
)
from edge_agent.devices import quality as q
from edge_agent.devices.gatt import ALIASES
from edge_agent.errors import EdgeAgentError
from edge_agent.protocol.metrics import by_name


@pytest.mark.parametrize(
    ("text", "uuid16"),
    [
        ("2a37", 0x2A37),
        ("2A37", 0x2A37),
        ("0x2A37", 0x2A37),
        (" 0x2a5f ", 0x2A5F),
        ("00002a19-0000-1000-8000-00805f9b34fb", 0x2A19),
        ("heart_rate_measurement", 0x2A37),
        ("heart-rate", 0x2A37),
        ("Heart Rate", 0x2A37),
        ("blood-pressure", 0x2A35),
        ("spot-check", 0x2A5E),
        ("temperature", 0x2A6E),
        ("temperature_measurement", 0x2A1C),
        ("glucose", 0x2A18),
        ("manufacturer", 0x2A29),
    ],
)
def test_resolve_accepts_hex_full_uuid_and_names(text: str, uuid16: int) -> None:
    assert resolve_characteristic(text) == uuid16


@pytest.mark.parametrize(
    "text", ["", "2a00", "0x2a3", "pulse", "00002a37-0000-1000-8000-000000000000"]
)
def test_resolve_rejects_unknown_with_our_error(text: str) -> None:
    with pytest.raises(UnknownCharacteristicError) as caught:
        resolve_characteristic(text)
    assert isinstance(caught.value, EdgeAgentError)
    assert caught.value.text == text
    assert "heart_rate_measurement" in str(caught.value) or "0x2A37" in str(caught.value)


def test_every_alias_resolves_to_a_known_characteristic() -> None:
    assert set(ALIASES.values()) == set(CHARACTERISTIC_NAMES)
    for alias, uuid16 in ALIASES.items():
        assert resolve_characteristic(alias.replace("_", "-")) == uuid16


def test_decode_refuses_a_characteristic_it_has_no_decoder_for() -> None:
    with pytest.raises(UnknownCharacteristicError, match="0x2A00"):
        decode(0x2A00, b"\x00")


def test_error_message_names_characteristic_offset_and_reason() -> None:
    with pytest.raises(DeviceDecodeError) as caught:
        decode(0x2A37, bytes.fromhex("01 48"))
    error = caught.value
    assert str(error) == (
        "0x2A37 Heart Rate Measurement: truncated at offset 1: "
        "needs 2 bytes for the uint16 heart rate, payload has 1 byte left"
    )
    assert (error.characteristic, error.offset, error.fault) == ("0x2A37", 1, DecodeFault.TRUNCATED)
    assert error.reason == "needs 2 bytes for the uint16 heart rate, payload has 1 byte left"


def test_impossible_values_say_what_and_where() -> None:
    with pytest.raises(DeviceDecodeError, match=r"humidity 100\.01 % is above 100\.00 %"):
        decode(0x2A6F, bytes.fromhex("11 27"))
    with pytest.raises(DeviceDecodeError, match="time stamp month is 13, at most 12") as caught:
        decode(0x2A1C, bytes.fromhex("02 6c 01 00 ff ea 07 0d 01 00 00 00"))
    assert caught.value.offset == 7


def test_decode_takes_the_bytearray_bleak_delivers() -> None:
    assert decode(0x2A19, bytearray(b"\x57")) == BatteryLevel(87)


def test_characteristic_label() -> None:
    assert characteristic_label(0x2A35) == "0x2A35 Blood Pressure Measurement"
    assert characteristic_label(0x2A00) == "0x2A00 unknown characteristic"


def test_reserved_battery_level_is_no_value_not_a_number() -> None:
    decoded = decode(0x2A19, b"\xc8")
    assert decoded == BatteryLevel(NoValue(NoValueReason.RESERVED, 200))
    assert to_json_dict(decoded) == {"battery_pct": None}
    assert to_readings(decoded) == []


def test_readings_use_catalogue_metrics() -> None:
    payloads = {
        0x2A37: "1d 2c 01 d2 04 00 02",
        0x2A5E: "00 61 00 48 00",
        0x2A1C: "00 6c 01 00 ff",
        0x2A35: "04 78 00 50 00 5d 00 48 00",
        0x2A18: "02 2a 00 ea 07 0b 16 07 00 00 5f b0 11",
        0x2A6E: "66 08",
        0x2A6F: "d7 11",
        0x2A19: "57",
    }
    metrics = set()
    for uuid16, payload in payloads.items():
        for metric, _value, _quality in to_readings(decode(uuid16, bytes.fromhex(payload))):
            metrics.add(metric)
            by_name(metric)  # raises for a name the catalogue does not know
    assert metrics == {
        "heart_rate",
        "rr_interval",
        "energy_expended",
        "spo2",
        "pulse_rate",
        "body_temp",
        "bp_systolic",
        "bp_diastolic",
        "bp_mean",
        "glucose",
        "room_temp",
        "humidity",
        "battery",
    }


def test_glucose_time_beyond_the_calendar_is_no_time() -> None:
    # Base time 9999-12-31 23:59:00 plus 30 000 minutes leaves what datetime can hold.
    payload = bytes.fromhex("01 01 00 0f 27 0c 1f 17 3b 00 30 75")
    decoded = decode(0x2A18, payload)
    assert isinstance(decoded, GlucoseMeasurement)
    assert decoded.base_time == datetime(9999, 12, 31, 23, 59)  # noqa: DTZ001
    assert measurement_time(decoded) is None


def test_quality_bits_are_distinct_single_bits_with_names() -> None:
    bits = list(q.NAMES)
    assert len(set(bits)) == len(bits)
    assert all(bit > 0 and bit & (bit - 1) == 0 for bit in bits)
    assert q.names(q.PROBE_OFF | q.MOTION) == ["probe_off", "motion"]
    for table in (
        q.PLX_MEASUREMENT_STATUS,
        q.PLX_DEVICE_SENSOR_STATUS,
        q.BP_MEASUREMENT_STATUS,
        q.GLUCOSE_SENSOR_STATUS,
        tuple(q.BP_PULSE_RATE_RANGE.values()),
    ):
        assert all(entry.quality in q.NAMES for entry in table)
        assert len({entry.name for entry in table}) == len(table)


def test_bad_quality_mask_keeps_clinically_relevant_flags_usable() -> None:
    for usable in (q.LOW_PERFUSION, q.IRREGULAR_PULSE, q.OUT_OF_DEVICE_RANGE, q.VALIDATED_DATA):
        assert not q.BAD_QUALITY_MASK & usable
    for bad in (q.SENSOR_CONTACT_LOST, q.PROBE_OFF, q.INVALID, q.NOT_PATIENT_DATA):
        assert q.BAD_QUALITY_MASK & bad

"""GATT codec properties: simulator-to-agent round trips, and noise never raises foreign errors."""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import Decimal
from typing import Final, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.devices import (
    CHARACTERISTIC_NAMES,
    BatteryLevel,
    BloodPressureMeasurement,
    Decoded,
    DeviceDecodeError,
    DeviceInformationString,
    EnvironmentTemperature,
    GlucoseMeasurement,
    HeartRateMeasurement,
    Humidity,
    NoValue,
    NoValueReason,
    Number,
    PlxContinuousMeasurement,
    PlxSpotCheckMeasurement,
    SensorContact,
    TemperatureMeasurement,
    Value,
    decode,
    measurement_time,
    to_json_dict,
    to_readings,
)
from edge_agent.devices.ieee11073 import decode_float, decode_sfloat, encode_float, encode_sfloat
from firmware_sims.ble import encoders as sim

T = TypeVar("T")

SETTINGS: Final = settings(max_examples=150, deadline=None)
EPSILON: Final = 1e-9  # float rounding of values that are exact decimals on the wire

# The reason the agent gives for each special value the simulator sends.
REASONS: Final = {
    sim.Special.NAN: NoValueReason.NAN,
    sim.Special.NRES: NoValueReason.NRES,
    sim.Special.PLUS_INFINITY: NoValueReason.POSITIVE_INFINITY,
    sim.Special.MINUS_INFINITY: NoValueReason.NEGATIVE_INFINITY,
    sim.Special.RESERVED: NoValueReason.RESERVED,
}

specials = st.sampled_from(list(sim.Special))
# Naive on purpose: Date Time carries the device's wall clock, no zone (gatt_types docstring).
date_times = st.datetimes(
    min_value=datetime(1582, 1, 1),  # noqa: DTZ001
    max_value=datetime(9999, 12, 31),  # noqa: DTZ001
)
timestamps = date_times.map(lambda moment: moment.replace(microsecond=0))
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFF_FFFF)


def quantities(low: float, high: float) -> st.SearchStrategy[sim.Quantity]:
    return st.floats(low, high) | specials


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


def assert_close(found: Value | None, sent: sim.Quantity | None, tolerance: float) -> None:
    """The agent's value is the simulator's within the wire resolution, or the same special."""
    if sent is None:
        assert found is None
    elif isinstance(sent, sim.Special):
        assert isinstance(found, NoValue)
        assert found.reason is REASONS[sent]
    else:
        assert isinstance(found, float)
        assert abs(found - sent) <= tolerance + EPSILON


def decode_or_error(uuid16: int, payload: bytes) -> Decoded | DeviceDecodeError:
    """The decoded value, or the DeviceDecodeError (any other exception propagates)."""
    try:
        return decode(uuid16, payload)
    except DeviceDecodeError as error:
        return error


def decode_sample(sample: sim.Sample) -> object:
    payload = sample.encode()
    assert len(payload) <= sim.MAX_PAYLOAD_BYTES
    decoded = decode(sim.characteristic_of(sample), payload)
    # Whatever decodes also renders and yields readings without raising.
    json.dumps(to_json_dict(decoded))
    to_readings(decoded)
    measurement_time(decoded)
    return decoded


@SETTINGS
@given(
    uuid16=st.sampled_from(sorted(CHARACTERISTIC_NAMES)),
    payload=st.binary(max_size=24),
)
def test_random_bytes_decode_or_raise_only_our_error(uuid16: int, payload: bytes) -> None:
    decoded = decode_or_error(uuid16, payload)
    if isinstance(decoded, DeviceDecodeError):
        assert decoded.characteristic == f"0x{uuid16:04X}"
        assert 0 <= decoded.offset <= len(payload)
        return
    json.dumps(to_json_dict(decoded))
    for metric, value, quality in to_readings(decoded):
        assert isinstance(metric, str)
        assert not math.isnan(value)  # special values give no reading
        assert quality >= 0
    measurement_time(decoded)


# Valid payloads from every simulated device, to be damaged below.
any_sample: Final[st.SearchStrategy[sim.Sample]] = st.one_of(
    st.builds(sim.HeartRateSample, st.integers(0, 0xFFFF), energy_expended_kj=optional(u16)),
    st.builds(
        sim.PlxSpotCheckSample,
        quantities(0, 100),
        quantities(0, 300),
        optional(timestamps),
        optional(u16),
        optional(u24),
        optional(quantities(0, 20)),
    ),
    st.builds(
        sim.PlxContinuousSample,
        quantities(0, 100),
        quantities(0, 300),
        measurement_status=optional(u16),
        device_sensor_status=optional(u24),
    ),
    st.builds(
        sim.TemperatureSample,
        quantities(-50, 50),
        st.sampled_from(["C", "F"]),
        timestamp=optional(timestamps),
        temperature_type=optional(st.integers(0, 255)),
    ),
    st.builds(
        sim.BloodPressureSample,
        quantities(0, 300),
        quantities(0, 300),
        quantities(0, 300),
        timestamp=optional(timestamps),
        user_id=optional(st.integers(0, 255)),
        measurement_status=optional(u16),
    ),
    st.builds(
        sim.GlucoseSample,
        u16,
        optional(timestamps),
        optional(st.integers(-0x8000, 0x7FFF)),
        optional(quantities(0, 1000)),
        sensor_status=optional(u16),
    ),
    st.builds(sim.EnvironmentTemperatureSample, optional(st.floats(-273.15, 327.67))),
    st.builds(sim.HumiditySample, optional(st.floats(0, 100))),
    st.builds(sim.BatteryLevelSample, st.integers(0, 100)),
)


@SETTINGS
@given(sample=any_sample, cut=st.integers(0, 20), index=st.integers(0, 19), xor=st.integers(1, 255))
def test_damaged_payloads_decode_or_raise_only_our_error(
    sample: sim.Sample, cut: int, index: int, xor: int
) -> None:
    # Valid payloads cut short or with one byte changed reach every field (timestamps
    # included), which purely random bytes rarely do.
    payload = bytearray(sample.encode())
    uuid16 = sim.characteristic_of(sample)
    if index < len(payload):
        payload[index] ^= xor
    for damaged in (bytes(payload), bytes(payload[:cut])):
        decoded = decode_or_error(uuid16, damaged)
        if isinstance(decoded, DeviceDecodeError):
            assert 0 <= decoded.offset <= len(damaged)
        else:
            json.dumps(to_json_dict(decoded))
            to_readings(decoded)
            measurement_time(decoded)


@SETTINGS
@given(
    heart_rate=st.integers(0, 0xFFFF),
    contact=st.sampled_from([None, "detected", "not_detected"]),
    energy=optional(u16),
    rr=st.lists(st.floats(0, 65535 / 1024), max_size=7),
    uint16_format=st.booleans(),
)
def test_heart_rate_round_trip(
    heart_rate: int,
    contact: str | None,
    energy: int | None,
    rr: list[float],
    uint16_format: bool,
) -> None:
    sample = sim.HeartRateSample(heart_rate, contact, energy, tuple(rr), uint16_format)
    decoded = decode_sample(sample)
    assert isinstance(decoded, HeartRateMeasurement)
    assert decoded.heart_rate_bpm == heart_rate
    assert decoded.sensor_contact == (contact or SensorContact.UNSUPPORTED)
    assert decoded.energy_expended_kj == energy
    if not rr:
        assert decoded.rr_intervals_s is None
    else:
        assert decoded.rr_intervals_s is not None
        assert len(decoded.rr_intervals_s) == len(rr)
        for found, sent in zip(decoded.rr_intervals_s, rr, strict=True):
            assert abs(found - sent) <= 0.5 / 1024


@SETTINGS
@given(
    spo2=quantities(0, 100),
    pulse=quantities(0, 300),
    timestamp=optional(timestamps),
    status=optional(u16),
    device_status=optional(u24),
    pai=optional(quantities(0, 20)),
    clock_set=st.booleans(),
)
def test_plx_spot_check_round_trip(
    spo2: sim.Quantity,
    pulse: sim.Quantity,
    timestamp: datetime | None,
    status: int | None,
    device_status: int | None,
    pai: sim.Quantity | None,
    clock_set: bool,
) -> None:
    sample = sim.PlxSpotCheckSample(
        spo2, pulse, timestamp, status, device_status, pai, device_clock_set=clock_set
    )
    decoded = decode_sample(sample)
    assert isinstance(decoded, PlxSpotCheckMeasurement)
    assert_close(decoded.spo2_pct, spo2, 0.5)
    assert_close(decoded.pulse_rate_bpm, pulse, 0.5)
    assert_close(decoded.pulse_amplitude_index_pct, pai, 0.05)
    assert decoded.timestamp == timestamp
    assert (decoded.measurement_status, decoded.device_sensor_status) == (status, device_status)
    assert decoded.device_clock_set is clock_set
    assert measurement_time(decoded) == (timestamp if clock_set else None)


@SETTINGS
@given(
    normal=st.tuples(quantities(0, 100), quantities(0, 300)),
    fast=optional(st.tuples(quantities(0, 100), quantities(0, 300))),
    slow=optional(st.tuples(quantities(0, 100), quantities(0, 300))),
    status=optional(u16),
    device_status=optional(u24),
    pai=optional(quantities(0, 20)),
)
def test_plx_continuous_round_trip(
    normal: tuple[sim.Quantity, sim.Quantity],
    fast: tuple[sim.Quantity, sim.Quantity] | None,
    slow: tuple[sim.Quantity, sim.Quantity] | None,
    status: int | None,
    device_status: int | None,
    pai: sim.Quantity | None,
) -> None:
    fast_spo2, fast_pulse = fast or (None, None)
    slow_spo2, slow_pulse = slow or (None, None)
    sample = sim.PlxContinuousSample(
        *normal, fast_spo2, fast_pulse, slow_spo2, slow_pulse, status, device_status, pai
    )
    decoded = decode_sample(sample)
    assert isinstance(decoded, PlxContinuousMeasurement)
    assert_close(decoded.spo2_pct, normal[0], 0.5)
    assert_close(decoded.pulse_rate_bpm, normal[1], 0.5)
    assert_close(decoded.spo2_fast_pct, fast_spo2, 0.5)
    assert_close(decoded.pulse_rate_fast_bpm, fast_pulse, 0.5)
    assert_close(decoded.spo2_slow_pct, slow_spo2, 0.5)
    assert_close(decoded.pulse_rate_slow_bpm, slow_pulse, 0.5)
    assert_close(decoded.pulse_amplitude_index_pct, pai, 0.05)
    assert (decoded.measurement_status, decoded.device_sensor_status) == (status, device_status)


@SETTINGS
@given(
    temperature=quantities(-100, 100),
    unit=st.sampled_from(["C", "F"]),
    exponent=st.sampled_from([-2, -1, 0]),
    timestamp=optional(timestamps),
    temperature_type=optional(st.integers(0, 255)),
)
def test_temperature_measurement_round_trip(
    temperature: sim.Quantity,
    unit: str,
    exponent: int,
    timestamp: datetime | None,
    temperature_type: int | None,
) -> None:
    sample = sim.TemperatureSample(temperature, unit, exponent, timestamp, temperature_type)
    decoded = decode_sample(sample)
    assert isinstance(decoded, TemperatureMeasurement)
    step_c = 10.0**exponent * (5 / 9 if unit == "F" else 1)
    assert_close(decoded.temperature_c, temperature, step_c / 2)
    assert decoded.unit_on_wire == unit
    assert decoded.timestamp == timestamp
    assert decoded.temperature_type == temperature_type


@SETTINGS
@given(
    pressures=st.tuples(quantities(0, 300), quantities(0, 300), quantities(0, 300)),
    kpa=st.booleans(),
    timestamp=optional(timestamps),
    pulse=optional(quantities(0, 300)),
    user_id=optional(st.integers(0, 255)),
    status=optional(u16),
)
def test_blood_pressure_round_trip(
    pressures: tuple[sim.Quantity, sim.Quantity, sim.Quantity],
    kpa: bool,
    timestamp: datetime | None,
    pulse: sim.Quantity | None,
    user_id: int | None,
    status: int | None,
) -> None:
    sample = sim.BloodPressureSample(
        *pressures,
        unit="kPa" if kpa else "mmHg",
        pressure_exponent=-1 if kpa else 0,
        timestamp=timestamp,
        pulse_rate_bpm=pulse,
        user_id=user_id,
        measurement_status=status,
    )
    decoded = decode_sample(sample)
    assert isinstance(decoded, BloodPressureMeasurement)
    step_mmhg = 0.1 * 7.50062 if kpa else 1.0
    found = (decoded.systolic_mmhg, decoded.diastolic_mmhg, decoded.mean_arterial_mmhg)
    for value, sent in zip(found, pressures, strict=True):
        assert_close(value, sent, step_mmhg / 2)
    assert_close(decoded.pulse_rate_bpm, pulse, 0.5)
    assert (decoded.timestamp, decoded.user_id) == (timestamp, user_id)
    assert decoded.measurement_status == status


@SETTINGS
@given(
    sequence=u16,
    base_time=optional(timestamps),
    offset=optional(st.integers(-0x8000, 0x7FFF)),
    glucose=optional(quantities(0, 1000)),
    mol=st.booleans(),
    sample_type=st.integers(0, 15),
    location=st.integers(0, 15),
    status=optional(u16),
    context=st.booleans(),
)
def test_glucose_round_trip(
    sequence: int,
    base_time: datetime | None,
    offset: int | None,
    glucose: sim.Quantity | None,
    mol: bool,
    sample_type: int,
    location: int,
    status: int | None,
    context: bool,
) -> None:
    sample = sim.GlucoseSample(
        sequence,
        base_time,
        offset,
        glucose,
        "mol/L" if mol else "kg/L",
        None,
        sample_type,
        location,
        status,
        context,
    )
    decoded = decode_sample(sample)
    assert isinstance(decoded, GlucoseMeasurement)
    assert (decoded.sequence_number, decoded.base_time) == (sequence, base_time)
    assert decoded.time_offset_min == offset
    # mol/L is sent in 0.1 mmol/L steps, 1.8016 mg/dL; kg/L in 1 mg/dL steps.
    assert_close(decoded.glucose_mg_dl, glucose, 1.8016 / 2 if mol else 0.5)
    if glucose is None:
        assert (decoded.sample_type, decoded.sample_location) == (None, None)
    else:
        assert (decoded.sample_type, decoded.sample_location) == (sample_type, location)
        assert decoded.unit_on_wire == ("mol/L" if mol else "kg/L")
        if mol:
            # The meter's own figure, mol/L x 1000, in its 0.1 mmol/L steps.
            in_mmol = glucose if isinstance(glucose, sim.Special) else glucose / 18.016
            assert_close(decoded.glucose_mmol_l, in_mmol, 0.05)
        else:
            assert decoded.glucose_mmol_l is None
    assert decoded.sensor_status == status
    assert decoded.context_follows is context


@SETTINGS
@given(temperature=optional(st.floats(-273.15, 327.67)))
def test_environment_temperature_round_trip(temperature: float | None) -> None:
    decoded = decode_sample(sim.EnvironmentTemperatureSample(temperature))
    assert isinstance(decoded, EnvironmentTemperature)
    if temperature is None:
        assert decoded.temperature_c == NoValue(NoValueReason.NOT_KNOWN, 0x8000)
    else:
        assert_close(decoded.temperature_c, temperature, 0.005)


@SETTINGS
@given(humidity=optional(st.floats(0, 100)))
def test_humidity_round_trip(humidity: float | None) -> None:
    decoded = decode_sample(sim.HumiditySample(humidity))
    assert isinstance(decoded, Humidity)
    if humidity is None:
        assert decoded.humidity_pct == NoValue(NoValueReason.NOT_KNOWN, 0xFFFF)
    else:
        assert_close(decoded.humidity_pct, humidity, 0.005)


@SETTINGS
@given(level=st.integers(0, 100))
def test_battery_round_trip(level: int) -> None:
    decoded = decode_sample(sim.BatteryLevelSample(level))
    assert decoded == BatteryLevel(level)


@SETTINGS
@given(
    uuid16=st.sampled_from(sorted(sim.DEVICE_INFORMATION_UUIDS)),
    text=st.text(st.characters(codec="utf-8"), max_size=5).filter(
        lambda text: not text.endswith("\x00")
    ),
)
def test_device_information_round_trip(uuid16: int, text: str) -> None:
    decoded = decode_sample(sim.DeviceInformationSample(uuid16, text))
    assert isinstance(decoded, DeviceInformationString)
    assert (decoded.uuid16, decoded.value) == (uuid16, text)


def test_every_sfloat_pattern_survives_decode_then_encode() -> None:
    # 65 536 patterns: exhaustive is cheaper than sampling, and leaves no corner untried.
    for raw in range(1 << 16):
        assert encode_sfloat(decode_sfloat(raw)) == raw


@SETTINGS
@given(raw=st.integers(0, 0xFFFF_FFFF))
def test_float_patterns_survive_decode_then_encode(raw: int) -> None:
    assert encode_float(decode_float(raw)) == raw


def test_every_sfloat_converts_to_the_float_of_its_exact_fraction() -> None:
    # float(Number) divides integers instead of going through Fraction: the same rounding.
    for raw in range(1 << 16):
        decoded = decode_sfloat(raw)
        if isinstance(decoded, Number):
            assert float(decoded) == float(decoded.to_fraction()), raw


@SETTINGS
@given(raw=st.integers(0, 0xFFFF_FFFF))
def test_every_float_converts_to_the_float_of_its_exact_fraction(raw: int) -> None:
    decoded = decode_float(raw)
    if isinstance(decoded, Number):
        assert float(decoded) == float(decoded.to_fraction())


@SETTINGS
@given(mantissa=st.integers(-2045, 2045), exponent=st.integers(-8, 7))
def test_simulator_sfloat_decodes_to_its_decimal(mantissa: int, exponent: int) -> None:
    value = Decimal(mantissa).scaleb(exponent)
    raw = int.from_bytes(sim.sfloat(value, exponent), "little")
    decoded = decode_sfloat(raw)
    assert decoded == Number(mantissa, exponent)
    assert float(decoded) == float(value)  # the double nearest the decimal, rounded once


@SETTINGS
@given(mantissa=st.integers(-8_388_605, 8_388_605), exponent=st.integers(-128, 127))
def test_simulator_float_decodes_to_its_decimal(mantissa: int, exponent: int) -> None:
    value = Decimal(mantissa).scaleb(exponent)
    raw = int.from_bytes(sim.float32(value, exponent), "little")
    decoded = decode_float(raw)
    assert decoded == Number(mantissa, exponent)
    assert float(decoded) == float(value)


def test_every_special_value_in_both_widths() -> None:
    for special, reason in REASONS.items():
        short = decode_sfloat(int.from_bytes(sim.sfloat(special), "little"))
        long = decode_float(int.from_bytes(sim.float32(special), "little"))
        assert isinstance(short, NoValue)
        assert isinstance(long, NoValue)
        assert (short.reason, long.reason) == (reason, reason)
        assert encode_sfloat(short) == short.raw
        assert encode_float(long) == long.raw

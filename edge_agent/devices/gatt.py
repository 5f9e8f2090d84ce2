"""Bluetooth SIG GATT characteristic decoders: health profiles, environment, battery, device info.

Each decoder follows its characteristic's definition in the Bluetooth SIG GATT Specification
Supplement (GSS) and the owning service specification; the byte layout is written beside each
decoder. What every decoder shares:

* The flags octet says which optional fields follow; RFU flag bits are ignored, and so are bytes
  after the last field the flags announce (later specification versions append fields).
* A field the flags announce but the payload does not hold, or a value the specification
  prohibits, raises `DeviceDecodeError` naming the characteristic, the byte offset and why.
  Nothing else ever escapes `decode`.
* SFLOAT/FLOAT special values (NaN, NRes, +INF, -INF, reserved) and fixed-point "not known"
  patterns decode to `NoValue` with its reason, never to a number.
* Units are normalised: temperature in degrees Celsius (Fahrenheit converted exactly as
  (F - 32) x 5/9), blood pressure in mmHg (kPa x 7.50062, the project's fixed factor; the
  exact one is 7.500616...), glucose in mg/dL (kg/L x 100 000; mol/L x 18 016 using the
  glucose molar mass 180.16 g/mol, and a meter reporting mol/L also keeps its own figure as
  mmol/L = mol/L x 1000), RR intervals in seconds (1/1024 s units). Conversions are exact
  until the single final rounding to float.
* Timestamps (Date Time, 0x2A08) are naive `datetime`s holding the device's wall clock exactly
  as sent: the format carries no zone or offset, and guessing one would be worse than saying
  so. A Date Time whose year, month or day is 0 ("not known") decodes to None.

The decoded dataclasses, their JSON form and their catalogue readings live in `gatt_types`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Final

from edge_agent.devices._wire import Reader
from edge_agent.devices.errors import DecodeFault, UnknownCharacteristicError
from edge_agent.devices.gatt_types import (
    BatteryLevel,
    BloodPressureMeasurement,
    Decoded,
    DeviceInformationString,
    EnvironmentTemperature,
    GlucoseMeasurement,
    GlucoseSampleLocation,
    GlucoseSampleType,
    HeartRateMeasurement,
    Humidity,
    PlxContinuousMeasurement,
    PlxSpotCheckMeasurement,
    Reading,
    SensorContact,
    TemperatureMeasurement,
    TemperatureType,
    Value,
    enum_or_raw,
)
from edge_agent.devices.ieee11073 import Measured, NoValue, NoValueReason

__all__ = [
    "ALIASES",
    "BATTERY_LEVEL",
    "BLOOD_PRESSURE_MEASUREMENT",
    "CHARACTERISTIC_NAMES",
    "FIRMWARE_REVISION_STRING",
    "GLUCOSE_MEASUREMENT",
    "GLUCOSE_MOLAR_MASS_G_PER_MOL",
    "HARDWARE_REVISION_STRING",
    "HEART_RATE_MEASUREMENT",
    "HUMIDITY",
    "KPA_TO_MMHG",
    "MANUFACTURER_NAME_STRING",
    "MODEL_NUMBER_STRING",
    "PLX_CONTINUOUS_MEASUREMENT",
    "PLX_SPOT_CHECK_MEASUREMENT",
    "SERIAL_NUMBER_STRING",
    "SOFTWARE_REVISION_STRING",
    "TEMPERATURE",
    "TEMPERATURE_MEASUREMENT",
    "BatteryLevel",
    "BloodPressureMeasurement",
    "Decoded",
    "DeviceInformationString",
    "EnvironmentTemperature",
    "GlucoseMeasurement",
    "GlucoseSampleLocation",
    "GlucoseSampleType",
    "HeartRateMeasurement",
    "Humidity",
    "PlxContinuousMeasurement",
    "PlxSpotCheckMeasurement",
    "Reading",
    "SensorContact",
    "TemperatureMeasurement",
    "TemperatureType",
    "Value",
    "characteristic_label",
    "decode",
    "measurement_time",
    "resolve_characteristic",
    "to_json_dict",
    "to_readings",
]

HEART_RATE_MEASUREMENT: Final = 0x2A37
PLX_SPOT_CHECK_MEASUREMENT: Final = 0x2A5E
PLX_CONTINUOUS_MEASUREMENT: Final = 0x2A5F
TEMPERATURE_MEASUREMENT: Final = 0x2A1C
BLOOD_PRESSURE_MEASUREMENT: Final = 0x2A35
GLUCOSE_MEASUREMENT: Final = 0x2A18
TEMPERATURE: Final = 0x2A6E
HUMIDITY: Final = 0x2A6F
BATTERY_LEVEL: Final = 0x2A19
MANUFACTURER_NAME_STRING: Final = 0x2A29
MODEL_NUMBER_STRING: Final = 0x2A24
SERIAL_NUMBER_STRING: Final = 0x2A25
FIRMWARE_REVISION_STRING: Final = 0x2A26
HARDWARE_REVISION_STRING: Final = 0x2A27
SOFTWARE_REVISION_STRING: Final = 0x2A28

KPA_TO_MMHG: Final = Fraction("7.50062")
"""mmHg per kPa as this codec converts (1 kPa = 1000 / 133.322387415 = 7.500616... mmHg)."""
GLUCOSE_MOLAR_MASS_G_PER_MOL: Final = Fraction("180.16")
# 1 kg/L = 10**6 mg per 10 dL; 1 mol/L = 180.16 g/L = 180 160 mg per 10 dL.
_KG_PER_L_TO_MG_PER_DL: Final = Fraction(100_000)
_MOL_PER_L_TO_MG_PER_DL: Final = GLUCOSE_MOLAR_MASS_G_PER_MOL * 1000 / 10
_MOL_PER_L_TO_MMOL_PER_L: Final = Fraction(1000)
_RR_UNITS_PER_S: Final = 1024

_ONE: Final = Fraction(1)
_ZERO: Final = Fraction(0)


def _value(measured: Measured, factor: Fraction = _ONE, shift: Fraction = _ZERO) -> Value:
    """(value + shift) x factor, exact, rounded once to float; NoValue passes through."""
    if isinstance(measured, NoValue):
        return measured
    if factor is _ONE and shift is _ZERO:
        return float(measured)  # the same rounding, without Fraction arithmetic (hot path)
    return float((measured.to_fraction() + shift) * factor)


def _heart_rate(r: Reader) -> HeartRateMeasurement:
    # Heart Rate Service v1.0 §3.1; GSS "Heart Rate Measurement":
    #   0      flags u8: bit0 value format (0 uint8, 1 uint16); bit1 contact detected;
    #          bit2 contact supported; bit3 energy expended present; bit4 RR intervals present;
    #          bits 5-7 RFU
    #   1      heart rate, uint8 or uint16, beats per minute
    #   +2     energy expended uint16, kJ (bit3; saturates at 0xFFFF)
    #   +2n    RR intervals uint16 each, 1/1024 s (bit4; one or more, as many as the payload holds)
    flags = r.u8("flags")
    heart_rate = r.u16("heart rate") if flags & 0x01 else r.u8("heart rate")
    contact_bits = flags >> 1 & 0b11
    contact = (
        SensorContact.DETECTED
        if contact_bits == 0b11
        else SensorContact.NOT_DETECTED
        if contact_bits == 0b10
        else SensorContact.UNSUPPORTED
    )
    energy = r.u16("energy expended") if flags & 0x08 else None
    rr: tuple[float, ...] | None = None
    if flags & 0x10:
        units = [r.u16("RR-interval")]
        # An odd byte after the last whole interval is a trailing byte: tolerated.
        while r.remaining >= 2:
            units.append(r.u16("RR-interval"))
        rr = tuple(unit / _RR_UNITS_PER_S for unit in units)
    return HeartRateMeasurement(heart_rate, contact, energy, rr)


def _plx_spot_check(r: Reader) -> PlxSpotCheckMeasurement:
    # Pulse Oximeter Service v1.0.1 §3.1; GSS "PLX Spot-Check Measurement":
    #   0   flags u8: bit0 timestamp; bit1 measurement status; bit2 device and sensor status;
    #       bit3 pulse amplitude index; bit4 device clock is not set; bits 5-7 RFU
    #   1   SpO2 SFLOAT %        3   PR SFLOAT bpm
    #   +7  timestamp Date Time (bit0)   +2 measurement status 16 bits (bit1)
    #   +3  device and sensor status 24 bits (bit2)   +2 pulse amplitude index SFLOAT % (bit3)
    flags = r.u8("flags")
    spo2 = _value(r.sfloat("SpO2"))
    pulse = _value(r.sfloat("pulse rate"))
    timestamp = r.date_time("timestamp") if flags & 0x01 else None
    status = r.u16("measurement status") if flags & 0x02 else None
    device_status = r.u24("device and sensor status") if flags & 0x04 else None
    pai = _value(r.sfloat("pulse amplitude index")) if flags & 0x08 else None
    clock_set = not flags & 0x10
    return PlxSpotCheckMeasurement(spo2, pulse, timestamp, clock_set, status, device_status, pai)


def _plx_continuous(r: Reader) -> PlxContinuousMeasurement:
    # Pulse Oximeter Service v1.0.1 §3.2; GSS "PLX Continuous Measurement":
    #   0   flags u8: bit0 SpO2PR-Fast; bit1 SpO2PR-Slow; bit2 measurement status;
    #       bit3 device and sensor status; bit4 pulse amplitude index; bits 5-7 RFU
    #   1   SpO2PR-Normal: SpO2 SFLOAT %, PR SFLOAT bpm
    #   +4  SpO2PR-Fast (bit0)   +4 SpO2PR-Slow (bit1)   +2 measurement status (bit2)
    #   +3  device and sensor status (bit3)   +2 pulse amplitude index SFLOAT % (bit4)
    flags = r.u8("flags")
    spo2 = _value(r.sfloat("SpO2PR-Normal SpO2"))
    pulse = _value(r.sfloat("SpO2PR-Normal PR"))
    fast_spo2 = fast_pulse = slow_spo2 = slow_pulse = None
    if flags & 0x01:
        fast_spo2 = _value(r.sfloat("SpO2PR-Fast SpO2"))
        fast_pulse = _value(r.sfloat("SpO2PR-Fast PR"))
    if flags & 0x02:
        slow_spo2 = _value(r.sfloat("SpO2PR-Slow SpO2"))
        slow_pulse = _value(r.sfloat("SpO2PR-Slow PR"))
    status = r.u16("measurement status") if flags & 0x04 else None
    device_status = r.u24("device and sensor status") if flags & 0x08 else None
    pai = _value(r.sfloat("pulse amplitude index")) if flags & 0x10 else None
    return PlxContinuousMeasurement(
        spo2, pulse, fast_spo2, fast_pulse, slow_spo2, slow_pulse, status, device_status, pai
    )


def _temperature_measurement(r: Reader) -> TemperatureMeasurement:
    # Health Thermometer Service v1.0 §3.1; GSS "Temperature Measurement":
    #   0   flags u8: bit0 units (0 Celsius, 1 Fahrenheit); bit1 time stamp; bit2 temperature
    #       type; bits 3-7 RFU
    #   1   temperature FLOAT, in the unit of bit0
    #   +7  time stamp Date Time (bit1)   +1 temperature type uint8 (bit2; 0x2A1D values)
    flags = r.u8("flags")
    raw = r.float32("temperature")
    fahrenheit = bool(flags & 0x01)
    temp_c = _value(raw, Fraction(5, 9), Fraction(-32)) if fahrenheit else _value(raw)
    timestamp = r.date_time("time stamp") if flags & 0x02 else None
    temp_type = enum_or_raw(TemperatureType, r.u8("temperature type")) if flags & 0x04 else None
    return TemperatureMeasurement(temp_c, "F" if fahrenheit else "C", timestamp, temp_type)


def _blood_pressure(r: Reader) -> BloodPressureMeasurement:
    # Blood Pressure Service v1.1 §3.1; GSS "Blood Pressure Measurement":
    #   0   flags u8: bit0 units (0 mmHg, 1 kPa); bit1 time stamp; bit2 pulse rate;
    #       bit3 user id; bit4 measurement status; bits 5-7 RFU
    #   1   systolic SFLOAT   3 diastolic SFLOAT   5 mean arterial pressure SFLOAT
    #   +7  time stamp Date Time (bit1)   +2 pulse rate SFLOAT bpm (bit2)
    #   +1  user id uint8, 255 = unknown user (bit3)   +2 measurement status 16 bits (bit4)
    flags = r.u8("flags")
    kpa = bool(flags & 0x01)
    factor = KPA_TO_MMHG if kpa else _ONE
    systolic = _value(r.sfloat("systolic pressure"), factor)
    diastolic = _value(r.sfloat("diastolic pressure"), factor)
    mean = _value(r.sfloat("mean arterial pressure"), factor)
    timestamp = r.date_time("time stamp") if flags & 0x02 else None
    pulse = _value(r.sfloat("pulse rate")) if flags & 0x04 else None
    user_id = r.u8("user id") if flags & 0x08 else None
    status = r.u16("measurement status") if flags & 0x10 else None
    return BloodPressureMeasurement(
        systolic, diastolic, mean, "kPa" if kpa else "mmHg", timestamp, pulse, user_id, status
    )


def _glucose(r: Reader) -> GlucoseMeasurement:
    # Glucose Service v1.0.1 §3.1; GSS "Glucose Measurement":
    #   0   flags u8: bit0 time offset; bit1 concentration, type and sample location;
    #       bit2 concentration units (0 kg/L, 1 mol/L); bit3 sensor status annunciation;
    #       bit4 context information follows (0x2A34); bits 5-7 RFU
    #   1   sequence number uint16   3 base time Date Time (7 bytes)
    #   +2  time offset sint16 minutes (bit0)
    #   +3  concentration SFLOAT, then type (low nibble) and sample location (high nibble)
    #       in one octet (bit1)
    #   +2  sensor status annunciation 16 bits (bit3)
    flags = r.u8("flags")
    sequence = r.u16("sequence number")
    base_time = r.date_time("base time")
    offset_min = r.s16("time offset") if flags & 0x01 else None
    mg_dl: Value | None = None
    mmol_l: Value | None = None
    unit: str | None = None
    sample_type: int | None = None
    location: int | None = None
    if flags & 0x02:
        concentration = r.sfloat("glucose concentration")
        packed = r.u8("type and sample location")
        sample_type = enum_or_raw(GlucoseSampleType, packed & 0x0F)
        location = enum_or_raw(GlucoseSampleLocation, packed >> 4)
        if flags & 0x04:
            unit = "mol/L"
            mg_dl = _value(concentration, _MOL_PER_L_TO_MG_PER_DL)
            mmol_l = _value(concentration, _MOL_PER_L_TO_MMOL_PER_L)
        else:
            unit = "kg/L"
            mg_dl = _value(concentration, _KG_PER_L_TO_MG_PER_DL)
    status = r.u16("sensor status annunciation") if flags & 0x08 else None
    return GlucoseMeasurement(
        sequence,
        base_time,
        offset_min,
        mg_dl,
        mmol_l,
        unit,
        sample_type,
        location,
        status,
        bool(flags & 0x10),
    )


# GSS "Temperature" 0x2A6E: sint16, 0.01 degC, -273.15..327.67, 0x8000 = not known, others
# prohibited. GSS "Humidity" 0x2A6F: uint16, 0.01 %, 0..100.00, 0xFFFF = not known, others
# prohibited. GSS "Battery Level" 0x2A19: uint8 %, 0..100, 101-255 reserved for future use.
_TEMPERATURE_NOT_KNOWN: Final = -0x8000
_TEMPERATURE_MIN_CENTI_C: Final = -27315
_HUMIDITY_NOT_KNOWN: Final = 0xFFFF
_HUMIDITY_MAX_CENTI_PCT: Final = 10000
_BATTERY_MAX_PCT: Final = 100


def _environment_temperature(r: Reader) -> EnvironmentTemperature:
    raw = r.s16("temperature")
    if raw == _TEMPERATURE_NOT_KNOWN:
        return EnvironmentTemperature(NoValue(NoValueReason.NOT_KNOWN, 0x8000))
    if raw < _TEMPERATURE_MIN_CENTI_C:
        raise r.error(
            DecodeFault.IMPOSSIBLE,
            f"temperature {raw / 100:.2f} degC is below absolute zero (-273.15)",
            0,
        )
    return EnvironmentTemperature(float(Fraction(raw, 100)))


def _humidity(r: Reader) -> Humidity:
    raw = r.u16("humidity")
    if raw == _HUMIDITY_NOT_KNOWN:
        return Humidity(NoValue(NoValueReason.NOT_KNOWN, raw))
    if raw > _HUMIDITY_MAX_CENTI_PCT:
        raise r.error(DecodeFault.IMPOSSIBLE, f"humidity {raw / 100:.2f} % is above 100.00 %", 0)
    return Humidity(float(Fraction(raw, 100)))


def _battery(r: Reader) -> BatteryLevel:
    raw = r.u8("battery level")
    if raw > _BATTERY_MAX_PCT:
        return BatteryLevel(NoValue(NoValueReason.RESERVED, raw))
    return BatteryLevel(raw)


def _device_information(uuid16: int, field: str) -> Callable[[Reader], Decoded]:
    # Device Information Service v1.1 §3.1-§3.7: each string is utf8s, the whole value, with
    # no terminator. Trailing NULs some devices pad with are dropped.
    def decode_string(r: Reader) -> DeviceInformationString:
        raw = r.rest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise r.error(
                DecodeFault.INVALID_TEXT,
                f"byte 0x{raw[exc.start]:02X} cannot start or continue a UTF-8 character",
                exc.start,
            ) from None
        return DeviceInformationString(uuid16, field, text.rstrip("\x00"))

    return decode_string


@dataclass(slots=True, frozen=True)
class _Spec:
    uuid16: int
    name: str
    aliases: tuple[str, ...]
    decoder: Callable[[Reader], Decoded]


_SPECS: Final = (
    _Spec(
        HEART_RATE_MEASUREMENT,
        "Heart Rate Measurement",
        ("heart_rate_measurement", "heart_rate", "hrm"),
        _heart_rate,
    ),
    _Spec(
        PLX_SPOT_CHECK_MEASUREMENT,
        "PLX Spot-Check Measurement",
        ("plx_spot_check_measurement", "plx_spot_check", "spot_check", "spo2_spot_check"),
        _plx_spot_check,
    ),
    _Spec(
        PLX_CONTINUOUS_MEASUREMENT,
        "PLX Continuous Measurement",
        ("plx_continuous_measurement", "plx_continuous", "spo2_continuous", "spo2"),
        _plx_continuous,
    ),
    _Spec(
        TEMPERATURE_MEASUREMENT,
        "Temperature Measurement",
        ("temperature_measurement", "body_temperature", "thermometer"),
        _temperature_measurement,
    ),
    _Spec(
        BLOOD_PRESSURE_MEASUREMENT,
        "Blood Pressure Measurement",
        ("blood_pressure_measurement", "blood_pressure", "bp", "nibp"),
        _blood_pressure,
    ),
    _Spec(
        GLUCOSE_MEASUREMENT,
        "Glucose Measurement",
        ("glucose_measurement", "glucose"),
        _glucose,
    ),
    _Spec(
        TEMPERATURE,
        "Temperature",
        ("temperature", "room_temperature", "environment_temperature"),
        _environment_temperature,
    ),
    _Spec(HUMIDITY, "Humidity", ("humidity", "room_humidity"), _humidity),
    _Spec(BATTERY_LEVEL, "Battery Level", ("battery_level", "battery"), _battery),
    _Spec(
        MANUFACTURER_NAME_STRING,
        "Manufacturer Name String",
        ("manufacturer_name_string", "manufacturer_name", "manufacturer"),
        _device_information(MANUFACTURER_NAME_STRING, "manufacturer"),
    ),
    _Spec(
        MODEL_NUMBER_STRING,
        "Model Number String",
        ("model_number_string", "model_number", "model"),
        _device_information(MODEL_NUMBER_STRING, "model_number"),
    ),
    _Spec(
        SERIAL_NUMBER_STRING,
        "Serial Number String",
        ("serial_number_string", "serial_number", "serial"),
        _device_information(SERIAL_NUMBER_STRING, "serial_number"),
    ),
    _Spec(
        FIRMWARE_REVISION_STRING,
        "Firmware Revision String",
        ("firmware_revision_string", "firmware_revision", "firmware"),
        _device_information(FIRMWARE_REVISION_STRING, "firmware_revision"),
    ),
    _Spec(
        HARDWARE_REVISION_STRING,
        "Hardware Revision String",
        ("hardware_revision_string", "hardware_revision", "hardware"),
        _device_information(HARDWARE_REVISION_STRING, "hardware_revision"),
    ),
    _Spec(
        SOFTWARE_REVISION_STRING,
        "Software Revision String",
        ("software_revision_string", "software_revision", "software"),
        _device_information(SOFTWARE_REVISION_STRING, "software_revision"),
    ),
)
_BY_UUID: Final = {spec.uuid16: spec for spec in _SPECS}
_BY_ALIAS: Final = {alias: spec.uuid16 for spec in _SPECS for alias in spec.aliases}

CHARACTERISTIC_NAMES: Final[dict[int, str]] = {spec.uuid16: spec.name for spec in _SPECS}
"""Every characteristic `decode` knows, by 16-bit UUID."""
ALIASES: Final[dict[str, int]] = dict(_BY_ALIAS)
"""Every name `resolve_characteristic` accepts (besides the UUID), with its UUID."""

# Core Specification v5.3, Vol 3, Part B, §2.5.1: a 16-bit UUID is the Bluetooth Base UUID
# 0000xxxx-0000-1000-8000-00805F9B34FB with xxxx = the 16-bit value.
_HEX16: Final = re.compile(r"(?:0x)?([0-9a-f]{4})")
_BASE_UUID: Final = re.compile(r"0000([0-9a-f]{4})-0000-1000-8000-00805f9b34fb")


def resolve_characteristic(text: str) -> int:
    """The 16-bit UUID of "2a37", "0x2A37", a full base UUID, or a name like "heart-rate"."""
    key = text.strip().lower()
    match = _HEX16.fullmatch(key) or _BASE_UUID.fullmatch(key)
    if match is not None:
        uuid16 = int(match.group(1), 16)
        if uuid16 not in _BY_UUID:
            known = ", ".join(f"0x{u:04X}" for u in sorted(_BY_UUID))
            raise UnknownCharacteristicError(text, f"no decoder for 0x{uuid16:04X}; known: {known}")
        return uuid16
    alias = re.sub(r"[\s\-]+", "_", key)
    if alias in _BY_ALIAS:
        return _BY_ALIAS[alias]
    names = ", ".join(spec.aliases[0] for spec in _SPECS)
    raise UnknownCharacteristicError(
        text, f"not a 16-bit UUID in hex nor a known name; names: {names}"
    )


def characteristic_label(uuid16: int) -> str:
    """ "0x2A37 Heart Rate Measurement", for messages and logs."""
    name = CHARACTERISTIC_NAMES.get(uuid16, "unknown characteristic")
    return f"0x{uuid16:04X} {name}"


def decode(uuid16: int, payload: bytes | bytearray) -> Decoded:
    """Decode one characteristic value.

    Raises only DeviceDecodeError (bad payload) and UnknownCharacteristicError (no decoder).
    """
    spec = _BY_UUID.get(uuid16)
    if spec is None:
        text = f"0x{uuid16:04X}"
        raise UnknownCharacteristicError(text, "no decoder for this characteristic")
    return spec.decoder(Reader(uuid16, spec.name, bytes(payload)))


def to_json_dict(decoded: Decoded) -> dict[str, object]:
    """The `edge-agent decode --json` object: exactly the keys of issue #3 for each kind.

    Absent optional fields and special values are None; timestamps ISO 8601 without offset
    (device time); status fields are lists of flag names (see `quality`), None when absent.
    """
    return decoded.json_dict()


def to_readings(decoded: Decoded) -> list[Reading]:
    """The catalogue readings `(metric, value, quality bits)` in a decoded value.

    A special value yields no reading for its metric; strings yield none. Quality bits per
    metric (mapping tables in `edge_agent.devices.quality`): HRM contact on heart_rate and
    rr_interval; PLX statuses (and a spot-check's unset clock) on spo2 and pulse_rate; BP status
    on every BP reading, the pulse-rate range on pulse_rate only; glucose sensor status and
    control solution on glucose.
    """
    return decoded.readings()


def measurement_time(decoded: Decoded) -> datetime | None:
    """When the device says it measured (naive, device clock), or None: use receipt time.

    Glucose: base time plus time offset. PLX spot-check: None when the device's clock is not
    set (its readings then carry TIME_UNRELIABLE).
    """
    return decoded.measured_at()

"""Decoded GATT values: one frozen dataclass per characteristic, its JSON form and its readings.

Every value knows three things about itself:

* `json_dict()`: the `edge-agent decode --json` object, exactly the keys of issue #3. Absent
  optional fields and special values are None; timestamps are ISO 8601 without offset (device
  time, see below); status fields are lists of flag names (`quality` tables), None if absent.
* `readings()`: the catalogue readings, `(metric, value, quality bits)`, with the quality
  mapping of `edge_agent.devices.quality`. A special value yields no reading for its metric.
* `measured_at()`: when the device says it measured, or None (the caller stamps receipt time).

Timestamps are naive `datetime`s holding the device's wall clock exactly as sent: the Date Time
format carries no zone or offset, and guessing one would be worse than saying so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

from edge_agent.devices import quality as q
from edge_agent.devices.ieee11073 import NoValue

Value: TypeAlias = float | NoValue
"""A decoded measurement value in the unit its field name says, or why there is none."""

Reading: TypeAlias = tuple[str, float, int]
"""(catalogue metric name, value in the catalogue unit, device quality bits)."""


class SensorContact(enum.StrEnum):
    """Heart Rate Measurement flags bits 1-2 (Heart Rate Service v1.0 §3.1)."""

    UNSUPPORTED = "unsupported"
    NOT_DETECTED = "not_detected"
    DETECTED = "detected"


class TemperatureType(enum.IntEnum):
    """Temperature Type 0x2A1D values (Health Thermometer Service v1.0 §3.2; 0, 10-255 RFU)."""

    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


class GlucoseSampleType(enum.IntEnum):
    """Glucose Measurement Type nibble (Glucose Service v1.0.1 §3.1; 0, 11-15 RFU)."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class GlucoseSampleLocation(enum.IntEnum):
    """Glucose Measurement Sample Location nibble (Glucose Service v1.0.1 §3.1; 0, 5-14 RFU)."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


def enum_or_raw(enum_type: type[enum.IntEnum], code: int) -> int:
    """The enum member for `code`, or `code` itself when the specification reserves it."""
    try:
        return enum_type(code)
    except ValueError:
        return code


def _json_value(value: float | NoValue | None) -> float | None:
    return None if value is None or isinstance(value, NoValue) else value


def _json_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _json_code(enum_type: type[enum.IntEnum], code: int | None) -> str | None:
    if code is None:
        return None
    try:
        return enum_type(code).name.lower()
    except ValueError:
        return f"reserved_{code}"


def _json_status(table: tuple[q.StatusBit, ...], bits: int | None) -> list[str] | None:
    return None if bits is None else q.status_names(table, bits)


def _reading(metric: str, value: float | NoValue | None, quality: int) -> list[Reading]:
    if value is None or isinstance(value, NoValue):
        return []
    return [(metric, float(value), quality)]


@dataclass(slots=True, frozen=True)
class HeartRateMeasurement:
    """0x2A37. `rr_intervals_s` is None when the flags announce none."""

    heart_rate_bpm: int
    sensor_contact: SensorContact
    energy_expended_kj: int | None
    rr_intervals_s: tuple[float, ...] | None

    def json_dict(self) -> dict[str, object]:
        rr = self.rr_intervals_s
        return {
            "heart_rate_bpm": self.heart_rate_bpm,
            "sensor_contact": self.sensor_contact.value,
            "energy_expended_kj": self.energy_expended_kj,
            "rr_intervals_s": None if rr is None else list(rr),
        }

    def readings(self) -> list[Reading]:
        contact_q = (
            q.SENSOR_CONTACT_LOST if self.sensor_contact is SensorContact.NOT_DETECTED else 0
        )
        found = _reading("heart_rate", self.heart_rate_bpm, contact_q)
        for rr_s in self.rr_intervals_s or ():
            found += _reading("rr_interval", rr_s, contact_q)
        return found + _reading("energy_expended", self.energy_expended_kj, 0)

    def measured_at(self) -> datetime | None:
        return None


def _plx_quality(status: int | None, device_status: int | None) -> int:
    return q.status_quality(q.PLX_MEASUREMENT_STATUS, status or 0) | q.status_quality(
        q.PLX_DEVICE_SENSOR_STATUS, device_status or 0
    )


def _plx_json(
    *,
    spo2: Value,
    pulse: Value,
    timestamp: datetime | None,
    status: int | None,
    device_status: int | None,
    pai: Value | None,
) -> dict[str, object]:
    return {
        "spo2_pct": _json_value(spo2),
        "pulse_rate_bpm": _json_value(pulse),
        "timestamp": _json_time(timestamp),
        "measurement_status": _json_status(q.PLX_MEASUREMENT_STATUS, status),
        "device_sensor_status": _json_status(q.PLX_DEVICE_SENSOR_STATUS, device_status),
        "pulse_amplitude_index_pct": _json_value(pai),
    }


@dataclass(slots=True, frozen=True)
class PlxSpotCheckMeasurement:
    """0x2A5E. Status fields are the raw bits, None when absent (names: `quality` tables)."""

    spo2_pct: Value
    pulse_rate_bpm: Value
    timestamp: datetime | None
    device_clock_set: bool
    measurement_status: int | None
    device_sensor_status: int | None
    pulse_amplitude_index_pct: Value | None

    def json_dict(self) -> dict[str, object]:
        return _plx_json(
            spo2=self.spo2_pct,
            pulse=self.pulse_rate_bpm,
            timestamp=self.timestamp,
            status=self.measurement_status,
            device_status=self.device_sensor_status,
            pai=self.pulse_amplitude_index_pct,
        )

    def readings(self) -> list[Reading]:
        plx_q = _plx_quality(self.measurement_status, self.device_sensor_status)
        if not self.device_clock_set:
            plx_q |= q.TIME_UNRELIABLE
        return _reading("spo2", self.spo2_pct, plx_q) + _reading(
            "pulse_rate", self.pulse_rate_bpm, plx_q
        )

    def measured_at(self) -> datetime | None:
        # A device whose clock is not set stamps with a meaningless time: use receipt time.
        return self.timestamp if self.device_clock_set else None


@dataclass(slots=True, frozen=True)
class PlxContinuousMeasurement:
    """0x2A5F. `spo2_pct`/`pulse_rate_bpm` are the SpO2PR-Normal pair; fast and slow optional."""

    spo2_pct: Value
    pulse_rate_bpm: Value
    spo2_fast_pct: Value | None
    pulse_rate_fast_bpm: Value | None
    spo2_slow_pct: Value | None
    pulse_rate_slow_bpm: Value | None
    measurement_status: int | None
    device_sensor_status: int | None
    pulse_amplitude_index_pct: Value | None

    def json_dict(self) -> dict[str, object]:
        return _plx_json(
            spo2=self.spo2_pct,
            pulse=self.pulse_rate_bpm,
            timestamp=None,
            status=self.measurement_status,
            device_status=self.device_sensor_status,
            pai=self.pulse_amplitude_index_pct,
        )

    def readings(self) -> list[Reading]:
        plx_q = _plx_quality(self.measurement_status, self.device_sensor_status)
        return _reading("spo2", self.spo2_pct, plx_q) + _reading(
            "pulse_rate", self.pulse_rate_bpm, plx_q
        )

    def measured_at(self) -> datetime | None:
        return None


@dataclass(slots=True, frozen=True)
class TemperatureMeasurement:
    """0x2A1C. `temperature_type` is a `TemperatureType` or, if reserved, the raw code."""

    temperature_c: Value
    unit_on_wire: str
    """"C" or "F": the unit the device sent (the value is always in Celsius)."""
    timestamp: datetime | None
    temperature_type: int | None

    def json_dict(self) -> dict[str, object]:
        return {
            "temperature_c": _json_value(self.temperature_c),
            "unit_on_wire": self.unit_on_wire,
            "timestamp": _json_time(self.timestamp),
            "temperature_type": _json_code(TemperatureType, self.temperature_type),
        }

    def readings(self) -> list[Reading]:
        return _reading("body_temp", self.temperature_c, 0)

    def measured_at(self) -> datetime | None:
        return self.timestamp


@dataclass(slots=True, frozen=True)
class BloodPressureMeasurement:
    """0x2A35. `user_id` 255 is the specification's "unknown user"."""

    systolic_mmhg: Value
    diastolic_mmhg: Value
    mean_arterial_mmhg: Value
    unit_on_wire: str
    """"mmHg" or "kPa": the unit the device sent (the values are always in mmHg)."""
    timestamp: datetime | None
    pulse_rate_bpm: Value | None
    user_id: int | None
    measurement_status: int | None

    def _pulse_range(self) -> q.StatusBit | None:
        status = self.measurement_status or 0
        return q.BP_PULSE_RATE_RANGE.get(status >> q.BP_PULSE_RATE_RANGE_SHIFT & 0b11)

    def json_dict(self) -> dict[str, object]:
        status: list[str] | None = None
        if self.measurement_status is not None:
            status = q.status_names(q.BP_MEASUREMENT_STATUS, self.measurement_status)
            pulse_range = self._pulse_range()
            if pulse_range is not None:
                status.append(pulse_range.name)
        return {
            "systolic_mmhg": _json_value(self.systolic_mmhg),
            "diastolic_mmhg": _json_value(self.diastolic_mmhg),
            "mean_arterial_mmhg": _json_value(self.mean_arterial_mmhg),
            "timestamp": _json_time(self.timestamp),
            "pulse_rate_bpm": _json_value(self.pulse_rate_bpm),
            "user_id": self.user_id,
            "measurement_status": status,
        }

    def readings(self) -> list[Reading]:
        bp_q = q.status_quality(q.BP_MEASUREMENT_STATUS, self.measurement_status or 0)
        pulse_range = self._pulse_range()
        pulse_q = bp_q | (0 if pulse_range is None else pulse_range.quality)
        return (
            _reading("bp_systolic", self.systolic_mmhg, bp_q)
            + _reading("bp_diastolic", self.diastolic_mmhg, bp_q)
            + _reading("bp_mean", self.mean_arterial_mmhg, bp_q)
            + _reading("pulse_rate", self.pulse_rate_bpm, pulse_q)
        )

    def measured_at(self) -> datetime | None:
        return self.timestamp


@dataclass(slots=True, frozen=True)
class GlucoseMeasurement:
    """0x2A18. Concentration fields are None when the flags say none was sent.

    `glucose_mmol_l` is set only for a meter that reports mol/L; `unit_on_wire` is "kg/L" or
    "mol/L" when a concentration was sent. `sample_type` / `sample_location` are the enums or, if
    reserved, the raw nibble.
    """

    sequence_number: int
    base_time: datetime | None
    time_offset_min: int | None
    glucose_mg_dl: Value | None
    glucose_mmol_l: Value | None
    unit_on_wire: str | None
    sample_type: int | None
    sample_location: int | None
    sensor_status: int | None
    context_follows: bool

    def json_dict(self) -> dict[str, object]:
        return {
            "sequence_number": self.sequence_number,
            "base_time": _json_time(self.base_time),
            "time_offset_min": self.time_offset_min,
            "glucose_mg_dl": _json_value(self.glucose_mg_dl),
            "sample_type": _json_code(GlucoseSampleType, self.sample_type),
            "sample_location": _json_code(GlucoseSampleLocation, self.sample_location),
            "sensor_status": _json_status(q.GLUCOSE_SENSOR_STATUS, self.sensor_status),
        }

    def readings(self) -> list[Reading]:
        glucose_q = q.status_quality(q.GLUCOSE_SENSOR_STATUS, self.sensor_status or 0)
        if (
            self.sample_type == GlucoseSampleType.CONTROL_SOLUTION
            or self.sample_location == GlucoseSampleLocation.CONTROL_SOLUTION
        ):
            glucose_q |= q.NOT_PATIENT_DATA
        return _reading("glucose", self.glucose_mg_dl, glucose_q)

    def measured_at(self) -> datetime | None:
        """Base time plus time offset (Glucose Service v1.0.1 §3.1)."""
        if self.base_time is None:
            return None
        try:
            return self.base_time + timedelta(minutes=self.time_offset_min or 0)
        except OverflowError:
            # An offset that leaves the calendar (before year 1, after 9999): no usable time.
            return None


@dataclass(slots=True, frozen=True)
class EnvironmentTemperature:
    """0x2A6E, Environmental Sensing temperature."""

    temperature_c: Value

    def json_dict(self) -> dict[str, object]:
        return {"temperature_c": _json_value(self.temperature_c)}

    def readings(self) -> list[Reading]:
        return _reading("room_temp", self.temperature_c, 0)

    def measured_at(self) -> datetime | None:
        return None


@dataclass(slots=True, frozen=True)
class Humidity:
    """0x2A6F, Environmental Sensing relative humidity."""

    humidity_pct: Value

    def json_dict(self) -> dict[str, object]:
        return {"humidity_pct": _json_value(self.humidity_pct)}

    def readings(self) -> list[Reading]:
        return _reading("humidity", self.humidity_pct, 0)

    def measured_at(self) -> datetime | None:
        return None


@dataclass(slots=True, frozen=True)
class BatteryLevel:
    """0x2A19. A reserved level (101-255) is NoValue(RESERVED)."""

    battery_pct: int | NoValue

    def json_dict(self) -> dict[str, object]:
        level = self.battery_pct
        return {"battery_pct": None if isinstance(level, NoValue) else level}

    def readings(self) -> list[Reading]:
        level = self.battery_pct
        return _reading("battery", level if isinstance(level, NoValue) else float(level), 0)

    def measured_at(self) -> datetime | None:
        return None


@dataclass(slots=True, frozen=True)
class DeviceInformationString:
    """One Device Information Service string; `field` is its JSON key (e.g. "manufacturer").

    Never log `serial_number` values: with a patient binding they identify a person's device.
    """

    uuid16: int
    field: str
    value: str

    def json_dict(self) -> dict[str, object]:
        return {self.field: self.value}

    def readings(self) -> list[Reading]:
        return []

    def measured_at(self) -> datetime | None:
        return None


Decoded: TypeAlias = (
    HeartRateMeasurement
    | PlxSpotCheckMeasurement
    | PlxContinuousMeasurement
    | TemperatureMeasurement
    | BloodPressureMeasurement
    | GlucoseMeasurement
    | EnvironmentTemperature
    | Humidity
    | BatteryLevel
    | DeviceInformationString
)
"""Whatever `edge_agent.devices.gatt.decode` returns."""

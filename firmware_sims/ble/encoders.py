"""Simulated BLE peripherals' payload encoders, written from the Bluetooth SIG specifications.

Deliberately independent of the agent's decoders (DESIGN §2): nothing here imports
`edge_agent.devices`, and the medical floats are built another way (decimal quantisation and
literal special patterns here, bit fields and computed specials there), so a misreading of a
specification on one side shows up as a disagreement with the golden vectors in
`firmware_sims/vectors/gatt/`.

Samples take values in the units the simulated physiology uses (degrees Celsius, mmHg, mg/dL,
seconds) and convert to the unit the simulated device puts on the wire. Every payload fits one
notification at the default ATT_MTU: at most 20 octets (Core Specification v5.3, Vol 3, Part F,
§3.2.9: ATT_MTU 23 minus the 3-octet notification header). Multi-octet fields are sent least
significant octet first, as every characteristic definition of the GATT Specification
Supplement lists them ("LSO to MSO").
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import ClassVar, Final, TypeAlias

MAX_PAYLOAD_BYTES: Final = 20
_ONE: Final = Decimal(1)
_ZERO: Final = Decimal(0)


class Special(enum.Enum):
    """IEEE 11073-20601 special values a simulated device can send instead of a number."""

    NAN = "NaN"
    NRES = "NRes"
    PLUS_INFINITY = "+INF"
    MINUS_INFINITY = "-INF"
    RESERVED = "reserved"


Quantity: TypeAlias = float | Special
"""A value to send: a number (NaN and infinities map to their specials) or a special."""

# IEEE 11073-20601 Annex F.8 (SFLOAT-Type) and F.7 (FLOAT-Type): the special values' bit
# patterns, all with exponent 0.
_SFLOAT_SPECIAL: Final = {
    Special.NAN: 0x07FF,
    Special.NRES: 0x0800,
    Special.PLUS_INFINITY: 0x07FE,
    Special.MINUS_INFINITY: 0x0802,
    Special.RESERVED: 0x0801,
}
_FLOAT_SPECIAL: Final = {
    Special.NAN: 0x007F_FFFF,
    Special.NRES: 0x0080_0000,
    Special.PLUS_INFINITY: 0x007F_FFFE,
    Special.MINUS_INFINITY: 0x0080_0002,
    Special.RESERVED: 0x0080_0001,
}
# A simulated device never sends a mantissa that some receiver might read as a special value,
# whatever the exponent: it keeps clear of the top three and bottom three mantissas.
_SFLOAT_MANTISSA_MAX: Final = 2045
_FLOAT_MANTISSA_MAX: Final = 8_388_605
_SFLOAT_EXPONENTS: Final = range(-8, 8)
_FLOAT_EXPONENTS: Final = range(-128, 128)

# Unit conversions the simulated devices apply before quantising.
MMHG_PER_KPA: Final = Decimal("7.50062")
GLUCOSE_MG_DL_PER_MOL_L: Final = Decimal("18016")  # 180.16 g/mol x 1000 mg/g / 10 dL/L
GLUCOSE_MG_DL_PER_KG_L: Final = Decimal(100000)  # 10**6 mg/kg / 10 dL/L


def exact(
    value: Quantity, *, times: Decimal = _ONE, per: Decimal = _ONE, plus: Decimal = _ZERO
) -> Decimal | Special:
    """value x times / per + plus in decimal arithmetic; NaN and infinities become specials."""
    if isinstance(value, Special):
        return value
    if math.isnan(value):
        return Special.NAN
    if math.isinf(value):
        return Special.PLUS_INFINITY if value > 0 else Special.MINUS_INFINITY
    # repr gives the shortest decimal that round-trips, so 36.6 is 36.6, not 36.600000000000001.
    return Decimal(repr(float(value))) * times / per + plus


def _mantissa(value: Decimal, exponent: int) -> int:
    return int(value.scaleb(-exponent).quantize(_ONE, rounding=ROUND_HALF_EVEN))


def _medical(value: Quantity | Decimal, exponent: int, *, short: bool) -> int:
    """The unsigned bit pattern of `value` quantised to 10**exponent (SFLOAT if `short`)."""
    specials = _SFLOAT_SPECIAL if short else _FLOAT_SPECIAL
    exponents = _SFLOAT_EXPONENTS if short else _FLOAT_EXPONENTS
    if exponent not in exponents:
        msg = f"exponent {exponent} outside {exponents.start}..{exponents.stop - 1}"
        raise ValueError(msg)
    number = value if isinstance(value, Decimal) else exact(value)
    if isinstance(number, Special):
        return specials[number]
    limit = _SFLOAT_MANTISSA_MAX if short else _FLOAT_MANTISSA_MAX
    # Compare before rounding: quantize() fails on values wider than the decimal context.
    if abs(number.scaleb(-exponent)) >= limit + 1:
        # "Not at this resolution" is exactly what the format defines for this case.
        return specials[Special.NRES]
    mantissa = _mantissa(number, exponent)
    if abs(mantissa) > limit:
        return specials[Special.NRES]
    if short:
        return (exponent % 16) << 12 | mantissa % 4096
    return (exponent % 256) << 24 | mantissa % (1 << 24)


def sfloat(value: Quantity | Decimal | Special, exponent: int = 0) -> bytes:
    """A 16-bit SFLOAT (4-bit exponent, 12-bit mantissa), least significant octet first."""
    return _medical(value, exponent, short=True).to_bytes(2, "little")


def float32(value: Quantity | Decimal | Special, exponent: int = -1) -> bytes:
    """A 32-bit FLOAT (8-bit exponent, 24-bit mantissa), least significant octet first."""
    return _medical(value, exponent, short=False).to_bytes(4, "little")


def date_time(moment: datetime | None) -> bytes:
    """Date Time 0x2A08: year u16, month, day, hours, minutes, seconds; None = all "not known"."""
    if moment is None:
        return bytes(7)
    if not 1582 <= moment.year <= 9999:
        msg = f"Date Time years run 1582..9999, not {moment.year}"
        raise ValueError(msg)
    return moment.year.to_bytes(2, "little") + bytes(
        (moment.month, moment.day, moment.hour, moment.minute, moment.second)
    )


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def _s16(value: int) -> bytes:
    return value.to_bytes(2, "little", signed=True)


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def _checked(uuid16: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_BYTES:
        msg = f"0x{uuid16:04X} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}"
        raise ValueError(msg)
    return payload


@dataclass(slots=True, frozen=True)
class HeartRateSample:
    """Heart Rate Measurement 0x2A37 (Heart Rate Service v1.0 §3.1).

    `sensor_contact` is "detected", "not_detected" or None (the strap has no contact sensor).
    Rates above 255 or `uint16_format` use the 16-bit field. RR intervals are quantised to
    1/1024 s; at most 9 fit beside an 8-bit rate without energy (`max_rr_intervals`).
    """

    UUID16: ClassVar[int] = 0x2A37

    heart_rate_bpm: int
    sensor_contact: str | None = None
    energy_expended_kj: int | None = None
    rr_intervals_s: tuple[float, ...] = ()
    uint16_format: bool = False

    def encode(self) -> bytes:
        wide = self.uint16_format or self.heart_rate_bpm > 0xFF
        flags = 0x01 if wide else 0x00
        # Flags bit 2: contact feature supported; bit 1: contact detected.
        if self.sensor_contact == "detected":
            flags |= 0x06
        elif self.sensor_contact == "not_detected":
            flags |= 0x04
        elif self.sensor_contact is not None:
            msg = f"sensor_contact must be detected, not_detected or None: {self.sensor_contact}"
            raise ValueError(msg)
        body = _u16(self.heart_rate_bpm) if wide else bytes((self.heart_rate_bpm,))
        if self.energy_expended_kj is not None:
            flags |= 0x08
            body += _u16(min(self.energy_expended_kj, 0xFFFF))  # the field saturates
        if self.rr_intervals_s:
            flags |= 0x10
            for rr_s in self.rr_intervals_s:
                body += _u16(round(rr_s * 1024))
        return _checked(self.UUID16, bytes((flags,)) + body)


def max_rr_intervals(*, uint16_format: bool, energy: bool) -> int:
    """How many RR intervals fit one Heart Rate Measurement notification."""
    used = 1 + (2 if uint16_format else 1) + (2 if energy else 0)
    return (MAX_PAYLOAD_BYTES - used) // 2


@dataclass(slots=True, frozen=True)
class PlxSpotCheckSample:
    """PLX Spot-Check Measurement 0x2A5E (Pulse Oximeter Service v1.0.1 §3.1)."""

    UUID16: ClassVar[int] = 0x2A5E

    spo2_pct: Quantity
    pulse_rate_bpm: Quantity
    timestamp: datetime | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index_pct: Quantity | None = None
    device_clock_set: bool = True
    spo2_exponent: int = 0
    pulse_rate_exponent: int = 0
    pai_exponent: int = -1

    def encode(self) -> bytes:
        flags = 0
        body = sfloat(self.spo2_pct, self.spo2_exponent)
        body += sfloat(self.pulse_rate_bpm, self.pulse_rate_exponent)
        if self.timestamp is not None:
            flags |= 0x01
            body += date_time(self.timestamp)
        if self.measurement_status is not None:
            flags |= 0x02
            body += _u16(self.measurement_status)
        if self.device_sensor_status is not None:
            flags |= 0x04
            body += _u24(self.device_sensor_status)
        if self.pulse_amplitude_index_pct is not None:
            flags |= 0x08
            body += sfloat(self.pulse_amplitude_index_pct, self.pai_exponent)
        if not self.device_clock_set:
            flags |= 0x10
        return _checked(self.UUID16, bytes((flags,)) + body)


@dataclass(slots=True, frozen=True)
class PlxContinuousSample:
    """PLX Continuous Measurement 0x2A5F (Pulse Oximeter Service v1.0.1 §3.2).

    The fast and slow pairs are sent when their SpO2 is given (their PR must be given too).
    """

    UUID16: ClassVar[int] = 0x2A5F

    spo2_pct: Quantity
    pulse_rate_bpm: Quantity
    spo2_fast_pct: Quantity | None = None
    pulse_rate_fast_bpm: Quantity | None = None
    spo2_slow_pct: Quantity | None = None
    pulse_rate_slow_bpm: Quantity | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index_pct: Quantity | None = None
    pai_exponent: int = -1

    def encode(self) -> bytes:
        flags = 0
        body = sfloat(self.spo2_pct) + sfloat(self.pulse_rate_bpm)
        for bit, spo2, pulse in (
            (0x01, self.spo2_fast_pct, self.pulse_rate_fast_bpm),
            (0x02, self.spo2_slow_pct, self.pulse_rate_slow_bpm),
        ):
            if spo2 is not None:
                if pulse is None:
                    msg = "a SpO2PR pair needs both SpO2 and PR"
                    raise ValueError(msg)
                flags |= bit
                body += sfloat(spo2) + sfloat(pulse)
        if self.measurement_status is not None:
            flags |= 0x04
            body += _u16(self.measurement_status)
        if self.device_sensor_status is not None:
            flags |= 0x08
            body += _u24(self.device_sensor_status)
        if self.pulse_amplitude_index_pct is not None:
            flags |= 0x10
            body += sfloat(self.pulse_amplitude_index_pct, self.pai_exponent)
        return _checked(self.UUID16, bytes((flags,)) + body)


@dataclass(slots=True, frozen=True)
class TemperatureSample:
    """Temperature Measurement 0x2A1C (Health Thermometer Service v1.0 §3.1).

    `unit` "F" sends degrees Fahrenheit (C x 9/5 + 32, then quantised to 10**exponent).
    `temperature_type` is a 0x2A1D code (1 armpit ... 6 mouth ... 9 tympanum).
    """

    UUID16: ClassVar[int] = 0x2A1C

    temperature_c: Quantity
    unit: str = "C"
    exponent: int = -1
    timestamp: datetime | None = None
    temperature_type: int | None = None

    def encode(self) -> bytes:
        if self.unit not in ("C", "F"):
            msg = f"unit must be C or F, not {self.unit!r}"
            raise ValueError(msg)
        flags = 0x01 if self.unit == "F" else 0x00
        value = (
            exact(self.temperature_c, times=Decimal("1.8"), plus=Decimal(32))
            if self.unit == "F"
            else exact(self.temperature_c)
        )
        body = float32(value, self.exponent)
        if self.timestamp is not None:
            flags |= 0x02
            body += date_time(self.timestamp)
        if self.temperature_type is not None:
            flags |= 0x04
            body += bytes((self.temperature_type,))
        return _checked(self.UUID16, bytes((flags,)) + body)


@dataclass(slots=True, frozen=True)
class BloodPressureSample:
    """Blood Pressure Measurement 0x2A35 (Blood Pressure Service v1.1 §3.1).

    Pressures are given in mmHg; `unit` "kPa" divides by 7.50062 before quantising to
    10**pressure_exponent. `measurement_status` is the raw 16-bit field.
    """

    UUID16: ClassVar[int] = 0x2A35

    systolic_mmhg: Quantity
    diastolic_mmhg: Quantity
    mean_arterial_mmhg: Quantity
    unit: str = "mmHg"
    pressure_exponent: int = 0
    timestamp: datetime | None = None
    pulse_rate_bpm: Quantity | None = None
    user_id: int | None = None
    measurement_status: int | None = None

    def encode(self) -> bytes:
        if self.unit not in ("mmHg", "kPa"):
            msg = f"unit must be mmHg or kPa, not {self.unit!r}"
            raise ValueError(msg)
        flags = 0x01 if self.unit == "kPa" else 0x00
        divisor = MMHG_PER_KPA if self.unit == "kPa" else _ONE
        body = b"".join(
            sfloat(exact(pressure, per=divisor), self.pressure_exponent)
            for pressure in (self.systolic_mmhg, self.diastolic_mmhg, self.mean_arterial_mmhg)
        )
        if self.timestamp is not None:
            flags |= 0x02
            body += date_time(self.timestamp)
        if self.pulse_rate_bpm is not None:
            flags |= 0x04
            body += sfloat(self.pulse_rate_bpm)
        if self.user_id is not None:
            flags |= 0x08
            body += bytes((self.user_id,))
        if self.measurement_status is not None:
            flags |= 0x10
            body += _u16(self.measurement_status)
        return _checked(self.UUID16, bytes((flags,)) + body)


@dataclass(slots=True, frozen=True)
class GlucoseSample:
    """Glucose Measurement 0x2A18 (Glucose Service v1.0.1 §3.1), one stored record.

    The concentration is given in mg/dL; `unit` "kg/L" sends mg/dL / 100 000 (default exponent
    -5, i.e. 1 mg/dL steps), "mol/L" sends mg/dL / 18 016 (molar mass 180.16 g/mol; default
    exponent -4, i.e. 0.1 mmol/L steps). Type and sample location share one octet: type in the
    low nibble, location in the high nibble. `base_time` None sends a Date Time "not known".
    """

    UUID16: ClassVar[int] = 0x2A18

    sequence_number: int
    base_time: datetime | None = None
    time_offset_min: int | None = None
    glucose_mg_dl: Quantity | None = None
    unit: str = "kg/L"
    exponent: int | None = None
    sample_type: int = 1
    sample_location: int = 1
    sensor_status: int | None = None
    context_follows: bool = False

    def encode(self) -> bytes:
        if self.unit not in ("kg/L", "mol/L"):
            msg = f"unit must be kg/L or mol/L, not {self.unit!r}"
            raise ValueError(msg)
        flags = 0x10 if self.context_follows else 0x00
        body = _u16(self.sequence_number) + date_time(self.base_time)
        if self.time_offset_min is not None:
            flags |= 0x01
            body += _s16(self.time_offset_min)
        if self.glucose_mg_dl is not None:
            flags |= 0x02
            if self.unit == "mol/L":
                flags |= 0x04
                per, default_exponent = GLUCOSE_MG_DL_PER_MOL_L, -4
            else:
                per, default_exponent = GLUCOSE_MG_DL_PER_KG_L, -5
            exponent = default_exponent if self.exponent is None else self.exponent
            body += sfloat(exact(self.glucose_mg_dl, per=per), exponent)
            if not (0 <= self.sample_type <= 15 and 0 <= self.sample_location <= 15):
                msg = "sample type and location are 4-bit codes"
                raise ValueError(msg)
            body += bytes((self.sample_location << 4 | self.sample_type,))
        if self.sensor_status is not None:
            flags |= 0x08
            body += _u16(self.sensor_status)
        return _checked(self.UUID16, bytes((flags,)) + body)


def _centi(value: float) -> int | None:
    """Hundredths of `value`, rounded; None when it is not a number a uint16/sint16 can hold."""
    if not math.isfinite(value) or abs(value) > 1000:
        return None
    return _mantissa(Decimal(repr(float(value))), -2)


@dataclass(slots=True, frozen=True)
class EnvironmentTemperatureSample:
    """Temperature 0x2A6E (GSS): sint16 in 0.01 degC; None sends 0x8000, "value is not known"."""

    UUID16: ClassVar[int] = 0x2A6E

    temperature_c: float | None = None

    def encode(self) -> bytes:
        if self.temperature_c is None:
            return _s16(-0x8000)
        centi = _centi(self.temperature_c)
        if centi is None or not -27315 <= centi <= 32767:
            msg = f"temperature {self.temperature_c} degC outside -273.15..327.67"
            raise ValueError(msg)
        return _s16(centi)


@dataclass(slots=True, frozen=True)
class HumiditySample:
    """Humidity 0x2A6F (GSS): uint16 in 0.01 %; None sends 0xFFFF, "value is not known"."""

    UUID16: ClassVar[int] = 0x2A6F

    humidity_pct: float | None = None

    def encode(self) -> bytes:
        if self.humidity_pct is None:
            return _u16(0xFFFF)
        centi = _centi(self.humidity_pct)
        if centi is None or not 0 <= centi <= 10000:
            msg = f"humidity {self.humidity_pct} % outside 0..100"
            raise ValueError(msg)
        return _u16(centi)


@dataclass(slots=True, frozen=True)
class BatteryLevelSample:
    """Battery Level 0x2A19 (GSS): uint8 percent, 0..100."""

    UUID16: ClassVar[int] = 0x2A19

    battery_pct: int

    def encode(self) -> bytes:
        if not 0 <= self.battery_pct <= 100:
            msg = f"battery level {self.battery_pct} % outside 0..100"
            raise ValueError(msg)
        return bytes((self.battery_pct,))


DEVICE_INFORMATION_UUIDS: Final = frozenset({0x2A24, 0x2A25, 0x2A26, 0x2A27, 0x2A28, 0x2A29})
"""Model, serial, firmware, hardware, software revision and manufacturer name strings."""


@dataclass(slots=True, frozen=True)
class DeviceInformationSample:
    """A Device Information Service string (DIS v1.1 §3): UTF-8, no terminator, <= 20 octets."""

    uuid16: int
    text: str

    def encode(self) -> bytes:
        if self.uuid16 not in DEVICE_INFORMATION_UUIDS:
            msg = f"0x{self.uuid16:04X} is not a Device Information string"
            raise ValueError(msg)
        return _checked(self.uuid16, self.text.encode("utf-8"))


MeasurementSample: TypeAlias = (
    HeartRateSample
    | PlxSpotCheckSample
    | PlxContinuousSample
    | TemperatureSample
    | BloodPressureSample
    | GlucoseSample
    | EnvironmentTemperatureSample
    | HumiditySample
    | BatteryLevelSample
)
Sample: TypeAlias = MeasurementSample | DeviceInformationSample

SAMPLE_TYPES: Final[dict[int, type[MeasurementSample]]] = {
    cls.UUID16: cls
    for cls in (
        HeartRateSample,
        PlxSpotCheckSample,
        PlxContinuousSample,
        TemperatureSample,
        BloodPressureSample,
        GlucoseSample,
        EnvironmentTemperatureSample,
        HumiditySample,
        BatteryLevelSample,
    )
}
"""The sample class of each measurement characteristic (Device Information: see its class)."""


def characteristic_of(sample: Sample) -> int:
    """The 16-bit UUID the sample's payload is the value of."""
    if isinstance(sample, DeviceInformationSample):
        return sample.uuid16
    return sample.UUID16

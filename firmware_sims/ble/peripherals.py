"""Simulated BLE health peripherals: the ward's wearables, served by the simulated radio.

Each peripheral exposes the Bluetooth SIG service its profile requires plus Battery (0x180F) and
Device Information (0x180A), takes its values from `firmware_sims.physiology` generators and its
payloads from the simulators' own encoders (`firmware_sims.ble.encoders`, never the agent's
decoders), and keeps every value
within the 20 octets of a default-MTU notification.

Chest patch vendor characteristic
---------------------------------
The chest patch adds respiration rate, which no SIG profile carries, on a vendor service:

- service        ``b7e40001-9c4d-4e5a-8f36-2d1a6c0e5b90``
- characteristic ``b7e40002-9c4d-4e5a-8f36-2d1a6c0e5b90`` (read, notify)

Its value is 2 octets:

===========  ======  ===============================================================
octet        type    meaning
===========  ======  ===============================================================
0            uint8   respiration rate in breaths/min; 0xFF = no value (no contact)
1            bitmap  bit 0: electrode contact detected; bit 1: motion artefact in the
                     window the rate was computed over; bits 2-7 reserved (sent 0,
                     ignored on receipt)
===========  ======  ===============================================================

A receiver reports no value when octet 0 is 0xFF or bit 0 of octet 1 is clear, and marks the
value as of doubtful quality when bit 1 is set. Octets after the second are reserved and ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

import numpy as np
from bleak.exc import BleakGATTProtocolError, BleakGATTProtocolErrorCode
from bleak.uuids import normalize_uuid_16, normalize_uuid_str

from edge_agent.protocol import by_name
from firmware_sims.ble.backend import CharacteristicDef, ServiceDef, SimulatedPeripheral
from firmware_sims.ble.encoders import (
    BatteryLevelSample,
    BloodPressureSample,
    DeviceInformationSample,
    EnvironmentTemperatureSample,
    GlucoseSample,
    HeartRateSample,
    HumiditySample,
    PlxContinuousSample,
    PlxSpotCheckSample,
    Special,
    TemperatureSample,
    max_rr_intervals,
)
from firmware_sims.events import EventSchedule
from firmware_sims.physiology import (
    MODELS,
    RoomClimate,
    VitalGenerator,
    VitalModel,
    heat_response_bpm,
)

# --- UUIDs (Bluetooth SIG Assigned Numbers §3.4 services, §3.8 characteristics) -----------------
HEART_RATE_SERVICE: Final = "180d"
PULSE_OXIMETER_SERVICE: Final = "1822"
HEALTH_THERMOMETER_SERVICE: Final = "1809"
BLOOD_PRESSURE_SERVICE: Final = "1810"
GLUCOSE_SERVICE: Final = "1808"
ENVIRONMENTAL_SENSING_SERVICE: Final = "181a"
BATTERY_SERVICE: Final = "180f"
DEVICE_INFORMATION_SERVICE: Final = "180a"

HEART_RATE_MEASUREMENT: Final = "2a37"
BODY_SENSOR_LOCATION: Final = "2a38"
PLX_SPOT_CHECK: Final = "2a5e"
PLX_CONTINUOUS: Final = "2a5f"
PLX_FEATURES: Final = "2a60"
TEMPERATURE_MEASUREMENT: Final = "2a1c"
TEMPERATURE_TYPE: Final = "2a1d"
BLOOD_PRESSURE_MEASUREMENT: Final = "2a35"
BLOOD_PRESSURE_FEATURE: Final = "2a49"
GLUCOSE_MEASUREMENT: Final = "2a18"
GLUCOSE_FEATURE: Final = "2a51"
RECORD_ACCESS_CONTROL_POINT: Final = "2a52"
ES_TEMPERATURE: Final = "2a6e"
ES_HUMIDITY: Final = "2a6f"
BATTERY_LEVEL: Final = "2a19"
MANUFACTURER_NAME: Final = "2a29"
MODEL_NUMBER: Final = "2a24"
SERIAL_NUMBER: Final = "2a25"
FIRMWARE_REVISION: Final = "2a26"

VENDOR_RESPIRATION_SERVICE: Final = "b7e40001-9c4d-4e5a-8f36-2d1a6c0e5b90"
VENDOR_RESPIRATION_RATE: Final = "b7e40002-9c4d-4e5a-8f36-2d1a6c0e5b90"
_VENDOR_NO_VALUE: Final = 0xFF
_VENDOR_CONTACT: Final = 0x01
_VENDOR_MOTION: Final = 0x02

# Body Sensor Location (Heart Rate Service v1.0 §3.2): 0x01 chest. Temperature Type (Health
# Thermometer Service v1.0 §3.2; GATT Specification Supplement "Temperature Type"): 0x02 body.
_BODY_SENSOR_CHEST: Final = 0x01
TEMPERATURE_TYPE_BODY: Final = 0x02

# Record Access Control Point (Glucose Service v1.0.1, "Record Access Control Point"; op codes,
# operators and response values from the GATT Specification Supplement, same name).
RACP_REPORT_STORED_RECORDS: Final = 0x01
RACP_RESPONSE_CODE: Final = 0x06
RACP_OPERATOR_NULL: Final = 0x00
RACP_OPERATOR_ALL: Final = 0x01
RACP_OPERATOR_LESS_OR_EQUAL: Final = 0x02
RACP_OPERATOR_GREATER_OR_EQUAL: Final = 0x03
RACP_OPERATOR_WITHIN_RANGE: Final = 0x04
RACP_OPERATOR_FIRST: Final = 0x05
RACP_OPERATOR_LAST: Final = 0x06
RACP_FILTER_SEQUENCE_NUMBER: Final = 0x01
RACP_SUCCESS: Final = 0x01
RACP_OP_CODE_NOT_SUPPORTED: Final = 0x02
RACP_INVALID_OPERATOR: Final = 0x03
RACP_OPERATOR_NOT_SUPPORTED: Final = 0x04
RACP_INVALID_OPERAND: Final = 0x05
RACP_NO_RECORDS_FOUND: Final = 0x06
RACP_OPERAND_NOT_SUPPORTED: Final = 0x09
_SEQUENCE_MODULUS: Final = 1 << 16
_PLX_SENSOR_DISCONNECTED: Final = 1 << 15
_RACP_FULL_UUID: Final = normalize_uuid_16(0x2A52)
_BATTERY_FULL_UUID: Final = normalize_uuid_16(0x2A19)
_RR_UNITS_PER_S: Final = 1024

# Vitals the shared physiology does not model, for the peripherals that report them: an
# oximeter's own pulse rate (like heart rate), an inpatient's capillary glucose, a room's
# humidity. The room's temperature is the room's own (RoomClimate), shared with its patients.
EXTRA_MODELS: Final[dict[str, VitalModel]] = {
    m.metric: m
    for m in (
        VitalModel("pulse_rate", 74.0, 7.0, 5.0, 16.0, 4.0, 300.0, 1.0, 1.0, 50.0, 115.0),
        VitalModel("glucose", 110.0, 15.0, 10.0, 8.0, 12.0, 3600.0, 4.0, 1.0, 60.0, 250.0),
        VitalModel("humidity", 45.0, 5.0, 4.0, 6.0, 2.0, 1800.0, 0.5, 0.5, 25.0, 70.0),
    )
}
# The room sensor's measurement noise (sd) around the room's temperature.
ROOM_SENSOR_NOISE_C: Final = 0.05

# Events are defined on the vitals a patient has; an oximeter's pulse rate follows the heart rate.
_EVENT_METRIC: Final = {"pulse_rate": "heart_rate"}

_MANUFACTURER: Final = "bedside-twin sims"
_FIRMWARE: Final = "1.0.0"
_MAX_TRUTH: Final = 10_000


@dataclass(slots=True, frozen=True)
class TruthValue:
    """What a peripheral measured (ground truth), whether or not it reached a central."""

    metric: str
    value: float
    ts_ns: int


@dataclass(slots=True, frozen=True)
class SentValue:
    """A value that reached a central, as the wire carries it (the ledger's view).

    `device_clock` says whether the payload carried the device's own time stamp (`ts_ns`, UTC);
    otherwise the central stamps the value on receipt and `ts_ns` is when the device sent it.
    """

    metric: str
    value: float
    ts_ns: int
    device_clock: bool


def on_wire(metric: str, value: float, exponent: int) -> float:
    """`value` as a device sends it: clipped to the catalogue's plausible range and rounded
    half-even to 10**exponent in decimal, exactly as the encoders quantise (so a decoder's
    exact conversion gives back this very float)."""
    entry = by_name(metric)
    clipped = min(entry.plausible_max, max(entry.plausible_min, value))
    step = Decimal(1).scaleb(exponent)
    return float(Decimal(repr(clipped)).quantize(step, rounding=ROUND_HALF_EVEN))


def encode_vendor_respiration(rate_per_min: int | None, *, contact: bool, motion: bool) -> bytes:
    """The chest patch's 2-octet respiration value (layout in this module's docstring)."""
    rate = _VENDOR_NO_VALUE if rate_per_min is None or not contact else rate_per_min
    if not 0 <= rate <= _VENDOR_NO_VALUE:
        msg = f"respiration rate {rate_per_min} does not fit the vendor uint8"
        raise ValueError(msg)
    status = (_VENDOR_CONTACT if contact else 0) | (_VENDOR_MOTION if motion else 0)
    return bytes((rate, status))


def rr_sent_values(rr_intervals_s: Sequence[float], ts_ns: int) -> list[SentValue]:
    """RR intervals as a central stores them: each at the beat that ended it, the last one at
    the notification (Heart Rate Service v1.0 §3.1.1.5 lists them oldest first)."""
    # The wire carries 1/1024 s units (GSS "Heart Rate Measurement", RR-Interval field).
    wire_s = [round(rr_s * _RR_UNITS_PER_S) / _RR_UNITS_PER_S for rr_s in rr_intervals_s]
    out: list[SentValue] = []
    later_s = 0.0
    for value_s in reversed(wire_s):
        out.append(SentValue("rr_interval", value_s, ts_ns - round(later_s * 1e9), False))
        later_s += value_s
    out.reverse()
    return out


def simulated_address(patient: int, device: int) -> str:
    """A static random device address (Core v5.3 Vol 6 Part B §1.3.2.1: top two bits set)."""
    return f"C6:B7:{(patient >> 8) & 0xFF:02X}:{patient & 0xFF:02X}:{device & 0xFF:02X}:01"


def address_spellings(address: str) -> tuple[str, ...]:
    """Every way a log or a tool might write a Bluetooth address: what a scan for leaked device
    identifiers has to look for (colons, dashes or none; upper or lower case)."""
    bare = address.replace(":", "")
    dashed = address.replace(":", "-")
    return (address, address.lower(), bare, bare.lower(), dashed, dashed.lower())


def _whole_seconds(ts_ns: int) -> int:
    return ts_ns // 1_000_000_000 * 1_000_000_000


def _device_time(ts_ns: int) -> datetime:
    # Device clocks keep whole seconds of UTC wall time and no zone (Date Time 0x2A08).
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).replace(tzinfo=None)


def _rng(seed: int, address: str) -> np.random.Generator:
    return np.random.default_rng([seed, *bytes.fromhex(address.replace(":", ""))])


def _info_service() -> list[ServiceDef]:
    return [
        ServiceDef(BATTERY_SERVICE, (CharacteristicDef(BATTERY_LEVEL, ("read", "notify")),)),
        ServiceDef(
            DEVICE_INFORMATION_SERVICE,
            (
                CharacteristicDef(MANUFACTURER_NAME, ("read",)),
                CharacteristicDef(MODEL_NUMBER, ("read",)),
                CharacteristicDef(SERIAL_NUMBER, ("read",)),
                CharacteristicDef(FIRMWARE_REVISION, ("read",)),
            ),
        ),
    ]


class HealthPeripheral(SimulatedPeripheral):
    """A health peripheral with a measurement loop, battery, device information and truth log."""

    kind: str = "ble-device"
    model_number: str = "SIM"
    reports: tuple[str, ...] = ()
    """Catalogue metrics of its measurements (battery level is reported by every model)."""
    default_interval_s: float = 1.0
    primary_service: str = HEART_RATE_SERVICE

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        """The profile's own services (Battery and Device Information are added to all)."""
        raise NotImplementedError

    def __init__(
        self,
        address: str,
        *,
        seed: int = 0,
        interval_s: float | None = None,
        rssi_dbm: int = -60,
        schedule: EventSchedule | None = None,
        room: RoomClimate | None = None,
    ) -> None:
        super().__init__(
            address,
            f"{self.kind}-{address[-5:-3]}",
            [*self.gatt_services(), *_info_service()],
            rssi_dbm=rssi_dbm,
            advertised_service_uuids=[self.primary_service],
            seed=seed,
        )
        self.interval_s = interval_s if interval_s is not None else self.default_interval_s
        self.rng = _rng(seed, address)
        self.generators: dict[str, VitalGenerator] = {}
        self.truth: deque[TruthValue] = deque(maxlen=_MAX_TRUTH)
        self.schedule = schedule
        # The room the device measures in: its patient's heart rate responds to its warmth.
        self.room = room
        # Hears every value that reached a central intact (the simulated ward's ledger).
        self.on_sent: Callable[[SentValue], None] | None = None
        self.battery_pct = 100.0
        self.halted = False
        serial = f"SN{int(self.rng.integers(10**9, 10**10))}"
        for uuid, text in (
            (MANUFACTURER_NAME, _MANUFACTURER),
            (MODEL_NUMBER, self.model_number),
            (FIRMWARE_REVISION, _FIRMWARE),
            # The serial number exists, as on a real device, so a test can prove it is never read.
            (SERIAL_NUMBER, serial),
        ):
            self.set_value(uuid, DeviceInformationSample(int(uuid, 16), text).encode())
        self.set_value(BATTERY_LEVEL, BatteryLevelSample(100).encode())
        self.setup()

    def setup(self) -> None:
        """Hook: static values and state of the profile, set once at construction."""

    def generator(self, metric: str) -> VitalGenerator:
        if metric not in self.generators:
            model = MODELS.get(metric) or EXTRA_MODELS[metric]
            self.generators[metric] = VitalGenerator(model, self.rng)
        return self.generators[metric]

    def measured(self, metric: str, ts_ns: int, exponent: int = 0) -> float:
        """The patient's value at `ts_ns`, events included, quantised as the wire carries it."""
        t_s = ts_ns / 1e9
        vital = _EVENT_METRIC.get(metric, metric)
        value = self.generator(metric).sample(t_s)
        if vital == "heart_rate" and self.room is not None:
            # After the generator's resting limits, so a warm room moves every patient alike;
            # an event under way (a tachycardia) then pulls the rate to its own target.
            value += heat_response_bpm(self.room.temp_c(t_s))
        if self.schedule is not None:
            value = self.schedule.apply(vital, t_s, value)
        return on_wire(metric, value, exponent)

    def sample(self, metric: str, ts_ns: int, exponent: int = 0) -> float:
        """`measured`, kept in the truth log."""
        value = self.measured(metric, ts_ns, exponent)
        self.truth.append(TruthValue(metric, value, ts_ns))
        return value

    def send(self, uuid: str, payload: bytes, sent: Sequence[SentValue]) -> bool:
        """Notify `payload`; `on_sent` hears of `sent` once the central received it intact."""
        return self.notify(uuid, payload, on_delivered=lambda: self.report(sent))

    def report(self, sent: Sequence[SentValue]) -> None:
        if self.on_sent is not None:
            for value in sent:
                self.on_sent(value)

    def read_value(self, uuid: str) -> bytes:
        value = super().read_value(uuid)
        if normalize_uuid_str(uuid) == _BATTERY_FULL_UUID:
            # A read answers synchronously: the central holds the level from now on.
            self.report([SentValue("battery", float(value[0]), time.time_ns(), False)])
        return value

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.halted:
                return
            # Stamped once, at acquisition, in UTC (STYLE "Time").
            self.measure(time.time_ns())
            self._drain_battery()

    def halt(self) -> None:
        """Stop measuring (the link stays up): a run ends with nothing left in flight."""
        self.halted = True

    def measure(self, ts_ns: int) -> None:
        """Take one measurement cycle at `ts_ns` and notify it; subclasses implement."""
        raise NotImplementedError

    def _drain_battery(self) -> None:
        # About 0.01 % per cycle: a strap lasts days, and the level visibly moves in a demo.
        before = int(self.battery_pct)
        self.battery_pct = max(0.0, self.battery_pct - 0.01)
        level = int(self.battery_pct)
        if level != before:
            payload = BatteryLevelSample(level).encode()
            self.set_value(BATTERY_LEVEL, payload)
            self.send(BATTERY_LEVEL, payload, [SentValue("battery", level, time.time_ns(), False)])


class HeartRateStrap(HealthPeripheral):
    """Chest strap: Heart Rate Measurement with contact, energy expended and RR intervals."""

    kind = "hr-strap"
    model_number = "SIM-HRS-1"
    reports: tuple[str, ...] = ("heart_rate", "rr_interval", "energy_expended")

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        return [
            ServiceDef(
                HEART_RATE_SERVICE,
                (
                    CharacteristicDef(HEART_RATE_MEASUREMENT, ("notify",)),
                    CharacteristicDef(BODY_SENSOR_LOCATION, ("read",)),
                ),
            )
        ]

    def setup(self) -> None:
        self.set_value(BODY_SENSOR_LOCATION, bytes((_BODY_SENSOR_CHEST,)))
        self.energy_kj = 0.0
        # Skin contact: a strap that slipped says so with the HRM contact bits (an artefact).
        self.contact = True

    def measure(self, ts_ns: int) -> None:
        bpm = round(self.sample("heart_rate", ts_ns))
        # About 0.35 kJ per beat-minute: enough for the cumulative field to move plausibly.
        self.energy_kj += bpm * self.interval_s / 60.0 * 0.35
        beats = max(1, round(bpm * self.interval_s / 60.0))
        # As many RR intervals as beats in the cycle, up to what fits one notification.
        room = max_rr_intervals(uint16_format=bpm > 0xFF, energy=True)
        rr_intervals_s = (60.0 / bpm,) * min(beats, room)
        energy_kj = min(0xFFFF, int(self.energy_kj))
        sample = HeartRateSample(
            heart_rate_bpm=bpm,
            sensor_contact="detected" if self.contact else "not_detected",
            energy_expended_kj=energy_kj,
            rr_intervals_s=rr_intervals_s,
        )
        sent = [SentValue("heart_rate", bpm, ts_ns, False)]
        sent += rr_sent_values(rr_intervals_s, ts_ns)
        sent.append(SentValue("energy_expended", energy_kj, ts_ns, False))
        self.send(HEART_RATE_MEASUREMENT, sample.encode(), sent)


class PulseOximeter(HealthPeripheral):
    """Finger oximeter: PLX Continuous every cycle, a PLX Spot-Check every `spot_check_every`."""

    kind = "pulse-oximeter"
    model_number = "SIM-PLX-1"
    reports = ("spo2", "pulse_rate")
    primary_service = PULSE_OXIMETER_SERVICE
    spot_check_every = 30

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        return [
            ServiceDef(
                PULSE_OXIMETER_SERVICE,
                (
                    CharacteristicDef(PLX_SPOT_CHECK, ("indicate",)),
                    CharacteristicDef(PLX_CONTINUOUS, ("notify",)),
                    CharacteristicDef(PLX_FEATURES, ("read",)),
                ),
            )
        ]

    def setup(self) -> None:
        # PLX Features (Pulse Oximeter Service v1.0.1 §3.3): Supported Features uint16 = 0,
        # none of the optional fields.
        self.set_value(PLX_FEATURES, b"\x00\x00")
        self.cycles = 0
        # A displaced probe: NaN values and the "sensor disconnected" status bit (an artefact).
        self.probe_off = False

    def measure(self, ts_ns: int) -> None:
        self.cycles += 1
        spot = self.cycles % self.spot_check_every == 0
        # A spot-check carries the device's time stamp, so its truth is kept at device time.
        at_ns = _whole_seconds(ts_ns) if spot else ts_ns
        spo2_pct = self.sample("spo2", at_ns)
        pulse_bpm = self.sample("pulse_rate", at_ns)
        spo2: float | Special = spo2_pct
        pulse: float | Special = pulse_bpm
        status = None
        if self.probe_off:
            # Pulse Oximeter Service v1.0.1 §3.1-3.2: Device and Sensor Status bit 15 "sensor
            # disconnected"; the values themselves are the SFLOAT NaN (IEEE 11073-20601 F.8).
            spo2, pulse, status = Special.NAN, Special.NAN, _PLX_SENSOR_DISCONNECTED

        def sent(stamp_ns: int, *, device_clock: bool) -> list[SentValue]:
            if self.probe_off:
                return []
            return [
                SentValue("spo2", spo2_pct, stamp_ns, device_clock),
                SentValue("pulse_rate", pulse_bpm, stamp_ns, device_clock),
            ]

        continuous = PlxContinuousSample(spo2, pulse, device_sensor_status=status)
        self.send(PLX_CONTINUOUS, continuous.encode(), sent(ts_ns, device_clock=False))
        if spot:
            spot_check = PlxSpotCheckSample(
                spo2, pulse, timestamp=_device_time(ts_ns), device_sensor_status=status
            )
            self.send(PLX_SPOT_CHECK, spot_check.encode(), sent(at_ns, device_clock=True))


class Thermometer(HealthPeripheral):
    """Body thermometer: Temperature Measurement with time stamp, by indication."""

    kind = "thermometer"
    model_number = "SIM-HTS-1"
    reports = ("body_temp",)
    default_interval_s = 10.0
    primary_service = HEALTH_THERMOMETER_SERVICE

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        return [
            ServiceDef(
                HEALTH_THERMOMETER_SERVICE,
                (
                    CharacteristicDef(TEMPERATURE_MEASUREMENT, ("indicate",)),
                    CharacteristicDef(TEMPERATURE_TYPE, ("read",)),
                ),
            )
        ]

    def setup(self) -> None:
        # The type is static, so it is exposed by the Temperature Type characteristic rather
        # than repeated in every measurement (Health Thermometer Service v1.0 §3.2).
        self.set_value(TEMPERATURE_TYPE, bytes((TEMPERATURE_TYPE_BODY,)))

    def measure(self, ts_ns: int) -> None:
        at_ns = _whole_seconds(ts_ns)
        # 0.1 degC steps: TemperatureSample's default FLOAT exponent.
        temp_c = self.sample("body_temp", at_ns, exponent=-1)
        sample = TemperatureSample(temp_c, timestamp=_device_time(ts_ns))
        sent = [SentValue("body_temp", temp_c, at_ns, True)]
        self.send(TEMPERATURE_MEASUREMENT, sample.encode(), sent)


class BloodPressureCuff(HealthPeripheral):
    """Periodic cuff: Blood Pressure Measurement (mmHg, MAP, time stamp, pulse) by indication."""

    kind = "bp-cuff"
    model_number = "SIM-BPS-1"
    reports = ("bp_systolic", "bp_diastolic", "bp_mean", "pulse_rate")
    default_interval_s = 15.0
    primary_service = BLOOD_PRESSURE_SERVICE

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        return [
            ServiceDef(
                BLOOD_PRESSURE_SERVICE,
                (
                    CharacteristicDef(BLOOD_PRESSURE_MEASUREMENT, ("indicate",)),
                    CharacteristicDef(BLOOD_PRESSURE_FEATURE, ("read",)),
                ),
            )
        ]

    def setup(self) -> None:
        # Blood Pressure Feature (Blood Pressure Service v1.1 §3.2): uint16 = 0, none optional.
        self.set_value(BLOOD_PRESSURE_FEATURE, b"\x00\x00")

    def measure(self, ts_ns: int) -> None:
        at_ns = _whole_seconds(ts_ns)
        systolic = self.measured("bp_systolic", at_ns)
        # A cuff never reports a diastolic at or above the systolic of the same cycle.
        diastolic = min(systolic - 10.0, self.measured("bp_diastolic", at_ns))
        # MAP from the same cycle: diastolic plus a third of the pulse pressure.
        mean = float(round(diastolic + (systolic - diastolic) / 3.0))
        pulse = self.measured("pulse_rate", at_ns)
        values = (
            ("bp_systolic", systolic),
            ("bp_diastolic", diastolic),
            ("bp_mean", mean),
            ("pulse_rate", pulse),
        )
        for metric, value in values:
            self.truth.append(TruthValue(metric, value, at_ns))
        sample = BloodPressureSample(
            systolic,
            diastolic,
            mean,
            timestamp=_device_time(ts_ns),
            pulse_rate_bpm=pulse,
            measurement_status=0,
        )
        sent = [SentValue(metric, value, at_ns, True) for metric, value in values]
        self.send(BLOOD_PRESSURE_MEASUREMENT, sample.encode(), sent)


@dataclass(slots=True, frozen=True)
class GlucoseRecord:
    """One stored glucose record: its sequence number, device time and concentration."""

    sequence_number: int
    ts_ns: int
    glucose_mg_dl: float


class GlucoseMeter(HealthPeripheral):
    """Glucose meter: stores every record with a sequence number and serves them over RACP.

    A new record is notified at once to a subscribed central (as connected meters do); records
    taken while no central listened are fetched with the Record Access Control Point ("report
    stored records with sequence number >= N"), which is how the agent fills the gap.
    """

    kind = "glucose-meter"
    model_number = "SIM-GLS-1"
    reports = ("glucose",)
    default_interval_s = 300.0
    primary_service = GLUCOSE_SERVICE
    capacity = 500
    first_sequence = 0

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        return [
            ServiceDef(
                GLUCOSE_SERVICE,
                (
                    CharacteristicDef(GLUCOSE_MEASUREMENT, ("notify",)),
                    CharacteristicDef(GLUCOSE_FEATURE, ("read",)),
                    CharacteristicDef(RECORD_ACCESS_CONTROL_POINT, ("write", "indicate")),
                ),
            )
        ]

    def setup(self) -> None:
        # Glucose Feature (GLS v1.0.1, "Glucose Feature"): uint16 bitmap, no optional features.
        self.set_value(GLUCOSE_FEATURE, b"\x00\x00")
        self.records: deque[GlucoseRecord] = deque(maxlen=self.capacity)
        self.next_sequence = self.first_sequence % _SEQUENCE_MODULUS
        self.racp_requests: list[bytes] = []
        self.records_received: set[int] = set()

    def measure(self, ts_ns: int) -> None:
        at_ns = _whole_seconds(ts_ns)
        # 1 mg/dL steps: GlucoseSample's default kg/L exponent (-5).
        record = GlucoseRecord(self.next_sequence, at_ns, self.sample("glucose", at_ns))
        self.next_sequence = (self.next_sequence + 1) % _SEQUENCE_MODULUS
        self.records.append(record)
        self._notify_record(record)

    def _notify_record(self, record: GlucoseRecord) -> None:
        def received() -> None:
            # A record sent live and again on request is one reading: reported the first time.
            if record.sequence_number not in self.records_received:
                self.records_received.add(record.sequence_number)
                self.report([SentValue("glucose", record.glucose_mg_dl, record.ts_ns, True)])

        self.notify(GLUCOSE_MEASUREMENT, self._encode(record), on_delivered=received)

    def _encode(self, record: GlucoseRecord) -> bytes:
        sample = GlucoseSample(
            record.sequence_number,
            base_time=_device_time(record.ts_ns),
            time_offset_min=0,
            glucose_mg_dl=record.glucose_mg_dl,
        )
        return sample.encode()

    def handle_write(self, uuid: str, data: bytes) -> None:
        if normalize_uuid_str(uuid) != _RACP_FULL_UUID:
            super().handle_write(uuid, data)
            return
        if not self.is_subscribed(RECORD_ACCESS_CONTROL_POINT):
            # A RACP write while indications are off: ATT error 0xFD (GLS, RACP procedures).
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.CCCD_IMPROPERLY_CONFIGURED)
        self.racp_requests.append(bytes(data))
        selected, code = self._select(data)
        for record in selected:
            self._notify_record(record)
        # Response Code: op code 0x06, operator Null, operand = request op code, response value.
        request = data[0] if data else 0
        response = bytes((RACP_RESPONSE_CODE, RACP_OPERATOR_NULL, request, code))
        self.notify(RECORD_ACCESS_CONTROL_POINT, response)

    def _select(self, data: bytes) -> tuple[list[GlucoseRecord], int]:
        try:
            records = self._filter(data)
        except _RacpRefusedError as refused:
            return [], refused.code
        return (records, RACP_SUCCESS) if records else ([], RACP_NO_RECORDS_FOUND)

    def _filter(self, data: bytes) -> list[GlucoseRecord]:
        if len(data) < 2:
            raise _RacpRefusedError(RACP_INVALID_OPERATOR)
        op_code, operator, operand = data[0], data[1], data[2:]
        if op_code != RACP_REPORT_STORED_RECORDS:
            raise _RacpRefusedError(RACP_OP_CODE_NOT_SUPPORTED)
        records = list(self.records)
        if operator in (RACP_OPERATOR_ALL, RACP_OPERATOR_FIRST, RACP_OPERATOR_LAST):
            if operand:
                raise _RacpRefusedError(RACP_INVALID_OPERAND)
            if operator == RACP_OPERATOR_FIRST:
                return records[:1]
            return records[-1:] if operator == RACP_OPERATOR_LAST else records
        if operator in (RACP_OPERATOR_GREATER_OR_EQUAL, RACP_OPERATOR_LESS_OR_EQUAL):
            bound = _sequence_operand(operand)
            if operator == RACP_OPERATOR_GREATER_OR_EQUAL:
                return [r for r in records if r.sequence_number >= bound]
            return [r for r in records if r.sequence_number <= bound]
        if operator == RACP_OPERATOR_WITHIN_RANGE:
            raise _RacpRefusedError(RACP_OPERATOR_NOT_SUPPORTED)
        raise _RacpRefusedError(RACP_INVALID_OPERATOR)


class _RacpRefusedError(Exception):
    """A RACP request the meter answers with a Response Code other than success."""

    def __init__(self, code: int) -> None:
        super().__init__(f"RACP response code 0x{code:02x}")
        self.code = code


def _sequence_operand(operand: bytes) -> int:
    # Operand: filter type (uint8) then a uint16 sequence number, little endian.
    if len(operand) != 3:
        raise _RacpRefusedError(RACP_INVALID_OPERAND)
    if operand[0] != RACP_FILTER_SEQUENCE_NUMBER:
        raise _RacpRefusedError(RACP_OPERAND_NOT_SUPPORTED)
    return int.from_bytes(operand[1:3], "little")


class EnvironmentalSensor(HealthPeripheral):
    """Room sensor: Environmental Sensing temperature (0x2A6E) and humidity (0x2A6F)."""

    kind = "env-sensor"
    model_number = "SIM-ESS-1"
    reports = ("room_temp", "humidity")
    # Battery room sensors update every few seconds; enough for the room to be followed while it
    # warms, and for a short demo to see several readings.
    default_interval_s = 5.0
    primary_service = ENVIRONMENTAL_SENSING_SERVICE

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        return [
            ServiceDef(
                ENVIRONMENTAL_SENSING_SERVICE,
                (
                    CharacteristicDef(ES_TEMPERATURE, ("read", "notify")),
                    CharacteristicDef(ES_HUMIDITY, ("read", "notify")),
                ),
            )
        ]

    def setup(self) -> None:
        # A sensor outside a simulated ward measures a room of its own.
        self.climate = self.room if self.room is not None else RoomClimate.draw(self.rng)

    def measured(self, metric: str, ts_ns: int, exponent: int = 0) -> float:
        if metric != "room_temp":
            return super().measured(metric, ts_ns, exponent)
        noise_c = float(self.rng.normal(0.0, ROOM_SENSOR_NOISE_C))
        return on_wire(metric, self.climate.temp_c(ts_ns / 1e9) + noise_c, exponent)

    def measure(self, ts_ns: int) -> None:
        # Both characteristics carry hundredths (GSS "Temperature" 0x2A6E, "Humidity" 0x2A6F).
        room_c = self.sample("room_temp", ts_ns, exponent=-2)
        humidity_pct = self.sample("humidity", ts_ns, exponent=-2)
        temp = EnvironmentTemperatureSample(room_c).encode()
        humidity = HumiditySample(humidity_pct).encode()
        self.set_value(ES_TEMPERATURE, temp)
        self.set_value(ES_HUMIDITY, humidity)
        self.send(ES_TEMPERATURE, temp, [SentValue("room_temp", room_c, ts_ns, False)])
        self.send(ES_HUMIDITY, humidity, [SentValue("humidity", humidity_pct, ts_ns, False)])


class ChestPatch(HeartRateStrap):
    """Chest patch: heart rate every cycle, respiration rate on the vendor characteristic."""

    kind = "chest-patch"
    model_number = "SIM-PATCH-1"
    reports = (*HeartRateStrap.reports, "resp_rate")
    respiration_every = 4

    @classmethod
    def gatt_services(cls) -> list[ServiceDef]:
        vendor = ServiceDef(
            VENDOR_RESPIRATION_SERVICE,
            (CharacteristicDef(VENDOR_RESPIRATION_RATE, ("read", "notify")),),
        )
        return [*super().gatt_services(), vendor]

    def setup(self) -> None:
        super().setup()
        self.contact = True
        self.motion = False
        self.cycles = 0

    def measure(self, ts_ns: int) -> None:
        super().measure(ts_ns)
        self.cycles += 1
        if self.cycles % self.respiration_every:
            return
        rate = round(self.sample("resp_rate", ts_ns)) if self.contact else None
        payload = encode_vendor_respiration(rate, contact=self.contact, motion=self.motion)
        self.set_value(VENDOR_RESPIRATION_RATE, payload)
        sent = [] if rate is None else [SentValue("resp_rate", rate, ts_ns, False)]
        self.send(VENDOR_RESPIRATION_RATE, payload, sent)


PERIPHERAL_KINDS: Final[dict[str, type[HealthPeripheral]]] = {
    cls.kind: cls
    for cls in (
        HeartRateStrap,
        PulseOximeter,
        Thermometer,
        BloodPressureCuff,
        GlucoseMeter,
        EnvironmentalSensor,
        ChestPatch,
    )
}
"""Every simulated model by device kind (`firmware-sims list` and the fleet build from it)."""

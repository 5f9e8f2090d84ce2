"""Device quality bits: what a device said about one reading, carried in frame v1 `quality`.

The health profiles each report quality their own way (Heart Rate contact bits, PLX measurement
status and device/sensor status, Blood Pressure measurement status, Glucose sensor status
annunciation). The decoders fold them onto the one set of bits below, so the filter bank and
the twin can reason about quality without knowing the device's profile. The tables at the end
are the mapping: every status bit a profile defines, its name in `edge-agent decode --json`, and
the quality bit it sets. The reading's metric decides which readings of a payload get the bits
(see `edge_agent.devices.gatt.to_readings`).

These bits travel in frames and are stored in InfluxDB's `vital.quality`: never renumber one,
only append new bits above the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SENSOR_CONTACT_LOST: Final = 1 << 0
"""The sensor is not in contact with the patient (HRM contact not detected, PLX unconnected)."""
PROBE_OFF: Final = 1 << 1
"""The probe is disconnected or displaced (PLX sensor disconnected / displaced)."""
LOW_PERFUSION: Final = 1 << 2
"""The oximeter detects low perfusion: SpO2 is less certain, but the patient may be shocked."""
SIGNAL_POOR: Final = 1 << 3
"""Inadequate, poor, erratic, non-pulsatile or interfered signal, or irregular processing."""
MEASUREMENT_ONGOING: Final = 1 << 4
"""The device is still measuring or analysing; the value may still move."""
EARLY_ESTIMATE: Final = 1 << 5
"""The device marks the value as an early estimate."""
VALIDATED_DATA: Final = 1 << 6
"""The device marks the value as validated."""
DEVICE_MALFUNCTION: Final = 1 << 7
"""Equipment, sensor or general device fault reported with this reading."""
QUESTIONABLE: Final = 1 << 8
"""The device calls the value questionable (PLX questionable measurement or pulse, unknown
sensor, glucose sensor temperature out of its valid range)."""
CALIBRATION: Final = 1 << 9
"""Calibration was ongoing during the measurement."""
INVALID: Final = 1 << 10
"""The device says the value is invalid or unavailable (PLX invalid / unavailable, glucose strip
or sample errors)."""
MOTION: Final = 1 << 11
"""Body movement during the measurement (blood pressure)."""
CUFF_LOOSE: Final = 1 << 12
"""The blood-pressure cuff was too loose."""
IRREGULAR_PULSE: Final = 1 << 13
"""The blood-pressure monitor detected an irregular pulse: clinically relevant, not an error."""
IMPROPER_POSITION: Final = 1 << 14
"""Improper measurement position (blood pressure)."""
OUT_OF_DEVICE_RANGE: Final = 1 << 15
"""The value is beyond what the device measures (BP pulse rate range, glucose above/below the
meter's range): the true value is more extreme than the one reported."""
STORED_DATA: Final = 1 << 16
"""The value comes from the device's measurement storage, not a live measurement."""
NOT_PATIENT_DATA: Final = 1 << 17
"""Demonstration, testing or control-solution data: not a measurement of the patient."""
TIME_UNRELIABLE: Final = 1 << 18
"""The device's clock is not set or had a time fault: its timestamp is not to be trusted."""
DEVICE_BATTERY_LOW: Final = 1 << 19
"""The device's battery was low when it measured."""
FULLY_QUALIFIED: Final = 1 << 20
"""The device marks the value as fully qualified."""

BAD_QUALITY_MASK: Final = (
    SENSOR_CONTACT_LOST
    | PROBE_OFF
    | SIGNAL_POOR
    | DEVICE_MALFUNCTION
    | QUESTIONABLE
    | CALIBRATION
    | INVALID
    | MOTION
    | CUFF_LOOSE
    | IMPROPER_POSITION
    | NOT_PATIENT_DATA
)
"""Bits that make a value unfit to drive clinical alerts. Deliberately left out: LOW_PERFUSION,
IRREGULAR_PULSE and OUT_OF_DEVICE_RANGE (they accompany real deterioration), and the purely
informative bits. Suggested as a filter preset's `bad_quality_mask`."""

NAMES: Final[dict[int, str]] = {
    SENSOR_CONTACT_LOST: "sensor_contact_lost",
    PROBE_OFF: "probe_off",
    LOW_PERFUSION: "low_perfusion",
    SIGNAL_POOR: "signal_poor",
    MEASUREMENT_ONGOING: "measurement_ongoing",
    EARLY_ESTIMATE: "early_estimate",
    VALIDATED_DATA: "validated_data",
    DEVICE_MALFUNCTION: "device_malfunction",
    QUESTIONABLE: "questionable",
    CALIBRATION: "calibration",
    INVALID: "invalid",
    MOTION: "motion",
    CUFF_LOOSE: "cuff_loose",
    IRREGULAR_PULSE: "irregular_pulse",
    IMPROPER_POSITION: "improper_position",
    OUT_OF_DEVICE_RANGE: "out_of_device_range",
    STORED_DATA: "stored_data",
    NOT_PATIENT_DATA: "not_patient_data",
    TIME_UNRELIABLE: "time_unreliable",
    DEVICE_BATTERY_LOW: "device_battery_low",
    FULLY_QUALIFIED: "fully_qualified",
}


def names(quality: int) -> list[str]:
    """The names of the quality bits set, lowest bit first (unknown bits are skipped)."""
    return [name for bit, name in NAMES.items() if quality & bit]


@dataclass(slots=True, frozen=True)
class StatusBit:
    """One bit of a profile's status field: its position, its JSON name and its quality bit."""

    bit: int
    name: str
    quality: int


# PLX Measurement Status, uint16 (Pulse Oximeter Service v1.0.1 §3.1 and §3.2, the Spot-check
# and Continuous Measurement characteristics; GATT Specification Supplement, same names).
# Bits 0-4 are RFU.
PLX_MEASUREMENT_STATUS: Final = (
    StatusBit(5, "measurement_ongoing", MEASUREMENT_ONGOING),
    StatusBit(6, "early_estimated_data", EARLY_ESTIMATE),
    StatusBit(7, "validated_data", VALIDATED_DATA),
    StatusBit(8, "fully_qualified_data", FULLY_QUALIFIED),
    StatusBit(9, "data_from_measurement_storage", STORED_DATA),
    StatusBit(10, "data_for_demonstration", NOT_PATIENT_DATA),
    StatusBit(11, "data_for_testing", NOT_PATIENT_DATA),
    StatusBit(12, "calibration_ongoing", CALIBRATION),
    StatusBit(13, "measurement_unavailable", INVALID),
    StatusBit(14, "questionable_measurement_detected", QUESTIONABLE),
    StatusBit(15, "invalid_measurement_detected", INVALID),
)

# PLX Device and Sensor Status, uint24 (same sections). Bits 16-23 are RFU. An extended display
# update means the oximeter holds its value because the signal is poor, hence SIGNAL_POOR.
PLX_DEVICE_SENSOR_STATUS: Final = (
    StatusBit(0, "extended_display_update_ongoing", SIGNAL_POOR),
    StatusBit(1, "equipment_malfunction_detected", DEVICE_MALFUNCTION),
    StatusBit(2, "signal_processing_irregularity_detected", SIGNAL_POOR),
    StatusBit(3, "inadequate_signal_detected", SIGNAL_POOR),
    StatusBit(4, "poor_signal_detected", SIGNAL_POOR),
    StatusBit(5, "low_perfusion_detected", LOW_PERFUSION),
    StatusBit(6, "erratic_signal_detected", SIGNAL_POOR),
    StatusBit(7, "nonpulsatile_signal_detected", SIGNAL_POOR),
    StatusBit(8, "questionable_pulse_detected", QUESTIONABLE),
    StatusBit(9, "signal_analysis_ongoing", MEASUREMENT_ONGOING),
    StatusBit(10, "sensor_interference_detected", SIGNAL_POOR),
    StatusBit(11, "sensor_unconnected_to_user", SENSOR_CONTACT_LOST),
    StatusBit(12, "unknown_sensor_connected", QUESTIONABLE),
    StatusBit(13, "sensor_displaced", PROBE_OFF),
    StatusBit(14, "sensor_malfunctioning", DEVICE_MALFUNCTION),
    StatusBit(15, "sensor_disconnected", PROBE_OFF),
)

# Blood Pressure Measurement Status, uint16 (Blood Pressure Service v1.1 §3.1, Blood Pressure
# Measurement; GATT Specification Supplement, same name). Bits 3-4 are the two-bit pulse rate
# range field, listed separately below; bits 6-15 are RFU. These bits apply to every reading
# of the measurement; the pulse rate range applies to the pulse rate only.
BP_MEASUREMENT_STATUS: Final = (
    StatusBit(0, "body_movement", MOTION),
    StatusBit(1, "cuff_too_loose", CUFF_LOOSE),
    StatusBit(2, "irregular_pulse", IRREGULAR_PULSE),
    StatusBit(5, "improper_measurement_position", IMPROPER_POSITION),
)
BP_PULSE_RATE_RANGE_SHIFT: Final = 3
BP_PULSE_RATE_RANGE: Final[dict[int, StatusBit]] = {
    # Value of bits 3-4: 0 within range, 1 above the upper limit, 2 below the lower limit,
    # 3 RFU (tolerated, reported as nothing).
    1: StatusBit(3, "pulse_rate_exceeds_upper_limit", OUT_OF_DEVICE_RANGE),
    2: StatusBit(3, "pulse_rate_below_lower_limit", OUT_OF_DEVICE_RANGE),
}

# Glucose Sensor Status Annunciation, uint16 (Glucose Service v1.0.1 §3.1, Glucose Measurement; GATT
# Specification Supplement, same name). Bits 12-15 are RFU.
GLUCOSE_SENSOR_STATUS: Final = (
    StatusBit(0, "device_battery_low", DEVICE_BATTERY_LOW),
    StatusBit(1, "sensor_malfunction", DEVICE_MALFUNCTION),
    StatusBit(2, "sample_size_insufficient", INVALID),
    StatusBit(3, "strip_insertion_error", INVALID),
    StatusBit(4, "strip_type_incorrect", INVALID),
    StatusBit(5, "result_above_device_range", OUT_OF_DEVICE_RANGE),
    StatusBit(6, "result_below_device_range", OUT_OF_DEVICE_RANGE),
    StatusBit(7, "sensor_temperature_too_high", QUESTIONABLE),
    StatusBit(8, "sensor_temperature_too_low", QUESTIONABLE),
    StatusBit(9, "strip_pulled_too_soon", INVALID),
    StatusBit(10, "general_device_fault", DEVICE_MALFUNCTION),
    StatusBit(11, "time_fault", TIME_UNRELIABLE),
)

# Flags and enumerations that set quality bits outside the status fields:
# - Heart Rate Measurement flags bits 1-2 = 0b10 (contact supported, not detected):
#   SENSOR_CONTACT_LOST on heart_rate and rr_interval (Heart Rate Service v1.0 §3.1).
# - PLX Spot-Check flags bit 4 "device clock is not set": TIME_UNRELIABLE on spo2 and pulse_rate.
# - Glucose type 10 "control solution" or sample location 4 "control solution": NOT_PATIENT_DATA.


def status_names(table: tuple[StatusBit, ...], bits: int) -> list[str]:
    """The names of the set bits of a status field, in bit order (RFU bits are skipped)."""
    return [entry.name for entry in table if bits >> entry.bit & 1]


def status_quality(table: tuple[StatusBit, ...], bits: int) -> int:
    """The quality bits a status field sets."""
    quality = 0
    for entry in table:
        if bits >> entry.bit & 1:
            quality |= entry.quality
    return quality

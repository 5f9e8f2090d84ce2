"""The metric catalogue: wire code, name, UCUM unit, LOINC code and plausible range per vital."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edge_agent.protocol.errors import CatalogueError


@dataclass(slots=True, frozen=True)
class Metric:
    """One catalogue entry. `code` travels in frames; `name` is the InfluxDB `metric` tag."""

    code: int
    name: str
    ucum: str
    loinc: str | None
    plausible_min: float
    plausible_max: float
    title: str


# Codes are part of frame v1: never renumber, only append. LOINC codes are those of the HL7 FHIR R4
# vital-signs profiles where one exists; gateway and device-health metrics have none.
CATALOGUE: Final[tuple[Metric, ...]] = (
    Metric(1, "heart_rate", "/min", "8867-4", 20.0, 300.0, "Heart rate"),
    Metric(2, "spo2", "%", "59408-5", 50.0, 100.0, "Oxygen saturation (pulse oximetry)"),
    Metric(3, "resp_rate", "/min", "9279-1", 2.0, 80.0, "Respiratory rate"),
    Metric(4, "body_temp", "Cel", "8310-5", 25.0, 45.0, "Body temperature"),
    Metric(5, "bp_systolic", "mm[Hg]", "8480-6", 40.0, 300.0, "Systolic blood pressure"),
    Metric(6, "bp_diastolic", "mm[Hg]", "8462-4", 20.0, 200.0, "Diastolic blood pressure"),
    Metric(7, "bp_mean", "mm[Hg]", "8478-0", 30.0, 250.0, "Mean arterial pressure"),
    Metric(8, "pulse_rate", "/min", "8889-8", 20.0, 300.0, "Pulse rate (oximeter)"),
    Metric(9, "rr_interval", "s", None, 0.2, 3.0, "RR interval"),
    Metric(10, "glucose", "mg/dL", "2339-0", 10.0, 1000.0, "Blood glucose"),
    Metric(11, "room_temp", "Cel", None, -10.0, 50.0, "Room temperature"),
    Metric(12, "humidity", "%", None, 0.0, 100.0, "Room relative humidity"),
    Metric(13, "battery", "%", None, 0.0, 100.0, "Device battery level"),
    Metric(14, "energy_expended", "kJ", None, 0.0, 65535.0, "Energy expended"),
    # Implantable-device telemetry (docs/serial-formats.md): trends, battery, leads, episodes.
    Metric(15, "night_heart_rate", "/min", None, 20.0, 250.0, "Night heart rate (implant)"),
    Metric(16, "activity_time", "min/d", None, 0.0, 1440.0, "Daily activity (implant)"),
    Metric(17, "af_burden", "%", None, 0.0, 100.0, "AF burden (implant)"),
    Metric(18, "fluid_index", "Ohm.d", None, 0.0, 65535.0, "Thoracic fluid index (implant)"),
    Metric(19, "battery_voltage", "V", None, 0.0, 10.0, "Implant battery voltage"),
    Metric(20, "battery_longevity", "mo", None, 0.0, 300.0, "Implant battery longevity"),
    Metric(21, "battery_phase", "{phase}", None, 0.0, 2.0, "Implant battery phase (BOS/ERI/EOS)"),
    Metric(22, "lead_impedance_ra", "Ohm", None, 0.0, 20000.0, "Lead impedance, right atrial"),
    Metric(23, "lead_impedance_rv", "Ohm", None, 0.0, 20000.0, "Lead impedance, right ventricular"),
    Metric(24, "lead_impedance_lv", "Ohm", None, 0.0, 20000.0, "Lead impedance, left ventricular"),
    Metric(25, "lead_impedance_hv", "Ohm", None, 0.0, 20000.0, "Lead impedance, shock (HV)"),
    Metric(26, "episode_type", "{type}", None, 0.0, 255.0, "Arrhythmia episode type"),
    Metric(27, "episode_duration", "s", None, 0.0, 604800.0, "Arrhythmia episode duration"),
    Metric(28, "episode_max_rate", "/min", None, 0.0, 400.0, "Arrhythmia episode maximum rate"),
    Metric(29, "episode_therapy", "{therapy}", None, 0.0, 255.0, "Arrhythmia episode therapy"),
    Metric(30, "implant_error_code", "1", None, 0.0, 4294967295.0, "Implant error code"),
    Metric(31, "implant_link_rssi", "dB[mW]", None, -150.0, 20.0, "Implant telemetry link RSSI"),
)

_BY_CODE: Final = {metric.code: metric for metric in CATALOGUE}
_BY_NAME: Final = {metric.name: metric for metric in CATALOGUE}


def by_code(code: int) -> Metric:
    """Look a metric up by its wire code."""
    try:
        return _BY_CODE[code]
    except KeyError:
        msg = f"metric code {code} is not in the catalogue"
        raise CatalogueError(msg) from None


def by_name(name: str) -> Metric:
    """Look a metric up by its catalogue name (e.g. 'heart_rate')."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        msg = f"metric {name!r} is not in the catalogue (known: {known})"
        raise CatalogueError(msg) from None

"""FHIR R4 export of a patient's twin: a collection Bundle of Patient, Devices, Observations."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cloud_sink.clinical import freshness, news2_for, news2_vitals, observations
from cloud_sink.errors import CloudSinkError
from cloud_sink.influx import InfluxV1
from cloud_sink.news2 import PARAMETERS, News2Score
from cloud_sink.profiles import PatientProfile, read_profile
from cloud_sink.twin import (
    NS,
    TwinView,
    UnknownPatient,
    check_token,
    device_kinds,
    read_twin,
)

Json = dict[str, Any]

FHIR_VERSION: Final = "4.0.1"
"""FHIR R4 (http://hl7.org/fhir/R4/); every structure below follows that release."""

# Code systems (FHIR R4 terminology pages: http://hl7.org/fhir/R4/terminologies-systems.html).
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
SNOMED_CT: Final = "http://snomed.info/sct"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
V3_OBSERVATION_VALUE: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"

# Our own identifier namespaces: the tokens are pseudonyms minted by the product (DESIGN §4).
# (S105: these name identifier systems, they are not secrets.)
PATIENT_TOKEN_SYSTEM: Final = "urn:bedside-twin:patient-token"  # noqa: S105
DEVICE_TOKEN_SYSTEM: Final = "urn:bedside-twin:device-token"  # noqa: S105
# An anonymised export's ids are random and valid in that one export only (fhir_anonymous.py);
# their own systems keep anyone from mistaking them for tokens.
EXPORT_SUBJECT_SYSTEM: Final = "urn:bedside-twin:export-subject"
EXPORT_DEVICE_SYSTEM: Final = "urn:bedside-twin:export-device"
READING_SYSTEM: Final = "urn:bedside-twin:reading"
# Resource ids are name-based UUIDs (RFC 4122 §4.3) of the reading identity, so exporting the
# same data twice gives the same ids and a receiver can de-duplicate.
ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bedside-twin:fhir")

VITALSIGNS_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
BP_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/bp"


@dataclass(slots=True, frozen=True)
class Coding:
    system: str
    code: str
    display: str

    def json(self) -> Json:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(slots=True, frozen=True)
class VitalSign:
    """How one catalogue metric maps to an R4 vital-signs profile."""

    profile: str
    codings: tuple[Coding, ...]
    text: str
    ucum: str
    unit: str


# FHIR R4 Vital Signs profiles (http://hl7.org/fhir/R4/observation-vitalsigns.html): the profile
# URL, the LOINC code each profile fixes (first coding), and the UCUM unit it fixes for
# valueQuantity. Extra codings are allowed (code.coding is sliced open): SpO2 adds 59408-5 (by pulse
# oximetry), as the R4 example observation-example-satO2 does; the oximeter's pulse rate is a heart
# rate (heartrate profile) that adds 8889-8 (heart rate by pulse oximetry).
VITAL_SIGNS: Final[Mapping[str, VitalSign]] = {
    "heart_rate": VitalSign(
        "http://hl7.org/fhir/StructureDefinition/heartrate",
        (Coding(LOINC, "8867-4", "Heart rate"),),
        "Heart rate",
        "/min",
        "beats/minute",
    ),
    "pulse_rate": VitalSign(
        "http://hl7.org/fhir/StructureDefinition/heartrate",
        (
            Coding(LOINC, "8867-4", "Heart rate"),
            Coding(LOINC, "8889-8", "Heart rate by Pulse oximetry"),
        ),
        "Heart rate (pulse oximeter)",
        "/min",
        "beats/minute",
    ),
    "resp_rate": VitalSign(
        "http://hl7.org/fhir/StructureDefinition/resprate",
        (Coding(LOINC, "9279-1", "Respiratory rate"),),
        "Respiratory rate",
        "/min",
        "breaths/minute",
    ),
    "spo2": VitalSign(
        "http://hl7.org/fhir/StructureDefinition/oxygensat",
        (
            Coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood"),
            Coding(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        "Oxygen saturation (pulse oximetry)",
        "%",
        "%",
    ),
    "body_temp": VitalSign(
        "http://hl7.org/fhir/StructureDefinition/bodytemp",
        (Coding(LOINC, "8310-5", "Body temperature"),),
        "Body temperature",
        "Cel",
        "°C",
    ),
}

# R4 bp profile: code 85354-9 and two required components (slices SystolicBP 8480-6, DiastolicBP
# 8462-4) in mm[Hg]; component is sliced open, so the mean pressure (8478-0) may ride along.
BP_PANEL: Final = Coding(LOINC, "85354-9", "Blood pressure panel with all children optional")
BP_COMPONENTS: Final[Mapping[str, Coding]] = {
    "bp_systolic": Coding(LOINC, "8480-6", "Systolic blood pressure"),
    "bp_diastolic": Coding(LOINC, "8462-4", "Diastolic blood pressure"),
    "bp_mean": Coding(LOINC, "8478-0", "Mean blood pressure"),
}
BP_REQUIRED: Final = ("bp_systolic", "bp_diastolic")
EXPORTED_METRICS: Final = (*VITAL_SIGNS, *BP_COMPONENTS)

# NEWS2 total score: SNOMED CT UK Edition concept 1104051000000101, as used by NHS England's UK
# Core (example UKCore-Bundle-NEWS2Observations-Example) and NHS Digital's FHIR NEWS2 guidance,
# with category "survey" and a UCUM "{score}" quantity; `code.text` names it for any reader.
NEWS2_CODING: Final = Coding(
    SNOMED_CT,
    "1104051000000101",
    "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
)
NEWS2_TEXT: Final = "NEWS2 total score"
NEWS2_PARAMETER_TEXT: Final[Mapping[str, str]] = {
    "rr": "NEWS2 sub-score: respiration rate",
    "spo2": "NEWS2 sub-score: oxygen saturation",
    "oxygen": "NEWS2 sub-score: air or oxygen",
    "sbp": "NEWS2 sub-score: systolic blood pressure",
    "hr": "NEWS2 sub-score: pulse",
    "acvpu": "NEWS2 sub-score: consciousness (ACVPU)",
    "temp": "NEWS2 sub-score: temperature",
}
# A parameter NEWS2 could not score (missing or stale) is marked absent, never scored as 0.
NOT_SCORED: Final = Coding(DATA_ABSENT_REASON, "unknown", "Unknown")
PSEUDONYMIZED: Final = Coding(V3_OBSERVATION_VALUE, "PSEUDED", "pseudonymized")
ANONYMIZED: Final = Coding(V3_OBSERVATION_VALUE, "ANONYED", "anonymized")
# An identified export names the patient: confidentiality "restricted" (HL7 v3-Confidentiality),
# and the reference typed as a medical record number (HL7 v2 table 0203, code MR).
RESTRICTED: Final = Coding(
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R", "restricted"
)
MEDICAL_RECORD_NUMBER: Final = Coding(
    "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number"
)


@dataclass(slots=True, frozen=True)
class HospitalReference:
    """The hospital's patient reference from the identity registry, for an identified export."""

    system: str
    value: str


@dataclass(slots=True, frozen=True)
class Labels:
    """How a bundle marks what its ids are: pseudonymous tokens, or one export's random ids."""

    patient_system: str
    device_system: str
    security: Coding


PSEUDONYMOUS_LABELS: Final = Labels(PATIENT_TOKEN_SYSTEM, DEVICE_TOKEN_SYSTEM, PSEUDONYMIZED)
IDENTIFIED_LABELS: Final = Labels(PATIENT_TOKEN_SYSTEM, DEVICE_TOKEN_SYSTEM, RESTRICTED)
ANONYMOUS_LABELS: Final = Labels(EXPORT_SUBJECT_SYSTEM, EXPORT_DEVICE_SYSTEM, ANONYMIZED)


class ExportError(CloudSinkError):
    """The export cannot be produced or written; the message says what to change."""

    def __init__(self, patient: str, reason: str) -> None:
        super().__init__(f"FHIR export of patient {patient[:8]}…: {reason}")
        self.patient = patient
        self.reason = reason


@dataclass(slots=True, frozen=True)
class Reading:
    """One stored vital, by its identity (patient implied) and value."""

    metric: str
    device: str
    ts_ns: int
    value: float


@dataclass(slots=True, frozen=True)
class News2Export:
    """The NEWS2 score as of `as_of_ns`, and the reading each measured parameter was scored from."""

    score: News2Score
    as_of_ns: int
    used: Mapping[str, Reading]


@dataclass(slots=True, frozen=True)
class ExportData:
    """Everything one bundle is built from."""

    patient: str
    profile: PatientProfile | None
    device_kinds: Mapping[str, str]
    readings: tuple[Reading, ...]
    news2: News2Export | None
    since_ns: int | None


def resource_id(*parts: object) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(str(p) for p in parts)))


def fhir_instant(ts_ns: int) -> str:
    """A FHIR dateTime/instant in UTC with the reading's full nanosecond precision.

    R4 dateTime allows any number of fractional digits (http://hl7.org/fhir/R4/datatypes.html
    #dateTime); keeping all nine keeps a reading's identity exact.
    """
    seconds, nanos = divmod(ts_ns, NS)
    whole = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{nanos:09d}Z"


def _ref(kind: str, rid: str) -> Json:
    return {"reference": f"urn:uuid:{rid}", "type": kind}


def _quantity(value: float, ucum: str, unit: str) -> Json:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def _vital_category() -> list[Json]:
    # vitalsigns profile: category slice VSCat, fixed to observation-category#vital-signs.
    coding = Coding(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")
    return [{"coding": [coding.json()], "text": "Vital Signs"}]


def _reading_identifier(patient: str, reading: Reading) -> Json:
    return {
        "system": READING_SYSTEM,
        "value": f"{patient}.{reading.metric}.{reading.device}.{reading.ts_ns}",
    }


def patient_resource(
    patient: str,
    profile: PatientProfile | None,
    labels: Labels = PSEUDONYMOUS_LABELS,
    reference: HospitalReference | None = None,
) -> Json:
    """A pseudonymous Patient: the token as identifier, no name, no birth date, no address;
    with `reference` (identified export) the hospital's reference is a second identifier."""
    identifiers: list[Json] = [{"system": labels.patient_system, "value": patient}]
    if reference is not None:
        identifiers.append(
            {
                "use": "usual",
                "type": {"coding": [MEDICAL_RECORD_NUMBER.json()]},
                "system": reference.system,
                "value": reference.value,
            }
        )
    resource: Json = {
        "resourceType": "Patient",
        "id": resource_id("Patient", patient),
        # Security label: the record is pseudonymised (HL7 v3 ObservationValue PSEUDED),
        # anonymised (ANONYED), or identified and restricted (v3 Confidentiality R).
        "meta": {"security": [labels.security.json()]},
        "identifier": identifiers,
    }
    if profile is not None:
        resource["active"] = profile.state == "admitted"
        if profile.sex is not None:
            resource["gender"] = profile.sex  # our sex codes are AdministrativeGender's codes
    return resource


def device_resource(
    patient: str, device: str, kind: str | None, labels: Labels = PSEUDONYMOUS_LABELS
) -> Json:
    resource: Json = {
        "resourceType": "Device",
        "id": resource_id("Device", device),
        "identifier": [{"system": labels.device_system, "value": device}],
        "patient": _ref("Patient", resource_id("Patient", patient)),
    }
    if kind is not None:
        resource["type"] = {"text": kind}
    return resource


def _observation_base(patient: str, rid: str, profile: str, device: str, ts_ns: int) -> Json:
    return {
        "resourceType": "Observation",
        "id": rid,
        "meta": {"profile": [profile]},
        "status": "final",
        "category": _vital_category(),
        "subject": _ref("Patient", resource_id("Patient", patient)),
        "effectiveDateTime": fhir_instant(ts_ns),
        "device": _ref("Device", resource_id("Device", device)),
    }


def vital_id(patient: str, reading: Reading) -> str:
    if reading.metric in BP_COMPONENTS:
        return resource_id("Observation", patient, "bp_panel", reading.device, reading.ts_ns)
    return resource_id("Observation", patient, reading.metric, reading.device, reading.ts_ns)


def vital_observation(patient: str, reading: Reading) -> Json:
    """One reading as an Observation of its R4 vital-signs profile."""
    sign = VITAL_SIGNS[reading.metric]
    resource = _observation_base(
        patient, vital_id(patient, reading), sign.profile, reading.device, reading.ts_ns
    )
    resource["identifier"] = [_reading_identifier(patient, reading)]
    resource["code"] = {"coding": [c.json() for c in sign.codings], "text": sign.text}
    resource["valueQuantity"] = _quantity(reading.value, sign.ucum, sign.unit)
    # Key order as in the R4 JSON examples: nothing depends on it, but diffs read better.
    order = ("resourceType", "id", "meta", "identifier", "status", "category", "code", "subject")
    return {key: resource[key] for key in order} | resource


def bp_observation(patient: str, readings: Sequence[Reading]) -> Json:
    """Systolic, diastolic (and mean) readings of one device and time as one bp panel.

    The bp profile requires both the systolic and the diastolic component; one the cuff did not
    report is present with a dataAbsentReason (vs-3: a component has a value or a reason).
    """
    first = readings[0]
    by_metric = {r.metric: r for r in readings}
    resource = _observation_base(
        patient, vital_id(patient, first), BP_PROFILE, first.device, first.ts_ns
    )
    resource["identifier"] = [
        _reading_identifier(patient, r) for r in sorted(readings, key=lambda r: r.metric)
    ]
    resource["code"] = {"coding": [BP_PANEL.json()], "text": "Blood pressure"}
    components: list[Json] = []
    for metric, coding in BP_COMPONENTS.items():
        component: Json = {"code": {"coding": [coding.json()], "text": coding.display}}
        reading = by_metric.get(metric)
        if reading is not None:
            component["valueQuantity"] = _quantity(reading.value, "mm[Hg]", "mmHg")
        elif metric in BP_REQUIRED:
            component["dataAbsentReason"] = {"coding": [NOT_SCORED.json()]}
        else:
            continue
        components.append(component)
    resource["component"] = components
    order = ("resourceType", "id", "meta", "identifier", "status", "category", "code", "subject")
    return {key: resource[key] for key in order} | resource


def news2_observation(patient: str, news2: News2Export) -> Json:
    """The NEWS2 total with its sub-scores as components and `derivedFrom` the vitals it used."""
    result = news2.score
    components: list[Json] = []
    for parameter in PARAMETERS:
        points = result.subscores[parameter]
        component: Json = {"code": {"text": NEWS2_PARAMETER_TEXT[parameter]}}
        if points is None:
            component["dataAbsentReason"] = {"coding": [NOT_SCORED.json()]}
        else:
            component["valueInteger"] = points
        components.append(component)
    derived = {
        vital_id(patient, reading): reading
        for _, reading in sorted(news2.used.items(), key=lambda item: PARAMETERS.index(item[0]))
    }
    resource: Json = {
        "resourceType": "Observation",
        "id": resource_id("Observation", patient, "news2", news2.as_of_ns),
        "status": "final",
        "category": [
            {"coding": [Coding(OBSERVATION_CATEGORY, "survey", "Survey").json()], "text": "Survey"}
        ],
        "code": {"coding": [NEWS2_CODING.json()], "text": NEWS2_TEXT},
        "subject": _ref("Patient", resource_id("Patient", patient)),
        "effectiveDateTime": fhir_instant(news2.as_of_ns),
        "valueQuantity": {
            "value": result.total,
            "unit": "score",
            "system": UCUM,
            "code": "{score}",
        },
        "interpretation": [{"text": f"{result.band}: {result.response}"}],
        "derivedFrom": [_ref("Observation", rid) for rid in derived],
        "component": components,
    }
    if not result.complete:
        missing = ", ".join(result.unscored)
        resource["note"] = [
            {
                "text": f"Incomplete: {missing} not measured or stale; the total is a lower bound "
                "(a missing parameter is never scored as 0)."
            }
        ]
    if not resource["derivedFrom"]:
        del resource["derivedFrom"]
    return resource


def _entry(resource: Json) -> Json:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def group_readings(readings: Iterable[Reading]) -> list[list[Reading]]:
    """One group per Observation: a vital sign alone, blood pressure by (device, time)."""
    groups: dict[tuple[str, str, int], list[Reading]] = {}
    for r in sorted(readings, key=lambda r: (r.ts_ns, r.metric, r.device)):
        if r.metric in BP_COMPONENTS:
            key = ("bp", r.device, r.ts_ns)
        elif r.metric in VITAL_SIGNS:
            key = (r.metric, r.device, r.ts_ns)
        else:
            continue
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def build_bundle(
    data: ExportData,
    generated_ns: int,
    *,
    anonymised: bool = False,
    reference: HospitalReference | None = None,
) -> Json:
    """The R4 Bundle (type collection): Patient, Devices, vital-sign Observations, NEWS2.

    `anonymised`: `data` went through `fhir_anonymous.anonymise`; the ids are labelled so.
    `reference`: an identified export, the Patient carries the hospital's reference.
    """
    if anonymised and reference is not None:
        raise ExportError(data.patient, "an export is anonymised or identified, not both")
    if reference is not None:
        labels = IDENTIFIED_LABELS
    else:
        labels = ANONYMOUS_LABELS if anonymised else PSEUDONYMOUS_LABELS
    patient = check_token(data.patient)
    readings = {(r.metric, r.device, r.ts_ns): r for r in data.readings}
    if data.news2 is not None:
        # The readings NEWS2 used are exported even when older than --since: derivedFrom must
        # resolve inside the bundle.
        readings.update({(r.metric, r.device, r.ts_ns): r for r in data.news2.used.values()})
    groups = group_readings(readings.values())
    devices = sorted({r.device for group in groups for r in group})
    entries = [_entry(patient_resource(patient, data.profile, labels, reference))]
    entries += [
        _entry(device_resource(patient, device, data.device_kinds.get(device), labels))
        for device in devices
    ]
    for group in groups:
        if group[0].metric in BP_COMPONENTS:
            entries.append(_entry(bp_observation(patient, group)))
        else:
            entries.append(_entry(vital_observation(patient, group[0])))
    if data.news2 is not None:
        entries.append(_entry(news2_observation(patient, data.news2)))
    return {
        "resourceType": "Bundle",
        "id": resource_id("Bundle", patient, data.since_ns, generated_ns),
        "meta": {"security": [labels.security.json()]},
        "type": "collection",
        "timestamp": fhir_instant(generated_ns),
        "entry": entries,
    }


def read_readings(influx: InfluxV1, patient: str, since_ns: int | None) -> tuple[Reading, ...]:
    """Every exported vital of the patient (vital signs and blood pressure), optionally since."""
    token = check_token(patient)
    metrics = " OR ".join(f"\"metric\" = '{m}'" for m in EXPORTED_METRICS)
    since = "" if since_ns is None else f" AND time >= {since_ns}"
    series = influx.query(
        f'SELECT "value", "metric", "device" FROM "vital" WHERE "patient" = \'{token}\' '  # noqa: S608
        f"AND ({metrics}){since}"
    )
    out: list[Reading] = []
    for s in series:
        column = {name: i for i, name in enumerate(s.columns)}
        out.extend(
            Reading(
                str(row[column["metric"]]),
                str(row[column["device"]]),
                int(row[column["time"]]),
                float(row[column["value"]]),
            )
            for row in s.values
        )
    return tuple(out)


def news2_as_of(influx: InfluxV1, twin: TwinView, stale_factor: float) -> News2Export | None:
    """NEWS2 as of the patient's newest reading, with freshness judged at that moment.

    An export is often made after the fact; scored at the export time every vital could be stale.
    The nurse's observations are the newest recorded ones.
    """
    if not twin.vitals:
        return None
    as_of_ns = max(v.ts_ns for v in twin.vitals)
    fresh = freshness(twin, as_of_ns, stale_factor)
    result = news2_for(twin, fresh, observations(influx, twin.patient))
    used = {
        parameter: Reading(v.metric, v.device, v.ts_ns, v.value)
        for parameter, v in news2_vitals(twin, fresh).items()
    }
    return News2Export(result, as_of_ns, used)


def read_export(
    influx: InfluxV1, patient: str, since_ns: int | None, stale_factor: float = 5.0
) -> ExportData:
    """Read everything the bundle needs; UnknownPatient if InfluxDB holds nothing for the token."""
    token = check_token(patient)
    profile = read_profile(influx, token)
    try:
        twin: TwinView | None = read_twin(influx, token)
    except UnknownPatient:
        if profile is None:
            raise
        twin = None  # admitted, no readings yet: the bundle holds the Patient only
    readings = read_readings(influx, token, since_ns)
    news2 = None if twin is None else news2_as_of(influx, twin, stale_factor)
    devices = {r.device for r in readings}
    if news2 is not None:
        devices |= {r.device for r in news2.used.values()}
    return ExportData(token, profile, device_kinds(influx, devices), readings, news2, since_ns)


def write_bundle(bundle: Json, out: Path, patient: str) -> None:
    """Write the bundle as JSON, atomically (a reader never sees half a file)."""
    staging = out.with_name(f".{out.name}.partial")
    try:
        with staging.open("w", encoding="utf-8") as handle:
            json.dump(bundle, handle, ensure_ascii=False, separators=(",", ":"))
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        staging.replace(out)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise ExportError(patient, f"cannot write {out}: {exc.strerror or exc}") from exc


def bundle_counts(bundle: Json) -> dict[str, int]:
    """How many resources of each type the bundle holds (for the command's summary line)."""
    counts: dict[str, int] = {}
    for entry in bundle["entry"]:
        kind = str(entry["resource"]["resourceType"])
        counts[kind] = counts.get(kind, 0) + 1
    return counts

"""Patient profiles: admit, update and discharge, stored as `patient_profile` snapshots."""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Literal, cast

from cloud_sink.errors import CloudSinkError
from cloud_sink.influx import InfluxV1, Series
from cloud_sink.lineproto import FieldValue, encode_line
from cloud_sink.twin import check_token, iso_utc

MEASUREMENT: Final = "patient_profile"
Sex = Literal["female", "male", "other", "unknown"]
# The codes of FHIR R4 AdministrativeGender (http://hl7.org/fhir/R4/valueset-administrative-gender),
# so the FHIR export can carry them unchanged.
SEXES: Final[tuple[Sex, ...]] = ("female", "male", "other", "unknown")
ProfileState = Literal["admitted", "discharged"]
STATES: Final[tuple[ProfileState, ...]] = ("admitted", "discharged")

AGE_MAX_YEARS: Final = 130
TEXT_MAX_CHARS: Final = 500
CONDITION_MAX_CHARS: Final = 120
CONDITIONS_MAX: Final = 32
CHANGE_FIELDS: Final = (
    "age_years",
    "sex",
    "conditions",
    "diagnosis",
    "treatment",
    "next_appointment",
)
# The stay's own facts: a new admission starts without them unless they are given again. Age, sex
# and chronic conditions describe the person and carry over from the previous stay.
STAY_FIELDS: Final = ("diagnosis", "treatment", "next_appointment")
OPTION: Final[dict[str, str]] = {
    "age_years": "--age",
    "sex": "--sex",
    "conditions": "--condition",
    "diagnosis": "--diagnosis",
    "treatment": "--treatment",
    "next_appointment": "--next-appointment",
}


class ProfileError(CloudSinkError):
    """A profile value is impossible (wrong type, out of range, unreadable); fix that value."""

    def __init__(self, patient: str, field: str, value: object, reason: str) -> None:
        super().__init__(f"patient {patient[:8]}… profile {field}={value!r}: {reason}")
        self.patient = patient
        self.field = field
        self.value = value
        self.reason = reason


class ProfileStateError(CloudSinkError):
    """The action does not fit the patient's admission state (e.g. update before admission)."""

    def __init__(self, patient: str, state: str | None, action: str, reason: str) -> None:
        super().__init__(f"patient {patient[:8]}…: cannot {action}: {reason}")
        self.patient = patient
        self.state = state
        self.action = action
        self.reason = reason


@dataclass(slots=True, frozen=True)
class ProfileChanges:
    """Validated, normalised profile fields; None (or None conditions) leaves a field unchanged.

    Build it with `parse_changes`, which checks every value and names the option at fault.
    """

    age_years: int | None = None
    sex: Sex | None = None
    conditions: tuple[str, ...] | None = None
    diagnosis: str | None = None
    treatment: str | None = None
    next_appointment: str | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in CHANGE_FIELDS)


@dataclass(slots=True, frozen=True)
class PatientProfile:
    """One complete profile snapshot; the newest snapshot of a patient is the profile."""

    patient: str
    state: ProfileState
    ts_ns: int
    age_years: int | None = None
    sex: Sex | None = None
    conditions: tuple[str, ...] = ()
    diagnosis: str | None = None
    treatment: str | None = None
    next_appointment: str | None = None


def _text(patient: str, field: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ProfileError(patient, field, value, "must be text")
    text = " ".join(value.split())
    if not text:
        raise ProfileError(patient, field, value, "is empty; leave the option out instead")
    if len(text) > max_chars:
        raise ProfileError(patient, field, value, f"is longer than {max_chars} characters")
    # Control and format characters (Unicode categories Cc, Cf) could hide text from a reader.
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        raise ProfileError(patient, field, value, "contains control characters")
    return text


def _age(patient: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(patient, "age", value, "must be a whole number of years")
    if not 0 <= value <= AGE_MAX_YEARS:
        raise ProfileError(patient, "age", value, f"must be between 0 and {AGE_MAX_YEARS} years")
    return value


def _sex(patient: str, value: object) -> Sex:
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in SEXES:
        raise ProfileError(patient, "sex", value, f"must be one of {', '.join(SEXES)}")
    return word


def _conditions(patient: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ProfileError(patient, "conditions", values, "must be a list of texts")
    out: list[str] = []
    for value in values:
        text = _text(patient, "condition", value, CONDITION_MAX_CHARS)
        if text.casefold() not in (seen.casefold() for seen in out):
            out.append(text)
    if len(out) > CONDITIONS_MAX:
        raise ProfileError(patient, "conditions", len(out), f"more than {CONDITIONS_MAX} given")
    return tuple(out)


def _appointment(patient: str, value: object) -> str:
    field = "next_appointment"
    if not isinstance(value, str):
        raise ProfileError(patient, field, value, "must be an ISO 8601 date or date-time")
    text = value.strip()
    try:
        if "T" not in text and " " not in text:
            return date.fromisoformat(text).isoformat()
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        reason = "is not an ISO 8601 date (2025-03-14) or date-time (2025-03-14T09:30+00:00)"
        raise ProfileError(patient, field, value, reason) from exc
    if moment.tzinfo is None:
        reason = "a date-time needs a UTC offset, e.g. 2025-03-14T09:30+00:00 or ...Z"
        raise ProfileError(patient, field, value, reason)
    return moment.isoformat()


def parse_changes(
    patient: str,
    *,
    age_years: object = None,
    sex: object = None,
    conditions: object = None,
    diagnosis: object = None,
    treatment: object = None,
    next_appointment: object = None,
) -> ProfileChanges:
    """Validate and normalise the given fields (None: not given); ProfileError names the bad one."""
    return ProfileChanges(
        age_years=None if age_years is None else _age(patient, age_years),
        sex=None if sex is None else _sex(patient, sex),
        conditions=None if conditions is None else _conditions(patient, conditions),
        diagnosis=None
        if diagnosis is None
        else _text(patient, "diagnosis", diagnosis, TEXT_MAX_CHARS),
        treatment=None
        if treatment is None
        else _text(patient, "treatment", treatment, TEXT_MAX_CHARS),
        next_appointment=None
        if next_appointment is None
        else _appointment(patient, next_appointment),
    )


def _next_ts(previous: PatientProfile | None, now_ns: int) -> int:
    # Newest timestamp wins (DESIGN §5.4): a clock behind the stored snapshot still moves forward.
    return now_ns if previous is None else max(now_ns, previous.ts_ns + 1)


def _merged(
    base: PatientProfile, changes: ProfileChanges, state: ProfileState, ts_ns: int
) -> PatientProfile:
    return PatientProfile(
        patient=base.patient,
        state=state,
        ts_ns=ts_ns,
        age_years=base.age_years if changes.age_years is None else changes.age_years,
        sex=base.sex if changes.sex is None else changes.sex,
        conditions=base.conditions if changes.conditions is None else changes.conditions,
        diagnosis=base.diagnosis if changes.diagnosis is None else changes.diagnosis,
        treatment=base.treatment if changes.treatment is None else changes.treatment,
        next_appointment=base.next_appointment
        if changes.next_appointment is None
        else changes.next_appointment,
    )


def admitted(
    patient: str, previous: PatientProfile | None, changes: ProfileChanges, now_ns: int
) -> PatientProfile:
    """The snapshot an admission writes; refused while the patient is admitted already."""
    token = check_token(patient)
    if previous is not None and previous.state == "admitted":
        reason = (
            f"already admitted (profile of {iso_utc(previous.ts_ns)}); "
            "use `cloud-sink patients update` to change it"
        )
        raise ProfileStateError(token, previous.state, "admit", reason)
    base = PatientProfile(token, "admitted", 0)
    if previous is not None:
        base = PatientProfile(
            token,
            "admitted",
            0,
            age_years=previous.age_years,
            sex=previous.sex,
            conditions=previous.conditions,
        )
    return _merged(base, changes, "admitted", _next_ts(previous, now_ns))


def updated(
    patient: str, previous: PatientProfile | None, changes: ProfileChanges, now_ns: int
) -> PatientProfile:
    """The snapshot an update writes: the given fields change, the others keep their values."""
    token = check_token(patient)
    if previous is None:
        reason = "no profile stored; admit the patient first with `cloud-sink patients admit`"
        raise ProfileStateError(token, None, "update", reason)
    if changes.empty:
        options = ", ".join(OPTION[name] for name in CHANGE_FIELDS)
        raise ProfileStateError(token, previous.state, "update", f"give at least one of {options}")
    # A discharged patient's profile may still change (a follow-up appointment); the state stays.
    return _merged(previous, changes, previous.state, _next_ts(previous, now_ns))


def discharged(patient: str, previous: PatientProfile | None, now_ns: int) -> PatientProfile:
    """The snapshot a discharge writes: everything kept, the state set to discharged."""
    token = check_token(patient)
    if previous is None:
        reason = "no profile stored; only an admitted patient can be discharged"
        raise ProfileStateError(token, None, "discharge", reason)
    if previous.state == "discharged":
        reason = f"already discharged (profile of {iso_utc(previous.ts_ns)}); nothing to do"
        raise ProfileStateError(token, previous.state, "discharge", reason)
    return _merged(previous, ProfileChanges(), "discharged", _next_ts(previous, now_ns))


def profile_fields(profile: PatientProfile) -> dict[str, FieldValue]:
    """The `patient_profile` fields of DESIGN §4 plus `state`; unknown fields are left out."""
    fields: dict[str, FieldValue] = {"state": profile.state}
    if profile.age_years is not None:
        fields["age"] = profile.age_years
    if profile.sex is not None:
        fields["sex"] = profile.sex
    # A list has no InfluxDB field type: it is stored as a JSON array of strings.
    fields["conditions"] = json.dumps(list(profile.conditions), ensure_ascii=False)
    for name in STAY_FIELDS:
        value = getattr(profile, name)
        if value is not None:
            fields[name] = value
    return fields


def profile_line(profile: PatientProfile) -> str:
    return encode_line(
        MEASUREMENT, {"patient": profile.patient}, profile_fields(profile), profile.ts_ns
    )


def _stored_text(patient: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProfileError(patient, name, value, "stored value is not text")
    return value


def _stored_age(patient: str, value: Any) -> int | None:
    # InfluxDB answers JSON: an integer field arrives as int, but be lenient with a whole float.
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return _age(patient, value)


def _stored_conditions(patient: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    try:
        decoded = json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ProfileError(patient, "conditions", value, "stored value is not JSON") from exc
    return _conditions(patient, decoded)


def profile_from_row(patient: str, columns: list[str], row: list[Any]) -> PatientProfile:
    """Decode one stored snapshot; a value nobody could have written raises ProfileError."""
    record = dict(zip(columns, row, strict=True))
    state = record.get("state")
    if state not in STATES:
        raise ProfileError(patient, "state", state, f"stored state is not one of {STATES}")
    ts_ns = record.get("time")
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int):
        raise ProfileError(patient, "time", ts_ns, "stored time is not integer nanoseconds")
    sex = record.get("sex")
    return PatientProfile(
        patient=patient,
        state=cast("ProfileState", state),
        ts_ns=ts_ns,
        age_years=_stored_age(patient, record.get("age")),
        sex=None if sex is None else _sex(patient, sex),
        conditions=_stored_conditions(patient, record.get("conditions")),
        diagnosis=_stored_text(patient, "diagnosis", record.get("diagnosis")),
        treatment=_stored_text(patient, "treatment", record.get("treatment")),
        next_appointment=_stored_text(patient, "next_appointment", record.get("next_appointment")),
    )


def profile_from_series(patient: str, series: list[Series]) -> PatientProfile | None:
    """The newest snapshot among the query's rows, or None when there is none."""
    newest: PatientProfile | None = None
    for s in series:
        for row in s.values:
            profile = profile_from_row(patient, s.columns, row)
            if newest is None or profile.ts_ns > newest.ts_ns:
                newest = profile
    return newest


def read_profile(influx: InfluxV1, patient: str) -> PatientProfile | None:
    """The patient's newest profile snapshot, or None if the patient was never admitted."""
    token = check_token(patient)
    series = influx.query(
        f'SELECT * FROM "{MEASUREMENT}" WHERE "patient" = \'{token}\' '  # noqa: S608
        "ORDER BY time DESC LIMIT 1"
    )
    return profile_from_series(token, series)


def admit(influx: InfluxV1, patient: str, changes: ProfileChanges, now_ns: int) -> PatientProfile:
    """Admit the patient and store the new profile snapshot."""
    # A patient may be admitted before the sink ever ran: create the database like `cloud-sink
    # run` does (idempotent, the same credentials).
    influx.create_database()
    profile = admitted(patient, read_profile(influx, patient), changes, now_ns)
    influx.write([profile_line(profile)])
    return profile


def update(influx: InfluxV1, patient: str, changes: ProfileChanges, now_ns: int) -> PatientProfile:
    """Change the given fields of the stored profile and store the new snapshot."""
    profile = updated(patient, read_profile(influx, patient), changes, now_ns)
    influx.write([profile_line(profile)])
    return profile


def discharge(influx: InfluxV1, patient: str, now_ns: int) -> PatientProfile:
    """Mark the admitted patient discharged (the profile is kept) and store the snapshot."""
    profile = discharged(patient, read_profile(influx, patient), now_ns)
    influx.write([profile_line(profile)])
    return profile


def profile_json(profile: PatientProfile) -> dict[str, object]:
    """The `profile` object of `twin show --json`."""
    return {
        "state": profile.state,
        "age": profile.age_years,
        "sex": profile.sex,
        "conditions": list(profile.conditions),
        "diagnosis": profile.diagnosis,
        "treatment": profile.treatment,
        "next_appointment": profile.next_appointment,
        "updated": iso_utc(profile.ts_ns),
    }


def profile_summary(profile: PatientProfile) -> str:
    """One line for the terminal (no free text beyond what the nurse typed)."""
    parts: list[str] = [profile.state]
    if profile.age_years is not None:
        parts.append(f"age {profile.age_years}")
    if profile.sex is not None:
        parts.append(profile.sex)
    if profile.conditions:
        parts.append("conditions: " + ", ".join(profile.conditions))
    for label, value in (
        ("diagnosis", profile.diagnosis),
        ("treatment", profile.treatment),
        ("next appointment", profile.next_appointment),
    ):
        if value is not None:
            parts.append(f"{label}: {value}")
    return "; ".join(parts)

"""Patient profiles: validation, the admit/update/discharge rules, the stored snapshot."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloud_sink.cli import app
from cloud_sink.influx import Series
from cloud_sink.profiles import (
    AGE_MAX_YEARS,
    CHANGE_FIELDS,
    SEXES,
    PatientProfile,
    ProfileChanges,
    ProfileError,
    ProfileStateError,
    admitted,
    discharged,
    parse_changes,
    profile_fields,
    profile_from_row,
    profile_from_series,
    profile_line,
    updated,
)

PATIENT = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000_000_000
runner = CliRunner()
PROPERTY = settings(max_examples=200, deadline=None)


def _stored(profile: PatientProfile) -> tuple[list[str], list[Any]]:
    """What `SELECT *` answers for the snapshot: time, the patient tag, then the fields."""
    fields = profile_fields(profile)
    columns = ["time", "patient", *fields]
    return columns, [profile.ts_ns, profile.patient, *fields.values()]


def test_valid_fields_are_normalised() -> None:
    changes = parse_changes(
        PATIENT,
        age_years=67,
        sex=" Female ",
        conditions=["COPD", "  type 2   diabetes ", "copd"],
        diagnosis="community-acquired\tpneumonia",
        treatment="amoxicillin",
        next_appointment="2025-03-14",
    )
    assert changes == ProfileChanges(
        age_years=67,
        sex="female",
        conditions=("COPD", "type 2 diabetes"),
        diagnosis="community-acquired pneumonia",
        treatment="amoxicillin",
        next_appointment="2025-03-14",
    )
    timed = parse_changes(PATIENT, next_appointment="2025-03-14T09:30:00Z")
    assert timed.next_appointment == "2025-03-14T09:30:00+00:00"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("age_years", -1, "between 0 and 130"),
        ("age_years", AGE_MAX_YEARS + 1, "between 0 and 130"),
        ("age_years", True, "whole number"),
        ("age_years", 67.5, "whole number"),
        ("sex", "f", "female, male, other, unknown"),
        ("conditions", "COPD", "list of texts"),
        ("conditions", ["ok", ""], "empty"),
        ("conditions", ["x" * 121], "longer than 120"),
        ("diagnosis", "a\x00b", "control characters"),
        ("diagnosis", "x" * 501, "longer than 500"),
        ("treatment", "   ", "empty"),
        ("next_appointment", "2025-13-01", "ISO 8601"),
        ("next_appointment", "next tuesday", "ISO 8601"),
        ("next_appointment", "2025-03-14T09:30", "UTC offset"),
    ],
)
def test_impossible_values_raise_a_profile_error_naming_the_field(
    field: str, value: object, reason: str
) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_changes(PATIENT, **{field: value})
    assert reason in caught.value.reason
    assert caught.value.field in (field, field.removesuffix("_years"), "condition")


@given(
    st.dictionaries(
        st.sampled_from(CHANGE_FIELDS),
        st.one_of(
            st.none(),
            st.integers(),
            st.floats(allow_nan=True),
            st.text(),
            st.lists(st.text(), max_size=40),
            st.booleans(),
        ),
    )
)
@PROPERTY
def test_any_input_either_parses_or_raises_a_profile_error(values: dict[str, Any]) -> None:
    try:
        changes = parse_changes(PATIENT, **values)
    except ProfileError:
        return
    # Whatever was accepted survives a store and a read back unchanged.
    profile = admitted(PATIENT, None, changes, T0)
    columns, row = _stored(profile)
    assert profile_from_row(PATIENT, columns, row) == profile


def test_admission_update_and_discharge_follow_the_stay() -> None:
    first = admitted(
        PATIENT,
        None,
        parse_changes(PATIENT, age_years=80, sex="male", conditions=["CKD"], diagnosis="sepsis"),
        T0,
    )
    assert (first.state, first.ts_ns, first.diagnosis) == ("admitted", T0, "sepsis")
    with pytest.raises(ProfileStateError, match="already admitted"):
        admitted(PATIENT, first, ProfileChanges(), T0 + 1)
    changed = updated(PATIENT, first, parse_changes(PATIENT, treatment="piperacillin"), T0 + 5)
    # Only the given field changed; everything else kept its value.
    assert changed == PatientProfile(
        PATIENT, "admitted", T0 + 5, 80, "male", ("CKD",), "sepsis", "piperacillin", None
    )
    with pytest.raises(ProfileStateError, match="give at least one of --age"):
        updated(PATIENT, changed, ProfileChanges(), T0 + 6)
    gone = discharged(PATIENT, changed, T0 + 10)
    assert gone == PatientProfile(
        PATIENT, "discharged", T0 + 10, 80, "male", ("CKD",), "sepsis", "piperacillin", None
    )
    with pytest.raises(ProfileStateError, match="already discharged"):
        discharged(PATIENT, gone, T0 + 11)
    # A follow-up appointment after discharge is an update; the patient stays discharged.
    follow_up = updated(PATIENT, gone, parse_changes(PATIENT, next_appointment="2030-01-02"), T0)
    assert (follow_up.state, follow_up.next_appointment) == ("discharged", "2030-01-02")
    # A new stay keeps the person (age, sex, chronic conditions), not the last stay's facts.
    again = admitted(PATIENT, follow_up, parse_changes(PATIENT, diagnosis="fall"), T0 + 20)
    assert again == PatientProfile(
        PATIENT, "admitted", T0 + 20, 80, "male", ("CKD",), "fall", None, None
    )


def test_update_and_discharge_need_an_admission_first() -> None:
    with pytest.raises(ProfileStateError, match="admit the patient first") as caught:
        updated(PATIENT, None, parse_changes(PATIENT, age_years=3), T0)
    assert (caught.value.action, caught.value.state) == ("update", None)
    with pytest.raises(ProfileStateError, match="only an admitted patient"):
        discharged(PATIENT, None, T0)


@given(st.integers(0, 2**62), st.integers(0, 2**62))
@PROPERTY
def test_a_new_snapshot_is_always_newer_than_the_stored_one(stored_ns: int, now_ns: int) -> None:
    # Newest timestamp wins, so a writer whose clock lags must still move the profile forward.
    previous = PatientProfile(PATIENT, "admitted", stored_ns)
    assert updated(PATIENT, previous, ProfileChanges(age_years=1), now_ns).ts_ns > stored_ns
    assert discharged(PATIENT, previous, now_ns).ts_ns > stored_ns


def test_the_line_holds_the_design_fields_and_unknown_ones_are_left_out() -> None:
    profile = PatientProfile(PATIENT, "admitted", T0, 54, "other", ("asthma", "naïve «x»"))
    line = profile_line(profile)
    assert line.startswith(f"patient_profile,patient={PATIENT} ")
    assert line.endswith(f" {T0}")
    fields = profile_fields(profile)
    assert set(fields) == {"state", "age", "sex", "conditions"}
    assert json.loads(str(fields["conditions"])) == ["asthma", "naïve «x»"]
    assert fields["age"] == 54


def test_the_newest_stored_snapshot_is_the_profile() -> None:
    old = PatientProfile(PATIENT, "admitted", T0, 40)
    new = PatientProfile(PATIENT, "discharged", T0 + 1, 41)
    series = [
        Series("patient_profile", {}, _stored(new)[0], [_stored(new)[1]]),
        Series("patient_profile", {}, _stored(old)[0], [_stored(old)[1]]),
    ]
    assert profile_from_series(PATIENT, series) == new
    assert profile_from_series(PATIENT, []) is None


@pytest.mark.parametrize(
    ("column", "value"),
    [("state", "limbo"), ("age", "old"), ("conditions", "{not json"), ("sex", "f"), ("time", "x")],
)
def test_a_corrupt_stored_snapshot_raises_a_profile_error(column: str, value: object) -> None:
    columns, row = _stored(PatientProfile(PATIENT, "admitted", T0, 40, "female"))
    row[columns.index(column)] = value
    with pytest.raises(ProfileError):
        profile_from_row(PATIENT, columns, row)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["patients", "admit", "not-a-token"], "not a patient token"),
        (["patients", "admit", PATIENT, "--age", "140"], "age"),
        (["patients", "update", PATIENT, "--sex", "f"], "sex"),
        (["patients", "admit", PATIENT, "--next-appointment", "2025-02-30"], "next_appointment"),
        (["patients", "discharge", "ABC"], "not a patient token"),
        (["export", "fhir", PATIENT, "--out", "x.json", "--since", "yesterday"], "--since"),
        (["export", "fhir", PATIENT, "--out", "x.json", "--since", "2025-01-01T00:00"], "offset"),
    ],
)
def test_bad_command_line_input_exits_2_before_touching_the_database(
    argv: list[str], named: str
) -> None:
    # The config path does not exist: these must fail on the input, not on the file.
    result = runner.invoke(app, [*argv, "--config", "/nonexistent/sink.toml"])
    assert result.exit_code == 2, result.output
    assert named in result.output.replace("\n", " ")


def test_sexes_are_fhir_administrative_gender_codes() -> None:
    # http://hl7.org/fhir/R4/valueset-administrative-gender: the export passes them through.
    assert SEXES == ("female", "male", "other", "unknown")

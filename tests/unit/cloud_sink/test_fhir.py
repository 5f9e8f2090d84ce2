"""FHIR R4 export: the bundle validates with two FHIR libraries and meets vital-signs profiles."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fhirclient.models.bundle as fhirclient_bundle  # type: ignore[import-untyped]
import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.fhir import (
    ExportData,
    ExportError,
    News2Export,
    Reading,
    build_bundle,
    bundle_counts,
    fhir_instant,
    group_readings,
    write_bundle,
)
from cloud_sink.fhir_anonymous import SHIFT_WEEKS_MAX, SHIFT_WEEKS_MIN, WEEK_NS, anonymise
from cloud_sink.news2 import News2Inputs, score
from cloud_sink.profiles import PatientProfile

PATIENT = "0123456789abcdef0123456789abcdef"
PATCH = "a" * 32
OXIMETER = "b" * 32
CUFF = "c" * 32
T0 = 1_700_000_000_123_456_789
S = 1_000_000_000
GENERATED_NS = T0 + 3600 * S

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
VS_CATEGORY = ("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")
# FHIR R4 vital-signs profiles (http://hl7.org/fhir/R4/observation-vitalsigns.html): the LOINC code
# each profile requires in code.coding and the UCUM code it fixes for valueQuantity.
PROFILES: dict[str, tuple[str, str | None]] = {
    "http://hl7.org/fhir/StructureDefinition/heartrate": ("8867-4", "/min"),
    "http://hl7.org/fhir/StructureDefinition/resprate": ("9279-1", "/min"),
    "http://hl7.org/fhir/StructureDefinition/oxygensat": ("2708-6", "%"),
    "http://hl7.org/fhir/StructureDefinition/bodytemp": ("8310-5", "Cel"),
    "http://hl7.org/fhir/StructureDefinition/bp": ("85354-9", None),
}
BP_COMPONENTS = {"8480-6": "systolic", "8462-4": "diastolic"}
# FHIR R4 dateTime (http://hl7.org/fhir/R4/datatypes.html#dateTime), with the time part required.
PROPERTY = settings(max_examples=40, deadline=None)


def validate_with_libraries(bundle: dict[str, Any]) -> None:
    """Both libraries parse every resource against its R4 (R4B) structure; extra keys fail."""
    fhirclient_bundle.Bundle(copy.deepcopy(bundle), strict=True)
    R4BBundle.model_validate(copy.deepcopy(bundle))


def _codes(concept: dict[str, Any], system: str) -> set[str]:
    return {c["code"] for c in concept.get("coding", []) if c.get("system") == system}


def _instant_ns(text: str) -> int:
    whole, fraction = text.removesuffix("Z").split(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return seconds * S + int(fraction.ljust(9, "0"))


def _check_references(url: str, resource: dict[str, Any], urls: set[str]) -> Iterator[str]:
    if url != f"urn:uuid:{resource['id']}":
        yield f"{url}: fullUrl is not urn:uuid:<id>"
    refs = [resource[key] for key in ("subject", "device", "patient") if key in resource]
    for ref in refs + resource.get("derivedFrom", []):
        if ref["reference"] not in urls:
            yield f"{url}: reference {ref['reference']} does not resolve inside the bundle"


def _check_bp(url: str, components: list[dict[str, Any]]) -> Iterator[str]:
    # bp: systolic and diastolic components, each with a value or a reason (vs-3).
    found = {}
    for component in components:
        for code in _codes(component["code"], LOINC) & set(BP_COMPONENTS):
            found[code] = component
    if set(found) != set(BP_COMPONENTS):
        yield f"{url}: bp components {sorted(found)}"
    for component in found.values():
        if "valueQuantity" in component:
            q = component["valueQuantity"]
            if (q["system"], q["code"]) != (UCUM, "mm[Hg]"):
                yield f"{url}: bp component unit"
        elif "dataAbsentReason" not in component:
            yield f"{url}: bp component has neither value nor reason (vs-3)"


def _check_vital(url: str, resource: dict[str, Any], patients: set[str]) -> Iterator[str]:
    (profile,) = resource["meta"]["profile"]
    loinc, ucum = PROFILES[profile]
    if resource["status"] != "final":
        yield f"{url}: status"
    if not any(_codes(c, VS_CATEGORY[0]) == {VS_CATEGORY[1]} for c in resource["category"]):
        yield f"{url}: category vital-signs missing"
    if loinc not in _codes(resource["code"], LOINC):
        yield f"{url}: code lacks LOINC {loinc}"
    if resource["subject"]["reference"] not in patients:
        yield f"{url}: subject is not the Patient"
    # vs-1: a dateTime effective is at least day-precise (ours carries the full instant).
    if "T" not in resource["effectiveDateTime"]:
        yield f"{url}: effectiveDateTime"
    if ucum is None:
        yield from _check_bp(url, resource["component"])
        return
    quantity = resource["valueQuantity"]
    if (quantity["system"], quantity["code"]) != (UCUM, ucum) or "value" not in quantity:
        yield f"{url}: valueQuantity is not {ucum} in UCUM"


def check_vital_signs(bundle: dict[str, Any]) -> Iterator[str]:
    """Every rule of the R4 vital-signs profiles the libraries do not check; yields violations."""
    if bundle["type"] != "collection":
        yield "bundle type"
    resources = {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}
    patients = {url for url, r in resources.items() if r["resourceType"] == "Patient"}
    for url, resource in resources.items():
        yield from _check_references(url, resource, set(resources))
        if resource["resourceType"] == "Observation" and "meta" in resource:
            yield from _check_vital(url, resource, patients)


def _readings() -> tuple[Reading, ...]:
    return (
        Reading("heart_rate", PATCH, T0, 72.0),
        Reading("resp_rate", PATCH, T0, 16.0),
        Reading("body_temp", PATCH, T0 + 2 * S, 37.4),
        Reading("spo2", OXIMETER, T0 + S, 96.0),
        Reading("pulse_rate", OXIMETER, T0 + S, 73.0),
        Reading("bp_systolic", CUFF, T0, 128.0),
        Reading("bp_diastolic", CUFF, T0, 82.0),
        Reading("bp_mean", CUFF, T0, 97.0),
        Reading("bp_systolic", CUFF, T0 + 900 * S, 131.0),  # the diastolic never arrived
        Reading("glucose", CUFF, T0, 99.0),  # not a vital sign: not exported
    )


def _news2(readings: tuple[Reading, ...], *, complete: bool = True) -> News2Export:
    hr, rr, temp, spo2, _, _, _, _, sbp, _ = readings
    inputs = News2Inputs(
        rr_per_min=rr.value,
        spo2_pct=spo2.value,
        on_oxygen=False,
        sbp_mmhg=sbp.value,
        hr_per_min=hr.value,
        acvpu="A",
        temp_c=temp.value if complete else None,
    )
    used = {"rr": rr, "spo2": spo2, "sbp": sbp, "hr": hr}
    if complete:
        used["temp"] = temp
    return News2Export(score(inputs), T0 + 900 * S, used)


def _bundle(**changes: Any) -> dict[str, Any]:
    readings = _readings()
    data = ExportData(
        patient=PATIENT,
        profile=PatientProfile(PATIENT, "admitted", T0, 71, "female", ("COPD",), "pneumonia"),
        device_kinds={PATCH: "chest-patch", CUFF: "bp-cuff"},
        readings=readings,
        news2=_news2(readings),
        since_ns=None,
    )
    fields = {name: getattr(data, name) for name in ExportData.__slots__} | changes
    return build_bundle(ExportData(**fields), GENERATED_NS)


def _by_type(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _observation(bundle: dict[str, Any], loinc: str) -> list[dict[str, Any]]:
    return [o for o in _by_type(bundle, "Observation") if loinc in _codes(o["code"], LOINC)]


def test_the_bundle_validates_and_meets_the_vital_signs_profiles() -> None:
    bundle = _bundle()
    validate_with_libraries(bundle)
    assert list(check_vital_signs(bundle)) == []
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    # 1 Patient, 3 Devices, 4 single vitals + pulse rate, 2 bp panels, NEWS2; glucose left out.
    assert bundle_counts(bundle) == {"Patient": 1, "Device": 3, "Observation": 8}


def test_the_patient_is_pseudonymous() -> None:
    (patient,) = _by_type(_bundle(), "Patient")
    assert patient["identifier"] == [{"system": "urn:bedside-twin:patient-token", "value": PATIENT}]
    assert patient["gender"] == "female"
    assert patient["active"] is True
    assert {"name", "birthDate", "address", "telecom"}.isdisjoint(patient)
    assert patient["meta"]["security"][0]["code"] == "PSEUDED"
    # No profile: no gender, nothing invented.
    (bare,) = _by_type(_bundle(profile=None), "Patient")
    assert "gender" not in bare
    assert "active" not in bare


def test_every_vital_has_its_loinc_code_ucum_unit_and_profile() -> None:
    bundle = _bundle()
    expected = {
        "8867-4": ("http://hl7.org/fhir/StructureDefinition/heartrate", "/min", {72.0, 73.0}),
        "9279-1": ("http://hl7.org/fhir/StructureDefinition/resprate", "/min", {16.0}),
        "2708-6": ("http://hl7.org/fhir/StructureDefinition/oxygensat", "%", {96.0}),
        "8310-5": ("http://hl7.org/fhir/StructureDefinition/bodytemp", "Cel", {37.4}),
    }
    for loinc, (profile, ucum, values) in expected.items():
        found = _observation(bundle, loinc)
        assert {o["valueQuantity"]["value"] for o in found} == values
        for o in found:
            assert o["meta"]["profile"] == [profile]
            assert o["valueQuantity"]["code"] == ucum
    (spo2,) = _observation(bundle, "2708-6")
    assert _codes(spo2["code"], LOINC) == {"2708-6", "59408-5"}
    pulse = [o for o in _observation(bundle, "8867-4") if "8889-8" in _codes(o["code"], LOINC)]
    assert [o["valueQuantity"]["value"] for o in pulse] == [73.0]


def test_systolic_and_diastolic_of_one_device_and_time_make_one_panel() -> None:
    bundle = _bundle()
    panels = _observation(bundle, "85354-9")
    assert len(panels) == 2
    assert not _observation(bundle, "8480-6")  # never a stand-alone systolic Observation
    by_time = {p["effectiveDateTime"]: p for p in panels}
    paired = by_time[fhir_instant(T0)]
    values = {
        next(iter(_codes(c["code"], LOINC))): c["valueQuantity"]["value"]
        for c in paired["component"]
    }
    assert values == {"8480-6": 128.0, "8462-4": 82.0, "8478-0": 97.0}
    lone = by_time[fhir_instant(T0 + 900 * S)]
    components = {next(iter(_codes(c["code"], LOINC))): c for c in lone["component"]}
    assert components["8480-6"]["valueQuantity"]["value"] == 131.0
    assert components["8462-4"]["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert "8478-0" not in components
    assert len(lone["identifier"]) == 1


def test_readings_of_two_cuffs_at_the_same_time_are_not_paired() -> None:
    readings = (
        Reading("bp_systolic", CUFF, T0, 120.0),
        Reading("bp_diastolic", PATCH, T0, 80.0),
        Reading("bp_diastolic", CUFF, T0 + 1, 70.0),
    )
    assert [len(group) for group in group_readings(readings)] == [1, 1, 1]


def test_observations_reference_their_device_and_the_patient() -> None:
    bundle = _bundle()
    (patient,) = _by_type(bundle, "Patient")
    devices = {d["identifier"][0]["value"]: d for d in _by_type(bundle, "Device")}
    assert devices[PATCH]["type"] == {"text": "chest-patch"}
    assert "type" not in devices[OXIMETER]  # no device_health record: kind unknown
    (spo2,) = _observation(bundle, "2708-6")
    assert spo2["device"]["reference"] == f"urn:uuid:{devices[OXIMETER]['id']}"
    assert spo2["subject"]["reference"] == f"urn:uuid:{patient['id']}"
    assert spo2["identifier"][0]["value"] == f"{PATIENT}.spo2.{OXIMETER}.{T0 + S}"


def test_news2_is_derived_from_the_observations_it_scored() -> None:
    bundle = _bundle()
    (news2,) = [
        o for o in _by_type(bundle, "Observation") if o["code"]["text"] == "NEWS2 total score"
    ]
    assert _codes(news2["code"], "http://snomed.info/sct") == {"1104051000000101"}
    assert news2["valueQuantity"]["code"] == "{score}"
    assert news2["effectiveDateTime"] == fhir_instant(T0 + 900 * S)
    ids = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    sources = [ids[ref["reference"]] for ref in news2["derivedFrom"]]
    assert sorted(s["code"]["coding"][0]["code"] for s in sources) == sorted(
        ["9279-1", "2708-6", "85354-9", "8867-4", "8310-5"]
    )
    # hr was scored from the chest patch's heart rate, not the oximeter's pulse rate.
    (hr,) = [s for s in sources if "8867-4" in _codes(s["code"], LOINC)]
    assert "8889-8" not in _codes(hr["code"], LOINC)
    assert {c["code"]["text"]: c.get("valueInteger") for c in news2["component"]}[
        "NEWS2 sub-score: consciousness (ACVPU)"
    ] == 0
    assert news2["valueQuantity"]["value"] == sum(c["valueInteger"] for c in news2["component"])
    assert "note" not in news2


def test_an_incomplete_news2_says_so_and_never_scores_the_gap_as_zero() -> None:
    readings = _readings()
    bundle = _bundle(news2=_news2(readings, complete=False))
    validate_with_libraries(bundle)
    (news2,) = [o for o in _by_type(bundle, "Observation") if "component" in o and "meta" not in o]
    temp = [c for c in news2["component"] if c["code"]["text"].endswith("temperature")]
    assert "valueInteger" not in temp[0]
    assert temp[0]["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert "temp" in news2["note"][0]["text"]
    assert len(news2["derivedFrom"]) == 4


def test_readings_news2_used_are_exported_even_before_since() -> None:
    readings = _readings()
    late = tuple(r for r in readings if r.ts_ns > T0)
    bundle = _bundle(readings=late, since_ns=T0 + 1)
    assert list(check_vital_signs(bundle)) == []
    # Heart and respiration rate at T0 are older than --since but scored NEWS2: they are exported.
    heart = {o["valueQuantity"]["value"] for o in _observation(bundle, "8867-4")}
    assert heart == {72.0, 73.0}  # 73 is the oximeter's pulse rate, inside the window
    assert [o["valueQuantity"]["value"] for o in _observation(bundle, "9279-1")] == [16.0]
    # A reading older than --since that NEWS2 did not use stays out: the paired bp at T0.
    panels = _observation(bundle, "85354-9")
    assert [p["effectiveDateTime"] for p in panels] == [fhir_instant(T0 + 900 * S)]


def test_the_export_is_deterministic() -> None:
    assert _bundle() == _bundle()
    ids = [e["resource"]["id"] for e in _bundle()["entry"]]
    assert len(ids) == len(set(ids))


def test_the_checker_catches_a_broken_profile() -> None:
    bundle = _bundle()
    (temp,) = _observation(bundle, "8310-5")
    temp["valueQuantity"]["code"] = "[degF]"
    temp["category"][0]["coding"][0]["code"] = "laboratory"
    (panel, _) = _observation(bundle, "85354-9")
    del panel["component"][1]["valueQuantity"]
    problems = list(check_vital_signs(bundle))
    assert len(problems) == 3, problems


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["heart_rate", "pulse_rate", "resp_rate", "spo2", "body_temp", "bp_systolic",
                 "bp_diastolic", "bp_mean", "glucose", "battery"]
            ),
            st.sampled_from([PATCH, OXIMETER, CUFF]),
            st.integers(0, 10**12),
            st.floats(0.0, 300.0, allow_nan=False),
        ),
        max_size=25,
    )
)  # fmt: skip
@PROPERTY
def test_any_stored_readings_give_a_valid_conformant_bundle(
    rows: list[tuple[str, str, int, float]],
) -> None:
    readings = tuple(Reading(m, d, T0 + offset, v) for m, d, offset, v in rows)
    data = ExportData(PATIENT, None, {}, readings, None, None)
    bundle = build_bundle(data, GENERATED_NS)
    validate_with_libraries(bundle)
    assert list(check_vital_signs(bundle)) == []
    # Every exported reading appears once, under its own identity.
    identities = [
        i["value"] for o in _by_type(bundle, "Observation") for i in o.get("identifier", [])
    ]
    exported = {r for r in readings if r.metric not in ("glucose", "battery")}
    assert sorted(identities) == sorted(
        {f"{PATIENT}.{r.metric}.{r.device}.{r.ts_ns}" for r in exported}
    )


@given(st.integers(0, 4_102_444_800 * S))
@settings(max_examples=300, deadline=None)
def test_instants_keep_every_nanosecond(ts_ns: int) -> None:
    text = fhir_instant(ts_ns)
    assert text.endswith("Z")
    assert _instant_ns(text) == ts_ns


def test_the_bundle_is_written_atomically_as_json(tmp_path: Path) -> None:
    out = tmp_path / "bundle.json"
    write_bundle(_bundle(), out, PATIENT)
    assert json.loads(out.read_text(encoding="utf-8")) == _bundle()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.json"]
    with pytest.raises(ExportError, match="cannot write"):
        write_bundle(_bundle(), tmp_path / "missing" / "bundle.json", PATIENT)


# --- the anonymised export (`export fhir --anonymised`, cloud_sink/fhir_anonymous.py) --------


def _anonymous(data: ExportData | None = None) -> tuple[dict[str, Any], int]:
    """An anonymised bundle of the test data (or `data`), as the command builds it; the shift."""
    if data is None:
        readings = _readings()
        data = ExportData(
            patient=PATIENT,
            profile=PatientProfile(
                PATIENT, "admitted", T0, 71, "female", ("COPD",), "pneumonia", "amoxicillin",
                "2031-05-06",
            ),
            device_kinds={PATCH: "chest-patch", CUFF: "bp-cuff"},
            readings=readings,
            news2=_news2(readings),
            since_ns=T0,
        )  # fmt: skip
    moved, shift_ns = anonymise(data)
    return build_bundle(moved, GENERATED_NS + shift_ns, anonymised=True), shift_ns


def test_the_anonymised_bundle_validates_and_meets_the_vital_signs_profiles() -> None:
    bundle, _ = _anonymous()
    validate_with_libraries(bundle)
    assert list(check_vital_signs(bundle)) == []
    assert bundle_counts(bundle) == bundle_counts(_bundle())


def test_the_anonymised_bundle_holds_no_token_no_profile_text_and_no_linkable_id() -> None:
    bundle, _ = _anonymous()
    text = json.dumps(bundle)
    for secret in (PATIENT, PATCH, OXIMETER, CUFF, "COPD", "pneumonia", "amoxicillin", "2031"):
        assert secret not in text
    # The pseudonymous export's resource ids are name-based on the tokens: none recur.
    assert {e["resource"]["id"] for e in _bundle()["entry"]}.isdisjoint(
        {e["resource"]["id"] for e in bundle["entry"]}
    )
    assert bundle["meta"]["security"][0]["code"] == "ANONYED"
    (patient,) = _by_type(bundle, "Patient")
    assert patient["meta"]["security"][0]["code"] == "ANONYED"
    assert patient["identifier"][0]["system"] == "urn:bedside-twin:export-subject"
    # Kept: sex and whether the stay is open; nothing else of the profile.
    assert set(patient) == {"resourceType", "id", "meta", "identifier", "gender", "active"}
    assert (patient["gender"], patient["active"]) == ("female", True)
    devices = _by_type(bundle, "Device")
    assert {d["identifier"][0]["system"] for d in devices} == {"urn:bedside-twin:export-device"}
    assert sorted(d.get("type", {}).get("text", "-") for d in devices) == [
        "-", "bp-cuff", "chest-patch",
    ]  # fmt: skip


def test_every_anonymised_export_has_new_ids_and_its_own_shift() -> None:
    first, first_shift = _anonymous()
    second, second_shift = _anonymous()
    ids = {e["resource"]["id"] for e in first["entry"]}
    assert ids.isdisjoint(e["resource"]["id"] for e in second["entry"])
    (one,) = _by_type(first, "Patient")
    (two,) = _by_type(second, "Patient")
    assert one["identifier"][0]["value"] != two["identifier"][0]["value"]
    # Shifts are drawn from 5219 whole weeks; two may coincide, so only their range is checked.
    for shift in (first_shift, second_shift):
        assert shift % WEEK_NS == 0
        assert SHIFT_WEEKS_MIN <= shift // WEEK_NS <= SHIFT_WEEKS_MAX


def test_anonymised_times_move_by_whole_weeks_keeping_intervals_and_time_of_day() -> None:
    bundle, shift_ns = _anonymous()

    def in_order(found: dict[str, Any]) -> list[tuple[int, str, str]]:
        return sorted(
            (_instant_ns(o["effectiveDateTime"]), o["code"]["text"], json.dumps(o.get("component")))
            for o in _by_type(found, "Observation")
        )

    before, after = in_order(_bundle()), in_order(bundle)
    assert len(before) == len(after) == 8
    for (old_ns, *old_content), (new_ns, *new_content) in zip(before, after, strict=True):
        assert new_content == old_content
        assert new_ns - old_ns == shift_ns
        # Whole weeks: the same weekday and the same time of day, decades later.
        assert new_ns % (86_400 * S) == old_ns % (86_400 * S)
    assert _instant_ns(bundle["timestamp"]) == GENERATED_NS + shift_ns
    assert datetime.fromtimestamp(_instant_ns(bundle["timestamp"]) // S, tz=UTC).year >= 2070


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["heart_rate", "spo2", "bp_systolic", "bp_diastolic", "battery"]),
            st.sampled_from([PATCH, OXIMETER, CUFF]),
            st.integers(0, 10**12),
            st.floats(0.0, 300.0, allow_nan=False),
        ),
        max_size=15,
    )
)
@PROPERTY
def test_any_readings_give_a_valid_anonymised_bundle_without_tokens(
    rows: list[tuple[str, str, int, float]],
) -> None:
    readings = tuple(Reading(m, d, T0 + offset, v) for m, d, offset, v in rows)
    bundle, _ = _anonymous(ExportData(PATIENT, None, {CUFF: "bp-cuff"}, readings, None, None))
    validate_with_libraries(bundle)
    assert list(check_vital_signs(bundle)) == []
    text = json.dumps(bundle)
    assert all(token not in text for token in (PATIENT, PATCH, OXIMETER, CUFF))

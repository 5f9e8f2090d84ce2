"""Profiles, twin details and the FHIR export against a real InfluxDB, through the command line."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fhirclient.models.bundle as fhirclient_bundle  # type: ignore[import-untyped]
import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from typer.testing import CliRunner

from cloud_sink.cli import app
from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import FieldValue, encode_line, vital_line
from firmware_sims.services import InfluxServer

pytestmark = [pytest.mark.integration]

S = 1_000_000_000
PATIENT = "0123456789abcdef0123456789abcdef"
NEIGHBOUR = "fedcba9876543210fedcba9876543210"
NEWCOMER = "00000000000000000000000000000001"
PATCH, OXIMETER, CUFF, ROOM = "1" * 32, "2" * 32, "3" * 32, "4" * 32
GATEWAY = "ward-7"
runner = CliRunner()


@pytest.fixture
def influx(influxdb: InfluxServer, isolation: str) -> Iterator[InfluxV1]:
    client = InfluxV1(influxdb.url, isolation)
    yield client
    client.close()


@pytest.fixture
def config(tmp_path: Path, influxdb: InfluxServer, isolation: str) -> Path:
    path = tmp_path / "sink.toml"
    path.write_text(
        f"""[mqtt]
host = "127.0.0.1"
port = 1883

[keyring]
dir = "keyring"

[state]
dir = "state"

[influxdb]
url = "{influxdb.url}"
database = "{isolation}"
""",
        encoding="utf-8",
    )
    return path


def cli(config: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, [*args, "--config", str(config)], terminal_width=200)
    assert result.exit_code == code, result.output
    return result.output


def _health(device: str, kind: str, ts_ns: int, **fields: FieldValue) -> str:
    tags = {"device": device, "gateway": GATEWAY, "kind": kind}
    return encode_line("device_health", tags, {"link_up": True, **fields}, ts_ns)


def _ward(now_ns: int) -> list[str]:
    """Two minutes of one patient's monitoring and a room sensor at the next bed, same gateway."""
    vital = vital_line
    lines = [vital(PATIENT, "heart_rate", PATCH, value=64.0, quality=0, flags=0,
                   ts_ns=now_ns - 7200 * S)]  # fmt: skip
    for k in range(60):  # the chest patch: every 2 s, four metrics stamped together
        ts_ns = now_ns - 120 * S + k * 2 * S
        for metric, value in (("heart_rate", 70.0 + k % 5), ("resp_rate", 18.0),
                              ("body_temp", 37.2), ("battery", 81.0)):  # fmt: skip
            lines.append(vital(PATIENT, metric, PATCH, value=value, quality=0, flags=0,
                               ts_ns=ts_ns))  # fmt: skip
        for metric, value in (("spo2", 97.0), ("pulse_rate", 71.0)):
            lines.append(vital(PATIENT, metric, OXIMETER, value=value, quality=0, flags=0,
                               ts_ns=ts_ns + S))  # fmt: skip
    for ts_ns, readings in (
        (now_ns - 100 * S, (("bp_systolic", 126.0), ("bp_diastolic", 81.0), ("bp_mean", 96.0))),
        (now_ns - 40 * S, (("bp_systolic", 129.0),)),
    ):
        lines += [
            vital(PATIENT, metric, CUFF, value=value, quality=0, flags=0, ts_ns=ts_ns)
            for metric, value in readings
        ]
    lines += [
        vital(NEIGHBOUR, "room_temp", ROOM, value=22.5, quality=0, flags=0, ts_ns=now_ns - 30 * S),
        vital(NEIGHBOUR, "humidity", ROOM, value=41.0, quality=0, flags=0, ts_ns=now_ns - 30 * S),
    ]
    # The patch's error counter: 1, 3, then the agent restarted (0), then 2: five errors.
    for ago_s, errors in ((100, 1), (50, 3), (10, 0), (5, 2)):
        lines.append(_health(PATCH, "chest-patch", now_ns - ago_s * S, errors_total=errors))
    lines += [
        _health(OXIMETER, "pulse-oximeter", now_ns - 5 * S, errors_total=0, battery_pct=55.0),
        _health(ROOM, "room-sensor", now_ns - 5 * S, errors_total=0),
    ]
    return lines


@pytest.fixture
def ward(config: Path, influx: InfluxV1) -> int:
    """An admitted patient with two minutes of data; returns the `now` the data is relative to."""
    # Admission comes first, before any reading: the database is created for it.
    admitted = cli(config, "patients", "admit", PATIENT, "--age", "71", "--sex", "female",
                   "--condition", "COPD", "--condition", "heart failure",
                   "--diagnosis", "community-acquired pneumonia")  # fmt: skip
    assert "admitted 01234567" in admitted
    cli(config, "patients", "admit", PATIENT, code=2)  # already admitted: update instead
    now_ns = time.time_ns()
    influx.write(_ward(now_ns))
    cli(config, "patients", "update", PATIENT, "--treatment", "amoxicillin",
        "--next-appointment", "2031-05-06")  # fmt: skip
    cli(config, "twin", "observe", PATIENT, "--acvpu", "A", "--oxygen", "air", "--scale", "1")
    return now_ns


def test_twin_show_has_profile_devices_and_environment(config: Path, ward: int) -> None:
    twin = json.loads(cli(config, "twin", "show", PATIENT, "--json"))
    # The keys other tools read are unchanged.
    assert {"patient", "readings", "vitals", "observations", "news2", "alerts"} <= set(twin)
    assert twin["news2"]["complete"] is True
    assert twin["profile"] | {"updated": None} == {
        "state": "admitted",
        "age": 71,
        "sex": "female",
        "conditions": ["COPD", "heart failure"],
        "diagnosis": "community-acquired pneumonia",
        "treatment": "amoxicillin",
        "next_appointment": "2031-05-06",
        "updated": None,
    }
    devices = twin["devices"]
    assert set(devices) == {PATCH, OXIMETER, CUFF}  # the room sensor is the neighbour's
    patch, oximeter, cuff = devices[PATCH], devices[OXIMETER], devices[CUFF]
    assert (patch["kind"], oximeter["kind"], cuff["kind"]) == (
        "chest-patch",
        "pulse-oximeter",
        None,
    )
    assert patch["last_reading"] == twin["vitals"]["heart_rate"]["time"]
    # The reading of two hours ago is outside the hour.
    assert (patch["readings_last_hour"], oximeter["readings_last_hour"]) == (240, 120)
    assert cuff["readings_last_hour"] == 4
    assert (patch["interval_s"], oximeter["interval_s"], cuff["interval_s"]) == (2.0, 2.0, 60.0)
    assert patch["battery_pct"] == 81.0  # from the battery metric
    assert oximeter["battery_pct"] == 55.0  # from device_health: the oximeter sends no metric
    assert cuff["battery_pct"] is None
    # 5 errors between the first reading (2 h ago) and the last health record (5 s ago).
    assert patch["errors_per_100h"] == pytest.approx(5 / (7195 / 3600) * 100, rel=1e-3)
    assert oximeter["errors_per_100h"] == 0.0
    assert cuff["errors_per_100h"] is None  # no device_health record
    room = twin["environment"]["room_temp"]
    assert (room["value"], room["unit"], room["source"]) == (22.5, "Cel", "gateway")
    assert (room["device"], room["gateway"]) == (ROOM, GATEWAY)
    assert room["age_s"] >= 30.0
    assert twin["environment"]["humidity"]["value"] == 41.0
    text = cli(config, "twin", "show", PATIENT)
    assert "community-acquired pneumonia" in text
    assert "room temperature: 22.5 Cel" in text

    cli(config, "patients", "discharge", PATIENT)
    cli(config, "patients", "discharge", PATIENT, code=2)  # already discharged
    after = json.loads(cli(config, "twin", "show", PATIENT, "--json"))
    assert after["profile"]["state"] == "discharged"
    assert after["profile"]["treatment"] == "amoxicillin"


def _export(config: Path, out: Path, *args: str) -> dict[str, Any]:
    summary = cli(config, "export", "fhir", PATIENT, "--out", str(out), *args)
    assert summary.startswith(f"wrote {out}: 1 Patient, 3 Device, ")
    bundle: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    fhirclient_bundle.Bundle(copy.deepcopy(bundle), strict=True)
    R4BBundle.model_validate(copy.deepcopy(bundle))
    return bundle


def _by_code(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation":
            found.setdefault(resource["code"]["coding"][0]["code"], []).append(resource)
    return found


def test_fhir_export_holds_the_stored_vitals_and_news2(
    config: Path, ward: int, tmp_path: Path
) -> None:
    bundle = _export(config, tmp_path / "bundle.json")
    resources = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    by_code = _by_code(bundle)
    # 60 heart rates + 60 pulse rates (+ the one of two hours ago), 60 each of respiration,
    # temperature and SpO2, 2 bp panels, NEWS2; battery and room sensor are not vital signs.
    assert {code: len(found) for code, found in by_code.items()} == {
        "8867-4": 121, "9279-1": 60, "8310-5": 60, "2708-6": 60, "85354-9": 2,
        "1104051000000101": 1,
    }  # fmt: skip
    (patient,) = [r for r in resources.values() if r["resourceType"] == "Patient"]
    assert patient["identifier"][0]["value"] == PATIENT
    assert (patient["gender"], patient["active"]) == ("female", True)
    assert {"name", "birthDate"}.isdisjoint(patient)
    (news2,) = by_code["1104051000000101"]
    sources = [resources[ref["reference"]] for ref in news2["derivedFrom"]]
    assert sorted(s["code"]["coding"][0]["code"] for s in sources) == [
        "2708-6", "8310-5", "85354-9", "8867-4", "9279-1",
    ]  # fmt: skip
    twin = json.loads(cli(config, "twin", "show", PATIENT, "--json"))
    assert news2["valueQuantity"]["value"] == twin["news2"]["total"]
    for resource in resources.values():
        if resource["resourceType"] == "Observation":
            assert resource["subject"]["reference"] == f"urn:uuid:{patient['id']}"
        if "device" in resource:
            assert resources[resource["device"]["reference"]]["resourceType"] == "Device"


def test_fhir_export_since_keeps_newer_readings_and_news2_sources(
    config: Path, ward: int, tmp_path: Path
) -> None:
    since = datetime.fromtimestamp((ward - 20 * S) // S, tz=UTC).isoformat()
    by_code = _by_code(_export(config, tmp_path / "recent.json", "--since", since))
    # The paired bp of 100 s ago is out; the lone systolic of 40 s ago scored NEWS2, so it stays.
    (panel,) = by_code["85354-9"]
    assert panel["component"][0]["valueQuantity"]["value"] == 129.0
    # Every 2 s from 20 s ago (--since is whole seconds at or before that reading) to 2 s ago.
    assert len(by_code["9279-1"]) == 10
    assert len(by_code["1104051000000101"]) == 1


def test_a_patient_admitted_before_any_reading(config: Path, tmp_path: Path) -> None:
    cli(config, "patients", "update", NEWCOMER, "--age", "30", code=2)  # not admitted yet
    cli(config, "patients", "admit", NEWCOMER, "--sex", "male")
    out = tmp_path / "newcomer.json"
    cli(config, "export", "fhir", NEWCOMER, "--out", str(out))
    bundle = json.loads(out.read_text(encoding="utf-8"))
    R4BBundle.model_validate(bundle)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient"]
    # Nothing stored at all for a token: a usage error, and no file.
    missing = tmp_path / "missing.json"
    cli(config, "export", "fhir", "f" * 32, "--out", str(missing), code=2)
    assert not missing.exists()

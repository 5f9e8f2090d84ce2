"""Profiles, twin details, the outlook and the FHIR export: real InfluxDB, through the CLI."""

from __future__ import annotations

import copy
import json
import math
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fhirclient.models.bundle as fhirclient_bundle  # type: ignore[import-untyped]
import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from typer.testing import CliRunner

from cloud_sink.cli import app
from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import FieldValue, encode_line, vital_line
from cloud_sink.twin import iso_utc
from firmware_sims.services import InfluxServer
from tests.support.access import access_section, person

pytestmark = [pytest.mark.integration]

S = 1_000_000_000
PATIENT = "0123456789abcdef0123456789abcdef"
NEIGHBOUR = "fedcba9876543210fedcba9876543210"
NEWCOMER = "00000000000000000000000000000001"
PATCH, OXIMETER, CUFF, ROOM = "1" * 32, "2" * 32, "3" * 32, "4" * 32
GATEWAY = "ward-7"
# Access control and its audit are tested in test_access_audit.py; here an admin does it all.
ADMIN = person("it-admin", "admin")
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
{access_section(ADMIN)}""",
        encoding="utf-8",
    )
    return path


def cli(config: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, [*args, "--config", str(config)], terminal_width=200, env=ADMIN.env)
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


# --- the outlook: personal baselines, advisories, forecasts, time to a NEWS2 band change -----

WATCHED = "a1" * 16
MONITOR = "5" * 32
MINUTE = 60 * S
HOUR = 3600 * S
ARTIFACT_SPIKE, ARTIFACT_PROBE_OFF = 1 << 4, 1 << 2  # docs/filters.md §2 bits 4 and 2


def _six_hours(now_ns: int) -> list[tuple[str, int, float, int]]:
    """(metric, ts_ns, value, flags): six hours a minute apart, the last 30 minutes trending.

    Heart rate sits near 60 and climbs 0.6 /min over the last half hour; SpO2 climbs 0.1 %/min
    (its +30 min forecast passes 100 % and must be clamped); the cuff reads every 30 minutes.
    Artifacts far off the patient's values are stored too, flagged as the edge flags them.
    """
    rng = random.Random(7)
    newest_ns = now_ns - 5 * S
    readings = []
    for k in range(361):
        ts_ns = newest_ns - (360 - k) * MINUTE
        into_trend_min = max(0, k - 330)
        readings += [
            ("heart_rate", ts_ns, 60.0 + rng.gauss(0, 2) + 0.6 * into_trend_min, 0),
            ("resp_rate", ts_ns, 14.0 + rng.gauss(0, 0.5), 0),
            ("spo2", ts_ns, float(round(96 + rng.gauss(0, 0.4))) + 0.1 * into_trend_min, 0),
            ("body_temp", ts_ns, round(36.9 + rng.gauss(0, 0.05), 2), 0),
        ]
        if k % 30 == 0:
            readings.append(("bp_systolic", ts_ns, 120.0 + rng.gauss(0, 4), 0))
        if k % 40 == 5:  # a spike in the baseline window, between two regular readings
            readings.append(("heart_rate", ts_ns + 30 * S, 250.0, ARTIFACT_SPIKE))
    # Probe off in the trend window: a heart rate of 20 the fit must not see.
    readings.append(("heart_rate", newest_ns - 90 * S, 20.0, ARTIFACT_PROBE_OFF))
    return readings


def _nearest_rank(ordered: list[float], percent: float) -> float:
    # InfluxDB 1.x percentile(): the reading of rank floor(n * p / 100 + 0.5), 1-based.
    return ordered[math.floor(len(ordered) * percent / 100 + 0.5) - 1]


def _advisory(kind: str, alert_id: str, state: str, ts_ns: int, value: float) -> str:
    fields: dict[str, FieldValue] = {
        "id": alert_id, "state": state, "metric": "heart_rate", "value": value, "source": "edge",
        "detail": f"advisory {kind} on heart_rate",
    }  # fmt: skip
    return encode_line("alert", {"patient": WATCHED, "kind": kind, "severity": "info"}, fields,
                       ts_ns)  # fmt: skip


def _iso_ns(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return round((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000) * 1_000_000


@dataclass(slots=True, frozen=True)
class Watched:
    """The stored six hours, and `twin show --json` of them taken between two clock readings."""

    readings: list[tuple[str, int, float, int]]
    now_ns: int
    before_ns: int
    after_ns: int
    twin: dict[str, Any]


@pytest.fixture
def watched(config: Path, influx: InfluxV1) -> Watched:
    influx.create_database()
    now_ns = time.time_ns()
    readings = _six_hours(now_ns)
    influx.write([vital_line(WATCHED, metric, MONITOR, value=value, quality=0, flags=flags,
                             ts_ns=ts_ns) for metric, ts_ns, value, flags in readings])  # fmt: skip
    influx.write([
        _advisory("baseline_rise", "rise-open", "raised", now_ns - 20 * MINUTE, 71.5),
        _advisory("baseline_fall", "fall-recent", "raised", now_ns - 3 * HOUR, 55.0),
        _advisory("baseline_fall", "fall-recent", "cleared", now_ns - 2 * HOUR, 60.0),
        _advisory("baseline_fall", "fall-old", "raised", now_ns - 10 * HOUR, 54.0),
        _advisory("baseline_fall", "fall-old", "cleared", now_ns - 9 * HOUR, 61.0),
        encode_line("alert", {"patient": WATCHED, "kind": "heart_rate_high", "severity": "warning"},
                    {"id": "alarm-1", "state": "raised", "metric": "heart_rate", "value": 131.0,
                     "source": "edge", "detail": "physiological"}, now_ns - 5 * MINUTE),
    ])  # fmt: skip
    cli(config, "twin", "observe", WATCHED, "--acvpu", "A", "--oxygen", "air", "--scale", "1")
    before_ns = time.time_ns()
    twin = json.loads(cli(config, "twin", "show", WATCHED, "--json"))
    return Watched(readings, now_ns, before_ns, time.time_ns(), twin)


def test_the_outlook_keys_follow_the_existing_ones(watched: Watched) -> None:
    assert list(watched.twin)[:9] == ["patient", "readings", "vitals", "observations", "news2",
                                      "alerts", "profile", "devices", "environment"]  # fmt: skip
    assert list(watched.twin)[9:] == ["baselines", "advisories", "forecast", "news2_projection"]
    assert (watched.twin["news2"]["total"], watched.twin["news2"]["band"]) == (0, "zero")


def test_baselines_are_influxdb_quantiles_of_the_usable_readings(watched: Watched) -> None:
    # InfluxDB's median and nearest-rank quartiles over [newest - 24 h, newest - 30 min);
    # the spikes are left out.
    twin, readings = watched.twin, watched.readings
    for metric in ("heart_rate", "resp_rate", "spo2", "body_temp"):
        newest_ns = max(ts for m, ts, _, _ in readings if m == metric)
        window = sorted(
            value for m, ts, value, flags in readings
            if m == metric and flags == 0 and newest_ns - 24 * HOUR <= ts < newest_ns - 30 * MINUTE
        )  # fmt: skip
        baseline = twin["baselines"][metric]
        assert baseline["readings"] == len(window) == 330
        assert baseline["median"] == pytest.approx(statistics.median(window), abs=1e-9)
        assert baseline["q1"] == pytest.approx(_nearest_rank(window, 25), abs=1e-9)
        assert baseline["q3"] == pytest.approx(_nearest_rank(window, 75), abs=1e-9)
        assert baseline["window_end"] == iso_utc(newest_ns - 30 * MINUTE)
        assert baseline["span_h"] == pytest.approx(329 / 60, abs=1e-3)
        latest = twin["vitals"][metric]["value"]
        assert baseline["deviation"] == pytest.approx(latest - baseline["median"])
    heart = twin["baselines"]["heart_rate"]
    assert (heart["position"], heart["reason"]) == ("above", None)
    assert heart["deviation_iqr"] > 3.0  # about 18 /min above a baseline with an IQR near 3
    cuff = twin["baselines"]["bp_systolic"]
    assert (cuff["median"], cuff["readings"]) == (None, 11)
    assert cuff["reason"] == "11 usable readings in the window, fewer than 20"


def test_advisories_are_listed_apart_from_alarms(config: Path, watched: Watched) -> None:
    # The open one and the one cleared 2 h ago; not the one cleared 9 h ago.
    advisories = watched.twin["advisories"]
    assert [(a["id"], a["state"], a["direction"]) for a in advisories] == [
        ("rise-open", "raised", "rise"), ("fall-recent", "cleared", "fall"),
    ]  # fmt: skip
    assert advisories[1]["raised"] == iso_utc(watched.now_ns - 3 * HOUR)
    assert advisories[0]["value"] == 71.5
    text = cli(config, "twin", "show", WATCHED)
    assert "alert heart_rate_high (warning) raised" in text
    assert "alert baseline_" not in text
    assert "advisory (open): heart_rate rise against the personal baseline" in text
    assert "advisory (cleared): heart_rate fall against the personal baseline" in text
    rows = json.loads(cli(config, "twin", "list", "--json"))
    assert [(r["open_alerts"], r["open_advisories"]) for r in rows] == [(1, 1)]


def test_forecasts_are_the_least_squares_line_with_its_prediction_interval(
    watched: Watched,
) -> None:
    twin, readings = watched.twin, watched.readings
    heart_fit = twin["forecast"]["heart_rate"]
    newest_ns = max(ts for m, ts, _, flags in readings if m == "heart_rate" and flags == 0)
    window_points = [
        (ts, value) for m, ts, value, flags in readings
        if m == "heart_rate" and flags == 0 and ts >= newest_ns - 30 * MINUTE
    ]  # fmt: skip
    t_s = np.array([(ts - newest_ns) / S for ts, _ in window_points])
    y = np.array([value for _, value in window_points])
    slope, intercept = np.polyfit(t_s, y, 1)
    assert heart_fit["points"] == len(window_points) == 31  # the probe-off 20 /min left out
    assert heart_fit["slope_per_h"] == pytest.approx(slope * 3600, rel=1e-9)
    assert twin["vitals"]["heart_rate"]["trend_per_h"] == heart_fit["slope_per_h"]
    residual = y - (slope * t_s + intercept)
    se = math.sqrt(float(residual @ residual) / 29)
    assert heart_fit["residual_se"] == pytest.approx(se, rel=1e-9)
    assert heart_fit["t_quantile"] == pytest.approx(2.045230, abs=1e-6)  # t(0.975, 29), tables
    assert (heart_fit["method"], heart_fit["level"], heart_fit["low_confidence"]) == (
        "ols-prediction-interval", 0.95, False,
    )  # fmt: skip
    sxx = float(((t_s - t_s.mean()) ** 2).sum())
    for horizon, minutes in zip(heart_fit["horizons"], (15.0, 30.0), strict=True):
        at_ns = _iso_ns(horizon["time"])  # milliseconds: the line moves 1e-5 /min in that
        assert horizon["minutes"] == minutes
        assert watched.before_ns + minutes * MINUTE - S // 1000 <= at_ns
        assert at_ns <= watched.after_ns + minutes * MINUTE
        x0 = (at_ns - newest_ns) / S
        assert horizon["value"] == pytest.approx(slope * x0 + intercept, abs=1e-3)
        half = 2.045230 * se * math.sqrt(1 + 1 / 31 + (x0 - t_s.mean()) ** 2 / sxx)
        assert (horizon["high"] - horizon["low"]) / 2 == pytest.approx(half, rel=1e-4)
    spo2 = twin["forecast"]["spo2"]["horizons"][-1]
    assert (spo2["value"], spo2["high"], spo2["clamped"]) == (100.0, 100.0, True)
    assert twin["forecast"]["bp_systolic"] is None  # one cuff reading in its 30 minutes


def test_the_band_changes_when_the_heart_rate_trend_reaches_91(
    config: Path, watched: Watched
) -> None:
    # Heart rate alone trends up (the others are flat; SpO2 climbs but stays at 0 points);
    # 90.5 /min is charted 91, which RCP 2017 Chart 1 scores 1: band "low".
    twin = watched.twin
    projection = twin["news2_projection"]
    assert (projection["estimable"], projection["total"], projection["band"]) == (True, 0, "zero")
    trending = {v["parameter"]: v for v in projection["trending"]}
    slope_per_h = trending["hr"]["slope_per_h"]
    assert slope_per_h == twin["forecast"]["heart_rate"]["slope_per_h"]
    assert trending["hr"]["significant"] is True
    change = projection["band_change"]
    assert (change["band"], change["total"]) == ("low", 1)
    assert [(d["parameter"], d["points_now"], d["points_then"]) for d in change["drivers"]] == [
        ("hr", 0, 1)
    ]
    value, hr_ns = trending["hr"]["value"], twin["vitals"]["heart_rate"]["ts_ns"]

    def crossing(from_ns: int) -> int:
        minutes = 1
        while value + slope_per_h * (from_ns + minutes * MINUTE - hr_ns) / HOUR < 90.5:
            minutes += 1
        return minutes

    # The command read the clock between before_ns and after_ns.
    assert crossing(watched.after_ns) <= change["minutes"] <= crossing(watched.before_ns) < 60
    text = cli(config, "twin", "show", WATCHED)
    assert "NEWS2 zero -> low (score 1) in " in text
    assert "if the trends hold; driven by hr 0->1" in text
    rows = json.loads(cli(config, "twin", "list", "--json"))
    assert rows[0]["news2_projection"]["band_change"]["band"] == "low"


def test_outlook_options_change_it_and_impossible_ones_are_refused(
    config: Path, watched: Watched
) -> None:
    short = json.loads(cli(config, "twin", "show", WATCHED, "--json", "--baseline-hours", "2",
                           "--horizon-min", "5", "--projection-hours", "0.25"))  # fmt: skip
    assert short["baselines"]["heart_rate"]["readings"] == 90  # [newest - 2 h, newest - 30 min)
    assert [h["minutes"] for h in short["forecast"]["heart_rate"]["horizons"]] == [5.0]
    assert short["news2_projection"]["horizon_min"] == 15
    refused = cli(config, "twin", "show", WATCHED, "--baseline-hours", "0.25", code=2)
    assert "--baseline-hours 0.25: must be longer than the excluded recent 1800 s" in refused
    refused = cli(config, "twin", "show", WATCHED, "--horizon-min", "-5", code=2)
    assert "--horizon-min -5.0: each horizon is 0-1440 minutes" in refused
    refused = cli(config, "twin", "show", WATCHED, "--projection-hours", "0", code=2)
    assert "--projection-hours 0: give hours above 0, at most 168" in refused

"""`cloud-sink report` against a real InfluxDB: a small population with hand-computed figures."""

from __future__ import annotations

import json
import statistics
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cloud_sink.cli_report import report
from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import FieldValue, encode_line, vital_line
from firmware_sims.services import InfluxServer
from tests.support.access import access_section, person

pytestmark = [pytest.mark.integration]

S = 1_000_000_000
MIN = 60 * S
HOUR = 3600 * S
DAY = 24 * HOUR
T0 = int(datetime(2025, 3, 14, 8, tzinfo=UTC).timestamp()) * S
SINCE = "2025-03-14T07:50:00Z"  # T0 - 10 min: profiles (T0 - 1 h) and old data lie before it
SPIKE = 1 << 4  # docs/filters.md §2
IMPLAUSIBLE = 1 << 0
P1, P2, P3, P4, P5, P6 = (f"{0xA0 + k:032x}" for k in range(1, 7))
PATCH1, OXI1, CUFF1, STRAP2, OXI2, CUFF2, MON3, IMPL5, CUFF5, ROOM2 = (
    f"{0xD0 + k:032x}" for k in range(10)
)
WARD1, WARD2 = "ward-1", "ward-2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# P1's heart rate, one reading 10 s after each of ward 1's room readings (every minute from T0).
ROOM_WARD1_C = (24.0, 25.0, 26.0, 26.0, 27.0, 27.0, 28.0, 28.0, 29.0, 29.0, 30.0, 30.0)
# Above 25 °C: y = 10 + 2x + e with e = +1, -1, ... orthogonal to 1 and x, so the OLS slope is 2
# exactly, SSE = 10, Sxx = 20, se = sqrt(10 / 8 / 20) = 0.25; t(0.975, 8) = 2.306 (NIST table).
HR_P1 = (70.0, 70.0, 63.0, 61.0, 65.0, 63.0, 67.0, 65.0, 69.0, 67.0, 71.0, 69.0)

# Who may run the report is tested in test_access_audit.py; here a researcher runs it.
RESEARCHER = person("it-researcher", "researcher")
runner = CliRunner()
app = typer.Typer()


@app.callback()
def _main() -> None:
    """The lead registers `report` on cloud-sink's app; here on a test app the same way."""


app.command("report")(report)


@pytest.fixture
def influx(influxdb: InfluxServer, isolation: str) -> Iterator[InfluxV1]:
    client = InfluxV1(influxdb.url, isolation)
    client.create_database()
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
{access_section(RESEARCHER)}""",
        encoding="utf-8",
    )
    return path


def cli(config: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(
        app, ["report", *args, "--config", str(config)], terminal_width=200, env=RESEARCHER.env
    )
    assert result.exit_code == code, result.output
    return result.output


def run_json(config: Path, *args: str) -> dict[str, Any]:
    output = cli(config, *args, "--json")
    document: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return document


def _vital(patient: str, metric: str, device: str, value: float, ts_ns: int, flags: int = 0) -> str:
    return vital_line(patient, metric, device, value=value, quality=0, flags=flags, ts_ns=ts_ns)


def _health(device: str, kind: str, gateway: str, ts_ns: int, errors: int) -> str:
    tags = {"device": device, "gateway": gateway, "kind": kind}
    fields: dict[str, FieldValue] = {"link_up": True, "errors_total": errors}
    return encode_line("device_health", tags, fields, ts_ns)


def _profile(patient: str, ts_ns: int, state: str, **fields: FieldValue) -> str:
    return encode_line("patient_profile", {"patient": patient}, {"state": state, **fields}, ts_ns)


def _alert(patient: str, kind: str, state: str, ts_ns: int) -> str:
    tags = {"patient": patient, "kind": kind, "severity": "info"}
    fields: dict[str, FieldValue] = {"id": f"{kind}-{patient[-2:]}", "state": state}
    return encode_line("alert", tags, {**fields, "source": "edge", "detail": ""}, ts_ns)


def _refusal(gateway: str, reason: str, ts_ns: int) -> str:
    return encode_line(
        "sink_security", {"gateway": gateway, "reason": reason}, {"rejected": 1}, ts_ns
    )


def _population() -> list[str]:
    """Five patients in the window (P1-P5) and one discharged before it (P6); see docs/report.md."""
    lines = [
        _profile(P1, T0 - HOUR, "admitted", age=70, sex="male", conditions='["diabetes"]'),
        _profile(P2, T0 - HOUR, "admitted", age=50, sex="female", conditions="[]"),
        _profile(P3, T0 - HOUR, "admitted", age=30, sex="other",
                 conditions='["hypertension", "asthma"]'),
        _profile(P4, T0 - HOUR, "admitted", sex="female", conditions="[]"),
        _profile(P6, T0 - 3 * DAY, "admitted", age=90, sex="male", conditions='["COPD"]'),
        _profile(P6, T0 - 2 * DAY, "discharged", age=90, sex="male", conditions='["COPD"]'),
    ]  # fmt: skip
    # Ward 1's own room temperature every minute; ward 2's from a room sensor (bound to P6).
    lines += [
        encode_line("environment", {"gateway": WARD1}, {"room_temp_c": temp}, T0 + k * MIN)
        for k, temp in enumerate(ROOM_WARD1_C)
    ]
    lines += [
        _vital(P6, "room_temp", ROOM2, 22.0, T0),
        _vital(P6, "room_temp", ROOM2, 23.0, T0 + MIN),
        _vital(P6, "room_temp", ROOM2, 99.0, T0 + 2 * MIN, flags=IMPLAUSIBLE),
        _vital(P6, "humidity", ROOM2, 40.0, T0),
    ]
    # P1: heart rate (one spike dropped, one reading an hour later with no room reading near),
    # SpO2 at 92 % for ten minutes, blood pressure 142/86 by the medians.
    lines += [_vital(P1, "heart_rate", PATCH1, hr, T0 + k * MIN + 10 * S)
              for k, hr in enumerate(HR_P1)]  # fmt: skip
    lines += [
        _vital(P1, "heart_rate", PATCH1, 250.0, T0 + 30 * S, flags=SPIKE),
        _vital(P1, "heart_rate", PATCH1, 66.0, T0 + HOUR),
    ]
    lines += [_vital(P1, "spo2", OXI1, 92.0 if k <= 10 else 97.0, T0 + k * MIN) for k in range(15)]
    for k, (sbp, dbp) in enumerate(((138.0, 84.0), (142.0, 86.0), (150.0, 90.0))):
        lines += [
            _vital(P1, "bp_systolic", CUFF1, sbp, T0 + k * 15 * MIN),
            _vital(P1, "bp_diastolic", CUFF1, dbp, T0 + k * 15 * MIN),
        ]
    # P2: heart rate 80, 82 (rooms 24 and 25 °C: not warm), and 150 two days ago (outside);
    # SpO2 93 % for one minute only; blood pressure 120/76.
    lines += [
        _vital(P2, "heart_rate", STRAP2, 80.0, T0 + 5 * S),
        _vital(P2, "heart_rate", STRAP2, 82.0, T0 + 65 * S),
        _vital(P2, "heart_rate", STRAP2, 150.0, T0 - 2 * DAY),
    ]
    lines += [_vital(P2, "spo2", OXI2, v, T0 + k * MIN) for k, v in enumerate((97, 93, 93, 97))]
    for k, (sbp, dbp) in enumerate(((118.0, 74.0), (122.0, 78.0))):
        lines += [
            _vital(P2, "bp_systolic", CUFF2, sbp, T0 + k * 15 * MIN),
            _vital(P2, "bp_diastolic", CUFF2, dbp, T0 + k * 15 * MIN),
        ]
    # P3: pulse rate only (the bedside monitor, ward 2 at 22-23 °C), blood pressure 125/82.
    lines += [
        _vital(P3, "pulse_rate", MON3, 90.0, T0),
        _vital(P3, "pulse_rate", MON3, 92.0, T0 + MIN),
        _vital(P3, "bp_systolic", MON3, 125.0, T0),
        _vital(P3, "bp_diastolic", MON3, 82.0, T0),
    ]
    # P5: no profile; one heart rate far from any room reading, a systolic without diastolic.
    lines += [
        _vital(P5, "heart_rate", IMPL5, 100.0, T0 + 2 * HOUR),
        _vital(P5, "bp_systolic", CUFF5, 135.0, T0),
    ]
    # Device health: errors 0, 0+2 (3 -> 0 is a restart), 4, 0, 0 over 2, 3, 1, 1, 2 hours.
    for device, kind, gateway, totals in (
        (PATCH1, "chest-patch", WARD1, (0, 0, 0)),
        (OXI1, "pulse-oximeter", WARD1, (2, 3, 0, 1)),
        (STRAP2, "hr-strap", WARD1, (0, 4)),
        (MON3, "bedside-monitor", WARD2, (0, 0)),
        (IMPL5, "implant-receiver", WARD2, (0, None, 0)),
        (ROOM2, "env-sensor", WARD2, (0,)),
    ):
        lines += [
            _health(device, kind, gateway, T0 + k * HOUR, errors)
            for k, errors in enumerate(totals)
            if errors is not None
        ]
    lines.append(_health(STRAP2, "hr-strap", WARD1, T0 - 2 * DAY, 0))
    # Advisories: P1 in the window; P2 only two days ago; P2's tachycardia is no advisory.
    lines += [
        _alert(P1, "baseline_rise", "raised", T0 + 10 * MIN),
        _alert(P1, "baseline_rise", "cleared", T0 + 30 * MIN),
        _alert(P2, "tachycardia", "raised", T0 + 10 * MIN),
        _alert(P2, "baseline_fall", "raised", T0 - 2 * DAY),
    ]
    lines += [_refusal(WARD1, "tag_invalid", T0 + k * S) for k in range(3)]
    lines += [_refusal(WARD2, "unknown_key", T0), _refusal(WARD1, "tag_invalid", T0 - 2 * DAY)]
    return lines


@pytest.fixture
def population(influx: InfluxV1) -> None:
    influx.write(_population())


def _value(document: dict[str, Any], name: str) -> Any:
    return document["figures"][name]["value"]


@pytest.fixture
def figures(config: Path, population: None) -> dict[str, Any]:
    """The figures of the report over the window from SINCE."""
    document = run_json(config, "--since", SINCE)
    assert document["since"] == "2025-03-14T07:50:00.000+00:00"
    assert document["until"] == document["generated_at"]
    assert document["plots"] == []
    found: dict[str, Any] = document["figures"]
    for name, figure in found.items():
        assert {"title", "value", "how"} <= set(figure), name
        assert figure["how"].endswith("."), name
    return found


def test_demographics(figures: dict[str, Any]) -> None:
    # Population: P1-P5 (P4 admitted before the window, P5 monitored without a profile); P6
    # was discharged before it, and its room sensor's readings do not make it monitored.
    age = figures["average_age"]
    assert (age["value"], age["unit"], age["patients"], age["left_out"]) == (50.0, "a", 3, 2)
    assert "2 patients without a recorded age left out" in age["how"]
    gender = figures["gender_distribution"]
    assert gender["value"] == {"female": 50.0, "male": 25.0, "other": 25.0}
    assert (gender["patients"], gender["left_out"]) == (4, 1)
    chronic = figures["chronic_conditions"]
    assert (chronic["value"], chronic["patients"], chronic["left_out"]) == (50.0, 4, 1)


def test_vitals(figures: dict[str, Any]) -> None:
    heart = figures["average_heart_rate"]
    assert heart["value"] == pytest.approx((866 / 13 + 81 + 91 + 100) / 4)
    assert (heart["unit"], heart["patients"], heart["left_out"], heart["readings"]) == (
        "/min", 4, 1, 18,
    )  # fmt: skip
    assert "1 reading with artifact flags dropped" in heart["how"]
    bp = figures["elevated_blood_pressure"]
    assert (bp["value"], bp["patients"], bp["left_out"]) == (pytest.approx(200 / 3), 3, 2)
    spo2 = figures["low_spo2"]
    assert (spo2["value"], spo2["patients"], spo2["left_out"]) == (50.0, 2, 3)


def test_devices(figures: dict[str, Any]) -> None:
    rate = figures["device_error_rate"]
    assert rate["value"] == pytest.approx(6 / 9 * 100)
    assert (rate["unit"], rate["devices"], rate["errors"], rate["hours"]) == (
        "/100 h", 5, 6, pytest.approx(9.0),
    )  # fmt: skip
    assert rate["left_out"] == 5  # the room sensor's single record; four devices without health
    zero = figures["devices_zero_errors"]
    assert (zero["value"], zero["devices"]) == (60.0, 5)
    kinds = figures["device_kinds"]
    assert kinds["devices"] == 6
    assert kinds["value"] == {
        kind: pytest.approx(100 / 6)
        for kind in ("bedside-monitor", "chest-patch", "env-sensor", "hr-strap",
                     "implant-receiver", "pulse-oximeter")
    }  # fmt: skip
    assert figures["device_categories"]["value"] == {
        "implantable": pytest.approx(100 / 6),
        "other": pytest.approx(200 / 6),
        "wearable": 50.0,
    }


def test_room_temperature_and_heart_rate_slope(figures: dict[str, Any]) -> None:
    rooms = [*ROOM_WARD1_C, 22.0, 23.0]  # the implausible 99 °C is dropped
    mean = figures["room_temperature_mean"]
    assert (mean["value"], mean["unit"], mean["readings"], mean["gateways"]) == (
        pytest.approx(statistics.fmean(rooms)), "Cel", 14, 2,
    )  # fmt: skip
    variance = figures["room_temperature_variance"]
    assert variance["value"] == pytest.approx(statistics.variance(rooms))
    assert variance["unit"] == "K2"
    assert figures["room_temperature_sd"]["value"] == pytest.approx(statistics.stdev(rooms))

    slope = figures["heart_rate_per_room_temp"]
    assert slope["value"] == pytest.approx(2.0)
    assert (slope["n"], slope["readings"], slope["patients"], slope["gateways"]) == (10, 10, 1, 1)
    assert slope["dof"] == 8
    assert slope["t_quantile"] == pytest.approx(2.306, abs=5e-4)
    assert slope["ci95"] == pytest.approx([2.0 - 2.306 * 0.25, 2.0 + 2.306 * 0.25], abs=2e-4)
    # Not warm: P1's first two, P2's two, P3's two; unpaired: P1's hour-later and P5's reading.
    assert "(6 cooler pairs and 2 unpaired readings left out)" in slope["how"]


def test_advisories_and_security(figures: dict[str, Any]) -> None:
    advisories = figures["personalised_advisories"]
    assert (advisories["value"], advisories["patients"], advisories["left_out"]) == (25.0, 4, 1)
    compliance = figures["encryption_compliance"]
    assert (compliance["value"], compliance["envelopes"]) == (None, None)
    assert compliance["how"].startswith("Not computable")
    refused = figures["envelopes_refused"]
    assert refused["value"] == 4
    assert refused["by_reason"] == {"tag_invalid": 3, "unknown_key": 1}
    assert refused["gateways"] == 2
    # From the audit log (test_access_audit.py has exports and refusals): this test's only
    # entries are the report's own, which are neither.
    share, blocked = figures["exports_anonymised"], figures["access_denied"]
    assert (share["value"], share["exports"]) == (None, 0)
    assert (blocked["value"], blocked["access_denied"], blocked["auth_failures"]) == (0, 0, 0)


def test_all_data_includes_the_old_stay_and_readings(config: Path, population: None) -> None:
    document = run_json(config)
    assert document["since"] is None
    # P6's stay (age 90) and P2's heart rate of two days ago (150) now count.
    assert _value(document, "average_age") == pytest.approx((70 + 50 + 30 + 90) / 4)
    assert _value(document, "average_heart_rate") == pytest.approx(
        (866 / 13 + (80 + 82 + 150) / 3 + 91 + 100) / 4
    )
    # P2's baseline_fall of two days ago; P6 has no patient vital, so 2 of P1, P2, P3, P5.
    assert _value(document, "personalised_advisories") == 50.0
    assert _value(document, "envelopes_refused") == 5


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (PNG spec, ISO/IEC 15948 §11.2.2)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    assert data[-8:-4] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_out_writes_report_json_and_valid_pngs(
    config: Path, population: None, tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "march"
    output = cli(config, "--since", SINCE, "--out", str(out), "--json")
    printed = json.loads(output.strip().splitlines()[-1])
    stored = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert stored["figures"] == printed["figures"]
    files = [plot["file"] for plot in stored["plots"]]
    assert files == [
        "age_histogram.png",
        "heart_rate_distribution.png",
        "spo2_distribution.png",
        "blood_pressure_scatter.png",
        "heart_rate_vs_room_temperature.png",
        "device_error_rate_by_kind.png",
        "room_temperature_by_gateway.png",
    ]
    for plot in stored["plots"]:
        assert plot["shows"]
        width, height = _png_size(out / plot["file"])
        assert (width, height) == (700, 450)
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "report.json"])


def test_text_table(config: Path, population: None) -> None:
    text = cli(config, "--since", SINCE)
    assert "population report: 2025-03-14T07:50:00.000+00:00 to" in text
    assert "Average age" in text
    assert "exports" in text


def test_an_empty_database_gives_nulls_and_compliance_needs_accepted_counts(
    config: Path, influx: InfluxV1, tmp_path: Path
) -> None:
    document = run_json(config, "--out", str(tmp_path / "empty"))
    figures = document["figures"]
    for name in ("average_age", "average_heart_rate", "low_spo2", "device_error_rate",
                 "room_temperature_mean", "room_temperature_variance",
                 "encryption_compliance"):  # fmt: skip
        assert figures[name]["value"] is None, name
    slope = figures["heart_rate_per_room_temp"]
    assert slope["value"] is None
    assert slope["how"].startswith("Insufficient data (0 pairs, fewer than the 10 needed)")
    assert len(document["plots"]) == 7
    # A sink that counts accepted envelopes (a sink_security `accepted` field) makes the share.
    influx.write(
        [
            encode_line("sink_security", {"gateway": WARD1}, {"accepted": 90}, T0),
            encode_line("sink_security", {"gateway": WARD2}, {"accepted": 6}, T0),
            *(_refusal(WARD1, "tag_invalid", T0 + k * S) for k in range(4)),
        ]
    )
    compliance = run_json(config)["figures"]["encryption_compliance"]
    assert (compliance["value"], compliance["envelopes"]) == (96.0, 100)


def test_a_tag_with_quotes_is_quoted_not_spliced(config: Path, influx: InfluxV1) -> None:
    # The sink only writes hex tokens, but the report quotes whatever tag values it finds.
    odd = encode_line(
        "vital",
        {"patient": "it's \\ odd", "metric": "heart_rate", "device": PATCH1},
        {"value": 70.0, "flags": 0},
        T0,
    )
    influx.write([odd, _vital(P1, "heart_rate", PATCH1, 90.0, T0)])
    heart = run_json(config)["figures"]["average_heart_rate"]
    assert (heart["value"], heart["patients"], heart["readings"]) == (80.0, 2, 2)


def test_bad_since_and_future_since_are_usage_errors(config: Path, influx: InfluxV1) -> None:
    assert "needs a UTC offset" in cli(config, "--since", "2025-03-14T08:00:00", code=2)
    assert "not an ISO 8601" in cli(config, "--since", "yesterday", code=2)
    future = cli(config, "--since", "2999-01-01T00:00:00Z", code=2)
    assert "lies in the future" in " ".join(future.split())

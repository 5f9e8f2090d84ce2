"""Access control and the audit log through the real commands, against a real InfluxDB.

Three people in [access]: an admin, a clinician caring for MINE only, and a researcher. Each
command is run as each of them (and as nobody) and what it shows, refuses and writes to the
audit log is checked; `cloud-sink audit verify` (the console command, in a child process) then
passes on the log and names the line after an edit, a removal or a swap.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import fhirclient.models.bundle as fhirclient_bundle  # type: ignore[import-untyped]
import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from typer.testing import CliRunner

from cloud_sink.access import TOKEN_ENV
from cloud_sink.audit import AuditEntry, read_entries
from cloud_sink.cli import app
from cloud_sink.identity import IDENTITY_FILE, IdentityRegistry
from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import vital_line
from edge_agent.protocol import BindingEvent
from firmware_sims.services import InfluxServer
from tests.support.access import Person, access_section, person

pytestmark = [pytest.mark.integration]

S = 1_000_000_000
MINE = "c0" * 16
OTHER = "d1" * 16
DEVICE = "7" * 32
# What a person might type by mistake instead of a token: it must never reach the log.
HOSPITAL_REF = "MRN-4711-0815"
ADMIN = person("it-admin", "admin")
CLINICIAN = person("dr-lee", "clinician", [MINE])
RESEARCHER = person("study-7", "researcher")
NOBODY = Person("nobody", "none", "", "")
runner = CliRunner()


@dataclass(slots=True, frozen=True)
class Sink:
    config: Path
    log: Path


def _config_text(url: str, database: str, access: str) -> str:
    return (
        f'[mqtt]\nhost = "127.0.0.1"\nport = 1883\n\n[keyring]\ndir = "keyring"\n\n'
        f'[state]\ndir = "state"\n\n[influxdb]\nurl = "{url}"\ndatabase = "{database}"\n' + access
    )


@pytest.fixture
def sink(tmp_path: Path, influxdb: InfluxServer, isolation: str) -> Sink:
    """Two patients with a few minutes of vitals, both admitted by the admin."""
    config = tmp_path / "sink.toml"
    access = access_section(ADMIN, CLINICIAN, RESEARCHER)
    config.write_text(_config_text(influxdb.url, isolation, access), encoding="utf-8")
    influx = InfluxV1(influxdb.url, isolation)
    try:
        influx.create_database()
        now_ns = time.time_ns()
        influx.write([
            vital_line(patient, metric, DEVICE, value=value, quality=0, flags=0,
                       ts_ns=now_ns - k * 60 * S)
            for patient in (MINE, OTHER)
            for k in range(5)
            for metric, value in (("heart_rate", 72.0), ("resp_rate", 16.0), ("spo2", 97.0))
        ])  # fmt: skip
    finally:
        influx.close()
    sink = Sink(config, tmp_path / "state" / "audit.jsonl")
    for patient in (MINE, OTHER):
        cli(sink, ADMIN, "patients", "admit", patient, "--sex", "female")
    return sink


def cli(sink: Sink, who: Person, *args: str, code: int = 0) -> str:
    env = {TOKEN_ENV: who.token} if who.token else {TOKEN_ENV: ""}
    result = runner.invoke(app, [*args, "--config", str(sink.config)], env=env, terminal_width=200)
    assert result.exit_code == code, result.output
    return " ".join(result.output.split())


def entries(sink: Sink) -> list[AuditEntry]:
    found, unreadable = read_entries(sink.log)
    assert unreadable == 0
    return found


def last(sink: Sink) -> AuditEntry:
    return entries(sink)[-1]


def _validate(bundle: dict[str, Any]) -> None:
    fhirclient_bundle.Bundle(copy.deepcopy(bundle), strict=True)
    R4BBundle.model_validate(copy.deepcopy(bundle))


def test_no_token_or_a_wrong_one_is_refused_and_audited(sink: Sink, tmp_path: Path) -> None:
    refused = cli(sink, NOBODY, "twin", "show", MINE, code=2)
    assert "authentication failed: no access token" in refused
    assert TOKEN_ENV in refused
    entry = last(sink)
    assert (entry.actor, entry.role, entry.action, entry.outcome, entry.subject) == (
        "unknown", "none", "auth_failure", "denied", MINE,
    )  # fmt: skip
    assert entry.detail == {"requested": "twin_read", "reason": "no_token"}
    stranger = Person("stranger", "admin", "btt_not-a-token-anyone-holds", "")
    assert "matches no identity" in cli(sink, stranger, "twin", "list", code=2)
    entry = last(sink)
    assert (entry.action, entry.detail["reason"]) == ("auth_failure", "unknown_token")
    assert isinstance(entry.detail["credential_fp"], str)
    assert stranger.token not in sink.log.read_text(encoding="utf-8")
    # A token file others can read is refused before anything else.
    loose = tmp_path / "loose.token"
    loose.write_text(ADMIN.token, encoding="utf-8")
    loose.chmod(0o644)
    assert "chmod 600" in cli(sink, NOBODY, "twin", "list", "--token-file", str(loose), code=2)
    # The same file made private lets the admin in (it wins over the empty variable).
    loose.chmod(0o600)
    assert MINE in cli(sink, NOBODY, "twin", "list", "--json", "--token-file", str(loose))
    assert (last(sink).actor, last(sink).action) == (ADMIN.name, "twin_list")


def test_a_config_without_access_refuses_everyone(
    sink: Sink, influxdb: InfluxServer, isolation: str
) -> None:
    # Fail closed: no [access] section is not "access control off".
    sink.config.write_text(_config_text(influxdb.url, isolation, ""), encoding="utf-8")
    refused = cli(sink, ADMIN, "twin", "list", code=2)
    assert "names no identities" in refused
    assert "cloud-sink access token NAME --role admin" in refused
    assert (last(sink).action, last(sink).detail["reason"]) == ("auth_failure", "no_identities")


def test_a_clinician_sees_and_changes_only_their_patients(sink: Sink) -> None:
    ward = json.loads(cli(sink, CLINICIAN, "twin", "list", "--json"))
    assert [row["patient"] for row in ward] == [MINE]
    assert (last(sink).actor, last(sink).action, last(sink).outcome) == (
        "dr-lee", "twin_list", "ok",
    )  # fmt: skip
    everyone = json.loads(cli(sink, ADMIN, "twin", "list", "--json"))
    assert sorted(row["patient"] for row in everyone) == sorted([MINE, OTHER])

    twin = json.loads(cli(sink, CLINICIAN, "twin", "show", MINE, "--json"))
    assert twin["patient"] == MINE
    assert (last(sink).action, last(sink).subject, last(sink).outcome) == ("twin_read", MINE, "ok")
    refused = cli(sink, CLINICIAN, "twin", "show", OTHER, code=2)
    assert "access denied: dr-lee (clinician) may not twin_read patient d1d1d1d1" in refused
    entry = last(sink)
    assert (entry.actor, entry.role, entry.action, entry.outcome, entry.subject) == (
        "dr-lee", "clinician", "access_denied", "denied", OTHER,
    )  # fmt: skip
    assert entry.detail == {"requested": "twin_read", "reason": "not_in_care"}
    for argv in (
        ["twin", "observe", OTHER, "--acvpu", "A"],
        ["patients", "update", OTHER, "--treatment", "oxygen"],
        ["patients", "discharge", OTHER],
        ["export", "fhir", OTHER, "--out", "never.json", "--anonymised"],
        ["twin", "watch", "--patient", OTHER, "--iterations", "1"],
    ):
        cli(sink, CLINICIAN, *argv, code=2)
        assert (last(sink).action, last(sink).detail["requested"]) == (
            "access_denied",
            {"twin": "twin_observe" if argv[1] == "observe" else "twin_read",
             "patients": "patient_profile", "export": "export_anonymised"}[argv[0]],
        )  # fmt: skip
    cli(sink, CLINICIAN, "twin", "observe", MINE, "--acvpu", "A", "--oxygen", "air")
    assert (last(sink).action, last(sink).detail) == ("twin_observe", {"kinds": "acvpu,oxygen"})
    cli(sink, CLINICIAN, "patients", "update", MINE, "--treatment", "oxygen")
    assert (last(sink).action, last(sink).detail) == ("patient_profile", {"change": "update"})
    # The fleet is the admins'.
    assert "a clinician may:" in cli(sink, CLINICIAN, "gateways", "list", code=2)


def test_a_watch_is_checked_and_audited_once_and_shows_only_visible_patients(sink: Sink) -> None:
    before = len(entries(sink))
    shown = cli(sink, CLINICIAN, "twin", "watch", "--interval", "0.01", "--iterations", "3")
    assert shown.count("refresh ") == 3
    # The admin's ward holds both patients; the clinician's every refresh only theirs.
    assert shown.count("ward: 1 patients") == 3
    assert OTHER[:6] not in shown
    new = entries(sink)[before:]
    assert [(e.actor, e.action, e.detail) for e in new] == [
        ("dr-lee", "twin_list", {"watch": True})
    ]


def test_a_researcher_gets_the_report_and_anonymised_exports_only(
    sink: Sink, tmp_path: Path
) -> None:
    out = tmp_path / "anonymous.json"
    written = cli(sink, RESEARCHER, "export", "fhir", OTHER, "--anonymised", "--out", str(out))
    assert written.startswith(f"wrote {out}: 1 Patient, 1 Device, ")
    bundle = json.loads(out.read_text(encoding="utf-8"))
    _validate(bundle)
    assert OTHER not in json.dumps(bundle)
    assert DEVICE not in json.dumps(bundle)
    assert bundle["meta"]["security"][0]["code"] == "ANONYED"
    entry = last(sink)
    assert (entry.actor, entry.action, entry.outcome, entry.subject, entry.detail) == (
        "study-7", "export", "ok", OTHER, {"anonymised": True},
    )  # fmt: skip
    for argv, requested in (
        (
            ["export", "fhir", OTHER, "--out", str(tmp_path / "identified.json")],
            "export_identified",
        ),
        (["twin", "show", OTHER], "twin_read"),
        (["twin", "list"], "twin_list"),
        (["patients", "admit", "e2" * 16], "patient_profile"),
        (["twin", "watch", "--iterations", "1"], "twin_list"),
    ):
        refused = cli(sink, RESEARCHER, *argv, code=2)
        assert "a researcher may: export_anonymised, report" in refused
        entry = last(sink)
        assert (entry.action, entry.detail["requested"], entry.detail["reason"]) == (
            "access_denied",
            requested,
            "role",
        )
    assert not (tmp_path / "identified.json").exists()
    report = json.loads(cli(sink, RESEARCHER, "report", "--json"))
    assert report["figures"]["average_heart_rate"]["value"] == 72.0
    assert (last(sink).actor, last(sink).action) == ("study-7", "report")


def test_the_report_counts_exports_and_blocked_attempts_from_the_audit_log(
    sink: Sink, tmp_path: Path
) -> None:
    # Three exports go ahead, two of them anonymised; three attempts are blocked.
    cli(sink, ADMIN, "export", "fhir", MINE, "--out", str(tmp_path / "a.json"))
    cli(sink, RESEARCHER, "export", "fhir", MINE, "--anonymised", "--out", str(tmp_path / "b.json"))
    cli(sink, CLINICIAN, "export", "fhir", MINE, "--anonymised", "--out", str(tmp_path / "c.json"))
    cli(sink, RESEARCHER, "export", "fhir", MINE, "--out", str(tmp_path / "d.json"), code=2)
    cli(sink, CLINICIAN, "twin", "show", OTHER, code=2)
    cli(sink, NOBODY, "report", code=2)
    figures = json.loads(cli(sink, RESEARCHER, "report", "--json"))["figures"]
    share, blocked = figures["exports_anonymised"], figures["access_denied"]
    assert (share["value"], share["exports"]) == (pytest.approx(200 / 3), 3)
    assert (blocked["value"], blocked["access_denied"], blocked["auth_failures"]) == (3, 2, 1)
    # A window that begins after all that counts none of it.
    after = (last(sink).time + timedelta(microseconds=1)).isoformat()
    quiet = json.loads(cli(sink, RESEARCHER, "report", "--json", "--since", after))["figures"]
    assert (quiet["exports_anonymised"]["exports"], quiet["access_denied"]["value"]) == (0, 0)


def test_an_admin_can_do_everything(sink: Sink, tmp_path: Path) -> None:
    cli(sink, ADMIN, "twin", "show", OTHER)
    cli(sink, ADMIN, "twin", "observe", OTHER, "--acvpu", "A")
    cli(sink, ADMIN, "patients", "update", OTHER, "--age", "64")
    cli(sink, ADMIN, "export", "fhir", OTHER, "--out", str(tmp_path / "identified.json"))
    identified = json.loads((tmp_path / "identified.json").read_text(encoding="utf-8"))
    _validate(identified)
    assert identified["meta"]["security"][0]["code"] == "PSEUDED"
    assert (last(sink).action, last(sink).detail) == ("export", {"anonymised": False})
    cli(sink, ADMIN, "export", "fhir", OTHER, "--anonymised", "--out", str(tmp_path / "a.json"))
    cli(sink, ADMIN, "report")
    assert json.loads(cli(sink, ADMIN, "gateways", "list", "--json")) == []
    assert (last(sink).action, last(sink).outcome) == ("gateway_list", "ok")
    cli(sink, ADMIN, "gateways", "revoke", "ward-9", code=2)  # not enrolled; still audited
    assert (last(sink).action, last(sink).subject) == ("gateway_revoke", "ward-9")
    cli(sink, ADMIN, "patients", "discharge", OTHER)
    cli(sink, ADMIN, "audit", "show", "--last", "3")
    actions = [e.action for e in entries(sink) if e.actor == ADMIN.name]
    assert "access_denied" not in actions
    assert {"twin_read", "twin_observe", "patient_profile", "export", "report", "gateway_list",
            "gateway_revoke", "audit_show"} <= set(actions)  # fmt: skip


def test_no_hospital_reference_reaches_the_log(sink: Sink) -> None:
    # Typed where a token belongs: refused as not a token, before any check or entry.
    for who in (ADMIN, CLINICIAN, NOBODY):
        refused = cli(sink, who, "twin", "show", HOSPITAL_REF, code=2)
        assert "not a patient token" in refused
    cli(sink, ADMIN, "twin", "observe", HOSPITAL_REF, "--acvpu", "A", code=2)
    cli(sink, ADMIN, "export", "fhir", HOSPITAL_REF, "--out", "x.json", code=2)
    cli(sink, ADMIN, "gateways", "revoke", HOSPITAL_REF, code=2)
    text = sink.log.read_text(encoding="utf-8")
    assert HOSPITAL_REF not in text
    assert HOSPITAL_REF.lower() not in text.lower()
    for entry in entries(sink):
        assert entry.subject in (None, MINE, OTHER)


def _audit_verify(config: Path) -> subprocess.CompletedProcess[str]:
    """`cloud-sink audit verify` as a person runs it: the console entry point, its own process."""
    return subprocess.run(
        [sys.executable, "-m", "cloud_sink", "audit", "verify", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, TOKEN_ENV: ADMIN.token, "COLUMNS": "300"},
    )  # fmt: skip


def _tampered(sink: Sink, tmp_path: Path, name: str, change: Any) -> Path:
    """A copy of the sink's config and state with `change(lines)` applied to the log."""
    folder = tmp_path / name
    shutil.copytree(sink.config.parent / "state", folder / "state")
    shutil.copy2(sink.config, folder / "sink.toml")
    log = folder / "state" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(change(lines)))
    return folder / "sink.toml"


def _edit(lines: list[bytes]) -> list[bytes]:
    document = json.loads(lines[3])
    document["actor"] = "someone-else"
    edited = json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return [*lines[:3], edited, *lines[4:]]


def test_audit_verify_passes_and_names_an_edited_removed_or_reordered_entry(
    sink: Sink, tmp_path: Path
) -> None:
    cli(sink, CLINICIAN, "twin", "show", MINE)
    cli(sink, CLINICIAN, "twin", "show", OTHER, code=2)
    cli(sink, NOBODY, "twin", "list", code=2)
    cli(sink, RESEARCHER, "report")
    recorded = len(entries(sink))
    assert recorded == 6  # two admissions, then the four above
    intact = _audit_verify(sink.config)
    assert intact.returncode == 0, intact.stderr
    assert f"audit log intact: {recorded} entries, last seq {recorded}" in intact.stdout
    # The verification itself is recorded, after the check.
    assert (last(sink).action, last(sink).detail) == (
        "audit_verify",
        {"result": "intact", "entries": recorded},
    )
    for name, change, reason, line in (
        ("edited", _edit, "edited", 4),
        ("removed", lambda ls: [*ls[:2], *ls[3:]], "removed", 3),
        ("reordered", lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]], "reordered", 3),
    ):
        config = _tampered(sink, tmp_path, name, change)
        found = _audit_verify(config)
        assert found.returncode == 1, (name, found.stdout, found.stderr)
        assert f"audit log NOT intact ({reason})" in found.stdout, name
        assert f"first bad entry, line {line}:" in found.stdout, name
    # The original, untouched, still verifies.
    assert _audit_verify(sink.config).returncode == 0


def _bind(sink: Sink, patient: str, reference: str) -> None:
    """What a gateway's binding event leaves in the sink's identity registry."""
    registry = IdentityRegistry(sink.config.parent / "state" / IDENTITY_FILE, None)
    event = BindingEvent(DEVICE, patient, "bound", 1, reference)
    assert registry.record("ward-1", [event]).stored == 1


def test_a_clinician_may_see_the_hospital_reference_of_their_patient_only(
    sink: Sink, tmp_path: Path
) -> None:
    _bind(sink, MINE, HOSPITAL_REF)
    shown = json.loads(cli(sink, CLINICIAN, "patients", "identify", MINE, "--json"))
    assert shown == {
        "patient": MINE,
        "system": "urn:bedside-twin:hospital-patient-reference",
        "reference": HOSPITAL_REF,
    }
    lookups = [e for e in entries(sink) if e.action == "identity_lookup"]
    # The decision, then the lookup itself: both by name and token, never the reference.
    assert [(e.actor, e.subject, e.outcome) for e in lookups] == [
        ("dr-lee", MINE, "ok"),
        ("dr-lee", MINE, "ok"),
    ]
    for who, patient in ((CLINICIAN, OTHER), (RESEARCHER, MINE), (NOBODY, MINE)):
        refused = cli(sink, who, "patients", "identify", patient, code=2)
        assert HOSPITAL_REF not in refused
    # Known to the sink only once a binding event carried it: said so, nothing printed.
    unknown = cli(sink, ADMIN, "patients", "identify", OTHER, code=2)
    assert "no hospital reference for patient d1d1d1d1" in unknown
    assert (last(sink).action, last(sink).outcome, last(sink).detail) == (
        "identity_lookup", "failed", {"found": False},
    )  # fmt: skip

    # The identified export: the reference as a second Patient identifier, labelled restricted.
    out = tmp_path / "identified.json"
    cli(sink, CLINICIAN, "export", "fhir", MINE, "--identified", "--out", str(out))
    bundle = json.loads(out.read_text(encoding="utf-8"))
    _validate(bundle)
    patient = bundle["entry"][0]["resource"]
    assert patient["identifier"][1]["value"] == HOSPITAL_REF
    assert patient["identifier"][1]["type"]["coding"][0]["code"] == "MR"
    assert bundle["meta"]["security"][0]["code"] == "R"
    export = [e for e in entries(sink) if e.action == "export"][-1]
    assert (export.actor, export.detail) == ("dr-lee", {"identified": True, "anonymised": False})
    assert cli(sink, RESEARCHER, "export", "fhir", MINE, "--identified", "--out", "x.json", code=2)
    cli(sink, ADMIN, "export", "fhir", MINE, "--identified", "--anonymised", "--out", "x", code=2)
    assert HOSPITAL_REF not in sink.log.read_text(encoding="utf-8")


def test_an_allowed_export_or_report_that_then_fails_is_audited_as_failed(
    sink: Sink, tmp_path: Path
) -> None:
    # No binding event for OTHER: the identified export is allowed, then cannot be made.
    cli(sink, ADMIN, "export", "fhir", OTHER, "--identified", "--out", str(tmp_path / "x.json"),
        code=2)  # fmt: skip
    assert not (tmp_path / "x.json").exists()
    tail = entries(sink)[-3:]
    assert [(e.action, e.outcome) for e in tail] == [
        ("export", "ok"), ("identity_lookup", "failed"), ("export", "failed"),
    ]  # fmt: skip
    assert tail[-1].detail == {"stage": "after access", "error": "IdentityError"}
    # The database gone after the check: the report is audited as failed too.
    config = sink.config.read_text(encoding="utf-8")
    broken = tmp_path / "broken.toml"
    broken.write_text(
        re.sub(r'url = "[^"]+"', 'url = "http://127.0.0.1:9"', config), encoding="utf-8"
    )
    result = runner.invoke(app, ["report", "--config", str(broken)], env={TOKEN_ENV: ADMIN.token})
    assert result.exit_code == 2, result.output
    failed = entries(sink)[-1]
    assert (failed.action, failed.outcome, failed.detail["stage"]) == (
        "report", "failed", "after access",
    )  # fmt: skip

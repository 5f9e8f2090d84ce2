"""`cloud-sink audit` and `cloud-sink access` through their typer apps (CliRunner)."""

from __future__ import annotations

import json
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cloud_sink import cli_audit
from cloud_sink.access import TOKEN_ENV, mint_token, parse_access
from cloud_sink.audit import AuditLog, AuditPaths, read_entries
from cloud_sink.errors import ConfigError
from edge_agent.protocol.settings import load

PATIENT = "0123456789abcdef0123456789abcdef"
CONFIG = """
[mqtt]
host = "127.0.0.1"
port = 1883

[keyring]
dir = "keys"

[state]
dir = "state"

[influxdb]
url = "http://127.0.0.1:8086"
database = "bedside"
"""

app = typer.Typer()
app.add_typer(cli_audit.audit_app, name="audit")
app.add_typer(cli_audit.access_app, name="access")
runner = CliRunner()


@dataclass(slots=True, frozen=True)
class Sink:
    config: Path
    paths: AuditPaths
    admin_token: str
    researcher_token: str


def _flat(text: str) -> str:
    """Rich wraps long messages at the console width; compare them as one line."""
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def _no_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sink.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def sink(config: Path) -> Sink:
    """A sink whose config names an admin and a researcher in [access]."""
    admin_token, admin_sha = mint_token()
    researcher_token, researcher_sha = mint_token()
    with config.open("a", encoding="utf-8") as handle:
        handle.write(
            f'\n[access]\n[[access.identities]]\nname = "boss"\nrole = "admin"\n'
            f'token_sha256 = "{admin_sha}"\n\n[[access.identities]]\nname = "ana"\n'
            f'role = "researcher"\ntoken_sha256 = "{researcher_sha}"\n'
        )
    paths = AuditPaths.in_dir(config.parent / "state")
    log = AuditLog(paths)
    for n in range(4):
        log.append(actor="dr-lee", role="clinician", action="twin_read", outcome="ok",
                   subject=PATIENT, detail={"n": n})  # fmt: skip
    log.append(actor="unknown", role="none", action="auth_failure", outcome="denied")
    return Sink(config, paths, admin_token, researcher_token)


def _as(token: str) -> dict[str, str]:
    return {TOKEN_ENV: token}


def test_verify_an_intact_log_exits_0(sink: Sink) -> None:
    result = runner.invoke(
        app, ["audit", "verify", "-c", str(sink.config)], env=_as(sink.admin_token)
    )
    assert result.exit_code == 0, result.output
    assert "audit log intact: 5 entries" in result.output
    # The verification itself is recorded, after the check.
    last = read_entries(sink.paths.log)[0][-1]
    assert (last.actor, last.action, last.outcome) == ("boss", "audit_verify", "ok")
    assert last.detail == {"result": "intact", "entries": 5}


def test_verify_a_tampered_log_exits_1_naming_the_first_bad_entry(sink: Sink) -> None:
    lines = sink.paths.log.read_bytes().splitlines()
    document = json.loads(lines[2])
    document["actor"] = "nobody"
    lines[2] = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    sink.paths.log.write_bytes(b"".join(line + b"\n" for line in lines))
    result = runner.invoke(
        app, ["audit", "verify", "-c", str(sink.config)], env=_as(sink.admin_token)
    )
    assert result.exit_code == 1, result.output
    flat = _flat(result.output)
    assert "NOT intact (edited)" in flat
    assert "first bad entry, line 3" in flat
    assert '"actor":"nobody"' in flat
    result = runner.invoke(
        app, ["audit", "verify", "-c", str(sink.config), "--json"], env=_as(sink.admin_token)
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["reason"], report["first_bad_line"], report["first_bad_seq"]) == (
        False,
        "edited",
        3,
        3,
    )
    assert report["entries"] == 2


def test_verify_a_truncated_log_exits_1_even_though_appends_are_refused(sink: Sink) -> None:
    lines = sink.paths.log.read_bytes().splitlines(keepends=True)
    sink.paths.log.write_bytes(b"".join(lines[:3]))
    result = runner.invoke(
        app, ["audit", "verify", "-c", str(sink.config), "--json"], env=_as(sink.admin_token)
    )
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["reason"] == "truncated"
    # The log refuses further entries (that would hide the cut); verify still answers.
    assert "could not be recorded" in _flat(result.stderr)


def test_verify_is_for_admins_only(sink: Sink) -> None:
    result = runner.invoke(
        app, ["audit", "verify", "-c", str(sink.config)], env=_as(sink.researcher_token)
    )
    assert result.exit_code == 2
    assert "ana (researcher) may not audit_verify" in _flat(result.output)
    last = read_entries(sink.paths.log)[0][-1]
    assert (last.actor, last.action, last.detail["requested"]) == (
        "ana",
        "access_denied",
        "audit_verify",
    )
    result = runner.invoke(app, ["audit", "verify", "-c", str(sink.config)])
    assert result.exit_code == 2
    assert TOKEN_ENV in _flat(result.output)
    assert read_entries(sink.paths.log)[0][-1].action == "auth_failure"


def test_a_token_file_must_be_private(sink: Sink, tmp_path: Path) -> None:
    token_file = tmp_path / "my.token"
    token_file.write_text(sink.admin_token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    argv = ["audit", "verify", "-c", str(sink.config), "--token-file", str(token_file)]
    assert runner.invoke(app, argv).exit_code == 0
    token_file.chmod(0o640)
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert "chmod 600" in _flat(result.output)


def test_without_identities_the_commands_fail_closed(config: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", "-c", str(config)])
    assert result.exit_code == 2
    assert "names no identities" in _flat(result.output)
    entries, _ = read_entries(config.parent / "state" / "audit.jsonl")
    assert [(e.action, e.detail["reason"]) for e in entries] == [("auth_failure", "no_identities")]


def test_show_filters_by_action_and_time(sink: Sink) -> None:
    argv = ["audit", "show", "-c", str(sink.config), "--json", "--action", "auth_failure"]
    result = runner.invoke(app, argv, env=_as(sink.admin_token))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [(e["seq"], e["action"]) for e in shown] == [(5, "auth_failure")]
    argv = ["audit", "show", "-c", str(sink.config), "--json", "--last", "2"]
    shown = json.loads(runner.invoke(app, argv, env=_as(sink.admin_token)).stdout)
    assert [e["seq"] for e in shown] == [5, 6]  # 6: the first show, recorded
    argv = ["audit", "show", "-c", str(sink.config), "--json", "--since", "2999-01-01T00:00:00Z"]
    assert json.loads(runner.invoke(app, argv, env=_as(sink.admin_token)).stdout) == []
    wide = {**_as(sink.admin_token), "COLUMNS": "250"}
    table = runner.invoke(app, ["audit", "show", "-c", str(sink.config)], env=wide)
    assert table.exit_code == 0
    assert "01234567…" in table.output  # patient tokens shortened in the table
    assert PATIENT not in table.output
    assert "auth_failure" in table.output


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--action", "delete"], "unknown --action delete"),
        (["--since", "yesterday"], "not an ISO 8601"),
        (["--since", "2025-03-14T08:00:00"], "needs a UTC offset"),
    ],
)
def test_show_rejects_bad_filters(sink: Sink, argv: list[str], problem: str) -> None:
    result = runner.invoke(app, ["audit", "show", "-c", str(sink.config), *argv])
    assert result.exit_code == 2
    assert problem in _flat(result.output)


def test_repair_cuts_a_torn_tail_and_records_it(sink: Sink) -> None:
    with sink.paths.log.open("ab") as handle:
        handle.write(b'{"act')
    result = runner.invoke(
        app, ["audit", "repair", "-c", str(sink.config)], env=_as(sink.admin_token)
    )
    assert result.exit_code == 0, result.output
    assert "cut 5 bytes" in result.output
    last = read_entries(sink.paths.log)[0][-1]
    assert (last.actor, last.action) == ("boss", "audit_repair")
    verify = runner.invoke(
        app, ["audit", "verify", "-c", str(sink.config)], env=_as(sink.admin_token)
    )
    assert verify.exit_code == 0, verify.output


def test_the_first_token_is_minted_without_one_and_recorded(config: Path, tmp_path: Path) -> None:
    """Bootstrap: no identities yet, so the OS account that ran the command is recorded."""
    result = runner.invoke(app, ["access", "token", "boss", "--role", "admin", "-c", str(config)])
    assert result.exit_code == 0, result.output
    token = next(line.strip() for line in result.output.splitlines() if "btt_" in line)
    assert result.output.count(token) == 1  # shown once
    block = result.output[result.output.index("[[access.identities]]") :]
    parsed = tomllib.loads(block)
    assert parsed["access"]["identities"][0]["name"] == "boss"
    # The printed block is a valid [access] section holding the token's hash, not the token.
    assert token not in block
    pasted = tmp_path / "pasted.toml"
    pasted.write_text(block, encoding="utf-8")
    policy = parse_access(load(pasted).optional_table("access"))
    identity = policy.identify(token)
    assert identity is not None
    assert (identity.name, identity.role) == ("boss", "admin")
    state = config.parent / "state"
    entries, _ = read_entries(state / "audit.jsonl")
    assert len(entries) == 1
    assert entries[0].actor.startswith("local:")
    assert (entries[0].action, entries[0].subject) == ("access_admin", "boss")
    assert entries[0].detail["bootstrap"] is True
    assert token not in (state / "audit.jsonl").read_text(encoding="ascii")
    for name in ("audit.jsonl", "audit.key", "audit.head"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


def test_a_clinician_token_lists_their_patients(config: Path) -> None:
    argv = ["access", "token", "dr-lee", "--role", "clinician", "-c", str(config), "--json"]
    argv += ["--patient", PATIENT, "--patient", "1" * 32]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["token"].startswith("btt_")
    identities = tomllib.loads(document["toml"])["access"]["identities"]
    assert identities[0]["patients"] == [PATIENT, "1" * 32]
    assert identities[0]["token_sha256"] == document["token_sha256"]


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["ana", "--role", "researcher", "--patient", PATIENT], "clinicians only"),
        (["x", "--role", "nurse"], "must be one of"),
        (["dr-lee", "--role", "clinician", "--patient", "MRN123"], "not a pseudonymous"),
        (["unknown", "--role", "admin"], "reserved"),
    ],
)
def test_minting_checks_what_it_is_asked(config: Path, argv: list[str], problem: str) -> None:
    result = runner.invoke(app, ["access", "token", *argv, "-c", str(config)])
    assert result.exit_code == 2
    assert problem in _flat(result.output)
    assert "btt_" not in result.output
    assert not (config.parent / "state" / "audit.jsonl").exists()


def test_once_identities_exist_minting_needs_an_admin(sink: Sink) -> None:
    argv = ["access", "token", "dr-new", "--role", "clinician", "-c", str(sink.config)]
    denied = runner.invoke(app, argv, env=_as(sink.researcher_token))
    assert denied.exit_code == 2
    assert "btt_" not in denied.output
    assert read_entries(sink.paths.log)[0][-1].action == "access_denied"
    allowed = runner.invoke(app, [*argv, "--json"], env=_as(sink.admin_token))
    assert allowed.exit_code == 0, allowed.output
    last = read_entries(sink.paths.log)[0][-1]
    assert (last.actor, last.action, last.subject) == ("boss", "access_admin", "dr-new")
    assert last.detail["bootstrap"] is False
    argv = ["access", "token", "boss", "--role", "admin", "-c", str(sink.config)]
    again = runner.invoke(app, argv, env=_as(sink.admin_token))
    assert "replace the existing block" in _flat(again.output)


def test_the_access_policy_is_read_from_the_config_file(tmp_path: Path) -> None:
    _, digest = mint_token()
    path = tmp_path / "sink.toml"
    path.write_text(
        CONFIG + f'\n[access]\n[[access.identities]]\nname = "boss"\nrole = "admin"\n'
        f'token_sha256 = "{digest}"\n',
        encoding="utf-8",
    )
    policy = cli_audit.load_access_policy(path)
    assert [identity.name for identity in policy.identities] == ["boss"]
    path.write_text(CONFIG + '\n[access]\nenforce = "no"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"access\.enforce"):
        cli_audit.load_access_policy(path)

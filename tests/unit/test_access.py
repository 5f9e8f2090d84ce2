"""Access control: identities from [access], the whole permission matrix, every decision audited."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud_sink.access import (
    ANONYMOUS,
    OPERATIONS,
    PERMISSIONS,
    TOKEN_ENV,
    AccessDenied,
    AccessPolicy,
    Identity,
    Operation,
    authorize,
    decide,
    mint_token,
    parse_access,
    read_token,
    token_sha256,
)
from cloud_sink.audit import AuditError, AuditLog, AuditPaths, read_entries, summary, verify
from cloud_sink.errors import CloudSinkError, ConfigError
from edge_agent.protocol.settings import SettingsError, load

MINE = "0123456789abcdef0123456789abcdef"
ALSO_MINE = "11111111111111111111111111111111"
OTHER = "fedcba9876543210fedcba9876543210"

# The matrix the issue asks for, written out independently of cloud_sink.access: the module's
# PERMISSIONS must say exactly this. "own": only for the clinician's own patients.
EXPECTED: dict[str, dict[str, str]] = {
    "clinician": {
        "twin_read": "own",
        "twin_list": "own",
        "twin_observe": "own",
        "patient_profile": "own",
        "identity_lookup": "own",
        "export_identified": "own",
        "export_anonymised": "own",
    },
    "researcher": {"report": "all", "export_anonymised": "all"},
    "admin": dict.fromkeys(
        [
            "twin_read",
            "twin_list",
            "twin_observe",
            "patient_profile",
            "identity_lookup",
            "export_identified",
            "export_anonymised",
            "report",
            "gateway_add",
            "gateway_revoke",
            "gateway_list",
            "key_rotate",
            "audit_verify",
            "audit_show",
            "audit_repair",
            "access_admin",
        ],
        "all",
    ),
}
NEEDS_PATIENT = {
    "twin_read",
    "twin_observe",
    "patient_profile",
    "identity_lookup",
    "export_identified",
}


@dataclass(slots=True, frozen=True)
class Staff:
    policy: AccessPolicy
    tokens: dict[str, str]


def _policy_from_toml(tmp_path: Path, text: str) -> AccessPolicy:
    """Parse [access] from a TOML file through the Table API, as the sink config does."""
    path = tmp_path / "sink.toml"
    path.write_text(text, encoding="utf-8")
    return parse_access(load(path).optional_table("access"))


@pytest.fixture
def staff(tmp_path: Path) -> Staff:
    tokens = {name: mint_token() for name in ("dr-lee", "ana", "boss")}
    text = f"""
[access]
[[access.identities]]
name = "dr-lee"
role = "clinician"
token_sha256 = "{tokens["dr-lee"][1]}"
patients = ["{MINE}", "{ALSO_MINE}"]

[[access.identities]]
name = "ana"
role = "researcher"
token_sha256 = "{tokens["ana"][1]}"

[[access.identities]]
name = "boss"
role = "admin"
token_sha256 = "{tokens["boss"][1]}"
"""
    policy = _policy_from_toml(tmp_path, text)
    return Staff(policy, {name: pair[0] for name, pair in tokens.items()})


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(AuditPaths.in_dir(tmp_path / "state"))


def test_the_module_matrix_is_the_one_the_issue_asks_for() -> None:
    assert {role: dict(row) for role, row in PERMISSIONS.items()} == EXPECTED
    assert set(EXPECTED["admin"]) == set(OPERATIONS)


def test_config_gives_each_identity_its_role_and_patients(staff: Staff) -> None:
    by_name = {identity.name: identity for identity in staff.policy.identities}
    assert by_name["dr-lee"].role == "clinician"
    assert by_name["dr-lee"].patients == frozenset({MINE, ALSO_MINE})
    assert (by_name["ana"].role, by_name["ana"].patients) == ("researcher", frozenset())
    assert staff.policy.enforced
    assert staff.tokens["boss"] not in repr(staff.policy)


@pytest.mark.parametrize("role", ["clinician", "researcher", "admin"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_cell_of_the_matrix(
    staff: Staff, audit: AuditLog, role: str, operation: Operation
) -> None:
    name = {"clinician": "dr-lee", "researcher": "ana", "admin": "boss"}[role]
    token = staff.tokens[name]
    scope = EXPECTED[role].get(operation)
    patient = MINE if operation in NEEDS_PATIENT else None
    if scope is None:
        with pytest.raises(AccessDenied, match=f"{name} \\({role}\\) may not {operation}"):
            authorize(staff.policy, token, operation, patient, audit)
        entry = read_entries(audit.paths.log)[0][-1]
        assert (entry.action, entry.actor, entry.outcome) == ("access_denied", name, "denied")
        assert entry.detail == {"requested": operation, "reason": "role"}
        return
    identity = authorize(staff.policy, token, operation, patient, audit)
    assert identity.name == name
    entry = read_entries(audit.paths.log)[0][-1]
    assert (entry.actor, entry.role, entry.outcome, entry.subject) == (name, role, "ok", patient)
    # A patient the clinician does not care for: refused for "own" cells, fine for "all" ones.
    if operation in NEEDS_PATIENT or operation.startswith("export"):
        if scope == "own":
            with pytest.raises(AccessDenied, match="not one of their patients"):
                authorize(staff.policy, token, operation, OTHER, audit)
            denied = read_entries(audit.paths.log)[0][-1]
            assert (denied.action, denied.subject) == ("access_denied", OTHER)
            assert denied.detail["reason"] == "not_in_care"
        else:
            assert authorize(staff.policy, token, operation, OTHER, audit).name == name


@pytest.mark.parametrize("operation", sorted(NEEDS_PATIENT))
def test_patient_operations_need_a_patient(
    staff: Staff, audit: AuditLog, operation: Operation
) -> None:
    with pytest.raises(AccessDenied, match="needs a patient token"):
        authorize(staff.policy, staff.tokens["boss"], operation, None, audit)


def test_a_clinicians_ward_view_shows_only_their_patients(staff: Staff) -> None:
    lee = staff.policy.identify(staff.tokens["dr-lee"])
    boss = staff.policy.identify(staff.tokens["boss"])
    ana = staff.policy.identify(staff.tokens["ana"])
    assert lee is not None
    assert boss is not None
    assert ana is not None
    ward = [OTHER, MINE, ALSO_MINE]
    assert lee.visible(ward) == [MINE, ALSO_MINE]
    assert boss.visible(ward) == ward
    assert ana.visible(ward) == []


def test_exports_are_audited_as_export_with_the_anonymised_flag(
    staff: Staff, audit: AuditLog
) -> None:
    authorize(staff.policy, staff.tokens["dr-lee"], "export_identified", MINE, audit)
    authorize(staff.policy, staff.tokens["ana"], "export_anonymised", None, audit)
    with pytest.raises(AccessDenied):
        authorize(staff.policy, staff.tokens["ana"], "export_identified", MINE, audit)
    entries, _ = read_entries(audit.paths.log)
    assert [(e.action, e.detail.get("anonymised")) for e in entries[:2]] == [
        ("export", False),
        ("export", True),
    ]
    totals = summary(audit.paths.log)
    assert (totals.exports_total, totals.exports_anonymised, totals.access_denied) == (2, 1, 1)


def test_an_unknown_token_is_an_audited_authentication_failure(
    staff: Staff, audit: AuditLog
) -> None:
    wrong, _ = mint_token()
    with pytest.raises(AccessDenied, match="authentication failed") as caught:
        authorize(staff.policy, wrong, "twin_read", MINE, audit)
    assert (caught.value.actor, caught.value.reason) == (None, "unknown_token")
    assert isinstance(caught.value, CloudSinkError)
    entry = read_entries(audit.paths.log)[0][-1]
    assert (entry.action, entry.actor, entry.role, entry.outcome) == (
        "auth_failure",
        "unknown",
        "none",
        "denied",
    )
    assert entry.detail["credential_fp"] == token_sha256(wrong)[:8]
    assert wrong not in audit.paths.log.read_text(encoding="ascii")
    assert summary(audit.paths.log).auth_failures == 1


def test_no_token_is_an_authentication_failure_naming_the_variable(
    staff: Staff, audit: AuditLog
) -> None:
    with pytest.raises(AccessDenied, match=TOKEN_ENV) as caught:
        authorize(staff.policy, None, "twin_list", None, audit)
    assert caught.value.reason == "no_token"
    assert read_entries(audit.paths.log)[0][-1].detail["reason"] == "no_token"


def test_a_malformed_patient_is_refused_and_never_logged(staff: Staff, audit: AuditLog) -> None:
    """A hospital reference typed where a token belongs must not end up in the audit log."""
    with pytest.raises(AccessDenied, match="never the hospital reference"):
        authorize(staff.policy, staff.tokens["boss"], "twin_read", "MRN-0042917", audit)
    entry = read_entries(audit.paths.log)[0][-1]
    assert (entry.action, entry.subject, entry.detail["reason"]) == (
        "access_denied",
        None,
        "bad_patient_token",
    )
    assert "0042917" not in audit.paths.log.read_text(encoding="ascii")


def test_without_an_access_section_everything_is_refused(audit: AuditLog) -> None:
    """Fail closed: a config that names nobody lets nobody in, and says how to fix it."""
    policy = parse_access(None)
    assert (policy.enforced, policy.identities) == (True, ())
    for operation in ("twin_read", "report", "audit_verify"):
        decision = decide(policy, "btt_whatever", operation, MINE)
        assert (decision.allowed, decision.reason) == (False, "no_identities")
    with pytest.raises(AccessDenied, match="cloud-sink access token NAME --role admin"):
        authorize(policy, None, "twin_read", MINE, audit)
    assert read_entries(audit.paths.log)[0][-1].action == "auth_failure"


def test_enforce_false_lets_everyone_in_as_anonymous_and_audits_it(
    tmp_path: Path, audit: AuditLog
) -> None:
    policy = _policy_from_toml(tmp_path, "[access]\nenforce = false\n")
    identity = authorize(policy, None, "export_identified", MINE, audit)
    assert identity is ANONYMOUS
    entry = read_entries(audit.paths.log)[0][-1]
    assert (entry.actor, entry.action, entry.subject) == ("anonymous", "export", MINE)
    assert entry.detail == {"anonymised": False, "access_control": "off"}


def test_ok_decisions_are_audited_too_and_the_chain_verifies(staff: Staff, audit: AuditLog) -> None:
    for _ in range(3):
        authorize(staff.policy, staff.tokens["dr-lee"], "twin_read", MINE, audit)
    authorize(staff.policy, staff.tokens["boss"], "gateway_list", None, audit, detail={"shown": 4})
    entries, _ = read_entries(audit.paths.log)
    assert [(e.actor, e.action) for e in entries] == [("dr-lee", "twin_read")] * 3 + [
        ("boss", "gateway_list")
    ]
    assert entries[-1].detail == {"shown": 4}
    assert verify(audit.paths.log, audit.paths.key, audit.paths.head).ok


def test_no_audit_no_access(staff: Staff, audit: AuditLog) -> None:
    """When the decision cannot be written, the request fails, even an allowed one."""
    authorize(staff.policy, staff.tokens["dr-lee"], "twin_read", MINE, audit)
    with audit.paths.log.open("ab") as handle:
        handle.write(b'{"torn')
    with pytest.raises(AuditError):
        authorize(staff.policy, staff.tokens["dr-lee"], "twin_read", MINE, audit)


def test_tokens_are_random_prefixed_and_hashed() -> None:
    tokens = [mint_token() for _ in range(20)]
    assert len({token for token, _ in tokens}) == 20
    for token, digest in tokens:
        assert token.startswith("btt_")
        assert len(token) >= 4 + 43  # 32 random bytes in base64url
        assert digest == hashlib.sha256(token.encode()).hexdigest()


def test_identify_finds_exactly_the_holder(staff: Staff) -> None:
    for name, token in staff.tokens.items():
        found = staff.policy.identify(token)
        assert found is not None
        assert found.name == name
    assert staff.policy.identify(staff.tokens["boss"] + "x") is None
    assert staff.policy.identify("") is None
    assert staff.policy.identify(None) is None


def _identity_block(**fields: object) -> str:
    lines = ["[access]", "[[access.identities]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


SHA = "ab" * 32


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            _identity_block(name="x", role="admin", token="btt_secret", token_sha256=SHA),  # noqa: S106
            "never put the token itself here",
        ),
        (_identity_block(name="x", role="admin", token_sha256=SHA, colour="red"), "unknown key"),
        (_identity_block(name="x", role="nurse", token_sha256=SHA), "must be one of"),
        (_identity_block(name="x", role="admin", token_sha256="abc"),  # noqa: S106 -- not a secret
         "does not match"),
        (_identity_block(name="x", role="admin"), "missing"),
        (_identity_block(name="bad name", role="admin", token_sha256=SHA), "must match"),
        (_identity_block(name="system", role="admin", token_sha256=SHA), "reserved"),
        (
            _identity_block(name="ana", role="researcher", token_sha256=SHA, patients=[MINE]),
            "clinicians only",
        ),
        (
            _identity_block(name="x", role="clinician", token_sha256=SHA, patients=MINE),
            "must be a list",
        ),
        ("[access]\nenforce = false\n" + _identity_block(name="x", role="admin",
                                                          token_sha256=SHA)[9:],
         "enforce = false"),
        ("[access]\nmode = \"open\"\n", "unknown key"),
    ],
)  # fmt: skip
def test_config_mistakes_name_the_key(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem) as caught:
        _policy_from_toml(tmp_path, text)
    assert str(tmp_path / "sink.toml") in str(caught.value)


def test_a_hospital_reference_in_patients_is_refused_without_repeating_it(
    tmp_path: Path,
) -> None:
    text = _identity_block(name="x", role="clinician", token_sha256=SHA, patients=["MRN0042917"])
    with pytest.raises(SettingsError, match=r"patients\[0\] is not a pseudonymous") as caught:
        _policy_from_toml(tmp_path, text)
    assert "0042917" not in str(caught.value)


def test_names_and_token_hashes_must_be_unique(tmp_path: Path) -> None:
    twice = _identity_block(name="x", role="admin", token_sha256=SHA)
    again = "\n".join(twice.splitlines()[1:]).replace('"x"', '"X"')
    with pytest.raises(SettingsError, match="name must be unique"):
        _policy_from_toml(tmp_path, twice + again + "\n")
    other = again.replace('"X"', '"y"')
    with pytest.raises(SettingsError, match="token_sha256 must be unique"):
        _policy_from_toml(tmp_path, twice + other + "\n")


def test_the_token_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    assert read_token(None, {TOKEN_ENV: "  btt_abc \n"}) == "btt_abc"
    assert read_token(None, {}) is None
    assert read_token(None, {TOKEN_ENV: "  "}) is None
    token_file = tmp_path / "token"
    token_file.write_text("btt_from_file\n", encoding="utf-8")
    token_file.chmod(0o600)
    # The file, named explicitly, wins over the environment.
    assert read_token(token_file, {TOKEN_ENV: "btt_abc"}) == "btt_from_file"
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_token(token_file, {})
    token_file.write_text("\n", encoding="utf-8")
    token_file.chmod(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_token(token_file, {})
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "missing", {})


def test_an_identity_with_a_known_hash_is_found_by_its_token() -> None:
    token, digest = mint_token()
    policy = AccessPolicy(identities=(Identity("n", "admin", digest),))
    assert policy.identify(token) == Identity("n", "admin", digest)

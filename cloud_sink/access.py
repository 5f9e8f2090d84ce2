"""Who may do what with the twins: identities and roles from the sink config, all audited.

HIPAA 45 CFR 164.312(a)(1) access control, (a)(2)(i) unique user identification and (d) person or
entity authentication: each person has their own identity (a name, a role and the SHA-256 of an
API token they alone hold); `authorize` checks the token and the permission matrix below, and
writes every decision, allowed or not, to the audit log (164.312(b)). Unknown tokens are recorded
as `auth_failure` (log-in monitoring, 164.308(a)(5)(ii)(C)); a known identity asking for more than
its role allows is recorded as `access_denied`.

Fail closed: a sink config without identities refuses every request until an admin mints one
(`cloud-sink access token`), unless `[access] enforce = false` says in so many words that this
is a demo system, in which case every request is still audited, as actor `anonymous`.
docs/audit-and-access.md explains the matrix and the token handling.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, cast, get_args

from cloud_sink.audit import Action, AuditEntry, AuditLog, DetailValue, Outcome
from cloud_sink.errors import CloudSinkError, ConfigError
from edge_agent.protocol.settings import SettingsError, Table

Role = Literal["clinician", "researcher", "admin"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
Operation = Literal[
    "twin_read",  # twin show
    "twin_list",  # the ward view (results filtered to the patients one may see)
    "twin_observe",  # record a nurse's observations
    "patient_profile",  # patients admit / update / discharge
    "identity_lookup",  # resolve a pseudonymous token to the hospital reference
    "export_identified",  # FHIR export with the patient's identity
    "export_anonymised",  # export without identifiers (research)
    "report",  # aggregate population report
    "gateway_add",
    "gateway_revoke",
    "gateway_list",
    "key_rotate",
    "audit_verify",
    "audit_show",
    "audit_repair",
    "access_admin",  # mint access tokens once identities exist
]
OPERATIONS: Final[tuple[str, ...]] = get_args(Operation)
Scope = Literal["own", "all"]
"""`own`: only patients listed in the clinician's `patients`; `all`: any patient."""

# The permission matrix (minimum necessary, 45 CFR 164.502(b)): an operation missing from a
# role's row is refused. Clinicians see identified data of the patients in their care only;
# researchers see aggregate and anonymised output only; admins run the installation.
PERMISSIONS: Final[Mapping[Role, Mapping[Operation, Scope]]] = {
    "clinician": {
        "twin_read": "own",
        "twin_list": "own",
        "twin_observe": "own",
        "patient_profile": "own",
        "identity_lookup": "own",
        "export_identified": "own",
        "export_anonymised": "own",
    },
    "researcher": {
        "report": "all",
        "export_anonymised": "all",
    },
    "admin": {
        "twin_read": "all",
        "twin_list": "all",
        "twin_observe": "all",
        "patient_profile": "all",
        "identity_lookup": "all",
        "export_identified": "all",
        "export_anonymised": "all",
        "report": "all",
        "gateway_add": "all",
        "gateway_revoke": "all",
        "gateway_list": "all",
        "key_rotate": "all",
        "audit_verify": "all",
        "audit_show": "all",
        "audit_repair": "all",
        "access_admin": "all",
    },
}
# Operations about one patient: asking without naming the patient is refused.
PATIENT_OPERATIONS: Final[frozenset[str]] = frozenset(
    {"twin_read", "twin_observe", "patient_profile", "identity_lookup", "export_identified"}
)
# How an operation is named in the audit log: both exports are `export`, with detail.anonymised.
AUDIT_ACTION: Final[Mapping[Operation, Action]] = {
    "twin_read": "twin_read",
    "twin_list": "twin_list",
    "twin_observe": "twin_observe",
    "patient_profile": "patient_profile",
    "identity_lookup": "identity_lookup",
    "export_identified": "export",
    "export_anonymised": "export",
    "report": "report",
    "gateway_add": "gateway_add",
    "gateway_revoke": "gateway_revoke",
    "gateway_list": "gateway_list",
    "key_rotate": "key_rotate",
    "audit_verify": "audit_verify",
    "audit_show": "audit_show",
    "audit_repair": "audit_repair",
    "access_admin": "access_admin",
}

TOKEN_ENV: Final = "BEDSIDE_TWIN_TOKEN"  # noqa: S105 -- a variable name, not a secret
# Recognisable by secret scanners and by people.
TOKEN_PREFIX: Final = "btt_"  # noqa: S105 -- a fixed prefix, not a secret
TOKEN_BYTES: Final = 32
IDENTITY_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
# Names the audit log uses for actors that are not configured identities.
RESERVED_NAMES: Final = frozenset({"anonymous", "unknown", "system", "local"})
_NAME: Final = re.compile(IDENTITY_NAME_PATTERN)
_PATIENT: Final = re.compile(r"[0-9a-f]{32}")
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_IDENTITY_KEYS: Final = ("name", "role", "token_sha256", "patients")

DenialKind = Literal["auth_failure", "access_denied"]


class AccessDenied(CloudSinkError):
    """A request was refused (and audited); the message says what the person can do about it."""

    def __init__(self, actor: str | None, operation: str, reason: str, message: str) -> None:
        prefix = "authentication failed" if actor is None else "access denied"
        super().__init__(f"{prefix}: {message}")
        self.actor = actor
        self.operation = operation
        self.reason = reason


@dataclass(slots=True, frozen=True)
class Identity:
    """One person (or service) allowed in: a unique name, a role, and their token's SHA-256."""

    name: str
    role: Role
    token_sha256: str = field(repr=False)
    patients: frozenset[str] = frozenset()
    """The pseudonymous patient tokens a clinician cares for (empty for other roles)."""

    def may_see(self, patient: str) -> bool:
        """May this identity see identified data of `patient` (for filtering lists)?"""
        scope = PERMISSIONS[self.role].get("twin_read")
        return scope == "all" or (scope == "own" and patient in self.patients)

    def visible(self, patients: Iterable[str]) -> list[str]:
        """The patients of a list (ward view, cohort) this identity may see, in order."""
        return [patient for patient in patients if self.may_see(patient)]


ANONYMOUS: Final = Identity(name="anonymous", role="admin", token_sha256="")
"""Who every request is from when `[access] enforce = false` (demo systems only)."""


@dataclass(slots=True, frozen=True)
class AccessPolicy:
    """The `[access]` section: enforced (the default) and the configured identities."""

    enforced: bool = True
    identities: tuple[Identity, ...] = ()

    def identify(self, token: str | None) -> Identity | None:
        """The identity holding `token`, compared in constant time against every identity."""
        if not token:
            return None
        digest = token_sha256(token)
        found: Identity | None = None
        for identity in self.identities:
            # No early exit: the time taken does not depend on which identity matched.
            if hmac.compare_digest(digest, identity.token_sha256):
                found = identity
        return found


@dataclass(slots=True, frozen=True)
class Decision:
    """The outcome of `decide`, before it is recorded."""

    operation: Operation
    identity: Identity | None
    patient: str | None
    """The patient asked about, only when it is a well-formed pseudonymous token."""
    denial: DenialKind | None
    reason: str
    """A short code: ok, no_identities, no_token, unknown_token, role, not_in_care,
    no_patient, bad_patient_token, unknown_operation."""
    message: str
    credential_fp: str | None = None
    """First 8 hex digits of the SHA-256 of an unknown token, to correlate repeated attempts."""

    @property
    def allowed(self) -> bool:
        return self.denial is None

    def error(self) -> AccessDenied:
        actor = None if self.denial == "auth_failure" else self.identity_name
        return AccessDenied(actor, self.operation, self.reason, self.message)

    @property
    def identity_name(self) -> str:
        return "unknown" if self.identity is None else self.identity.name


def token_sha256(token: str) -> str:
    """The SHA-256 (hex) the config keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint_token() -> tuple[str, str]:
    """A new API token (256 random bits, base64url, prefixed) and its SHA-256 for the config."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return token, token_sha256(token)


def identity_problem(name: str, role: str, patients: Sequence[object]) -> str | None:
    """Why an identity cannot be configured as given, or None when it can."""
    if not _NAME.fullmatch(name):
        return f"name {name!r} must match {IDENTITY_NAME_PATTERN}"
    if name.lower() in RESERVED_NAMES:
        return f"name {name!r} is reserved for the audit log; choose another"
    if role not in ROLES:
        return f"role {role!r} must be one of {', '.join(ROLES)}"
    if patients and role != "clinician":
        return f"patients apply to clinicians only; a {role} sees {_scope_words(role)}"
    for number, patient in enumerate(patients):
        if not isinstance(patient, str) or not _PATIENT.fullmatch(patient):
            # The value is not repeated: it might be a hospital reference put there by mistake.
            return (
                f"patients[{number}] is not a pseudonymous patient token (32 lower-case hex "
                "characters); never put a hospital reference here"
            )
    return None


def _scope_words(role: str) -> str:
    return {
        "admin": "every patient",
        "researcher": "aggregate and anonymised output only",
    }.get(role, "the patients listed")


def _error(table: Table, key: str, reason: str) -> SettingsError:
    """A config error at `key` of `table` (file and line when known)."""
    return table.doc.error(f"{table.name}.{key}" if key else table.name, reason)


def _identity(table: Table) -> Identity:
    for key in table.data:
        if key == "token":
            msg = (
                "never put the token itself here; put its token_sha256 (`cloud-sink access token`)"
            )
            raise _error(table, key, msg)
        if key not in _IDENTITY_KEYS:
            raise _error(table, key, f"unknown key (known: {', '.join(_IDENTITY_KEYS)})")
    name = table.string("name")
    role = cast("Role", table.choice("role", ROLES))
    digest = table.string("token_sha256", pattern=_SHA256_HEX.pattern)
    patients = table.data.get("patients", [])
    if not isinstance(patients, list):
        raise _error(table, "patients", "must be a list of patient tokens")
    problem = identity_problem(name, role, patients)
    if problem is not None:
        raise _error(table, "", problem)
    return Identity(name=name, role=role, token_sha256=digest, patients=frozenset(patients))


def parse_access(table: Table | None) -> AccessPolicy:
    """The `[access]` section (None when absent: enforced, no identities, so nothing is allowed).

    Raises SettingsError with the file and key like every other Table reader; `load_sink_config`
    turns that into ConfigError.
    """
    if table is None:
        return AccessPolicy()
    enforced = table.boolean("enforce", True)
    identities = tuple(_identity(item) for item in table.table_list("identities"))
    table.finish()
    if not enforced and identities:
        msg = "is false but identities are configured: remove `enforce = false` to use them"
        raise _error(table, "enforce", msg)
    for kind, values in (
        ("name", [identity.name.lower() for identity in identities]),
        ("token_sha256", [identity.token_sha256 for identity in identities]),
    ):
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            shown = ", ".join(value[:12] for value in repeated)
            msg = f"{kind} must be unique; repeated: {shown} (mint a token per person)"
            raise _error(table, "identities", msg)
    return AccessPolicy(enforced=enforced, identities=identities)


def read_token(token_file: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The caller's token: from `token_file` (must be 0600) if given, else $BEDSIDE_TWIN_TOKEN.

    Never from a command-line argument: those end up in shell history and `ps` output.
    """
    if token_file is not None:
        try:
            mode = token_file.stat().st_mode
            text = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(token_file), "(token file)", f"cannot read: {exc}") from exc
        if mode & 0o077:
            why = f"mode {mode & 0o777:04o} lets others read your token; chmod 600 it"
            raise ConfigError(str(token_file), "(token file)", why)
        if not text:
            raise ConfigError(str(token_file), "(token file)", "is empty")
        return text
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None


_ROLE_CAN: Final = {role: ", ".join(sorted(operations)) for role, operations in PERMISSIONS.items()}


def decide(
    policy: AccessPolicy, token: str | None, operation: Operation, patient: str | None
) -> Decision:
    """Check a request against the policy without recording it (see `record`, `authorize`)."""
    well_formed = patient if patient is not None and _PATIENT.fullmatch(patient) else None
    if operation not in OPERATIONS:
        message = f"no operation {operation!r}"
        return Decision(operation, None, well_formed, "access_denied", "unknown_operation", message)
    identity = ANONYMOUS if not policy.enforced else policy.identify(token)
    if identity is None:
        reason, message = _authentication_problem(policy, token)
        fingerprint = token_sha256(token)[:8] if token and reason == "unknown_token" else None
        return Decision(operation, None, well_formed, "auth_failure", reason, message, fingerprint)
    problem = _permission_problem(identity, operation, patient, well_formed)
    if problem is not None:
        reason, message = problem
        return Decision(operation, identity, well_formed, "access_denied", reason, message)
    return Decision(operation, identity, well_formed, None, "ok", "")


def _permission_problem(
    identity: Identity, operation: Operation, patient: str | None, well_formed: str | None
) -> tuple[str, str] | None:
    """Why the permission matrix refuses the request (reason code, message), or None."""
    if patient is not None and well_formed is None:
        return "bad_patient_token", (
            "the patient given is not a pseudonymous patient token (32 lower-case hex "
            "characters); use the token, never the hospital reference"
        )
    scope = PERMISSIONS[identity.role].get(operation)
    if scope is None:
        return "role", (
            f"{identity.name} ({identity.role}) may not {operation}; a {identity.role} may: "
            f"{_ROLE_CAN[identity.role]}"
        )
    if well_formed is None and operation in PATIENT_OPERATIONS:
        return "no_patient", f"{operation} needs a patient token"
    if scope == "own" and well_formed is not None and well_formed not in identity.patients:
        return "not_in_care", (
            f"{identity.name} (clinician) may not {operation} patient {well_formed[:8]}…: not "
            "one of their patients (an admin adds it to their `patients` in [access])"
        )
    return None


def _authentication_problem(policy: AccessPolicy, token: str | None) -> tuple[str, str]:
    if not policy.identities:
        return "no_identities", (
            "access control is on but [access] in the sink config names no identities: mint "
            "an admin token with `cloud-sink access token NAME --role admin`, paste the block "
            f"it prints into the config, and pass the token in {TOKEN_ENV} or --token-file"
        )
    if not token:
        return "no_token", (
            f"no access token: put yours in the {TOKEN_ENV} environment variable or pass "
            "--token-file (an admin mints one with `cloud-sink access token`)"
        )
    return "unknown_token", (
        "the access token matches no identity in [access] of the sink config (mistyped or "
        "revoked); ask an admin for a new one"
    )


def record(
    audit: AuditLog,
    decision: Decision,
    *,
    outcome: Outcome | None = None,
    detail: Mapping[str, DetailValue] | None = None,
    subject: str | None = None,
) -> AuditEntry:
    """Write a decision to the audit log; our own detail keys win over the caller's.

    `outcome` overrides "ok" for an allowed operation that then failed. `subject` names what a
    request is about when that is not a patient (a gateway id); the patient, when the decision
    has one, wins.
    """
    if decision.patient is not None:
        subject = decision.patient
    fields: dict[str, DetailValue] = dict(detail or {})
    if decision.allowed and decision.identity is not None:
        if decision.operation in ("export_identified", "export_anonymised"):
            fields["anonymised"] = decision.operation == "export_anonymised"
        if decision.identity is ANONYMOUS:
            fields["access_control"] = "off"
        return audit.append(
            actor=decision.identity.name,
            role=decision.identity.role,
            action=AUDIT_ACTION[decision.operation],
            outcome=outcome or "ok",
            subject=subject,
            detail=fields,
        )
    fields["requested"] = decision.operation
    fields["reason"] = decision.reason
    if decision.credential_fp is not None:
        fields["credential_fp"] = decision.credential_fp
    if decision.identity is None:
        return audit.append(
            actor="unknown",
            role="none",
            action="auth_failure" if decision.denial == "auth_failure" else "access_denied",
            outcome="denied",
            subject=subject,
            detail=fields,
        )
    return audit.append(
        actor=decision.identity.name,
        role=decision.identity.role,
        action="access_denied",
        outcome="denied",
        subject=subject,
        detail=fields,
    )


def authorize(
    policy: AccessPolicy,
    token: str | None,
    action: Operation,
    patient: str | None,
    audit: AuditLog,
    *,
    detail: Mapping[str, DetailValue] | None = None,
    subject: str | None = None,
) -> Identity:
    """Check and audit one request; the identity when allowed, AccessDenied otherwise.

    The decision is written before anything is read: when the audit log cannot be written
    (AuditError) the request fails too. No audit, no access. `subject`: see `record`.
    """
    decision = decide(policy, token, action, patient)
    record(audit, decision, detail=detail, subject=subject)
    if not decision.allowed or decision.identity is None:
        raise decision.error()
    return decision.identity

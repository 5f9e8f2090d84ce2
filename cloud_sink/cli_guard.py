"""The access check (and its audit entry) that `cloud-sink` commands run before they act.

Every command that reads or changes patient data or the fleet calls `admit` before it touches
InfluxDB, the keyring or the broker: the caller's token (BEDSIDE_TWIN_TOKEN or a 0600
`--token-file`, never a command-line argument) is checked against `[access]` of the sink config
and the decision is written to the audit log first (docs/audit-and-access.md §2.5, §8). A
refusal, or an audit log that cannot be written, raises a CloudSinkError the command reports
like any other (exit 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from cloud_sink.access import AUDIT_ACTION, TOKEN_ENV, Identity, Operation, authorize, read_token
from cloud_sink.audit import AuditLog, AuditPaths, DetailValue
from cloud_sink.config import SinkConfig, load_sink_config
from cloud_sink.errors import CloudSinkError

TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help=f"A 0600 file holding your access token (default: the ${TOKEN_ENV} variable).",
    ),
]


@dataclass(slots=True, frozen=True)
class Admitted:
    """An allowed request: the config it was checked against, who asked, and their audit log."""

    settings: SinkConfig
    identity: Identity
    audit: AuditLog


def audit_log(settings: SinkConfig) -> AuditLog:
    """The sink's audit log (in its `[state] dir`)."""
    return AuditLog(AuditPaths.in_dir(settings.state_dir))


def admit(
    config: Path,
    token_file: Path | None,
    operation: Operation,
    patient: str | None = None,
    *,
    subject: str | None = None,
    detail: Mapping[str, DetailValue] | None = None,
    password_required: bool = True,
) -> Admitted:
    """Load the sink config, check the caller's token for `operation`, audit the decision.

    Raises ConfigError (config or token file unusable), AccessDenied (refused, recorded) or
    AuditError (the decision could not be recorded, so nothing is allowed).
    """
    settings = load_sink_config(config, password_required=password_required)
    audit = audit_log(settings)
    identity = authorize(
        settings.access,
        read_token(token_file),
        operation,
        patient,
        audit,
        subject=subject,
        detail=detail,
    )
    return Admitted(settings, identity, audit)


@contextlib.contextmanager
def failure_audited(
    admitted: Admitted, operation: Operation, patient: str | None = None
) -> Iterator[None]:
    """Audit a failure of the work an allowed request went on to do.

    `admit` records the decision before the work; if the work then fails (InfluxDB down, an
    unwritable --out), a second entry says so, so the log never reads as a completed export or
    report that was not. Only the error's class is recorded: messages may carry paths or values.
    """
    try:
        yield
    except CloudSinkError as exc:
        admitted.audit.append(
            actor=admitted.identity.name,
            role=admitted.identity.role,
            action=AUDIT_ACTION[operation],
            outcome="failed",
            subject=patient,
            detail={"stage": "after access", "error": type(exc).__name__},
        )
        raise

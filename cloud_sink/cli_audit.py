"""`cloud-sink audit` and `cloud-sink access`: verify and read the audit log, mint access tokens.

docs/audit-and-access.md. The log, its key and its head live in the sink's `[state] dir`. Your
access token comes from the BEDSIDE_TWIN_TOKEN environment variable or a 0600 `--token-file`,
never from a command-line argument (shell history, `ps`).
"""

from __future__ import annotations

import json
import os
import pwd
import re
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cloud_sink.access import (
    ROLES,
    TOKEN_ENV,
    AccessPolicy,
    Decision,
    Operation,
    decide,
    identity_problem,
    mint_token,
    read_token,
    record,
)
from cloud_sink.audit import (
    ACTIONS,
    AuditEntry,
    AuditError,
    AuditLog,
    AuditRole,
    DetailValue,
    Outcome,
    VerifyResult,
)
from cloud_sink.cli_guard import TokenFileOption, audit_log
from cloud_sink.config import load_sink_config
from cloud_sink.errors import CloudSinkError
from cloud_sink.since import SinceError, parse_since

audit_app = typer.Typer(
    help="Verify and read the hash-chained audit log (HIPAA 164.312(b)).", no_args_is_help=True
)
access_app = typer.Typer(
    help="Access tokens for clinicians, researchers and admins.", no_args_is_help=True
)
_out = Console()
_err = Console(stderr=True)
_PATIENT_TOKEN: Final = re.compile(r"[0-9a-f]{32}")

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Sink TOML file (see configs/sink.toml).")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code=code)


def load_access_policy(config: Path) -> AccessPolicy:
    """The `[access]` section of the sink config file (enforced, no identities, when absent)."""
    return load_sink_config(config).access


def _open(config: Path) -> tuple[AuditLog, AccessPolicy]:
    return audit_log(load_sink_config(config)), load_access_policy(config)


def _admit(
    audit: AuditLog, policy: AccessPolicy, token_file: Path | None, operation: Operation
) -> Decision:
    """The caller's decision for `operation`; a refusal is recorded and ends the command."""
    decision = decide(policy, read_token(token_file), operation, None)
    if not decision.allowed:
        _record_quietly(audit, decision)
        raise _fail(str(decision.error()))
    return decision


def _record_quietly(
    audit: AuditLog,
    decision: Decision,
    outcome: Outcome | None = None,
    detail: dict[str, DetailValue] | None = None,
) -> None:
    """Record a decision about the audit log itself; a broken log must not stop its inspection."""
    try:
        record(audit, decision, outcome=outcome, detail=detail)
    except AuditError as exc:
        what = f"this {decision.operation} could not be recorded: {exc}"
        _err.print(f"[yellow]warning:[/] {escape(what)}")


def _verify_json(result: VerifyResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "entries": result.entries,
        "reason": result.reason,
        "message": result.message,
        "first_bad_seq": result.first_bad_seq,
        "first_bad_line": result.first_bad_line,
        "bad_line": result.bad_line,
        "note": result.note,
        "last_seq": result.last_seq,
    }


@audit_app.command("verify")
def verify_command(
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check every entry, the hash chain, the MACs and the head (admin).

    Exit 0 when intact; 1 when an entry was edited, removed, reordered, cut off the end,
    malformed or rewritten without the key, naming the first bad line; 2 on other errors.
    """
    try:
        audit, policy = _open(config)
        decision = _admit(audit, policy, token_file, "audit_verify")
        result = audit.verify()
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    # Recorded after the check, so the result describes the log as it was found.
    _record_quietly(
        audit,
        decision,
        outcome="ok" if result.ok else "failed",
        detail={"result": result.reason or "intact", "entries": result.entries},
    )
    if as_json:
        typer.echo(json.dumps(_verify_json(result)))
    elif result.ok:
        typer.echo(f"audit log intact: {result.entries} entries, last seq {result.last_seq}")
        if result.note:
            typer.echo(f"note: {result.note}")
    else:
        typer.echo(f"audit log NOT intact ({result.reason}): {result.message}")
        if result.first_bad_line is not None:
            typer.echo(f"first bad entry, line {result.first_bad_line}: {result.bad_line}")
        typer.echo(
            f"{result.entries} entries verified before it; keep a copy of the files as evidence "
            "and compare with your last backup or off-host copy"
        )
    if not result.ok:
        raise typer.Exit(code=1)


def _short(subject: str | None) -> str:
    if subject is None:
        return "-"
    return subject[:8] + "…" if _PATIENT_TOKEN.fullmatch(subject) else subject


def _entries_table(entries: list[AuditEntry]) -> Table:
    table = Table(title=f"audit log ({len(entries)} entries)")
    for column in ("seq", "time (UTC)", "actor", "role", "action", "subject", "outcome", "detail"):
        # Folded, never cut with an ellipsis: an audit view must not hide part of an entry.
        table.add_column(column, overflow="fold")
    for entry in entries:
        detail = " ".join(f"{key}={value}" for key, value in entry.detail.items())
        cells = (str(entry.seq), entry.ts, entry.actor, entry.role, entry.action)
        table.add_row(
            *(Text(cell) for cell in cells),
            Text(_short(entry.subject)),
            Text(entry.outcome, style="" if entry.outcome == "ok" else "red"),
            Text(detail),
        )
    return table


@audit_app.command("show")
def show_command(
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only entries from this ISO 8601 time on.")
    ] = None,
    action: Annotated[
        list[str] | None,
        typer.Option("--action", help="Only this action; repeat for several."),
    ] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Only the last N.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
) -> None:
    """List audit entries, oldest first (admin). Reading does not verify: run `audit verify`."""
    try:
        since_time = parse_since(since)
    except SinceError as exc:
        raise _fail(str(exc)) from None
    unknown = sorted(set(action or ()) - set(ACTIONS))
    if unknown:
        msg = f"unknown --action {', '.join(unknown)}; one of: {', '.join(ACTIONS)}"
        raise _fail(msg)
    try:
        audit, policy = _open(config)
        decision = _admit(audit, policy, token_file, "audit_show")
        entries, unreadable = audit.read()
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    chosen = [
        entry
        for entry in entries
        if (since_time is None or entry.time >= since_time)
        and (not action or entry.action in action)
    ]
    if last is not None:
        chosen = chosen[-last:]
    _record_quietly(audit, decision, detail={"shown": len(chosen)})
    if as_json:
        typer.echo(json.dumps([entry.to_json() for entry in chosen]))
    else:
        _out.print(_entries_table(chosen))
    if unreadable:
        _err.print(f"[yellow]warning:[/] {unreadable} unreadable lines skipped; run `audit verify`")


@audit_app.command("repair")
def repair_command(
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
) -> None:
    """Cut off an incomplete last line left by a crash, and record that (admin).

    Refused unless every line before it verifies: only bytes that never formed an entry go.
    """
    try:
        audit, policy = _open(config)
        decision = _admit(audit, policy, token_file, "audit_repair")
        identity = decision.identity
        assert identity is not None  # noqa: S101 -- an allowed decision names its identity
        entry = audit.repair(actor=identity.name, role=identity.role)
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"cut {entry.detail.get('discarded_bytes')} bytes of an incomplete line; "
        f"recorded as entry seq {entry.seq}"
    )


def _local_actor() -> str:
    """`local:<login>` for commands allowed without a token (the OS account that ran them)."""
    uid = os.getuid()
    try:
        login = pwd.getpwuid(uid).pw_name
    except KeyError:
        login = f"uid{uid}"
    return "local:" + (re.sub(r"[^A-Za-z0-9_.-]", "_", login)[:50] or f"uid{uid}")


def _minter(
    audit: AuditLog, policy: AccessPolicy, token_file: Path | None
) -> tuple[str, AuditRole, bool]:
    """Who mints (actor, role, bootstrap): an admin once identities exist, else the OS account."""
    if policy.enforced and policy.identities:
        identity = _admit(audit, policy, token_file, "access_admin").identity
        assert identity is not None  # noqa: S101 -- an allowed decision names its identity
        return identity.name, identity.role, False
    return _local_actor(), "none", True


def _toml_block(name: str, role: str, digest: str, patients: list[str]) -> str:
    lines = [
        "[[access.identities]]",
        f'name = "{name}"',
        f'role = "{role}"',
        f'token_sha256 = "{digest}"',
    ]
    if role == "clinician":
        lines.append("patients = [" + ", ".join(f'"{p}"' for p in patients) + "]")
    return "\n".join(lines)


@access_app.command("token")
def token_command(
    name: Annotated[str, typer.Argument(help="The person's unique identity name, e.g. dr-lee.")],
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")],
    patient: Annotated[
        list[str] | None,
        typer.Option("--patient", help="A clinician's patient token; repeat for several."),
    ] = None,
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Mint an access token: print it once, and the block to paste into the sink config.

    Only the token's SHA-256 goes into the config; the token is shown here and kept nowhere.
    Once identities are configured, minting needs an admin token; the first one (bootstrap)
    is recorded under the OS account that ran the command.
    """
    patients = sorted(set(patient or ()))
    problem = identity_problem(name, role, patients)
    if problem is not None:
        raise _fail(problem)
    try:
        audit, policy = _open(config)
        actor, actor_role, bootstrap = _minter(audit, policy, token_file)
        token, digest = mint_token()
        replaces = any(known.name.lower() == name.lower() for known in policy.identities)
        # Recorded before the token is shown: a mint that cannot be audited does not happen.
        audit.append(
            actor=actor,
            role=actor_role,
            action="access_admin",
            outcome="ok",
            subject=name,
            detail={
                "minted_role": role,
                "patients": len(patients),
                "bootstrap": bootstrap,
                "replaces": replaces,
            },
        )
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    block = _toml_block(name, role, digest, patients)
    if as_json:
        document = {"name": name, "role": role, "token": token, "token_sha256": digest}
        typer.echo(json.dumps({**document, "toml": block}))
        return
    typer.echo(f"access token for {name} ({role}), shown once; give it to {name} only:")
    typer.echo(f"    {token}")
    typer.echo(
        f"{name} keeps it in a 0600 file (--token-file) or in ${TOKEN_ENV}; never on a "
        "command line."
    )
    verb = "replace the existing block for this name with" if replaces else "add"
    typer.echo(f"\nIn {config}, {verb} this block (commands read it each time they run):\n")
    typer.echo(block)

"""`cloud-sink security report`: refusals, encryption compliance, exports, failed logins.

docs/security-report.md defines every figure; cloud_sink/cli.py registers the command group.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloud_sink.cli_guard import TokenFileOption, admit, failure_audited
from cloud_sink.errors import CloudSinkError
from cloud_sink.security_report import (
    HOW,
    SecurityReport,
    read_audit_counts,
    read_sink_counts,
    report_json,
)
from cloud_sink.since import since_ns as parse_since_ns

app = typer.Typer(no_args_is_help=True, help="The sink's security metrics.")
_out = Console()
_err = Console(stderr=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Sink TOML file (see configs/sink.toml).")
]


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def security_table(document: dict[str, object]) -> Table:
    since = document["since"] or "all data"
    table = Table(title=f"security: {since} to {document['until']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in document.items():
        if key in {"since", "until", "rejections_by_reason", "audit_log"}:
            continue
        table.add_row(key, _cell(value))
    reasons = document["rejections_by_reason"]
    assert isinstance(reasons, dict)  # noqa: S101 - report_json builds it
    for reason, count in reasons.items():
        table.add_row(f"  rejected: {escape(str(reason))}", str(count))
    return table


@app.command("report")
def report(
    config: ConfigOption = Path("configs/sink.toml"),
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only from this ISO 8601 time on (with offset); default all."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    token_file: TokenFileOption = None,
) -> None:
    """Rejections by reason, encryption compliance, anonymised exports, auth failures."""
    until_ns = time.time_ns()
    try:
        since_ns = parse_since_ns(since)
        # Aggregate figures only: the `report` operation (researchers and admins), audited.
        admitted = admit(config, token_file, "report", detail={"report": "security"})
        with failure_audited(admitted, "report"):
            influx = admitted.settings.influxdb.client()
            try:
                sink = read_sink_counts(influx, since_ns, until_ns)
            finally:
                influx.close()
            audit = read_audit_counts(admitted.settings.state_dir, since_ns, until_ns)
    except CloudSinkError as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=2) from None
    document = report_json(SecurityReport(since_ns, until_ns, sink, audit))
    if as_json:
        typer.echo(json.dumps(document, allow_nan=False))
        return
    _out.print(security_table(document))
    audit_log = document["audit_log"]
    if audit_log is None:
        _out.print("audit log: none yet (export and access figures are n/a)")
    elif isinstance(audit_log, dict) and not audit_log["chain_ok"]:
        _out.print(f"[bold red]audit log chain broken:[/] {escape(str(audit_log['problem']))}")
    for key, how in HOW.items():
        _out.print(f"{key}: {escape(how)}", highlight=False)

"""`cloud-sink report`: the population report (seed Table 3) from InfluxDB, as a table or JSON.

docs/report.md defines every figure; cloud_sink/cli.py registers the command.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloud_sink.audit import AuditLog
from cloud_sink.cli_guard import TokenFileOption, admit, failure_audited
from cloud_sink.config import open_database
from cloud_sink.errors import CloudSinkError
from cloud_sink.report import (
    AccessFigures,
    PlotFile,
    Report,
    ReportError,
    build_report,
    dumps,
    format_value,
    read_population,
    report_json,
)
from cloud_sink.since import since_ns as parse_since_ns
from cloud_sink.twin import iso_utc

REPORT_FILE: Final = "report.json"
_OUT: Final = "--out"
_out = Console()
_err = Console(stderr=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Sink TOML file (see configs/sink.toml).")
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since", help="Only data from this ISO 8601 time on (with offset); default: all data."
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help=f"Folder for {REPORT_FILE} and the PNG plots (created if missing)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code=2)


def write_outputs(built: Report, out: Path) -> tuple[PlotFile, ...]:
    """report.json and the plots into `out`; matplotlib is needed only here."""
    try:
        # The 'sink' extra brings matplotlib; a gateway install never needs it.
        from cloud_sink.report_plots import write_plots  # noqa: PLC0415
    except ImportError as exc:
        reason = f"plots need matplotlib (install bedside-twin[sink]): {exc}"
        raise ReportError(_OUT, reason) from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(_OUT, f"cannot create folder {out}: {exc.strerror}") from exc
    plots = write_plots(built, out)
    try:
        (out / REPORT_FILE).write_text(dumps(report_json(built, plots)) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ReportError(_OUT, f"cannot write {out / REPORT_FILE}: {exc.strerror}") from exc
    return plots


def report_table(built: Report) -> Table:
    """The report as a rich table: figure, value, unit, what it rests on, how."""
    since = "all data" if built.since_ns is None else iso_utc(built.since_ns)
    table = Table(title=f"population report: {since} to {iso_utc(built.until_ns)}")
    for column in ("figure", "value", "unit", "over", "how"):
        table.add_column(column, overflow="fold")
    for figure in built.figures.values():
        over = (
            "-" if figure.over is None or figure.count is None else f"{figure.count} {figure.over}"
        )
        table.add_row(
            escape(figure.title),
            escape(format_value(figure)),
            escape(figure.unit or ""),
            over,
            escape(figure.how),
        )
    return table


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(ts_ns: int) -> datetime:
    # Integer microseconds, as the audit log stamps its entries; a float would round.
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)


def access_figures(audit: AuditLog, since_ns: int | None, until_ns: int) -> AccessFigures:
    """The report's access figures: the audit log's counts over the report's window."""
    counts = audit.summary(None if since_ns is None else _utc(since_ns), _utc(until_ns))
    return AccessFigures(
        exports_total=counts.exports_total,
        exports_anonymised=counts.exports_anonymised,
        access_denied=counts.access_denied,
        auth_failures=counts.auth_failures,
    )


def report(
    config: ConfigOption = Path("configs/sink.toml"),
    since: SinceOption = None,
    out: OutOption = None,
    json_output: JsonOption = False,
    token_file: TokenFileOption = None,
) -> None:
    """Population figures (seed Table 3): demographics, vitals, devices, room, security."""
    generated_ns = time.time_ns()
    try:
        since_ns = parse_since_ns(since)
        admitted = admit(config, token_file, "report")
        with failure_audited(admitted, "report"):
            with open_database(admitted.settings) as influx:
                data = read_population(influx, since_ns, generated_ns)
            access = access_figures(admitted.audit, since_ns, generated_ns)
            built = build_report(
                data,
                since_ns=since_ns,
                until_ns=generated_ns,
                generated_ns=generated_ns,
                access=access,
            )
            plots = () if out is None else write_outputs(built, out)
    except CloudSinkError as exc:
        raise _fail(str(exc)) from None
    if out is not None:
        _err.print(f"wrote {escape(str(out / REPORT_FILE))} and {len(plots)} plots")
    if json_output:
        typer.echo(dumps(report_json(built, plots)))
        return
    _out.print(report_table(built))

"""`firmware-sims`: simulated bedside devices for demos and CI."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edge_agent.protocol import by_name
from firmware_sims.patient import WARD_KIT

app = typer.Typer(help="bedside-twin simulators: devices without hardware.", no_args_is_help=True)
_out = Console()


@app.callback()
def _main() -> None:
    """bedside-twin firmware simulators."""


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
) -> None:
    """List the simulated device models every simulated patient wears."""
    rows = [
        {
            "kind": model.kind,
            "metrics": list(model.metrics),
            "units": [by_name(metric).ucum for metric in model.metrics],
            "interval_s": model.interval_s,
        }
        for model in WARD_KIT
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="simulated device models")
    for column in ("kind", "metrics", "units", "interval (s)"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["kind"]),
            ", ".join(model for model in row["metrics"]),  # type: ignore[attr-defined]
            ", ".join(row["units"]),  # type: ignore[arg-type]
            f"{row['interval_s']:g}",
        )
    _out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()

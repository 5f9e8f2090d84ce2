"""`firmware-sims`: simulated bedside devices for demos and CI."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edge_agent.protocol import by_name
from firmware_sims.patient import WARD_KIT
from firmware_sims.serial import BedsideMonitorSim, ImplantReceiverSim, PtyPort, stream

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


@app.command()
def serial(
    device: Annotated[str, typer.Option(help="implant (telemetry receiver) or monitor.")],
    link: Annotated[
        Path, typer.Option(help="Symlink to create; the agent opens it (like /dev/serial/by-id).")
    ],
    seed: Annotated[int, typer.Option(help="Physiology seed.")] = 7,
    interval_s: Annotated[float, typer.Option("--interval", help="Seconds between units.")] = 1.0,
) -> None:
    """Serve a simulated serial device on a pseudo-terminal until SIGINT/SIGTERM."""
    sims = {"implant": ImplantReceiverSim, "monitor": BedsideMonitorSim}
    if device not in sims:
        typer.echo(f"error: --device must be one of {', '.join(sims)}", err=True)
        raise typer.Exit(code=2)
    if not interval_s > 0:
        typer.echo("error: --interval must be positive", err=True)
        raise typer.Exit(code=2)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        with PtyPort(link) as port:
            typer.echo(str(port.path))
            await stream(sims[device](seed), port, stop, interval_s=interval_s)

    asyncio.run(serve())


def main() -> None:
    """Console-script entry point."""
    app()

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

from edge_agent.config import SimulationSettings, load_agent_config
from edge_agent.errors import EdgeAgentError
from edge_agent.protocol import by_name
from edge_agent.protocol.logs import configure_logging
from firmware_sims.ble.peripherals import PERIPHERAL_KINDS
from firmware_sims.ledger import Ledger
from firmware_sims.patient import DEVICE_CLOCK_KINDS, WEARABLE_KIT
from firmware_sims.remote.server import WardServer
from firmware_sims.serial import BedsideMonitorSim, ImplantReceiverSim, PtyPort, stream
from firmware_sims.vectors import VECTORS_DIR, golden_vectors
from firmware_sims.ward import SERIAL_INTERVAL_S, SERIAL_METRICS, SimulatedWard, WardSettings

app = typer.Typer(help="bedside-twin simulators: devices without hardware.", no_args_is_help=True)
_out = Console()
LOG_LEVELS = ("debug", "info", "warning", "error")


@app.callback()
def _main() -> None:
    """bedside-twin firmware simulators."""


def _model_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for kind, cls in sorted(PERIPHERAL_KINDS.items()):
        rows.append(
            {
                "kind": kind,
                "transport": "ble",
                "services": [service.uuid for service in cls.gatt_services()],
                "metrics": [*cls.reports, "battery"],
                "units": [by_name(metric).ucum for metric in (*cls.reports, "battery")],
                "interval_s": cls.default_interval_s,
                "device_clock": kind in DEVICE_CLOCK_KINDS,
                "in_ward_kit": any(item.kind == kind for item in WEARABLE_KIT),
            }
        )
    for serial_kind, metrics in SERIAL_METRICS.items():
        rows.append(
            {
                "kind": serial_kind.value,
                "transport": "serial",
                "services": [],
                "metrics": list(metrics),
                "units": [by_name(metric).ucum for metric in metrics],
                "interval_s": SERIAL_INTERVAL_S[serial_kind],
                "device_clock": True,
                "in_ward_kit": False,
            }
        )
    return rows


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
) -> None:
    """List the simulated device models: BLE wearables and serial devices."""
    rows = _model_rows()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="simulated device models")
    for column in ("kind", "transport", "GATT services", "metrics", "interval (s)", "clock"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["kind"]),
            str(row["transport"]),
            ", ".join(str(uuid) for uuid in row["services"]),  # type: ignore[attr-defined]
            ", ".join(str(metric) for metric in row["metrics"]),  # type: ignore[attr-defined]
            f"{row['interval_s']:g}",
            "device" if row["device_clock"] else "gateway",
        )
    _out.print(table)
    _out.print(
        "Every simulated patient wears: "
        + ", ".join(item.kind for item in WEARABLE_KIT)
        + "; bed 1 adds the env-sensor, bed 2 the glucose-meter."
    )


@app.command()
def vectors(
    kind: Annotated[
        str, typer.Option(help="gatt, serial or all: which golden vectors to print.")
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
) -> None:
    """Print the golden vectors both the agent and the simulators are tested against."""
    if kind not in ("gatt", "serial", "all"):
        typer.echo("error: --kind must be gatt, serial or all", err=True)
        raise typer.Exit(code=2)
    rows = golden_vectors(include_gatt=kind != "serial", include_serial=kind != "gatt")
    if as_json:
        typer.echo(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table(title=f"golden vectors ({VECTORS_DIR})")
    for column in ("format", "vector", "bytes on the wire"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.format, row.name, row.wire)
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


@app.command("ward")
def serve_ward(
    config: Annotated[
        Path, typer.Option(help="The agent config whose [simulation] section names the ward.")
    ],
    ready_file: Annotated[
        Path | None, typer.Option(help="Created once the socket accepts connections.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the config's simulated ward on its `[simulation] ward_socket` until SIGTERM/SIGINT.

    The agent started with the same config reads it from its own process, so the two
    processes' costs are measured apart (scripts/bench agent). The ward writes the ledger.
    """
    try:
        agent_config = load_agent_config(config)
    except EdgeAgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    simulation = agent_config.simulation
    if simulation is None or simulation.ward_socket is None:
        typer.echo(f"error: {config}: [simulation] ward_socket is not set", err=True)
        raise typer.Exit(code=2)
    if log_level not in LOG_LEVELS:
        typer.echo(f"error: --log-level must be one of {', '.join(LOG_LEVELS)}", err=True)
        raise typer.Exit(code=2)
    configure_logging(log_level, "text")
    ports_dir = agent_config.gateway.state_dir / "sim-ports"
    asyncio.run(_serve_ward(simulation, simulation.ward_socket, ports_dir, ready_file))


async def _serve_ward(
    simulation: SimulationSettings, socket_path: Path, ports_dir: Path, ready_file: Path | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def ready() -> None:
        if ready_file is not None:
            ready_file.write_text("ready\n", encoding="utf-8")

    with Ledger(simulation.ledger_file) as ledger:
        ward = SimulatedWard(
            WardSettings.of(simulation), ports_dir=ports_dir, ledger=ledger, readers_elsewhere=True
        )
        async with ward.powered(), asyncio.TaskGroup() as group:
            serving = group.create_task(WardServer(ward.radio, socket_path, ward).serve(ready))
            await stop.wait()
            serving.cancel()


def main() -> None:
    """Console-script entry point."""
    app()

"""`edge-agent pair`: bind devices to (pseudonymous) patients, on the agent's real device paths."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edge_agent.binding_outbox import BindingOutbox
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.errors import EdgeAgentError, run_command
from edge_agent.hardware import Hardware, open_hardware
from edge_agent.pairing import BATTERY_CODE, Found, PairingError, listen, scan
from edge_agent.protocol import BindingEvent, by_code
from edge_agent.registry import (
    BLE_KINDS,
    REGISTRY_FILE,
    SERIAL_KINDS,
    Binding,
    Registry,
    normalise_address,
)
from edge_agent.sources import Reading

app = typer.Typer(
    help="Bind devices to patients (the registry the agent reads).", no_args_is_help=True
)
_err = Console(stderr=True)
_out = Console()

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Agent TOML file (see configs/agent.toml).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=code)


def _load(config_file: Path) -> tuple[AgentConfig, Registry]:
    try:
        config = load_agent_config(config_file)
        registry = Registry(config.gateway.state_dir / REGISTRY_FILE, config.master_secret())
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    return config, registry


def _outbox(config: AgentConfig) -> BindingOutbox:
    """Where the binding event waits for the agent to seal it (binding_outbox.py)."""
    return BindingOutbox(config.gateway.state_dir, config.master_secret())


def _binding_row(binding: Binding) -> dict[str, object]:
    return {
        "device": binding.device_token,
        "kind": binding.kind,
        "transport": binding.transport,
        "address": binding.address,
        "patient": binding.patient_token,
        "since_ns": binding.from_ns,
        "pending": binding.pending,
    }


def _reading_row(reading: Reading) -> dict[str, object]:
    metric = by_code(reading.metric_code)
    return {
        "metric": metric.name,
        "value": reading.value,
        "unit": metric.ucum,
        "ts_ns": reading.ts_ns,
        "quality": reading.quality,
    }


@app.command("scan")
def scan_command(
    config: ConfigOption = Path("configs/agent.toml"),
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to listen.")] = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Listen for health devices and list them, with whom each is bound to already."""
    if not 0 < timeout_s <= 120:
        raise _fail(ValueError("--timeout must be between 0 and 120 seconds"))
    settings, registry = _load(config)

    async def run() -> list[Found]:
        async with open_hardware(settings) as (hardware, _ward):
            return await scan(timeout_s, hardware)

    with _err.status(f"scanning for {timeout_s:g} s ...", spinner="dots"):
        found = run_command(run())
    bound: list[str | None] = []
    for device in found:
        binding = registry.find(device.address)
        bound.append(binding.patient_token if binding is not None else None)
    if as_json:
        rows = [
            {**dataclasses.asdict(device), "bound_to": patient}
            for device, patient in zip(found, bound, strict=True)
        ]
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"health devices heard in {timeout_s:g} s")
    for column in ("name", "address", "RSSI", "services", "kind", "bound to"):
        table.add_column(column)
    for device, patient in zip(found, bound, strict=True):
        table.add_row(
            device.name or "-",
            device.address,
            "-" if device.rssi_dbm is None else f"{device.rssi_dbm} dBm",
            ", ".join(device.services),
            device.kind or "?",
            f"patient {patient[:8]}" if patient else "-",
        )
    _out.print(table)


GUESS_SCAN_S = 10.0


async def _guess_kind(address: str, hardware: Hardware) -> str:
    """The kind a BLE device advertises itself as (a short scan); serial ports must be told."""
    transport, where = normalise_address(address)
    if transport == "serial":
        msg = f"--kind is needed for a serial port ({', '.join(SERIAL_KINDS)})"
        raise PairingError(msg)
    for found in await scan(GUESS_SCAN_S, hardware, until_address=where):
        if found.address == where and found.kind is not None:
            return found.kind
    msg = (
        f"{where} was not heard advertising a health service for {GUESS_SCAN_S:g} s: is it on "
        "and in range? (or give --kind)"
    )
    raise PairingError(msg)


@app.command("add")
def add_command(
    address: Annotated[str, typer.Argument(help="BLE address or serial port path.")],
    patient: Annotated[
        str,
        typer.Option(
            "--patient",
            prompt="Patient reference",
            help="The hospital's patient reference; left out, it is asked for (so it stays out "
            "of shell history and sudo's log).",
        ),
    ],
    config: ConfigOption = Path("configs/agent.toml"),
    kind: Annotated[
        str | None,
        typer.Option(
            help=f"Device kind ({', '.join(BLE_KINDS + SERIAL_KINDS)}).", show_default=False
        ),
    ] = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the first reading.")
    ] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Bind a device to a patient, then prove it: wait for its first valid reading.

    The reference is replaced by a random surrogate token at once and never stored or logged
    in clear. If no valid reading arrives in time, the binding is undone: nothing half-bound.
    """
    settings, registry = _load(config)
    # Pairing is interactive: the device sources' own warnings would bury the answer.
    logging.getLogger("edge_agent").setLevel(logging.ERROR)

    async def run() -> tuple[Binding, list[Reading]]:
        async with open_hardware(settings) as (hardware, _ward):
            chosen = kind or await _guess_kind(address, hardware)
            # Pending until proven: the running agent leaves it alone until `confirm`.
            binding = registry.bind(address, chosen, patient, pending=True)
            try:
                readings = await listen(binding, hardware, seconds=timeout_s, until_first=True)
            except BaseException:
                registry.discard(binding)
                raise
            if not any(r.metric_code != BATTERY_CODE for r in readings):
                registry.discard(binding)
                msg = (
                    f"no valid reading from {binding.log_name} within {timeout_s:g} s: is it "
                    "switched on, in range and worn (or the port the right one)? Nothing was bound."
                )
                raise PairingError(msg)
            try:
                # The reference leaves the gateway only sealed, in this binding event.
                event = BindingEvent(
                    binding.device_token, binding.patient_token, "bound", binding.from_ns, patient
                )
                _outbox(settings).put(event)
            except BaseException:
                registry.discard(binding)
                raise
            try:
                binding = registry.confirm(binding)
            except BaseException:
                registry.discard(binding)
                # The agent may have sealed the event already: take it back with an unbind.
                withdrawn = BindingEvent(
                    binding.device_token, binding.patient_token, "unbound", time.time_ns()
                )
                _outbox(settings).put(withdrawn)
                raise
            return binding, readings

    try:
        with _err.status("connecting and waiting for the first reading ...", spinner="dots"):
            binding, readings = run_command(run())
    except PairingError as exc:
        raise _fail(exc, code=1) from None
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    first = _reading_row(next(r for r in readings if r.metric_code != BATTERY_CODE))
    if as_json:
        typer.echo(json.dumps({**_binding_row(binding), "first_reading": first}))
        return
    _out.print(
        f"bound {binding.log_name} to patient {binding.patient_token[:8]}; first reading: "
        f"{first['metric']} {first['value']:g} {first['unit']}"
    )


@app.command("list")
def list_command(
    config: ConfigOption = Path("configs/agent.toml"), as_json: JsonOption = False
) -> None:
    """The devices bound now, and to whom (pseudonymous patient tokens)."""
    _settings, registry = _load(config)
    rows = [_binding_row(binding) for binding in registry.active()]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="bound devices")
    for column in ("device", "kind", "transport", "address / port", "patient", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["device"])[:8],
            str(row["kind"]),
            str(row["transport"]),
            str(row["address"]),
            str(row["patient"])[:8],
            "being paired" if row["pending"] else "in service",
        )
    _out.print(table)


@app.command("remove")
def remove_command(
    device: Annotated[str, typer.Argument(help="Device token (8+ hex digits) or address/port.")],
    config: ConfigOption = Path("configs/agent.toml"),
) -> None:
    """End a device's binding (kept in the registry, closed, for the record)."""
    settings, registry = _load(config)
    try:
        binding = registry.unbind(device)
        assert binding.until_ns is not None  # noqa: S101 - unbind closes it
        if binding.pending:
            # An interrupted `pair add`: never confirmed, so no bound event ever left.
            _out.print(f"forgot {binding.log_name}: it was never confirmed")
            return
        event = BindingEvent(binding.device_token, binding.patient_token, "unbound",
                             binding.until_ns)  # fmt: skip
        _outbox(settings).put(event)
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    _out.print(f"unbound {binding.log_name} from patient {binding.patient_token[:8]}")


@app.command("test")
def check_command(
    device: Annotated[str, typer.Argument(help="Device token (8+ hex digits) or address/port.")],
    config: ConfigOption = Path("configs/agent.toml"),
    seconds: Annotated[float, typer.Option(help="How long to listen.")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Connect to a bound device and show its live readings for a few seconds."""
    settings, registry = _load(config)
    binding = registry.find(device)
    if binding is None:
        raise _fail(EdgeAgentError(f"no active binding for {device!r}; see `edge-agent pair list`"))
    logging.getLogger("edge_agent").setLevel(logging.ERROR)

    async def run() -> list[Reading]:
        async with open_hardware(settings) as (hardware, _ward):
            return await listen(binding, hardware, seconds=seconds)

    with _err.status(f"listening to {binding.log_name} for {seconds:g} s ...", spinner="dots"):
        readings = run_command(run())
    rows = [_reading_row(reading) for reading in readings]
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        table = Table(title=f"{binding.log_name}: {len(rows)} readings in {seconds:g} s")
        for column in ("metric", "value", "unit", "quality"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                str(row["metric"]), f"{row['value']:g}", str(row["unit"]), str(row["quality"])
            )
        _out.print(table)
    if not rows:
        raise typer.Exit(code=1)

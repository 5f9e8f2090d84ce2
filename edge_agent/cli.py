"""`edge-agent`: the gateway's command line (run the agent, and tools for field engineers)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edge_agent.binding_outbox import BindingOutbox
from edge_agent.cli_pair import app as pair_app
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.detect import DetectionStage
from edge_agent.devices import decode as decode_payload
from edge_agent.devices import resolve_characteristic
from edge_agent.devices import to_json_dict as gatt_json
from edge_agent.enroll import enroll as run_enrolment
from edge_agent.enroll import prompt_password, read_password_input, store_password
from edge_agent.errors import EdgeAgentError, run_command
from edge_agent.filters import FilterError, load_presets, warm_up
from edge_agent.hardware import open_hardware
from edge_agent.journal import IntakeJournal
from edge_agent.pairing_watch import PairingWatcher
from edge_agent.pipeline import AgentPipeline, PipelineStats
from edge_agent.protocol.logs import LOG_FORMATS, configure_logging
from edge_agent.protocol.settings import write_secret_file
from edge_agent.publisher import Publisher
from edge_agent.registry import REGISTRY_FILE
from edge_agent.replay import alert_row
from edge_agent.replay import replay as run_replay
from edge_agent.rotation import RotationRefused, apply_rotation
from edge_agent.sealer import Sealer, SequenceCounter
from edge_agent.sources import Source
from edge_agent.sources.serial import SerialKind, SerialSettings, SerialSource
from edge_agent.spool import Spool
from edge_agent.status import STATUS_FILE, StatusError, read_status

_LOGGER = logging.getLogger(__name__)
BASELINES = "baselines.json"
app = typer.Typer(
    help="bedside-twin edge agent: devices in, sealed frames out.", no_args_is_help=True
)
_err = Console(stderr=True)
_out = Console()

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Agent TOML file (see configs/agent.toml).")
]
LogFormat = Annotated[str, typer.Option("--log-format", help="text or json (for journald).")]
LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


config_app = typer.Typer(help="Check the agent's configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(pair_app, name="pair")


@app.callback()
def _main() -> None:
    """bedside-twin edge agent."""


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=code)


async def _run_agent(config: AgentConfig) -> PipelineStats:
    master_secret = config.master_secret()
    sources: list[Source] = [
        SerialSource(
            device.label,
            device.port,
            SerialKind(device.kind),
            device_token=device.device_token,
            patient_token=device.patient_token,
            settings=SerialSettings(baudrate=device.baudrate),
        )
        for device in config.serial
    ]
    async with open_hardware(config) as (hardware, ward):
        quiesce: Callable[[], Awaitable[None]] | None = None
        if ward is not None:
            sources.extend(ward.sources())
            quiesce = ward.quiesce
        pairings = PairingWatcher(config.gateway.state_dir / REGISTRY_FILE, master_secret, hardware)
        sources.extend(pairings.initial_sources())
        if not sources:
            # A new gateway runs before its first pairing: it delivers any pending binding
            # events and takes devices as they are paired (pairing_watch.py).
            _LOGGER.warning(
                "%s: no devices yet; they are taken as `edge-agent pair add` binds them",
                config.source_file,
            )
        return await _run_pipeline(config, master_secret, sources, quiesce, pairings)


async def _run_pipeline(
    config: AgentConfig,
    master_secret: bytes,
    sources: list[Source],
    quiesce: Callable[[], Awaitable[None]] | None,
    pairings: PairingWatcher | None = None,
) -> PipelineStats:
    counter = SequenceCounter(config.gateway.state_dir / f"seq-{config.gateway.gateway_id}.json")
    sealer = Sealer(master_secret, config.gateway.gateway_id, counter)
    _LOGGER.info(
        "agent %s starting: %d sources, key epoch %d",
        config.gateway.gateway_id,
        len(sources),
        sealer.epoch,
    )
    stop = asyncio.Event()
    stopping: list[asyncio.Task[None]] = []

    async def quiesce_then_stop() -> None:
        # Simulated devices stop first, so everything they delivered is read before the
        # sources stop (the ledger then matches the store exactly).
        try:
            if quiesce is not None:
                await quiesce()
        except Exception:
            # A stop must never be lost: the agent stops, only the ledger may be short.
            _LOGGER.exception("simulated devices did not quiesce; stopping anyway")
        finally:
            stop.set()

    def on_signal() -> None:
        if not stopping:
            stopping.append(loop.create_task(quiesce_then_stop(), name="agent.stop"))

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    detection = None
    if config.filters.enabled:
        try:
            presets = load_presets(config.filters.presets_file)
        except FilterError as exc:
            raise EdgeAgentError(str(exc)) from exc
        # Loads the kernels' ahead-of-time build (building it once per version), else numba's JIT.
        await asyncio.to_thread(functools.partial(warm_up, ahead_of_time=True))
        detection = DetectionStage(presets)
        await asyncio.to_thread(detection.load_baselines, config.gateway.state_dir / BASELINES)
    else:
        _LOGGER.warning("filter bank disabled by [filters] enabled = false: no bedside alerts")
    spool = Spool(
        config.gateway.state_dir / "spool.db",
        config.spool.max_bytes,
        config.spool.commit_interval_s,
    )
    journal, recovered = IntakeJournal.open(
        config.gateway.state_dir / "journal",
        master_secret,
        config.gateway.gateway_id,
        spool.committed_journal_seq,
    )

    def on_command(full_topic: str, payload: bytes) -> None:
        # A callback of the broker link: it must not raise. A refused or failed rotation
        # leaves the sealer in its epoch, which the sink accepts for the grace.
        try:
            apply_rotation(sealer, master_secret, config.gateway.gateway_id, full_topic, payload)
        except RotationRefused as exc:
            _LOGGER.warning("%s", exc)
        except (EdgeAgentError, OSError):
            _LOGGER.exception("key rotation failed, still sealing under epoch %d", sealer.epoch)

    try:
        async with Publisher(config.broker, config.gateway.gateway_id, on_command) as publisher:
            pipeline = AgentPipeline(
                settings=config.pipeline,
                spool_settings=config.spool,
                spool=spool,
                gateway_id=config.gateway.gateway_id,
                topic_prefix=config.broker.topic_prefix,
                sealer=sealer,
                publisher=publisher,
                sources=sources,
                detection=detection,
                baselines_file=config.gateway.state_dir / BASELINES,
                journal=journal,
                recovered=recovered,
                status_file=config.gateway.state_dir / STATUS_FILE,
                binding_outbox=BindingOutbox(config.gateway.state_dir, master_secret),
                pairings=pairings,
            )
            return await pipeline.run(stop)
    finally:
        spool.close()


@app.command()
def run(
    config: ConfigOption = Path("configs/agent.toml"),
    log_format: LogFormat = "text",
    log_level: LogLevel = "info",
) -> None:
    """Run the agent until SIGTERM/SIGINT, then drain every reading to the broker and exit."""
    if log_format not in LOG_FORMATS:
        raise _fail(ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}"))
    configure_logging(log_level, log_format)
    try:
        settings = load_agent_config(config)
        stats = run_command(_run_agent(settings))
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    if stats.frames_left_spooled:
        raise typer.Exit(code=1)


@app.command()
def enroll(
    token: Annotated[str, typer.Argument(help="The code `cloud-sink gateways add` printed.")],
    config: ConfigOption = Path("configs/agent.toml"),
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the sink's answer.")
    ] = 120.0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing gateway secret.")
    ] = False,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--broker-password-file",
            help="Read the broker password from this file instead of asking for it.",
        ),
    ] = None,
    no_password: Annotated[
        bool,
        typer.Option("--no-broker-password", help="The broker takes no password (a lab broker)."),
    ] = False,
) -> None:
    """Enrol this gateway: agree its master secret with the sink (docs/enrolment.md).

    Asks for the broker password `cloud-sink gateways add` printed (hidden input) unless
    --broker-password-file names a file holding it. The secret is written to [gateway]
    secret_file and the password to [mqtt] password_file, both mode 0600, never shown.
    """
    try:
        settings = load_agent_config(config)
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    secret_file = settings.gateway.secret_file
    if secret_file.exists() and not force:
        raise _fail(
            EdgeAgentError(
                f"{secret_file} exists: this gateway is enrolled already (--force replaces the "
                "secret; the sink must then hold the new one too)"
            )
        )
    if password_file is not None and no_password:
        raise _fail(EdgeAgentError("give --broker-password-file or --no-broker-password, not both"))
    configure_logging("warning", "text")
    try:
        password: str | None = None
        if password_file is not None:
            password = read_password_input(password_file)
        elif not no_password:
            password = prompt_password(settings.gateway.gateway_id)
        broker = dataclasses.replace(settings.broker, password=password)
        master, epoch = asyncio.run(
            run_enrolment(broker, settings.gateway.gateway_id, token, timeout_s)
        )
        write_secret_file(secret_file, master)
        stored = ""
        if password is not None and broker.password_file is not None:
            store_password(broker.password_file, password)
            stored = f"; broker password in {broker.password_file}"
    except EdgeAgentError as exc:
        raise _fail(exc, code=1) from None
    _out.print(
        f"enrolled gateway {settings.gateway.gateway_id} (sink key epoch {epoch}); secret "
        f"written to {secret_file}{stored} (mode 0600)"
    )


@app.command()
def status(
    config: ConfigOption = Path("configs/agent.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What the running agent is doing: devices, alerts, spool, broker link and counters."""
    try:
        settings = load_agent_config(config)
        document = read_status(settings.gateway.state_dir / STATUS_FILE)
    except StatusError as exc:
        _err.print(f"[bold red]{exc}[/]")
        raise typer.Exit(code=1) from None
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(document))
        return
    spool, broker = document["spool"], document["broker"]
    _out.print(
        f"agent {document['gateway']} {document['state']} for {document['uptime_s']:.0f} s; "
        f"broker {'connected' if broker['connected'] else 'NOT connected'}, last PUBACK "
        f"{_age(broker['last_puback_age_s'])} ago, publish lag {_age(broker['publish_lag_s'])}; "
        f"spool {spool['frames']} frames / {spool['bytes']} bytes, oldest unsent "
        f"{_age(spool['oldest_unsent_age_s'])}"
    )
    table = Table(title="devices")
    for column in ("device", "patient", "kind", "link", "last reading", "age"):
        table.add_column(column)
    for row in document["devices"]:
        last = "-" if row["last_metric"] is None else f"{row['last_metric']} {row['last_value']:g}"
        table.add_row(
            row["device"][:8],
            row["patient"][:8],
            row["kind"],
            row["link"],
            last,
            _age(row["last_reading_age_s"]),
        )
    _out.print(table)
    for alert in document["alerts_open"]:
        _out.print(
            f"[bold]alert open[/]: {alert['kind']} (patient {alert['patient'][:8]}, "
            f"device {alert['device'][:8]})"
        )
    _out.print(" ".join(f"{key}={value}" for key, value in document["counters"].items()))


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:g} s"


@app.command()
def decode(
    characteristic: Annotated[
        str, typer.Argument(help="16-bit UUID in hex (2a37) or a name (heart_rate).")
    ],
    payload_hex: Annotated[str, typer.Argument(metavar="HEX", help="The payload bytes in hex.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decode one GATT payload the way the agent does, for a field engineer."""
    try:
        uuid16 = resolve_characteristic(characteristic)
        payload = bytes.fromhex(payload_hex.replace(" ", "").replace(":", ""))
        decoded = decode_payload(uuid16, payload)
    except ValueError:
        typer.echo(f"error: {payload_hex!r} is not a hex string", err=True)
        raise typer.Exit(code=2) from None
    except EdgeAgentError as exc:  # DeviceDecodeError, UnknownCharacteristicError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    document = gatt_json(decoded)
    if as_json:
        typer.echo(json.dumps(document))
        return
    table = Table(title=f"0x{uuid16:04X} {type(decoded).__name__}")
    table.add_column("field")
    table.add_column("value")
    for key, value in document.items():
        table.add_row(key, "-" if value is None else str(value))
    _out.print(table)


@app.command()
def replay(
    recording: Annotated[
        Path, typer.Argument(help="CSV: time, patient, metric, value[, quality].")
    ],
    config: ConfigOption = Path("configs/agent.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per alert.")] = False,
) -> None:
    """Run a recorded session through the agent's filter bank and alerts (for tuning presets)."""
    configure_logging("error", "text")
    try:
        settings = load_agent_config(config)
        result = run_replay(recording, load_presets(settings.filters.presets_file))
    except (EdgeAgentError, FilterError) as exc:
        raise _fail(exc) from None
    for problem in result.problems:
        typer.echo(f"{recording}:{problem.line}: skipped: {problem.reason}", err=True)
    rows = [alert_row(event, patient) for event, patient in result.alerts]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        typer.echo(json.dumps({"summary": result.summary()}))
        return
    table = Table(title=f"alerts replayed from {recording.name}")
    for column in ("time (UTC)", "patient", "metric", "kind", "severity", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(str(row[key]) for key in ("time", "patient", "metric", "kind", "severity", "state"))
        )
    _out.print(table)
    _out.print(result.summary())


@config_app.command("check")
def config_check(
    config: ConfigOption = Path("configs/agent.toml"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the effective config as JSON.")
    ] = False,
) -> None:
    """Validate every key (errors read `file:line: key: reason`) and print the effective config.

    Also checks the files the config points at: the master secret (hex, mode 0600) and the
    filter presets. Secret values are never printed.
    """
    try:
        settings = load_agent_config(config)
        settings.master_secret()
        if settings.filters.enabled:
            load_presets(settings.filters.presets_file)
    except (EdgeAgentError, FilterError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    effective = {
        "config": dataclasses.asdict(settings),
        "checked": {"gateway.secret_file": "32 bytes, mode 0600 (the value is never shown)"},
    }
    if as_json:
        typer.echo(json.dumps(effective, default=str))  # paths print as text
        return
    _out.print_json(data=effective, default=str)
    _out.print(f"[green]{config}: valid[/]")


def main() -> None:
    """Console-script entry point."""
    app()

"""`cloud-sink`: run the sink and query patient twins."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud_sink.config import SinkConfig, load_sink_config
from cloud_sink.consumer import Inbound, MqttConsumer
from cloud_sink.errors import CloudSinkError, DatabaseUnavailable
from cloud_sink.influx import InfluxV1
from cloud_sink.keyring import Keyring
from cloud_sink.news2 import News2InputError, News2Inputs, parse_oxygen, score
from cloud_sink.news2 import to_json_dict as news2_json
from cloud_sink.pipeline import SinkPipeline, SinkStats
from cloud_sink.twin import iso_utc, read_twin, twin_json
from edge_agent.protocol.logs import LOG_FORMATS, configure_logging

_LOGGER = logging.getLogger(__name__)
app = typer.Typer(
    help="bedside-twin cloud sink: sealed frames in, patient twins out.", no_args_is_help=True
)
twin_app = typer.Typer(help="Query patient twins.", no_args_is_help=True)
app.add_typer(twin_app, name="twin")
_out = Console()
_err = Console(stderr=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Sink TOML file (see configs/sink.toml).")
]


@app.callback()
def _main() -> None:
    """bedside-twin cloud sink."""


def _fail(exc: Exception) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _influx(config: SinkConfig) -> InfluxV1:
    db = config.influxdb
    return InfluxV1(db.url, db.database, db.timeout_s, db.username, db.password)


async def _wait_for_database(influx: InfluxV1) -> None:
    delay_s = 0.5
    while True:
        try:
            await asyncio.to_thread(influx.create_database)
        except DatabaseUnavailable as exc:
            _LOGGER.warning(
                "InfluxDB not reachable yet (%s); retrying in %.1f s", exc.reason, delay_s
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)
            continue
        return


async def _run_sink(config: SinkConfig, ready_file: Path | None) -> SinkStats:
    influx = _influx(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await _wait_for_database(influx)
    queue: asyncio.Queue[Inbound] = asyncio.Queue(config.mqtt.receive_maximum)
    consumer = MqttConsumer(config.mqtt, loop, queue)
    pipeline = SinkPipeline(
        consumer=consumer,
        queue=queue,
        keyring=Keyring(config.keyring_dir),
        influx=influx,
        writer=config.writer,
        topic_prefix=config.mqtt.topic_prefix,
    )
    consumer.start()
    try:
        await consumer.subscribed.wait()
        _LOGGER.info("subscribed to %s", consumer.filter)
        if ready_file is not None:
            await asyncio.to_thread(ready_file.write_text, "subscribed\n", encoding="utf-8")
        stats = await pipeline.run(stop)
    finally:
        consumer.stop()
        influx.close()
    _LOGGER.info(
        "sink stopped: %d messages, %d vitals written, rejected %s",
        stats.messages_acked,
        stats.vitals_written,
        dict(stats.rejected) or "none",
    )
    return stats


@app.command()
def run(
    config: ConfigOption = Path("configs/sink.toml"),
    ready_file: Annotated[
        Path | None, typer.Option(help="Touched once the subscription is in place.")
    ] = None,
    log_format: Annotated[str, typer.Option(help="text or json.")] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Consume every gateway's uplink and write it to InfluxDB until SIGTERM/SIGINT."""
    if log_format not in LOG_FORMATS:
        raise _fail(ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}"))
    configure_logging(log_level, log_format)
    try:
        asyncio.run(_run_sink(load_sink_config(config), ready_file))
    except CloudSinkError as exc:
        raise _fail(exc) from None


@twin_app.command("show")
def twin_show(
    patient: Annotated[str, typer.Argument(help="The patient's pseudonymous token.")],
    config: ConfigOption = Path("configs/sink.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a patient's twin: the newest value, time and source device of every vital."""
    try:
        settings = load_sink_config(config)
        influx = _influx(settings)
        twin = read_twin(influx, patient)
    except CloudSinkError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(twin_json(twin)))
        return
    table = Table(title=f"patient {twin.patient} ({twin.readings} readings)")
    for column in ("vital", "value", "unit", "time (UTC)", "device", "readings"):
        table.add_column(column)
    for vital in twin.vitals:
        table.add_row(
            vital.title,
            f"{vital.value:g}",
            vital.unit,
            iso_utc(vital.ts_ns),
            vital.device[:8] + "…",
            str(vital.readings),
        )
    _out.print(table)


@app.command()
def news2(
    rr: Annotated[float | None, typer.Option("--rr", help="Respiration rate, /min.")] = None,
    spo2: Annotated[float | None, typer.Option("--spo2", help="SpO2, %.")] = None,
    scale: Annotated[int, typer.Option("--scale", help="SpO2 scale: 1, or 2 (hypercapnic).")] = 1,
    oxygen: Annotated[str | None, typer.Option("--oxygen", help="air or o2.")] = None,
    sbp: Annotated[float | None, typer.Option("--sbp", help="Systolic BP, mmHg.")] = None,
    hr: Annotated[float | None, typer.Option("--hr", help="Pulse, /min.")] = None,
    acvpu: Annotated[str | None, typer.Option("--acvpu", help="A, C, V, P or U.")] = None,
    temp: Annotated[float | None, typer.Option("--temp", help="Temperature, Cel.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compute one NEWS2 score (RCP 2017); a parameter left out makes it incomplete, never 0."""
    try:
        inputs = News2Inputs(
            rr_per_min=rr,
            spo2_pct=spo2,
            spo2_scale=scale,
            on_oxygen=None if oxygen is None else parse_oxygen(oxygen),
            sbp_mmhg=sbp,
            hr_per_min=hr,
            acvpu=acvpu,
            temp_c=temp,
        )
        result = score(inputs)
    except News2InputError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(news2_json(result)))
        return
    table = Table(
        title=f"NEWS2 {result.total} ({result.band}{'' if result.complete else ', incomplete'})"
    )
    table.add_column("parameter")
    table.add_column("score")
    for name, points in result.subscores.items():
        table.add_row(name, "missing" if points is None else str(points))
    _out.print(table)
    _out.print(result.response)


def main() -> None:
    """Console-script entry point."""
    app()

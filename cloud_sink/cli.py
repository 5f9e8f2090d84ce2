"""`cloud-sink`: run the sink and query patient twins."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud_sink.cli_gateways import app as gateways_app
from cloud_sink.cli_report import report
from cloud_sink.clinical import (
    ClinicalTwin,
    clinical_json,
    clinical_twin,
    record_observation,
    ward,
    ward_json,
    ward_table,
)
from cloud_sink.config import SinkConfig, load_sink_config, open_database
from cloud_sink.consumer import MqttConsumer
from cloud_sink.errors import CloudSinkError, DatabaseUnavailable
from cloud_sink.fhir import ExportError, build_bundle, bundle_counts, read_export, write_bundle
from cloud_sink.influx import InfluxV1
from cloud_sink.keyring import Keyring
from cloud_sink.news2 import News2InputError, News2Inputs, parse_oxygen, score
from cloud_sink.news2 import to_json_dict as news2_json
from cloud_sink.pipeline import SinkPipeline, SinkStats
from cloud_sink.profiles import (
    PatientProfile,
    ProfileChanges,
    admit,
    discharge,
    parse_changes,
    profile_summary,
    update,
)
from cloud_sink.replay import ReplayGuard
from cloud_sink.since import since_ns
from cloud_sink.twin import check_token, iso_utc
from edge_agent.protocol.logs import LOG_FORMATS, configure_logging

_LOGGER = logging.getLogger(__name__)
app = typer.Typer(
    help="bedside-twin cloud sink: sealed frames in, patient twins out.", no_args_is_help=True
)
twin_app = typer.Typer(help="Query patient twins.", no_args_is_help=True)
app.add_typer(twin_app, name="twin")
app.add_typer(gateways_app, name="gateways")
patients_app = typer.Typer(help="Patient profiles: admit, update, discharge.", no_args_is_help=True)
app.add_typer(patients_app, name="patients")
export_app = typer.Typer(help="Export a patient's twin.", no_args_is_help=True)
app.add_typer(export_app, name="export")
app.command("report")(report)
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


async def _until(stop: asyncio.Event, waiting: Awaitable[object], timeout_s: float | None) -> bool:
    """Await `waiting` unless `stop` is set first or the time runs out; True if it finished."""
    task = asyncio.ensure_future(waiting)
    stopped = asyncio.ensure_future(stop.wait())
    done, pending = await asyncio.wait(
        {task, stopped}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
    )
    for future in pending:
        future.cancel()
    return task in done


async def _wait_for_database(influx: InfluxV1, stop: asyncio.Event) -> bool:
    """Create the database once InfluxDB answers; False if told to stop first."""
    delay_s = 0.5
    while not stop.is_set():
        try:
            await asyncio.to_thread(influx.create_database)
        except DatabaseUnavailable as exc:
            _LOGGER.warning(
                "InfluxDB not reachable yet (%s); retrying in %.1f s", exc.reason, delay_s
            )
            await _until(stop, asyncio.sleep(delay_s), None)
            delay_s = min(delay_s * 2, 10.0)
            continue
        return True
    return False


async def _run_sink(config: SinkConfig, ready_file: Path | None) -> SinkStats:
    influx = config.influxdb.client()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if not await _wait_for_database(influx, stop):
        influx.close()
        return SinkStats()
    consumer = MqttConsumer(config.mqtt, loop)
    pipeline = SinkPipeline(
        consumer=consumer,
        keyring=Keyring(config.keyring_dir),
        influx=influx,
        writer=config.writer,
        topic_prefix=config.mqtt.topic_prefix,
        replay=ReplayGuard(config.state_dir / "replay.json"),
        dead_letter_file=config.state_dir / "dead-letter.jsonl",
    )
    consumer.start()
    try:
        if not await _until(stop, consumer.subscribed.wait(), None):
            return SinkStats()
        _LOGGER.info("subscribed to %s", consumer.filter)
        if ready_file is not None:
            await asyncio.to_thread(ready_file.write_text, "subscribed\n", encoding="utf-8")
        stats = await pipeline.run(stop)
    finally:
        consumer.stop()
        influx.close()
    _LOGGER.info(
        "sink stopped: %d messages, %d vitals written, %d replays dropped, rejected %s",
        stats.messages_acked,
        stats.vitals_written,
        stats.replays_dropped,
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
    stale_factor: Annotated[
        float, typer.Option(help="A metric is stale after this many expected intervals.")
    ] = 5.0,
) -> None:
    """A patient's twin: newest vitals with freshness and trend, NEWS2, observations, alerts."""
    try:
        with open_database(config) as influx:
            view = clinical_twin(influx, patient, time.time_ns(), stale_factor)
    except CloudSinkError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(clinical_json(view)))
        return
    twin = view.twin
    table = Table(title=f"patient {twin.patient} ({twin.readings} readings)")
    for column in ("vital", "value", "unit", "time (UTC)", "age", "trend /h", "device"):
        table.add_column(column)
    for vital in twin.vitals:
        fresh = view.freshness[vital.metric]
        trend = view.trends.get(vital.metric)
        table.add_row(
            vital.title,
            f"{vital.value:g}",
            vital.unit,
            iso_utc(vital.ts_ns),
            f"{fresh.age_s:.0f} s" + (" [red]stale[/]" if fresh.stale else ""),
            "-" if trend is None else f"{trend:+.1f}",
            vital.device[:8] + "…",
        )
    _out.print(table)
    n = view.news2
    missing = [name for name, points in n.subscores.items() if points is None]
    _out.print(
        f"NEWS2 {n.total} ({n.band})"
        + (f", incomplete: missing {', '.join(missing)}" if missing else "")
    )
    for alert in view.alerts:
        _out.print(
            f"alert {alert.kind} ({alert.severity}) {alert.state} at {iso_utc(alert.since_ns)}"
        )
    _print_details(view)


def _print_details(view: ClinicalTwin) -> None:
    """Profile, devices and environment of `twin show` (text form)."""
    profile = "none recorded" if view.profile is None else profile_summary(view.profile)
    _out.print(f"profile: {profile}", markup=False, highlight=False)
    if view.devices:
        table = Table(title="devices")
        for column in ("device", "kind", "last reading", "last hour", "interval", "battery",
                       "errors /100 h"):  # fmt: skip
            table.add_column(column)
        for d in view.devices:
            table.add_row(
                d.device[:8] + "…",
                d.kind or "-",
                f"{(view.now_ns - d.last_ts_ns) / 1e9:.0f} s ago",
                str(d.readings_last_hour),
                "-" if d.interval_s is None else f"{d.interval_s:.2f} s",
                "-" if d.battery_pct is None else f"{d.battery_pct:.0f} %",
                "-" if d.errors_per_100h is None else f"{d.errors_per_100h:.1f}",
            )
        _out.print(table)
    for metric, label in (("room_temp", "room temperature"), ("humidity", "humidity")):
        reading = view.environment.get(metric)
        if reading is not None:
            age_s = (view.now_ns - reading.ts_ns) / 1e9
            _out.print(
                f"{label}: {reading.value:g} {reading.unit} ({age_s:.0f} s ago, {reading.source})"
            )


@twin_app.command("list")
def twin_list(
    config: ConfigOption = Path("configs/sink.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
    stale_factor: Annotated[
        float, typer.Option(help="A metric is stale after this many expected intervals.")
    ] = 5.0,
) -> None:
    """The ward: every patient ranked by NEWS2 band, then score, then staleness."""
    try:
        with open_database(config) as influx:
            rows = ward(influx, time.time_ns(), stale_factor)
    except CloudSinkError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(ward_json(rows)))
        return
    _out.print(ward_table(rows))


@twin_app.command("observe")
def twin_observe(
    patient: Annotated[str, typer.Argument(help="The patient's pseudonymous token.")],
    acvpu: Annotated[str | None, typer.Option("--acvpu", help="A, C, V, P or U.")] = None,
    oxygen: Annotated[str | None, typer.Option("--oxygen", help="air or o2.")] = None,
    scale: Annotated[int | None, typer.Option("--scale", help="SpO2 scale 1 or 2.")] = None,
    config: ConfigOption = Path("configs/sink.toml"),
) -> None:
    """Record a nurse's observations (consciousness, oxygen, SpO2 scale) for the twin's NEWS2."""
    entries = {
        "acvpu": acvpu,
        "oxygen": oxygen,
        "spo2_scale": None if scale is None else str(scale),
    }
    try:
        # Validate through the NEWS2 rules before anything is stored.
        News2Inputs(
            acvpu=acvpu,
            on_oxygen=None if oxygen is None else parse_oxygen(oxygen),
            spo2_scale=1 if scale is None else scale,
        )
        if all(value is None for value in entries.values()):
            raise _fail(ValueError("give at least one of --acvpu, --oxygen, --scale"))
        now_ns = time.time_ns()
        with open_database(config) as influx:
            for kind, value in entries.items():
                if value is not None:
                    record_observation(
                        influx, patient, kind, value.upper() if kind == "acvpu" else value, now_ns
                    )
    except CloudSinkError as exc:
        raise _fail(exc) from None
    _out.print(
        f"recorded for {patient[:8]}…: " + ", ".join(f"{k}={v}" for k, v in entries.items() if v)
    )


PatientArgument = Annotated[str, typer.Argument(help="The patient's pseudonymous token.")]
AgeOption = Annotated[int | None, typer.Option("--age", help="Age in whole years.")]
SexOption = Annotated[str | None, typer.Option("--sex", help="female, male, other or unknown.")]
ConditionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--condition", help="A chronic condition; repeat for several (replaces the list)."
    ),
]
DiagnosisOption = Annotated[str | None, typer.Option("--diagnosis", help="Working diagnosis.")]
TreatmentOption = Annotated[str | None, typer.Option("--treatment", help="Current treatment.")]
AppointmentOption = Annotated[
    str | None,
    typer.Option(
        "--next-appointment", help="ISO 8601 date (2025-03-14) or date-time with UTC offset."
    ),
]


def _changes(
    patient: str,
    age: int | None,
    sex: str | None,
    condition: list[str] | None,
    diagnosis: str | None,
    treatment: str | None,
    next_appointment: str | None,
) -> ProfileChanges:
    return parse_changes(
        check_token(patient),
        age_years=age,
        sex=sex,
        conditions=condition,
        diagnosis=diagnosis,
        treatment=treatment,
        next_appointment=next_appointment,
    )


def _report_profile(action: str, profile: PatientProfile) -> None:
    typer.echo(f"{action} {profile.patient[:8]}…: {profile_summary(profile)}")


ProfileOptions = tuple[int | None, str | None, list[str] | None, str | None, str | None, str | None]
"""The profile options of `patients admit|update`: age, sex, conditions, diagnosis, treatment,
next appointment."""


def _change_profile(
    apply: Callable[[InfluxV1, str, ProfileChanges, int], PatientProfile],
    verb: str,
    config: Path,
    patient: str,
    options: ProfileOptions,
) -> None:
    """admit and update: check the options before touching the database, apply, report."""
    try:
        changes = _changes(patient, *options)
        with open_database(config) as influx:
            profile = apply(influx, patient, changes, time.time_ns())
    except CloudSinkError as exc:
        raise _fail(exc) from None
    _report_profile(verb, profile)


@patients_app.command("admit")
def patients_admit(
    patient: PatientArgument,
    age: AgeOption = None,
    sex: SexOption = None,
    condition: ConditionOption = None,
    diagnosis: DiagnosisOption = None,
    treatment: TreatmentOption = None,
    next_appointment: AppointmentOption = None,
    config: ConfigOption = Path("configs/sink.toml"),
) -> None:
    """Admit a patient: a new profile (age, sex and conditions carry over from a past stay)."""
    options = (age, sex, condition, diagnosis, treatment, next_appointment)
    _change_profile(admit, "admitted", config, patient, options)


@patients_app.command("update")
def patients_update(
    patient: PatientArgument,
    age: AgeOption = None,
    sex: SexOption = None,
    condition: ConditionOption = None,
    diagnosis: DiagnosisOption = None,
    treatment: TreatmentOption = None,
    next_appointment: AppointmentOption = None,
    config: ConfigOption = Path("configs/sink.toml"),
) -> None:
    """Change the given profile fields; every other field keeps its latest value."""
    options = (age, sex, condition, diagnosis, treatment, next_appointment)
    _change_profile(update, "updated", config, patient, options)


@patients_app.command("discharge")
def patients_discharge(
    patient: PatientArgument,
    config: ConfigOption = Path("configs/sink.toml"),
) -> None:
    """Discharge an admitted patient (the profile is kept, marked discharged)."""
    try:
        check_token(patient)
        with open_database(config) as influx:
            profile = discharge(influx, patient, time.time_ns())
    except CloudSinkError as exc:
        raise _fail(exc) from None
    _report_profile("discharged", profile)


@export_app.command("fhir")
def export_fhir(
    patient: PatientArgument,
    out: Annotated[Path, typer.Option("--out", help="The JSON file to write the Bundle to.")],
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only readings from this ISO 8601 time on (with offset)."),
    ] = None,
    stale_factor: Annotated[
        float, typer.Option(help="A vital is stale for NEWS2 after this many expected intervals.")
    ] = 5.0,
    config: ConfigOption = Path("configs/sink.toml"),
) -> None:
    """Write a FHIR R4 Bundle (collection): Patient, Devices, vital-sign Observations, NEWS2."""
    try:
        start_ns = since_ns(since)
        check_token(patient)
        if not out.parent.is_dir():
            raise ExportError(patient, f"folder {out.parent} does not exist; create it first")
        with open_database(config) as influx:
            data = read_export(influx, patient, start_ns, stale_factor)
        bundle = build_bundle(data, time.time_ns())
        write_bundle(bundle, out, patient)
    except CloudSinkError as exc:
        raise _fail(exc) from None
    counts = ", ".join(f"{n} {kind}" for kind, n in bundle_counts(bundle).items())
    typer.echo(f"wrote {out}: {counts}")


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

"""`cloud-sink`: run the sink and query patient twins."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cloud_sink.access import Identity, Operation
from cloud_sink.audit import AuditLog, AuditPaths, DetailValue
from cloud_sink.baselines import BaselineSettings, BaselineSettingsError
from cloud_sink.cli_audit import access_app, audit_app
from cloud_sink.cli_gateways import app as gateways_app
from cloud_sink.cli_guard import Admitted, TokenFileOption, admit, failure_audited
from cloud_sink.cli_report import report
from cloud_sink.cli_security import app as security_app
from cloud_sink.clinical import (
    ClinicalTwin,
    Outlook,
    OutlookSettings,
    WardRow,
    clinical_json,
    clinical_twin,
    is_advisory,
    projection_summary,
    record_observation,
    ward,
    ward_json,
    ward_table,
)
from cloud_sink.config import SinkConfig, load_sink_config, open_database
from cloud_sink.consumer import MqttConsumer
from cloud_sink.errors import CloudSinkError, DatabaseUnavailable
from cloud_sink.fhir import (
    ExportError,
    HospitalReference,
    build_bundle,
    bundle_counts,
    read_export,
    write_bundle,
)
from cloud_sink.fhir_anonymous import anonymise
from cloud_sink.forecast import (
    DEFAULT_HORIZONS_MIN,
    DEFAULT_LEVEL,
    ForecastInputError,
    VitalForecast,
)
from cloud_sink.identity import IdentityError, IdentityRegistry
from cloud_sink.influx import InfluxV1
from cloud_sink.keyring import Keyring
from cloud_sink.news2 import News2InputError, News2Inputs, parse_oxygen, score
from cloud_sink.news2 import to_json_dict as news2_json
from cloud_sink.pipeline import SinkPipeline, SinkStats
from cloud_sink.profiles import (
    PatientProfile,
    ProfileChanges,
    discharge,
    parse_changes,
    profile_summary,
    update,
)
from cloud_sink.profiles import admit as admit_profile
from cloud_sink.replay import ReplayGuard
from cloud_sink.since import since_ns
from cloud_sink.twin import check_token, iso_utc, list_patients
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
app.add_typer(security_app, name="security")
app.add_typer(audit_app, name="audit")
app.add_typer(access_app, name="access")
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


def _visible_ward(
    influx: InfluxV1, identity: Identity, now_ns: int, stale_factor: float
) -> list[WardRow]:
    """The ward as `identity` may see it: a clinician's own patients, everyone for an admin."""
    return ward(influx, now_ns, stale_factor, patients=identity.visible(list_patients(influx)))


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
        identity=IdentityRegistry(
            config.identity_path, AuditLog(AuditPaths.in_dir(config.state_dir))
        ),
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


BaselineHoursOption = Annotated[
    float,
    typer.Option(
        "--baseline-hours", help="Personal baseline look-back in hours (the last 30 min excluded)."
    ),
]
HorizonOption = Annotated[
    list[float] | None,
    typer.Option(
        "--horizon-min", help="A forecast horizon in minutes; repeat for several (default 15, 30)."
    ),
]
ProjectionHoursOption = Annotated[
    float,
    typer.Option("--projection-hours", help="How far to look for a NEWS2 band change, hours."),
]
StaleFactorOption = Annotated[
    float, typer.Option(help="A metric is stale after this many expected intervals.")
]


def _outlook_settings(
    baseline_hours: float, horizons_min: list[float] | None, projection_hours: float
) -> OutlookSettings:
    """The outlook options, checked before any query; a bad one exits 2 naming the option."""
    try:
        baseline = BaselineSettings(lookback_s=baseline_hours * 3600.0)
    except BaselineSettingsError as exc:
        msg = f"--baseline-hours {baseline_hours:g}: {exc.reason} (the last 30 min are excluded)"
        raise _fail(ValueError(msg)) from None
    if not math.isfinite(projection_hours) or not 0.0 < projection_hours <= 168.0:
        msg = f"--projection-hours {projection_hours:g}: give hours above 0, at most 168"
        raise _fail(ValueError(msg))
    try:
        return OutlookSettings(
            baseline=baseline,
            horizons_min=tuple(horizons_min) if horizons_min else DEFAULT_HORIZONS_MIN,
            projection_horizon_min=max(1, round(projection_hours * 60.0)),
        )
    except ForecastInputError as exc:
        msg = f"--horizon-min {exc.value}: {exc.reason}"
        raise _fail(ValueError(msg)) from None


@twin_app.command("show")
def twin_show(
    patient: Annotated[str, typer.Argument(help="The patient's pseudonymous token.")],
    config: ConfigOption = Path("configs/sink.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    stale_factor: StaleFactorOption = 5.0,
    baseline_hours: BaselineHoursOption = 24.0,
    horizon_min: HorizonOption = None,
    projection_hours: ProjectionHoursOption = 4.0,
    token_file: TokenFileOption = None,
) -> None:
    """A patient's twin: newest vitals with freshness and trend, NEWS2, observations, alerts,
    personal baselines, advisories, forecasts and the time to a NEWS2 band change."""
    try:
        settings = _outlook_settings(baseline_hours, horizon_min, projection_hours)
        admitted = admit(config, token_file, "twin_read", check_token(patient))
        with open_database(admitted.settings) as influx:
            view = clinical_twin(influx, patient, time.time_ns(), stale_factor, outlook=settings)
    except CloudSinkError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(clinical_json(view)))
        return
    for item in _twin_renderables(view):
        _out.print(item)


def _twin_renderables(view: ClinicalTwin) -> list[RenderableType]:
    """`twin show` as text: vitals, NEWS2, alarms, the outlook, then the details."""
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
    items: list[RenderableType] = [table]
    n = view.news2
    missing = [name for name, points in n.subscores.items() if points is None]
    items.append(
        f"NEWS2 {n.total} ({n.band})"
        + (f", incomplete: missing {', '.join(missing)}" if missing else "")
    )
    items.extend(
        f"alert {a.kind} ({a.severity}) {a.state} at {iso_utc(a.since_ns)}"
        for a in view.alerts
        if not is_advisory(a)
    )
    if view.outlook is not None:
        items += _outlook_renderables(view, view.outlook)
    return items + _detail_renderables(view)


def _interval_cell(forecast: VitalForecast | None, index: int) -> str:
    if forecast is None:
        return "-"
    h = forecast.horizons[index]
    flag = " ?" if forecast.low_confidence else ""
    return f"{h.value:.1f} [{h.low:.1f}, {h.high:.1f}]{flag}"


def _outlook_renderables(view: ClinicalTwin, outlook: Outlook) -> list[RenderableType]:
    """Baseline, deviation and forecast per vital sign; the NEWS2 projection; advisories."""
    metrics = [v for v in view.twin.vitals if v.metric in outlook.forecast]
    horizons = next((f.horizons for f in outlook.forecast.values() if f is not None), ())
    level = next((f.level for f in outlook.forecast.values() if f is not None), DEFAULT_LEVEL)
    table = Table(title=f"outlook (forecast: value [{level:.0%} prediction interval])")
    for column in ("vital", "latest", "baseline median [Q1, Q3]", "vs baseline"):
        table.add_column(column)
    for h in horizons:
        table.add_column(f"+{h.minutes:g} min")
    for vital in metrics:
        b = outlook.baselines.get(vital.metric)
        f = outlook.forecast.get(vital.metric)
        if b is None:
            base, against = "-", "-"
        elif b.stats is None:
            base, against = f"too few (n={b.readings})", "-"
        else:
            base = f"{b.stats.median:.1f} [{b.stats.q1:.1f}, {b.stats.q3:.1f}] n={b.readings}"
            against = f"{b.deviation:+.1f} ({b.position})"
        cells = [_interval_cell(f, i) for i in range(len(horizons))]
        table.add_row(vital.title, f"{vital.value:.1f}", base, against, *cells)
    items: list[RenderableType] = [table]
    for vital in metrics:
        f = outlook.forecast.get(vital.metric)
        if f is not None and f.low_confidence:
            items.append(Text(f"? {vital.metric}: low confidence: {'; '.join(f.reasons)}"))
    items.append(Text(projection_summary(outlook.news2_projection)))
    for a in outlook.advisories:
        facts = [] if a.value is None else [f"value {a.value:g}"]
        if a.raised_ns is not None:
            facts.append(f"raised {iso_utc(a.raised_ns)}")
        if a.cleared_ns is not None:
            facts.append(f"cleared {iso_utc(a.cleared_ns)}")
        state = "open" if a.state == "raised" else a.state
        line = f"advisory ({state}): {a.metric or '?'} {a.direction} against the personal baseline"
        items.append(Text(line + (f" ({', '.join(facts)})" if facts else "")))
    return items


def _detail_renderables(view: ClinicalTwin) -> list[RenderableType]:
    """Profile, devices and environment of `twin show` (text form)."""
    profile = "none recorded" if view.profile is None else profile_summary(view.profile)
    items: list[RenderableType] = [Text(f"profile: {profile}")]
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
        items.append(table)
    for metric, label in (("room_temp", "room temperature"), ("humidity", "humidity")):
        reading = view.environment.get(metric)
        if reading is not None:
            age_s = (view.now_ns - reading.ts_ns) / 1e9
            items.append(
                f"{label}: {reading.value:g} {reading.unit} ({age_s:.0f} s ago, {reading.source})"
            )
    return items


@twin_app.command("list")
def twin_list(
    config: ConfigOption = Path("configs/sink.toml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False,
    stale_factor: StaleFactorOption = 5.0,
    token_file: TokenFileOption = None,
) -> None:
    """The ward: every patient ranked by NEWS2 band, then score, then staleness (a clinician
    sees the patients in their care only)."""
    try:
        admitted = admit(config, token_file, "twin_list")
        with open_database(admitted.settings) as influx:
            rows = _visible_ward(influx, admitted.identity, time.time_ns(), stale_factor)
    except CloudSinkError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(ward_json(rows)))
        return
    _out.print(ward_table(rows))


def _watch_frame(
    influx: InfluxV1, identity: Identity, patient: str | None, stale_factor: float
) -> list[RenderableType]:
    now_ns = time.time_ns()
    if patient is None:
        # Filtered at every refresh: a patient stored later shows up only if visible.
        rows = _visible_ward(influx, identity, now_ns, stale_factor)
        return [ward_table(rows, outlook=True)]
    return _twin_renderables(clinical_twin(influx, patient, now_ns, stale_factor))


def _watch(
    influx: InfluxV1,
    identity: Identity,
    patient: str | None,
    stale_factor: float,
    interval_s: float,
    iterations: int | None,
) -> None:
    """Refresh until `iterations` (or Ctrl-C). On a terminal the table is redrawn in place
    (rich.live); into a file or pipe every refresh is printed in turn, so a log keeps them all.
    A database outage after the first refresh keeps the last table up with a warning."""
    with contextlib.ExitStack() as stack:
        live = (
            stack.enter_context(Live(console=_out, auto_refresh=False))
            if _out.is_terminal
            else None
        )
        shown: list[RenderableType] = []
        for count in itertools.count(1):
            stamp = iso_utc(time.time_ns())
            try:
                shown = _watch_frame(influx, identity, patient, stale_factor)
                status = Text(f"refresh {count} at {stamp}")
            except DatabaseUnavailable as exc:
                if not shown:
                    raise
                status = Text(
                    f"refresh {count} at {stamp}: database unavailable ({exc.reason});"
                    " showing the previous refresh",
                    style="bold red",
                )
            until = "Ctrl-C stops" if iterations is None else f"stops after {iterations}"
            status.append(f"; every {interval_s:g} s, {until}")
            frame = Group(*shown, status)
            if live is None:
                _out.print(frame)
            else:
                live.update(frame, refresh=True)
            if iterations is not None and count >= iterations:
                return
            time.sleep(interval_s)


@twin_app.command("watch")
def twin_watch(
    config: ConfigOption = Path("configs/sink.toml"),
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes.")] = 5.0,
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", help="Stop after this many refreshes (default: Ctrl-C)."),
    ] = None,
    patient: Annotated[
        str | None, typer.Option("--patient", help="Watch this patient's twin, not the ward.")
    ] = None,
    stale_factor: StaleFactorOption = 5.0,
    token_file: TokenFileOption = None,
) -> None:
    """A live ward: `twin list` plus advisories, time to a band change and forecasts.

    Access is checked and audited once, when the watch starts (not at every refresh)."""
    if not math.isfinite(interval) or interval <= 0.0:
        raise _fail(ValueError(f"--interval {interval!r}: give a number of seconds above 0"))
    if iterations is not None and iterations < 1:
        raise _fail(ValueError(f"--iterations {iterations}: give 1 or more"))
    try:
        if patient is None:
            admitted = admit(config, token_file, "twin_list", detail={"watch": True})
        else:
            check_token(patient)
            admitted = admit(config, token_file, "twin_read", patient, detail={"watch": True})
        with open_database(admitted.settings) as influx:
            _watch(influx, admitted.identity, patient, stale_factor, interval, iterations)
    except KeyboardInterrupt:
        # Ctrl-C is how a watch normally ends; the last table stays on the screen.
        return
    except CloudSinkError as exc:
        raise _fail(exc) from None


@twin_app.command("observe")
def twin_observe(
    patient: Annotated[str, typer.Argument(help="The patient's pseudonymous token.")],
    acvpu: Annotated[str | None, typer.Option("--acvpu", help="A, C, V, P or U.")] = None,
    oxygen: Annotated[str | None, typer.Option("--oxygen", help="air or o2.")] = None,
    scale: Annotated[int | None, typer.Option("--scale", help="SpO2 scale 1 or 2.")] = None,
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
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
        kinds = ",".join(kind for kind, value in entries.items() if value is not None)
        admitted = admit(
            config, token_file, "twin_observe", check_token(patient), detail={"kinds": kinds}
        )
        now_ns = time.time_ns()
        with open_database(admitted.settings) as influx:
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
    token_file: Path | None,
) -> None:
    """admit and update: check the options before touching the database, apply, report."""
    try:
        changes = _changes(patient, *options)
        change = {"admitted": "admit", "updated": "update"}[verb]
        admitted = admit(config, token_file, "patient_profile", patient, detail={"change": change})
        with open_database(admitted.settings) as influx:
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
    token_file: TokenFileOption = None,
) -> None:
    """Admit a patient: a new profile (age, sex and conditions carry over from a past stay)."""
    options = (age, sex, condition, diagnosis, treatment, next_appointment)
    _change_profile(admit_profile, "admitted", config, patient, options, token_file)


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
    token_file: TokenFileOption = None,
) -> None:
    """Change the given profile fields; every other field keeps its latest value."""
    options = (age, sex, condition, diagnosis, treatment, next_appointment)
    _change_profile(update, "updated", config, patient, options, token_file)


@patients_app.command("discharge")
def patients_discharge(
    patient: PatientArgument,
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
) -> None:
    """Discharge an admitted patient (the profile is kept, marked discharged)."""
    try:
        check_token(patient)
        detail: dict[str, DetailValue] = {"change": "discharge"}
        admitted = admit(config, token_file, "patient_profile", patient, detail=detail)
        with open_database(admitted.settings) as influx:
            profile = discharge(influx, patient, time.time_ns())
    except CloudSinkError as exc:
        raise _fail(exc) from None
    _report_profile("discharged", profile)


def _hospital_reference(admitted: Admitted, patient: str) -> HospitalReference:
    """The patient's hospital reference, looked up (and audited) as the admitted identity."""
    registry = IdentityRegistry(admitted.settings.identity_path, admitted.audit)
    value = registry.resolve(patient, actor=admitted.identity.name, role=admitted.identity.role)
    if value is None:
        raise IdentityError(
            registry.path,
            f"no hospital reference for patient {patient[:8]}…: no binding event carrying one "
            "has reached the sink (was the device paired with `edge-agent pair add`?)",
        )
    return HospitalReference(admitted.settings.reference_system, value)


@patients_app.command("identify")
def patients_identify(
    patient: PatientArgument,
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show the hospital's reference behind a pseudonymous patient token (audited)."""
    try:
        check_token(patient)
        admitted = admit(config, token_file, "identity_lookup", patient)
        reference = _hospital_reference(admitted, patient)
    except CloudSinkError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(
            json.dumps(
                {"patient": patient, "system": reference.system, "reference": reference.value}
            )
        )
        return
    typer.echo(f"patient {patient[:8]}…: {reference.value} ({reference.system})")


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
    anonymised: Annotated[
        bool,
        typer.Option(
            "--anonymised",
            help="Fresh random ids for patient and devices, times shifted, no identifiers "
            "(the only export a researcher may have; docs/twin.md).",
        ),
    ] = False,
    identified: Annotated[
        bool,
        typer.Option(
            "--identified",
            help="Add the hospital's patient reference (from the identity registry, the lookup "
            "audited) to the Patient; clinicians of the patient and admins only.",
        ),
    ] = False,
    config: ConfigOption = Path("configs/sink.toml"),
    token_file: TokenFileOption = None,
) -> None:
    """Write a FHIR R4 Bundle (collection): Patient, Devices, vital-sign Observations, NEWS2."""
    if anonymised and identified:
        raise _fail(ValueError("--anonymised and --identified exclude each other"))
    operation: Operation = "export_anonymised" if anonymised else "export_identified"
    try:
        start_ns = since_ns(since)
        check_token(patient)
        if not out.parent.is_dir():
            raise ExportError(patient, f"folder {out.parent} does not exist; create it first")
        # The audit entry says anonymised (access.py); an identified one says so too.
        detail: dict[str, DetailValue] | None = {"identified": True} if identified else None
        admitted = admit(config, token_file, operation, patient, detail=detail)
        with failure_audited(admitted, operation, patient):
            reference = _hospital_reference(admitted, patient) if identified else None
            with open_database(admitted.settings) as influx:
                data = read_export(influx, patient, start_ns, stale_factor)
            generated_ns = time.time_ns()
            if anonymised:
                data, shift_ns = anonymise(data)
                bundle = build_bundle(data, generated_ns + shift_ns, anonymised=True)
            else:
                bundle = build_bundle(data, generated_ns, reference=reference)
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

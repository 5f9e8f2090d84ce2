"""Reads a patient's twin back from InfluxDB with InfluxQL: newest value of every vital."""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cloud_sink.errors import CloudSinkError
from cloud_sink.influx import InfluxV1, Series
from edge_agent.protocol import CatalogueError, by_name
from edge_agent.protocol.topics import GATEWAY_ID_RE

_TOKEN_RE: Final = re.compile(r"[0-9a-f]{32}")
NS: Final = 1_000_000_000
DEVICE_WINDOW_S: Final = 3600.0
"""`readings_last_hour` counts a device's readings in this window before now."""
GAP_SAMPLE_READINGS: Final = 2000
"""The data interval is taken over (at most) this many of a device's newest readings, and only
those within DEVICE_WINDOW_S of its newest one."""
ENVIRONMENT_METRICS: Final = ("room_temp", "humidity")
# DESIGN §4 `environment` measurement: gateway-level sensor fields, per catalogue metric.
ENVIRONMENT_FIELDS: Final = {"room_temp": "room_temp_c", "humidity": "humidity_pct"}


class UnknownPatient(CloudSinkError):
    """The argument is not a patient token, or InfluxDB holds nothing for it."""

    def __init__(self, patient: str, reason: str) -> None:
        super().__init__(f"patient {patient!r}: {reason}")
        self.patient = patient
        self.reason = reason


@dataclass(slots=True, frozen=True)
class VitalState:
    """The newest reading of one metric, and how many readings the twin holds for it."""

    metric: str
    title: str
    unit: str
    value: float
    ts_ns: int
    device: str
    readings: int


@dataclass(slots=True, frozen=True)
class TwinView:
    patient: str
    vitals: tuple[VitalState, ...]

    @property
    def readings(self) -> int:
        return sum(vital.readings for vital in self.vitals)


def check_token(patient: str) -> str:
    # Tokens are validated before they are spliced into InfluxQL: nothing else can get in.
    if not _TOKEN_RE.fullmatch(patient):
        raise UnknownPatient(patient, "not a patient token (32 lowercase hex characters)")
    return patient


def list_patients(influx: InfluxV1) -> list[str]:
    """Every patient token with at least one vital stored."""
    series = influx.query('SHOW TAG VALUES FROM "vital" WITH KEY = "patient"')
    return sorted(str(row[1]) for s in series for row in s.values)


def read_twin(influx: InfluxV1, patient: str) -> TwinView:
    """Newest value per metric (newest timestamp wins, whichever device sent it)."""
    token = check_token(patient)
    latest = influx.query(
        f'SELECT last("value") FROM "vital" WHERE "patient" = \'{token}\' '  # noqa: S608
        'GROUP BY "metric", "device"'
    )
    counts = influx.query(
        f'SELECT count("value") FROM "vital" WHERE "patient" = \'{token}\' '  # noqa: S608
        'GROUP BY "metric"'
    )
    if not latest:
        raise UnknownPatient(patient, "no vitals stored for this patient")
    count_by_metric = {s.tags["metric"]: int(s.values[0][1]) for s in counts if s.values}
    newest: dict[str, tuple[int, float, str]] = {}
    for series in latest:
        metric, device = series.tags["metric"], series.tags["device"]
        for ts_ns, value in series.values:
            if metric not in newest or ts_ns > newest[metric][0]:
                newest[metric] = (int(ts_ns), float(value), device)
    vitals = []
    for metric, (ts_ns, value, device) in sorted(newest.items()):
        try:
            entry = by_name(metric)
            title, unit = entry.title, entry.ucum
        except CatalogueError:
            title, unit = metric, ""
        vitals.append(
            VitalState(metric, title, unit, value, ts_ns, device, count_by_metric.get(metric, 0))
        )
    return TwinView(token, tuple(vitals))


def iso_utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def twin_json(twin: TwinView) -> dict[str, object]:
    """The `twin show --json` document."""
    return {
        "patient": twin.patient,
        "readings": twin.readings,
        "vitals": {
            vital.metric: {
                "value": vital.value,
                "unit": vital.unit,
                "time": iso_utc(vital.ts_ns),
                "ts_ns": vital.ts_ns,
                "device": vital.device,
                "readings": vital.readings,
            }
            for vital in twin.vitals
        },
    }


Identity = tuple[str, str, str, int]
"""A reading's identity (patient, metric, device, ts_ns), which is also its InfluxDB point key."""


def stored_vitals(influx: InfluxV1, patient: str | None = None) -> dict[Identity, float]:
    """Every stored vital keyed by identity (for reconciliation against a simulator's ledger)."""
    where = f" WHERE \"patient\" = '{check_token(patient)}'" if patient is not None else ""
    query = f'SELECT "value", "patient", "metric", "device" FROM "vital"{where}'  # noqa: S608
    series = influx.query(query)
    stored: dict[Identity, float] = {}
    for s in series:
        column = {name: i for i, name in enumerate(s.columns)}
        for row in s.values:
            identity = (
                str(row[column["patient"]]),
                str(row[column["metric"]]),
                str(row[column["device"]]),
                int(row[column["time"]]),
            )
            stored[identity] = float(row[column["value"]])
    return stored


def count_vitals(influx: InfluxV1) -> int:
    """How many vital points the database holds."""
    series = influx.query('SELECT count("value") FROM "vital"')
    return int(series[0].values[0][1]) if series else 0


def wait_for_vitals(influx: InfluxV1, expected: int, timeout_s: float) -> int:
    """Poll until at least `expected` vitals are stored or the time is up; returns the count."""
    deadline = time.monotonic() + timeout_s
    while (count := count_vitals(influx)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def _or(tag: str, values: Iterable[str]) -> str:
    """`("tag" = 'a' OR "tag" = 'b')` for values already validated (tokens, gateway ids)."""
    return "(" + " OR ".join(f"\"{tag}\" = '{value}'" for value in sorted(values)) + ")"


def _valid_tokens(values: Iterable[object]) -> set[str]:
    # Tag values come back from the database; only well-formed ones are spliced into InfluxQL.
    return {str(v) for v in values if isinstance(v, str) and _TOKEN_RE.fullmatch(v)}


@dataclass(slots=True, frozen=True)
class HealthRecord:
    """One `device_health` point (DESIGN §4) as far as the error rate and battery need it."""

    ts_ns: int
    errors_total: int | None
    battery_pct: float | None


@dataclass(slots=True, frozen=True)
class DeviceTags:
    """The kind and gateway a device's newest `device_health` record carries."""

    ts_ns: int
    kind: str | None
    gateway: str | None


@dataclass(slots=True, frozen=True)
class DeviceState:
    """One device the patient's readings came from, with its health."""

    device: str
    kind: str | None
    gateway: str | None
    last_ts_ns: int
    readings_last_hour: int
    interval_s: float | None
    battery_pct: float | None
    errors_per_100h: float | None


DELIVERY_JOIN_NS: Final = 2_000_000
"""Readings this close together are one delivery: well under the 20 ms of the fastest (50 Hz)
device, well over the gap between two notifications of one device's one measurement."""


def median_gap_s(stamps_ns: Iterable[int]) -> float | None:
    """Median gap between successive distinct timestamps, seconds; None with fewer than two.

    Readings stamped together (a cuff's systolic, diastolic and mean) count as one delivery, and
    so do readings stamped within DELIVERY_JOIN_NS of the delivery's first one: a room sensor's
    temperature and humidity are two GATT notifications stamped on receipt microseconds apart.
    """
    starts: list[int] = []
    for ts in sorted(set(stamps_ns)):
        if not starts or ts - starts[-1] > DELIVERY_JOIN_NS:
            starts.append(ts)
    if len(starts) < 2:
        return None
    return statistics.median(b - a for a, b in itertools.pairwise(starts)) / NS


def recent_interval_s(stamps_ns: Sequence[int]) -> float | None:
    """The median gap among readings of the hour up to the newest one.

    An implant receiver also forwards trend records stamped by the implant days ago; those say
    nothing about how often the device delivers now, so only the last hour counts.
    """
    if not stamps_ns:
        return None
    start_ns = max(stamps_ns) - int(DEVICE_WINDOW_S * NS)
    return median_gap_s(ts for ts in stamps_ns if ts >= start_ns)


def errors_per_100h(records: Sequence[HealthRecord], first_seen_ns: int) -> float | None:
    """Device errors per 100 hours of observation, from the gateway's `errors_total` counter.

    The counter counts from the agent's start, so a drop means a restart: the increase is summed
    piecewise (after a drop the new value counts in full). The observed span runs from the
    device's first reading (or first health record, if earlier) to its last health record; None
    without a counter or without a span.
    """
    counted = sorted((r for r in records if r.errors_total is not None), key=lambda r: r.ts_ns)
    if not counted:
        return None
    start_ns = min(first_seen_ns, counted[0].ts_ns)
    span_h = (counted[-1].ts_ns - start_ns) / NS / 3600.0
    if span_h <= 0.0:
        return None
    errors = 0
    previous = 0
    for record in counted:
        total = record.errors_total or 0
        errors += total - previous if total >= previous else total
        previous = total
    return errors / span_h * 100.0


def _series_by_tag(series: list[Series], tag: str) -> dict[str, Series]:
    return {s.tags[tag]: s for s in series if s.values and tag in s.tags}


def health_records(influx: InfluxV1, devices: Iterable[str]) -> dict[str, list[HealthRecord]]:
    """Every `device_health` record with a counter or battery of the given devices."""
    tokens = _valid_tokens(devices)
    if not tokens:
        return {}
    series = influx.query(
        'SELECT "errors_total", "battery_pct" FROM "device_health" '  # noqa: S608
        f'WHERE {_or("device", tokens)} GROUP BY "device"'
    )
    out: dict[str, list[HealthRecord]] = {}
    for s in series:
        column = {name: i for i, name in enumerate(s.columns)}
        for row in s.values:
            errors, battery = row[column["errors_total"]], row[column["battery_pct"]]
            out.setdefault(s.tags.get("device", ""), []).append(
                HealthRecord(
                    ts_ns=int(row[0]),
                    errors_total=None if errors is None else int(errors),
                    battery_pct=None if battery is None else float(battery),
                )
            )
    return out


def device_tags(influx: InfluxV1, devices: Iterable[str]) -> dict[str, DeviceTags]:
    """Kind and gateway of each device from its newest `device_health` record, where it has one."""
    tokens = _valid_tokens(devices)
    if not tokens:
        return {}
    # `link_up` is in every device_health point (cloud_sink.validate writes it unconditionally).
    series = influx.query(
        'SELECT last("link_up") FROM "device_health" '  # noqa: S608
        f'WHERE {_or("device", tokens)} GROUP BY "device", "kind", "gateway"'
    )
    out: dict[str, DeviceTags] = {}
    for s in series:
        device = s.tags.get("device", "")
        for row in s.values:
            tags = DeviceTags(
                int(row[0]), s.tags.get("kind") or None, s.tags.get("gateway") or None
            )
            if device not in out or tags.ts_ns > out[device].ts_ns:
                out[device] = tags
    return out


def device_kinds(influx: InfluxV1, devices: Iterable[str]) -> dict[str, str]:
    """The kind each device reported in its newest `device_health` record, where it has one."""
    return {d: t.kind for d, t in device_tags(influx, devices).items() if t.kind is not None}


def read_devices(influx: InfluxV1, patient: str, now_ns: int) -> tuple[DeviceState, ...]:
    """Every device the patient's readings came from: kind, last reading, rate, battery, errors."""
    token = check_token(patient)
    where = f"WHERE \"patient\" = '{token}'"
    last = _series_by_tag(
        influx.query(f'SELECT last("value") FROM "vital" {where} GROUP BY "device"'),  # noqa: S608
        "device",
    )
    if not last:
        return ()
    first = _series_by_tag(
        influx.query(f'SELECT first("value") FROM "vital" {where} GROUP BY "device"'),  # noqa: S608
        "device",
    )
    since_ns = now_ns - int(DEVICE_WINDOW_S * NS)
    recent = _series_by_tag(
        influx.query(
            f'SELECT count("value") FROM "vital" {where} AND time > {since_ns} '  # noqa: S608
            'GROUP BY "device"'
        ),
        "device",
    )
    newest = _series_by_tag(
        influx.query(
            f'SELECT "value" FROM "vital" {where} GROUP BY "device" '  # noqa: S608
            f"ORDER BY time DESC LIMIT {GAP_SAMPLE_READINGS}"
        ),
        "device",
    )
    battery = _series_by_tag(
        influx.query(
            f'SELECT last("value") FROM "vital" {where} AND "metric" = \'battery\' '  # noqa: S608
            'GROUP BY "device"'
        ),
        "device",
    )
    health = health_records(influx, last)
    tags = device_tags(influx, last)
    states = []
    for device, series in sorted(last.items()):
        records = sorted(health.get(device, []), key=lambda r: r.ts_ns)
        charged = [r.battery_pct for r in records if r.battery_pct is not None]
        battery_pct: float | None = charged[-1] if charged else None
        if device in battery:
            battery_pct = float(battery[device].values[0][1])
        device_tag = tags.get(device)
        first_ns = int(first[device].values[0][0]) if device in first else int(series.values[0][0])
        states.append(
            DeviceState(
                device=device,
                kind=None if device_tag is None else device_tag.kind,
                gateway=None if device_tag is None else device_tag.gateway,
                last_ts_ns=int(series.values[0][0]),
                readings_last_hour=int(recent[device].values[0][1]) if device in recent else 0,
                interval_s=recent_interval_s(
                    [int(row[0]) for row in newest[device].values] if device in newest else []
                ),
                battery_pct=battery_pct,
                errors_per_100h=errors_per_100h(records, first_ns),
            )
        )
    return tuple(states)


@dataclass(slots=True, frozen=True)
class EnvironmentReading:
    """The newest room temperature or humidity at the patient's bed or gateway."""

    metric: str
    value: float
    unit: str
    ts_ns: int
    source: str
    """`bed`: a sensor bound to this patient; `gateway`: a sensor on the same gateway."""
    device: str | None
    gateway: str | None


def newest_environment(candidates: Iterable[EnvironmentReading]) -> dict[str, EnvironmentReading]:
    """Per metric the newest candidate; at equal times the patient's own bed sensor wins."""
    best: dict[str, EnvironmentReading] = {}
    for c in candidates:
        held = best.get(c.metric)
        if held is None or (c.ts_ns, c.source == "bed") > (held.ts_ns, held.source == "bed"):
            best[c.metric] = c
    return best


def _environment_vitals(
    series: list[Series], source: str, gateway_of: dict[str, str]
) -> list[EnvironmentReading]:
    out = []
    for s in series:
        metric, device = s.tags.get("metric", ""), s.tags.get("device", "")
        for ts_ns, value in s.values:
            out.append(
                EnvironmentReading(
                    metric, float(value), by_name(metric).ucum, int(ts_ns), source, device,
                    gateway_of.get(device),
                )
            )  # fmt: skip
    return out


def read_environment(
    influx: InfluxV1, patient: str, devices: Sequence[DeviceState]
) -> dict[str, EnvironmentReading]:
    """Room temperature and humidity of the patient's bed or gateway, where a sensor reports them.

    Candidates: room sensors bound to the patient; sensors of any patient on the same gateway as
    the patient's devices (the gateway serves one room); the gateway's `environment` points.
    """
    token = check_token(patient)
    metrics = _or("metric", ENVIRONMENT_METRICS)
    gateway_of = {d.device: d.gateway for d in devices if d.gateway is not None}
    candidates = _environment_vitals(
        influx.query(
            f'SELECT last("value") FROM "vital" WHERE "patient" = \'{token}\' '  # noqa: S608
            f'AND {metrics} GROUP BY "metric", "device"'
        ),
        "bed",
        gateway_of,
    )
    gateways = {g for g in gateway_of.values() if GATEWAY_ID_RE.fullmatch(g)}
    if gateways:
        listed = influx.query(
            'SHOW TAG VALUES FROM "device_health" WITH KEY = "device" '
            f"WHERE {_or('gateway', gateways)}"
        )
        siblings = _valid_tokens(row[1] for s in listed for row in s.values)
        sibling_gateway = {
            d: t.gateway for d, t in device_tags(influx, siblings).items() if t.gateway is not None
        }
        if siblings:
            candidates += _environment_vitals(
                influx.query(
                    f'SELECT last("value") FROM "vital" WHERE {metrics} '  # noqa: S608
                    f'AND {_or("device", siblings)} GROUP BY "metric", "device"'
                ),
                "gateway",
                sibling_gateway,
            )
        for metric, field in ENVIRONMENT_FIELDS.items():
            for s in influx.query(
                f'SELECT last("{field}") FROM "environment" '  # noqa: S608
                f'WHERE {_or("gateway", gateways)} GROUP BY "gateway"'
            ):
                for ts_ns, value in s.values:
                    candidates.append(
                        EnvironmentReading(
                            metric, float(value), by_name(metric).ucum, int(ts_ns), "gateway",
                            None, s.tags.get("gateway"),
                        )
                    )  # fmt: skip
    return newest_environment(candidates)

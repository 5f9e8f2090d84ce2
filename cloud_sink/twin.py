"""Reads a patient's twin back from InfluxDB with InfluxQL: newest value of every vital."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cloud_sink.errors import CloudSinkError
from cloud_sink.influx import InfluxV1
from edge_agent.protocol import CatalogueError, by_name

_TOKEN_RE: Final = re.compile(r"[0-9a-f]{32}")


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

"""The clinical layer over a stored twin: trends, freshness, NEWS2 from fresh vitals, alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from rich.table import Table

from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import encode_line
from cloud_sink.news2 import News2Inputs, News2Score, score
from cloud_sink.news2 import to_json_dict as news2_json
from cloud_sink.profiles import PatientProfile, profile_json, read_profile
from cloud_sink.twin import (
    ENVIRONMENT_METRICS,
    DeviceState,
    EnvironmentReading,
    TwinView,
    VitalState,
    check_token,
    iso_utc,
    list_patients,
    read_devices,
    read_environment,
    read_twin,
    twin_json,
)

NS: Final = 1_000_000_000
TREND_WINDOW_S: Final = 1800.0
# How often each metric is expected; a value older than stale_factor x this is stale and,
# for NEWS2, missing (never scored as normal).
EXPECTED_INTERVAL_S: Final[dict[str, float]] = {
    "heart_rate": 1.0,
    "pulse_rate": 1.0,
    "spo2": 1.0,
    "resp_rate": 4.0,
    "body_temp": 60.0,
    "bp_systolic": 900.0,
    "bp_diastolic": 900.0,
    "bp_mean": 900.0,
    "glucose": 3600.0,
    "room_temp": 60.0,
    "humidity": 60.0,
    "battery": 600.0,
}
DEFAULT_INTERVAL_S: Final = 60.0
# Continuous monitors report every second, but a NEWS2 parameter stays usable for a while.
MIN_STALE_AFTER_S: Final = 120.0
OBSERVATION_KINDS: Final = ("acvpu", "oxygen", "spo2_scale")


@dataclass(slots=True, frozen=True)
class Freshness:
    age_s: float
    stale_after_s: float

    @property
    def stale(self) -> bool:
        return self.age_s > self.stale_after_s


@dataclass(slots=True, frozen=True)
class AlertState:
    alert_id: str
    kind: str
    severity: str
    state: str
    since_ns: int


def freshness(twin: TwinView, now_ns: int, stale_factor: float) -> dict[str, Freshness]:
    out = {}
    for vital in twin.vitals:
        interval_s = EXPECTED_INTERVAL_S.get(vital.metric, DEFAULT_INTERVAL_S)
        stale_after_s = max(MIN_STALE_AFTER_S, stale_factor * interval_s)
        out[vital.metric] = Freshness(max(0.0, (now_ns - vital.ts_ns) / NS), stale_after_s)
    return out


def trends(influx: InfluxV1, twin: TwinView) -> dict[str, float | None]:
    """Least-squares slope per hour over the 30 minutes up to each metric's newest reading."""
    if not twin.vitals:
        return {}
    since_ns = min(v.ts_ns for v in twin.vitals) - int(TREND_WINDOW_S * NS)
    series = influx.query(
        f'SELECT "value" FROM "vital" WHERE "patient" = \'{check_token(twin.patient)}\' '  # noqa: S608
        f'AND time >= {since_ns} GROUP BY "metric"'
    )
    newest = {v.metric: v.ts_ns for v in twin.vitals}
    out: dict[str, float | None] = {}
    for s in series:
        metric = s.tags["metric"]
        start = newest.get(metric, 0) - int(TREND_WINDOW_S * NS)
        points = [(int(t) / NS / 3600.0, float(v)) for t, v in s.values if int(t) >= start]
        out[metric] = _slope(points)
    return out


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0.0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def observations(influx: InfluxV1, patient: str) -> dict[str, str]:
    """The newest nurse-entered observation of each kind (ACVPU, oxygen, SpO2 scale)."""
    series = influx.query(
        f'SELECT last("value") FROM "observation" WHERE "patient" = \'{check_token(patient)}\' '  # noqa: S608
        'GROUP BY "kind"'
    )
    return {s.tags["kind"]: str(s.values[0][1]) for s in series if s.values}


def record_observation(influx: InfluxV1, patient: str, kind: str, value: str, ts_ns: int) -> None:
    influx.write(
        [
            encode_line(
                "observation",
                {"patient": check_token(patient), "kind": kind},
                {"value": value},
                ts_ns,
            )
        ]
    )


# Which stored metric feeds which NEWS2 parameter (RCP 2017 Chart 1 rows), first choice first:
# the pulse comes from the heart rate, else from the oximeter's pulse rate.
NEWS2_SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "rr": ("resp_rate",),
    "spo2": ("spo2",),
    "sbp": ("bp_systolic",),
    "hr": ("heart_rate", "pulse_rate"),
    "temp": ("body_temp",),
}


def news2_vitals(twin: TwinView, fresh: dict[str, Freshness]) -> dict[str, VitalState]:
    """The fresh vital each measured NEWS2 parameter is scored from (stale or absent: left out)."""
    usable = {v.metric: v for v in twin.vitals if v.metric in fresh and not fresh[v.metric].stale}
    used: dict[str, VitalState] = {}
    for parameter, metrics in NEWS2_SOURCES.items():
        for metric in metrics:
            if metric in usable:
                used[parameter] = usable[metric]
                break
    return used


def news2_for(twin: TwinView, fresh: dict[str, Freshness], observed: dict[str, str]) -> News2Score:
    """NEWS2 from the fresh vitals and the nurse's observations; stale or absent = missing."""
    value = {parameter: v.value for parameter, v in news2_vitals(twin, fresh).items()}
    oxygen = observed.get("oxygen")
    return score(
        News2Inputs(
            rr_per_min=value.get("rr"),
            spo2_pct=value.get("spo2"),
            spo2_scale=int(observed.get("spo2_scale", "1")),
            on_oxygen=None if oxygen is None else oxygen == "o2",
            sbp_mmhg=value.get("sbp"),
            hr_per_min=value.get("hr"),
            acvpu=observed.get("acvpu"),
            temp_c=value.get("temp"),
        )
    )


def alerts(influx: InfluxV1, patient: str) -> list[AlertState]:
    """Every alert episode of the patient with its latest state (raised or cleared)."""
    series = influx.query(
        f'SELECT "id", "state", "kind", "severity" FROM "alert" '  # noqa: S608
        f"WHERE \"patient\" = '{check_token(patient)}'"
    )
    latest: dict[str, AlertState] = {}
    for s in series:
        column = {name: i for i, name in enumerate(s.columns)}
        for row in s.values:
            ts_ns = int(row[0])
            alert_id = str(row[column["id"]])
            if alert_id not in latest or ts_ns >= latest[alert_id].since_ns:
                latest[alert_id] = AlertState(
                    alert_id,
                    str(row[column["kind"]]),
                    str(row[column["severity"]]),
                    str(row[column["state"]]),
                    ts_ns,
                )
    return sorted(latest.values(), key=lambda a: a.since_ns)


@dataclass(slots=True, frozen=True)
class ClinicalTwin:
    """Everything `twin show` reports about one patient."""

    twin: TwinView
    freshness: dict[str, Freshness]
    trends: dict[str, float | None]
    observations: dict[str, str]
    news2: News2Score
    alerts: list[AlertState]
    now_ns: int = 0
    profile: PatientProfile | None = None
    devices: tuple[DeviceState, ...] = ()
    environment: dict[str, EnvironmentReading] = field(default_factory=dict)


def clinical_twin(
    influx: InfluxV1,
    patient: str,
    now_ns: int,
    stale_factor: float = 5.0,
    *,
    details: bool = True,
) -> ClinicalTwin:
    """The twin of one patient; `details` adds profile, devices and environment (`twin show`)."""
    twin = read_twin(influx, patient)
    fresh = freshness(twin, now_ns, stale_factor)
    observed = observations(influx, patient)
    profile: PatientProfile | None = None
    devices: tuple[DeviceState, ...] = ()
    environment: dict[str, EnvironmentReading] = {}
    if details:
        profile = read_profile(influx, patient)
        devices = read_devices(influx, patient, now_ns)
        environment = read_environment(influx, patient, devices)
    return ClinicalTwin(
        twin,
        fresh,
        trends(influx, twin),
        observed,
        news2_for(twin, fresh, observed),
        alerts(influx, patient),
        now_ns,
        profile,
        devices,
        environment,
    )


def _age_s(now_ns: int, ts_ns: int) -> float:
    return round(max(0.0, (now_ns - ts_ns) / NS), 3)


def devices_json(view: ClinicalTwin) -> dict[str, dict[str, object]]:
    """The `devices` object of `twin show --json`, keyed by device token."""
    return {
        d.device: {
            "kind": d.kind,
            "gateway": d.gateway,
            "last_reading": iso_utc(d.last_ts_ns),
            "last_reading_age_s": _age_s(view.now_ns, d.last_ts_ns),
            "readings_last_hour": d.readings_last_hour,
            "interval_s": None if d.interval_s is None else round(d.interval_s, 3),
            "battery_pct": d.battery_pct,
            "errors_per_100h": None if d.errors_per_100h is None else round(d.errors_per_100h, 3),
        }
        for d in view.devices
    }


def environment_json(view: ClinicalTwin) -> dict[str, dict[str, object] | None]:
    """The `environment` object of `twin show --json`: room temperature and humidity or null."""
    out: dict[str, dict[str, object] | None] = {}
    for metric in ENVIRONMENT_METRICS:
        reading = view.environment.get(metric)
        out[metric] = (
            None
            if reading is None
            else {
                "value": reading.value,
                "unit": reading.unit,
                "time": iso_utc(reading.ts_ns),
                "age_s": _age_s(view.now_ns, reading.ts_ns),
                "source": reading.source,
                "device": reading.device,
                "gateway": reading.gateway,
            }
        )
    return out


def clinical_json(view: ClinicalTwin) -> dict[str, object]:
    """The `twin show --json` document."""
    document = twin_json(view.twin)
    vitals: dict[str, dict[str, object]] = document["vitals"]  # type: ignore[assignment]
    for metric, entry in vitals.items():
        fresh = view.freshness[metric]
        entry["age_s"] = round(fresh.age_s, 3)
        entry["stale"] = fresh.stale
        entry["trend_per_h"] = view.trends.get(metric)
    document["observations"] = view.observations
    document["news2"] = news2_json(view.news2)
    document["alerts"] = [
        {
            "id": a.alert_id,
            "kind": a.kind,
            "severity": a.severity,
            "state": a.state,
            "since": iso_utc(a.since_ns),
        }
        for a in view.alerts
    ]
    document["profile"] = None if view.profile is None else profile_json(view.profile)
    document["devices"] = devices_json(view)
    document["environment"] = environment_json(view)
    return document


BAND_RANK: Final = {"high": 0, "medium": 1, "low-medium": 2, "low": 3, "zero": 4}


@dataclass(slots=True, frozen=True)
class WardRow:
    """One patient on the ward view."""

    patient: str
    news2: News2Score
    stale_metrics: int
    oldest_age_s: float
    open_alerts: int


def ward(influx: InfluxV1, now_ns: int, stale_factor: float = 5.0) -> list[WardRow]:
    """Every patient, most at risk first: NEWS2 band, then score, then the stalest data."""
    rows = []
    for patient in list_patients(influx):
        view = clinical_twin(influx, patient, now_ns, stale_factor, details=False)
        ages = [f.age_s for f in view.freshness.values()]
        rows.append(
            WardRow(
                patient,
                view.news2,
                sum(1 for f in view.freshness.values() if f.stale),
                max(ages, default=0.0),
                sum(1 for a in view.alerts if a.state == "raised"),
            )
        )
    return sorted(
        rows, key=lambda r: (BAND_RANK[r.news2.band], -r.news2.total, -r.oldest_age_s, r.patient)
    )


def ward_json(rows: list[WardRow]) -> list[dict[str, object]]:
    return [
        {
            "patient": r.patient,
            "news2_total": r.news2.total,
            "news2_band": r.news2.band,
            "news2_complete": r.news2.complete,
            "stale_metrics": r.stale_metrics,
            "oldest_age_s": round(r.oldest_age_s, 3),
            "open_alerts": r.open_alerts,
        }
        for r in rows
    ]


def ward_table(rows: list[WardRow]) -> Table:
    """The ward view as a rich table (used by `twin list` and the demo)."""
    table = Table(title=f"ward: {len(rows)} patients, most at risk first")
    for column in ("patient", "NEWS2", "band", "complete", "open alerts", "stale", "oldest (s)"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.patient[:12] + "…",
            str(r.news2.total),
            r.news2.band,
            "yes" if r.news2.complete else "no",
            str(r.open_alerts),
            str(r.stale_metrics),
            f"{r.oldest_age_s:.0f}",
        )
    return table

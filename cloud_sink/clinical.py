"""The clinical layer over a stored twin: trends, freshness, NEWS2, alerts, and the outlook."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from rich.table import Table

from cloud_sink.baselines import (
    ADVISORY_KINDS,
    ARTIFACT_FLAGS,
    DEFAULT_ADVISORY_RECENT_S,
    VITAL_SIGNS,
    Advisory,
    Baseline,
    BaselineSettings,
    read_advisories,
    read_baselines,
)
from cloud_sink.forecast import (
    CONFIDENT_POINTS,
    CONFIDENT_SPAN_S,
    DEFAULT_HORIZONS_MIN,
    DEFAULT_LEVEL,
    DEFAULT_PROJECTION_HORIZON_MIN,
    DEFAULT_PROJECTION_STEP_MIN,
    LineFit,
    News2Change,
    News2Projection,
    TrendingVital,
    VitalForecast,
    check_horizons,
    check_level,
    check_projection,
    fit_line,
    forecast_vital,
    project_news2,
)
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
from edge_agent.protocol import CatalogueError, by_name

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
    "rr_interval": 1.0,
    # An implant's trend and diagnostic records come once per trend day (docs/serial-formats.md
    # §1.3: a NIGHTLY_TREND record is stamped with the start of its day, so it is 24-48 h old
    # when it arrives fresh).
    **dict.fromkeys(
        (
            "night_heart_rate",
            "activity_time",
            "af_burden",
            "fluid_index",
            "battery_voltage",
            "battery_longevity",
            "battery_phase",
            "lead_impedance_ra",
            "lead_impedance_rv",
            "lead_impedance_lv",
            "lead_impedance_hv",
            "implant_link_rssi",
        ),
        86_400.0,
    ),
    # Events (an arrhythmia episode, a device error) come when they happen: no new one is no
    # missing data, so they are never stale.
    **dict.fromkeys(
        (
            "episode_type",
            "episode_duration",
            "episode_max_rate",
            "episode_therapy",
            "implant_error_code",
        ),
        math.inf,
    ),
}
DEFAULT_INTERVAL_S: Final = 60.0
# Continuous monitors report every second, but a NEWS2 parameter stays usable for a while.
MIN_STALE_AFTER_S: Final = 120.0
OBSERVATION_KINDS: Final = ("acvpu", "oxygen", "spo2_scale")
# Metric tag values are spliced into InfluxQL only when they look like catalogue names.
_METRIC_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


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


# Metrics whose newest readings lie within this of each other share one window query; an
# implant's trend record of last week gets its own instead of dragging a week of 1 Hz data along.
_TREND_QUERY_SLACK_S: Final = 3600.0


def _trend_groups(twin: TwinView) -> list[list[VitalState]]:
    groups: list[list[VitalState]] = []
    for vital in sorted(twin.vitals, key=lambda v: -v.ts_ns):
        if not _METRIC_RE.fullmatch(vital.metric):
            continue
        if groups and groups[-1][0].ts_ns - vital.ts_ns <= _TREND_QUERY_SLACK_S * NS:
            groups[-1].append(vital)
        else:
            groups.append([vital])
    return groups


def trend_fits(influx: InfluxV1, twin: TwinView) -> dict[str, LineFit | None]:
    """Least-squares line per metric over the 30 minutes up to its newest reading.

    Readings flagged as artifacts by the edge (flag bits 0-4, docs/filters.md §2) are left out:
    they describe the probe, not the patient. None below 3 usable readings.
    """
    token = check_token(twin.patient)
    out: dict[str, LineFit | None] = {}
    window_ns = int(TREND_WINDOW_S * NS)
    for group in _trend_groups(twin):
        since_ns = min(v.ts_ns for v in group) - window_ns
        metrics = " OR ".join(f"\"metric\" = '{v.metric}'" for v in group)
        series = influx.query(
            f'SELECT "value" FROM "vital" WHERE "patient" = \'{token}\' AND ({metrics}) '  # noqa: S608
            f'AND "flags" & {ARTIFACT_FLAGS} = 0 AND time >= {since_ns} GROUP BY "metric"'
        )
        newest = {v.metric: v.ts_ns for v in group}
        for s in series:
            metric = s.tags.get("metric", "")
            if metric not in newest:
                continue
            start_ns = newest[metric] - window_ns
            out[metric] = fit_line(
                (int(t), float(v)) for t, v in s.values if start_ns <= int(t) <= newest[metric]
            )
    return out


def trends(influx: InfluxV1, twin: TwinView) -> dict[str, float | None]:
    """Least-squares slope per hour over the 30 minutes up to each metric's newest reading."""
    return slopes(trend_fits(influx, twin))


def slopes(fits: Mapping[str, LineFit | None]) -> dict[str, float | None]:
    return {metric: None if fit is None else fit.slope_per_h for metric, fit in fits.items()}


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


def news2_inputs(
    twin: TwinView, fresh: dict[str, Freshness], observed: dict[str, str]
) -> News2Inputs:
    """The NEWS2 inputs: fresh vitals and the nurse's observations; stale or absent = None."""
    value = {parameter: v.value for parameter, v in news2_vitals(twin, fresh).items()}
    oxygen = observed.get("oxygen")
    return News2Inputs(
        rr_per_min=value.get("rr"),
        spo2_pct=value.get("spo2"),
        spo2_scale=int(observed.get("spo2_scale", "1")),
        on_oxygen=None if oxygen is None else oxygen == "o2",
        sbp_mmhg=value.get("sbp"),
        hr_per_min=value.get("hr"),
        acvpu=observed.get("acvpu"),
        temp_c=value.get("temp"),
    )


def news2_for(twin: TwinView, fresh: dict[str, Freshness], observed: dict[str, str]) -> News2Score:
    """NEWS2 from the fresh vitals and the nurse's observations; stale or absent = missing."""
    return score(news2_inputs(twin, fresh, observed))


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
class OutlookSettings:
    """How far and how the outlook looks: baseline window, forecast horizons, band search."""

    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    horizons_min: tuple[float, ...] = DEFAULT_HORIZONS_MIN
    level: float = DEFAULT_LEVEL
    confident_points: int = CONFIDENT_POINTS
    confident_span_s: float = CONFIDENT_SPAN_S
    projection_horizon_min: int = DEFAULT_PROJECTION_HORIZON_MIN
    projection_step_min: int = DEFAULT_PROJECTION_STEP_MIN
    advisory_recent_s: float = DEFAULT_ADVISORY_RECENT_S

    def __post_init__(self) -> None:
        # Checked here, before any query, so a bad command-line option costs no database work.
        object.__setattr__(self, "horizons_min", check_horizons(self.horizons_min))
        check_level(self.level)
        check_projection(self.projection_horizon_min, self.projection_step_min)


@dataclass(slots=True, frozen=True)
class Outlook:
    """Where the patient stands against their own baseline and where the trends lead."""

    baselines: dict[str, Baseline]
    """Per vital sign; empty when not read (the ward view reads none)."""
    advisories: list[Advisory]
    forecast: dict[str, VitalForecast | None]
    news2_projection: News2Projection


def _limits(metric: str) -> tuple[float, float]:
    """The catalogue's plausible range: a forecast never leaves it (SpO2 stays <= 100 %)."""
    try:
        entry = by_name(metric)
    except CatalogueError:
        return (float("-inf"), float("inf"))
    return (entry.plausible_min, entry.plausible_max)


def trending_vitals(
    twin: TwinView,
    fresh: dict[str, Freshness],
    fits: Mapping[str, LineFit | None],
    level: float = DEFAULT_LEVEL,
) -> list[TrendingVital]:
    """The fresh vital behind each measured NEWS2 parameter, with its trend where it has one."""
    out = []
    for parameter, vital in news2_vitals(twin, fresh).items():
        fit = fits.get(vital.metric)
        out.append(
            TrendingVital(
                parameter=parameter,
                metric=vital.metric,
                value=vital.value,
                ts_ns=vital.ts_ns,
                slope_per_h=None if fit is None else fit.slope_per_h,
                limits=_limits(vital.metric),
                significant=None if fit is None else fit.slope_significant(level),
            )
        )
    return out


def outlook_for(
    twin: TwinView,
    fresh: dict[str, Freshness],
    observed: dict[str, str],
    fits: Mapping[str, LineFit | None],
    now_ns: int,
    *,
    settings: OutlookSettings,
    baselines: dict[str, Baseline] | None = None,
    advisories: Sequence[Advisory] = (),
) -> Outlook:
    """Forecasts and the NEWS2 projection from the trend fits; baselines and advisories as read."""
    forecasts: dict[str, VitalForecast | None] = {}
    for vital in twin.vitals:
        if vital.metric in VITAL_SIGNS:
            forecasts[vital.metric] = forecast_vital(
                vital.metric,
                fits.get(vital.metric),
                now_ns,
                _limits(vital.metric),
                horizons_min=settings.horizons_min,
                level=settings.level,
                confident_points=settings.confident_points,
                confident_span_s=settings.confident_span_s,
                stale=fresh[vital.metric].stale,
            )
    projection = project_news2(
        news2_inputs(twin, fresh, observed),
        trending_vitals(twin, fresh, fits, settings.level),
        now_ns,
        horizon_min=settings.projection_horizon_min,
        step_min=settings.projection_step_min,
    )
    return Outlook(baselines or {}, list(advisories), forecasts, projection)


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
    outlook: Outlook | None = None
    """Baselines, advisories, forecasts and the NEWS2 projection; None when not computed."""


DEFAULT_OUTLOOK: Final = OutlookSettings()


def clinical_twin(
    influx: InfluxV1,
    patient: str,
    now_ns: int,
    stale_factor: float = 5.0,
    *,
    details: bool = True,
    outlook: OutlookSettings | None = DEFAULT_OUTLOOK,
) -> ClinicalTwin:
    """The twin of one patient; `details` adds profile, devices, environment and the personal
    baselines (`twin show`); `outlook` (None: skipped) sets forecasts, projection, advisories."""
    twin = read_twin(influx, patient)
    fresh = freshness(twin, now_ns, stale_factor)
    observed = observations(influx, patient)
    fits = trend_fits(influx, twin)
    profile: PatientProfile | None = None
    devices: tuple[DeviceState, ...] = ()
    environment: dict[str, EnvironmentReading] = {}
    if details:
        profile = read_profile(influx, patient)
        devices = read_devices(influx, patient, now_ns)
        environment = read_environment(influx, patient, devices)
    view_outlook: Outlook | None = None
    if outlook is not None:
        view_outlook = outlook_for(
            twin,
            fresh,
            observed,
            fits,
            now_ns,
            settings=outlook,
            baselines=read_baselines(influx, twin, outlook.baseline) if details else None,
            advisories=read_advisories(influx, patient, now_ns, outlook.advisory_recent_s),
        )
    return ClinicalTwin(
        twin,
        fresh,
        slopes(fits),
        observed,
        news2_for(twin, fresh, observed),
        alerts(influx, patient),
        now_ns,
        profile,
        devices,
        environment,
        view_outlook,
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
    if view.outlook is not None:
        document.update(outlook_json(view.outlook))
    return document


def _iso(ts_ns: int | None) -> str | None:
    return None if ts_ns is None else iso_utc(ts_ns)


def baseline_json(b: Baseline) -> dict[str, object]:
    stats = b.stats
    span_s = b.span_s
    return {
        "median": None if stats is None else stats.median,
        "q1": None if stats is None else stats.q1,
        "q3": None if stats is None else stats.q3,
        "iqr": None if stats is None else stats.iqr,
        "readings": b.readings,
        "window_start": iso_utc(b.window_start_ns),
        "window_end": iso_utc(b.window_end_ns),
        "first": _iso(b.first_ns),
        "last": _iso(b.last_ns),
        "span_h": None if span_s is None else round(span_s / 3600.0, 3),
        "latest": b.latest,
        "deviation": b.deviation,
        "deviation_iqr": b.deviation_iqr,
        "position": b.position,
        "reason": b.reason,
    }


def advisory_json(a: Advisory) -> dict[str, object]:
    return {
        "id": a.alert_id,
        "kind": a.kind,
        "metric": a.metric,
        "direction": a.direction,
        "state": a.state,
        "raised": _iso(a.raised_ns),
        "cleared": _iso(a.cleared_ns),
        "since": iso_utc(a.since_ns),
        "value": a.value,
        "detail": a.detail,
    }


def forecast_json(f: VitalForecast | None) -> dict[str, object] | None:
    if f is None:
        return None
    return {
        "method": "ols-prediction-interval",
        "points": f.points,
        "span_min": round(f.span_s / 60.0, 3),
        "slope_per_h": f.slope_per_h,
        "residual_se": f.residual_se,
        "level": f.level,
        "t_quantile": f.t_quantile,
        "low_confidence": f.low_confidence,
        "reasons": list(f.reasons),
        "horizons": [
            {
                "minutes": h.minutes,
                "time": iso_utc(h.at_ns),
                "value": h.value,
                "low": h.low,
                "high": h.high,
                "clamped": h.clamped,
            }
            for h in f.horizons
        ],
    }


def _change_json(change: News2Change | None) -> dict[str, object] | None:
    if change is None:
        return None
    return {
        "minutes": change.minutes,
        "time": iso_utc(change.at_ns),
        "total": change.total,
        "band": change.band,
        "drivers": [
            {
                "parameter": d.parameter,
                "metric": d.metric,
                "value": d.value,
                "points_now": d.points_now,
                "points_then": d.points_then,
            }
            for d in change.drivers
        ],
    }


def projection_summary(p: News2Projection) -> str:
    """One line for people: when NEWS2 changes band if the trends hold, or why not said."""
    if not p.estimable:
        return f"time to a NEWS2 band change: not estimable: {p.reason}"
    if not p.trending:
        return "time to a NEWS2 band change: no measured parameter has a trend (all held)"
    hours = f"{p.horizon_min / 60:g} h"
    change = p.band_change
    if change is None:
        note = (
            ""
            if p.score_change is None
            else (f"; score {p.score_change.total} in {p.score_change.minutes} min")
        )
        return f"NEWS2 band {p.band}: no change within {hours} if the trends hold{note}"
    drivers = ", ".join(f"{d.parameter} {d.points_now}->{d.points_then}" for d in change.drivers)
    return (
        f"NEWS2 {p.band} -> {change.band} (score {change.total}) in {change.minutes} min"
        f" if the trends hold; driven by {drivers or 'the red-score rule'}"
    )


def projection_json(p: News2Projection) -> dict[str, object]:
    return {
        "estimable": p.estimable,
        "reason": p.reason,
        "total": p.total,
        "band": p.band,
        "horizon_min": p.horizon_min,
        "step_min": p.step_min,
        "trending": [
            {
                "parameter": v.parameter,
                "metric": v.metric,
                "value": v.value,
                "slope_per_h": v.slope_per_h,
                "significant": v.significant,
            }
            for v in p.trending
        ],
        "held": list(p.held),
        "score_change": _change_json(p.score_change),
        "band_change": _change_json(p.band_change),
        "summary": projection_summary(p),
    }


def outlook_json(outlook: Outlook) -> dict[str, object]:
    """The `baselines`, `advisories`, `forecast` and `news2_projection` keys of `twin show`."""
    return {
        "baselines": {m: baseline_json(b) for m, b in outlook.baselines.items()},
        "advisories": [advisory_json(a) for a in outlook.advisories],
        "forecast": {m: forecast_json(f) for m, f in outlook.forecast.items()},
        "news2_projection": projection_json(outlook.news2_projection),
    }


def is_advisory(alert: AlertState) -> bool:
    """Deviation advisories inform; they are listed and counted apart from alarms."""
    return alert.kind in ADVISORY_KINDS


BAND_RANK: Final = {"high": 0, "medium": 1, "low-medium": 2, "low": 3, "zero": 4}


@dataclass(slots=True, frozen=True)
class WardRow:
    """One patient on the ward view."""

    patient: str
    news2: News2Score
    stale_metrics: int
    oldest_age_s: float
    open_alerts: int
    """Open alarms (physiological and technical); deviation advisories are counted apart."""
    open_advisories: int = 0
    projection: News2Projection | None = None
    forecast: dict[str, VitalForecast | None] = field(default_factory=dict)


def ward(
    influx: InfluxV1,
    now_ns: int,
    stale_factor: float = 5.0,
    outlook: OutlookSettings | None = DEFAULT_OUTLOOK,
    patients: Iterable[str] | None = None,
) -> list[WardRow]:
    """Every patient, most at risk first: NEWS2 band, then score, then the stalest data.

    `patients` limits the ward to those (default: every patient with a vital stored): a
    clinician's view reads nobody else's data (docs/audit-and-access.md).
    """
    rows = []
    for patient in list_patients(influx) if patients is None else patients:
        view = clinical_twin(influx, patient, now_ns, stale_factor, details=False, outlook=outlook)
        ages = [f.age_s for f in view.freshness.values()]
        rows.append(
            WardRow(
                patient,
                view.news2,
                sum(1 for f in view.freshness.values() if f.stale),
                max(ages, default=0.0),
                sum(1 for a in view.alerts if a.state == "raised" and not is_advisory(a)),
                sum(1 for a in view.alerts if a.state == "raised" and is_advisory(a)),
                None if view.outlook is None else view.outlook.news2_projection,
                {} if view.outlook is None else view.outlook.forecast,
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
            "open_advisories": r.open_advisories,
            "news2_projection": None if r.projection is None else projection_json(r.projection),
        }
        for r in rows
    ]


def band_change_cell(p: News2Projection | None) -> str:
    """The ward's "if trends hold" column: the band reached and when, or why not."""
    if p is None:
        return "-"
    if not p.estimable:
        return "n/a (incomplete)"
    if not p.trending:
        return "no trend"
    if p.band_change is None:
        return f"none in {p.horizon_min / 60:g} h"
    return f"{p.band_change.band} in {p.band_change.minutes} min"


def forecast_cell(p: News2Projection | None, forecasts: Mapping[str, VitalForecast | None]) -> str:
    """The ward's forecast column: each trending NEWS2 vital at the longest horizon.

    A trailing "?" marks a low-confidence forecast.
    """
    if p is None:
        return "-"
    parts = []
    for vital in p.trending:
        f = forecasts.get(vital.metric)
        if f is None:
            continue
        value = f.horizons[-1].value
        text = f"{value:.1f}" if vital.parameter == "temp" else f"{value:.0f}"
        parts.append(f"{vital.parameter} {text}{'?' if f.low_confidence else ''}")
    return " ".join(parts) or "-"


def ward_table(rows: list[WardRow], *, outlook: bool = False) -> Table:
    """The ward view as a rich table (`twin list`, the demo; `twin watch` adds the outlook)."""
    table = Table(title=f"ward: {len(rows)} patients, most at risk first")
    columns = ["patient", "NEWS2", "band", "complete", "open alerts", "stale", "oldest (s)"]
    horizon = next(
        (f.horizons[-1].minutes for r in rows for f in r.forecast.values() if f is not None),
        DEFAULT_HORIZONS_MIN[-1],
    )
    if outlook:
        columns += ["advisories", "band if trends hold", f"forecast +{horizon:g} min"]
    for column in columns:
        table.add_column(column)
    for r in rows:
        cells = [
            r.patient[:12] + "…",
            str(r.news2.total),
            r.news2.band,
            "yes" if r.news2.complete else "no",
            str(r.open_alerts),
            str(r.stale_metrics),
            f"{r.oldest_age_s:.0f}",
        ]
        if outlook:
            cells += [
                str(r.open_advisories),
                band_change_cell(r.projection),
                forecast_cell(r.projection, r.forecast),
            ]
        table.add_row(*cells)
    return table

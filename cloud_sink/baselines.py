"""The patient's personal baseline per vital, the latest value's deviation, deviation advisories."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from cloud_sink.errors import CloudSinkError
from cloud_sink.influx import InfluxV1, Series
from cloud_sink.twin import NS, TwinView, check_token

ARTIFACT_FLAGS: Final = 0b1_1111
"""Filter flag bits 0-4 of the stored `vital.flags` field (docs/filters.md §2): implausible,
missing, quality_bad, out_of_order, spike -- the edge's `artifact` set. Such readings describe
the probe, not the patient, and stay out of baselines and trend fits."""

VITAL_SIGNS: Final[tuple[str, ...]] = (
    "heart_rate",
    "pulse_rate",
    "spo2",
    "resp_rate",
    "body_temp",
    "bp_systolic",
    "bp_diastolic",
    "bp_mean",
    "glucose",
)
"""The catalogue metrics that are the patient's own physiology (not battery, room or implant
housekeeping): the twin reports a baseline and a forecast for each of these it holds."""

ADVISORY_KINDS: Final[tuple[str, ...]] = ("baseline_rise", "baseline_fall")
"""The `alert.kind` tags of the edge's deviation advisories (edge_agent.alerts.ADVISORY_KINDS,
category advisory, severity info): a sustained CUSUM deviation from the personal baseline."""

DEFAULT_LOOKBACK_S: Final = 24 * 3600.0
DEFAULT_EXCLUDE_RECENT_S: Final = 1800.0
DEFAULT_MIN_READINGS: Final = 20
DEFAULT_MIN_SPAN_S: Final = 3600.0
DEFAULT_ADVISORY_RECENT_S: Final = 4 * 3600.0

Position = Literal["below", "within", "above"]


class BaselineSettingsError(CloudSinkError):
    """A baseline setting is impossible (a look-back shorter than the excluded part, ...)."""

    def __init__(self, setting: str, value: object, reason: str) -> None:
        super().__init__(f"baseline setting {setting}={value!r}: {reason}")
        self.setting = setting
        self.value = value
        self.reason = reason


@dataclass(slots=True, frozen=True)
class BaselineSettings:
    """How a personal baseline is taken: look-back, the recent part left out, what suffices."""

    lookback_s: float = DEFAULT_LOOKBACK_S
    exclude_recent_s: float = DEFAULT_EXCLUDE_RECENT_S
    min_readings: int = DEFAULT_MIN_READINGS
    min_span_s: float = DEFAULT_MIN_SPAN_S

    def __post_init__(self) -> None:
        if not math.isfinite(self.exclude_recent_s) or self.exclude_recent_s < 0.0:
            raise BaselineSettingsError(
                setting="exclude_recent_s",
                value=self.exclude_recent_s,
                reason="zero or more seconds",
            )
        if not math.isfinite(self.lookback_s) or self.lookback_s <= self.exclude_recent_s:
            reason = f"must be longer than the excluded recent {self.exclude_recent_s:g} s"
            raise BaselineSettingsError(setting="lookback_s", value=self.lookback_s, reason=reason)
        if self.lookback_s > 90 * 86400.0:
            raise BaselineSettingsError(
                setting="lookback_s", value=self.lookback_s, reason="at most 90 days"
            )
        if self.min_readings < 2:
            raise BaselineSettingsError(
                setting="min_readings", value=self.min_readings, reason="at least 2"
            )
        if not 0.0 <= self.min_span_s <= self.lookback_s - self.exclude_recent_s:
            reason = "zero or more seconds, no longer than the window itself"
            raise BaselineSettingsError(setting="min_span_s", value=self.min_span_s, reason=reason)


@dataclass(slots=True, frozen=True)
class BaselineStats:
    """Median and quartiles of the window's usable readings (InfluxDB's median/percentile)."""

    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


@dataclass(slots=True, frozen=True)
class Baseline:
    """One vital's personal baseline and where its newest value stands against it."""

    metric: str
    window_start_ns: int
    window_end_ns: int
    """The window is [start, end): end = newest reading minus the excluded recent part."""
    readings: int
    first_ns: int | None
    last_ns: int | None
    stats: BaselineStats | None
    """None when the window holds too few readings or too short a stretch of them."""
    reason: str | None
    latest: float
    latest_ts_ns: int

    @property
    def span_s(self) -> float | None:
        if self.first_ns is None or self.last_ns is None:
            return None
        return (self.last_ns - self.first_ns) / NS

    @property
    def deviation(self) -> float | None:
        """Newest value minus the baseline median, in the metric's unit."""
        return None if self.stats is None else self.latest - self.stats.median

    @property
    def deviation_iqr(self) -> float | None:
        """The deviation in interquartile ranges; None when the IQR is 0 (a constant series)."""
        if self.stats is None or self.stats.iqr <= 0.0:
            return None
        return (self.latest - self.stats.median) / self.stats.iqr

    @property
    def position(self) -> Position | None:
        """Where the newest value lies against the baseline's interquartile range [Q1, Q3]."""
        if self.stats is None:
            return None
        if self.latest < self.stats.q1:
            return "below"
        if self.latest > self.stats.q3:
            return "above"
        return "within"


def baseline_window(newest_ns: int, settings: BaselineSettings) -> tuple[int, int]:
    """[start, end) of a metric's baseline window, anchored at its newest reading."""
    end_ns = newest_ns - round(settings.exclude_recent_s * NS)
    return newest_ns - round(settings.lookback_s * NS), end_ns


def _number(value: object) -> float | None:
    """A number from InfluxDB's JSON (int or float), or None for a null or absent field."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _stamp(row: dict[str, object]) -> int | None:
    value = row.get("time")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def judge_baseline(
    metric: str,
    *,
    window: tuple[int, int],
    summary: tuple[int, float | None, float | None, float | None],
    coverage: tuple[int | None, int | None],
    latest: tuple[float, int],
    settings: BaselineSettings,
) -> Baseline:
    """A Baseline from the window's (count, median, Q1, Q3) and (first, last) reading times."""
    readings, median, q1, q3 = summary
    first_ns, last_ns = coverage
    span_s = None if first_ns is None or last_ns is None else (last_ns - first_ns) / NS
    reason: str | None = None
    if readings < settings.min_readings:
        reason = f"{readings} usable readings in the window, fewer than {settings.min_readings}"
    elif span_s is None or span_s < settings.min_span_s:
        reason = (
            f"the readings span {0.0 if span_s is None else span_s / 3600:.2f} h,"
            f" less than {settings.min_span_s / 3600:g} h"
        )
    stats: BaselineStats | None = None
    if reason is None:
        if median is None or q1 is None or q3 is None:
            reason = "the database returned no median or quartiles"
        else:
            stats = BaselineStats(median, q1, q3)
    return Baseline(
        metric, window[0], window[1], readings, first_ns, last_ns, stats, reason, *latest
    )


def _row(series: list[Series]) -> dict[str, object]:
    if not series or not series[0].values:
        return {}
    return dict(zip(series[0].columns, series[0].values[0], strict=True))


def read_baselines(
    influx: InfluxV1,
    twin: TwinView,
    settings: BaselineSettings | None = None,
    metrics: Iterable[str] = VITAL_SIGNS,
) -> dict[str, Baseline]:
    """Per vital sign of the twin: median and quartiles of its usable readings in the window.

    Computed by InfluxDB (`median()`, and `percentile()` at 25 and 75, which picks the reading
    of nearest rank), so a day of one-second readings never crosses the network.
    """
    settings = settings or BaselineSettings()
    token = check_token(twin.patient)
    wanted = set(metrics)
    out: dict[str, Baseline] = {}
    for vital in twin.vitals:
        if vital.metric not in wanted:
            continue
        start_ns, end_ns = baseline_window(vital.ts_ns, settings)
        # Metric names come from the database's own tag values; only catalogue names get here.
        where = (
            f"WHERE \"patient\" = '{token}' AND \"metric\" = '{vital.metric}' "
            f'AND "flags" & {ARTIFACT_FLAGS} = 0 AND time >= {start_ns} AND time < {end_ns}'
        )
        summary = _row(
            influx.query(
                'SELECT count("value") AS n, median("value") AS median, '  # noqa: S608
                'percentile("value", 25) AS q1, percentile("value", 75) AS q3 '
                f'FROM "vital" {where}'
            )
        )
        readings = int(_number(summary.get("n")) or 0)
        first_ns = last_ns = None
        if readings:
            # A selector alone returns its reading's own time (with other aggregates, the
            # window's start): hence two small queries for the stretch the readings cover.
            first_ns = _stamp(_row(influx.query(f'SELECT first("value") FROM "vital" {where}')))  # noqa: S608
            last_ns = _stamp(_row(influx.query(f'SELECT last("value") FROM "vital" {where}')))  # noqa: S608
        out[vital.metric] = judge_baseline(
            vital.metric,
            window=(start_ns, end_ns),
            summary=(
                readings,
                _number(summary.get("median")),
                _number(summary.get("q1")),
                _number(summary.get("q3")),
            ),
            coverage=(first_ns, last_ns),
            latest=(vital.value, vital.ts_ns),
            settings=settings,
        )
    return out


# --- deviation advisories -------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Advisory:
    """One deviation-advisory episode (baseline_rise / baseline_fall) with its newest state."""

    alert_id: str
    kind: str
    metric: str | None
    state: str
    """`raised` (open) or `cleared`."""
    raised_ns: int | None
    cleared_ns: int | None
    since_ns: int
    """Time of the newest event of the episode (newest timestamp wins)."""
    value: float | None
    """The reading that raised the episode, or the newest event's if the raise is not stored."""
    detail: str | None

    @property
    def direction(self) -> str:
        return "fall" if self.kind == "baseline_fall" else "rise"


@dataclass(slots=True, frozen=True)
class AdvisoryEvent:
    """One stored `alert` point of an advisory kind."""

    ts_ns: int
    alert_id: str
    kind: str
    state: str
    metric: str | None
    value: float | None
    detail: str | None


def advisories_from_events(
    events: Sequence[AdvisoryEvent], now_ns: int, recent_s: float = DEFAULT_ADVISORY_RECENT_S
) -> list[Advisory]:
    """Episodes still open, and those cleared within `recent_s` of now; open ones first."""
    by_id: dict[str, list[AdvisoryEvent]] = {}
    for event in events:
        by_id.setdefault(event.alert_id, []).append(event)
    out = []
    for alert_id, episode in by_id.items():
        # Newest timestamp wins; at the same instant a clear outranks a raise (it comes after).
        newest = max(episode, key=lambda e: (e.ts_ns, e.state == "cleared"))
        raises = [e for e in episode if e.state == "raised"]
        clears = [e for e in episode if e.state == "cleared"]
        raised = min(raises, key=lambda e: e.ts_ns) if raises else None
        cleared_ns = max(e.ts_ns for e in clears) if newest.state == "cleared" else None
        if cleared_ns is not None and now_ns - cleared_ns > recent_s * NS:
            continue
        out.append(
            Advisory(
                alert_id=alert_id,
                kind=newest.kind,
                metric=(raised or newest).metric,
                state=newest.state,
                raised_ns=None if raised is None else raised.ts_ns,
                cleared_ns=cleared_ns,
                since_ns=newest.ts_ns,
                value=(raised or newest).value,
                detail=(raised or newest).detail,
            )
        )
    return sorted(out, key=lambda a: (a.state != "raised", -a.since_ns, a.alert_id))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def read_advisories(
    influx: InfluxV1, patient: str, now_ns: int, recent_s: float = DEFAULT_ADVISORY_RECENT_S
) -> list[Advisory]:
    """The patient's deviation advisories: open, or cleared within `recent_s`."""
    kinds = " OR ".join(f"\"kind\" = '{kind}'" for kind in ADVISORY_KINDS)
    series = influx.query(
        'SELECT "id", "state", "metric", "value", "detail" FROM "alert" '  # noqa: S608
        f'WHERE "patient" = \'{check_token(patient)}\' AND ({kinds}) GROUP BY "kind"'
    )
    events = []
    for s in series:
        for values in s.values:
            # A field no point of the series carries is absent from the columns altogether.
            row = dict(zip(s.columns, values, strict=True))
            events.append(
                AdvisoryEvent(
                    ts_ns=int(values[0]),
                    alert_id=str(row.get("id")),
                    kind=s.tags.get("kind", ""),
                    state=str(row.get("state")),
                    metric=_text(row.get("metric")),
                    value=_number(row.get("value")),
                    detail=_text(row.get("detail")),
                )
            )
    return advisories_from_events(events, now_ns, recent_s)

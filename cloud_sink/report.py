"""The population report (the seed's Table 3): what InfluxDB holds, reduced to defined figures.

`read_population` runs the InfluxQL queries and keeps the usable readings; `build_report` turns
them into figures, each with its value, one sentence on how it was computed and the number of
patients, devices or readings it rests on. The statistics are pure functions (no database) so
they can be tested on their own. docs/report.md defines every figure.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud_sink.errors import CloudSinkError
from cloud_sink.influx import InfluxV1, Series
from cloud_sink.profiles import MEASUREMENT as PROFILE_MEASUREMENT
from cloud_sink.profiles import PatientProfile, profile_from_row
from cloud_sink.twin import iso_utc
from edge_agent.protocol.topics import GATEWAY_ID_RE

NS: Final = 1_000_000_000
NS_PER_HOUR: Final = 3600 * NS

# Frame v1 `flags` bits 0-4 (docs/filters.md §2): implausible, missing, quality_bad, out_of_order,
# spike, i.e. the agent's `artifact` set. Such readings say nothing about the patient.
ARTIFACT_FLAGS: Final = 0x1F

# 2017 ACC/AHA high blood pressure guideline (Whelton et al., Hypertension 2018;71:1269), §3.1
# "Categories of BP in Adults": stage 1 hypertension begins at a systolic 130 or a diastolic
# 80 mmHg. The seed's "elevated (>= 130/80)" is that, not the guideline's "Elevated" category.
BP_SYSTOLIC_MMHG: Final = 130.0
BP_DIASTOLIC_MMHG: Final = 80.0
# BTS guideline for oxygen use in healthcare and emergency settings (O'Driscoll et al., Thorax
# 2017;72 Suppl 1): target saturation 94-98 % for most acutely ill patients; NEWS2 (RCP 2017,
# Chart 1, SpO2 scale 1) scores from 93 % down.
SPO2_LOW_PCT: Final = 94.0
# A low run must last this long: a few seconds below 94 % are mostly motion or a loose probe.
SPO2_SUSTAINED_S: Final = 300.0
ROOM_WARM_C: Final = 25.0
# A heart rate is paired with its gateway's room temperature only within this distance in time:
# rooms change slowly, but a reading an hour away says nothing about this moment.
PAIR_MAX_GAP_S: Final = 600.0
# Below this many pairs no slope is reported (two points always fit a line exactly).
MIN_PAIRS: Final = 10
CONFIDENCE: Final = 0.95

HEART_RATE_METRICS: Final = ("heart_rate", "pulse_rate")
"""First choice first, as NEWS2 takes the pulse (cloud_sink.clinical.NEWS2_SOURCES)."""
REPORT_METRICS: Final = (*HEART_RATE_METRICS, "spo2", "bp_systolic", "bp_diastolic", "room_temp")
# Readings of these metrics describe the room or the device, not the patient: they do not make a
# patient "monitored".
NON_PATIENT_METRICS: Final = frozenset({"room_temp", "humidity", "battery"})
# The agent's personal-baseline advisories (docs/filters.md §3, "Deviation advisories").
ADVISORY_KINDS: Final = ("baseline_rise", "baseline_fall")

# Device kinds (edge_agent.registry BLE_KINDS / SERIAL_KINDS) by how they are used: worn on the
# body continuously, implanted (the receiver speaks for the implant), or anything else (spot-check
# devices, the bedside monitor, room sensors, kinds this table does not know).
WEARABLE_KINDS: Final = frozenset({"hr-strap", "chest-patch", "pulse-oximeter"})
IMPLANTABLE_KINDS: Final = frozenset({"implant-receiver"})
UNKNOWN_KIND: Final = "unknown"
NO_AUDIT_LOG: Final = "no audit log configured"

FigureValue = float | int | dict[str, float] | None
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class ReportError(CloudSinkError):
    """A figure cannot be computed as asked (bad window, truncated answer, bad argument)."""

    def __init__(self, figure: str, reason: str) -> None:
        super().__init__(f"population report, {figure}: {reason}")
        self.figure = figure
        self.reason = reason


@dataclass(slots=True, frozen=True)
class AccessFigures:
    """Counts from the audit log over the report's window (cloud_sink.audit.AuditSummary)."""

    exports_total: int
    exports_anonymised: int
    access_denied: int
    """A known identity asked for more than its role allows."""
    auth_failures: int = 0
    """A request with no token, or one that matches no identity."""


# --------------------------------------------------------------------------------------------
# Statistics (pure)
# --------------------------------------------------------------------------------------------

_CF_MAX_TERMS: Final = 10_000
_CF_EPS: Final = 1e-16
_TINY: Final = 1e-300
_BISECT_MAX: Final = 400
_T_SQUARE_MAX: Final = 1e150
_STIRLING_MIN: Final = 50.0
# What a ReportError names when no single figure is at fault.
_T_DISTRIBUTION: Final = "t distribution"
_REGRESSION: Final = "regression"
_WINDOW: Final = "window"


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction 1/(1+ d1/(1+ d2/(1+ ...))) of I_x(a, b) (DLMF 8.17.22).

    d(2m+1) = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)), d(2m) = m(b-m)x / ((a+2m-1)(a+2m)); evaluated
    front to back with the modified Lentz method (Thompson & Barnett 1986), which converges
    quickly for x < (a+1)/(a+b+2).
    """
    value = c = _TINY
    d = 0.0
    for term in range(1, _CF_MAX_TERMS):
        if term == 1:
            numerator = 1.0
        else:
            k = term - 1
            m = k // 2
            if k % 2:
                numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            else:
                numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + numerator / c
        c = c if abs(c) > _TINY else _TINY
        step = c * d
        value *= step
        if abs(step - 1.0) < _CF_EPS:
            return value
    raise ReportError(_T_DISTRIBUTION, f"incomplete beta did not converge at x={x}, a={a}")


def _stirling_tail(z: float) -> float:
    """ln Gamma(z) - ((z - 1/2) ln z - z + ln(2 pi) / 2): Stirling's series (DLMF 5.11.1) to
    z^-5; the next term, 1 / (1680 z^7), is below 1e-15 for z >= STIRLING_MIN."""
    z2 = z * z
    return (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * z2)) / z2) / z


def log_beta(a: float, b: float) -> float:
    """ln B(a, b) = ln Gamma(a) + ln Gamma(b) - ln Gamma(a + b) for a, b > 0.

    When one argument is large, ln Gamma(big) and ln Gamma(big + small) nearly cancel and
    lgamma's rounding (1e-16 of a number near big ln big) would swamp the result; there the
    difference ln Gamma(big + small) - ln Gamma(big) is formed from Stirling's series directly:
    (big - 1/2) log1p(small / big) + small ln(big + small) - small + tail(big + small) - tail(big).
    """
    small, big = min(a, b), max(a, b)
    if big < _STIRLING_MIN:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    rise = (
        (big - 0.5) * math.log1p(small / big)
        + small * math.log(big + small)
        - small
        + _stirling_tail(big + small)
        - _stirling_tail(big)
    )
    return math.lgamma(small) - rise


def incomplete_beta(x: float, a: float, b: float, one_minus_x: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1, a, b > 0.

    `one_minus_x` may be given exactly when x is close to 1 (1 - x would lose digits).
    Near x = 1 the symmetry I_x(a, b) = 1 - I_(1-x)(b, a) (DLMF 8.17.4) keeps the fraction in
    its fast region.
    """
    y = 1.0 - x if one_minus_x is None else one_minus_x
    if not (a > 0.0 and b > 0.0 and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ReportError(_T_DISTRIBUTION, f"I_x(a, b) undefined for x={x}, a={a}, b={b}")
    if x == 0.0:
        return 0.0
    if y == 0.0:
        return 1.0
    # log(x) from 1 - x when x is near 1 (and the other way round) keeps the digits a large a
    # or b would multiply.
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    log_front = a * log_x + b * log_y - log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) / a * _beta_fraction(x, a, b)
    return 1.0 - math.exp(log_front) / b * _beta_fraction(y, b, a)


def _check_dof(dof: float) -> None:
    if not (math.isfinite(dof) and dof > 0.0):
        raise ReportError(_T_DISTRIBUTION, f"degrees of freedom {dof} must be finite and > 0")


def t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom.

    For t >= 0 it is I_x(dof/2, 1/2) / 2 with x = dof / (dof + t^2) (Abramowitz & Stegun
    26.7.1 with 26.5.27); 1 - x is formed as t^2 / (dof + t^2), so nothing cancels.
    """
    _check_dof(dof)
    if math.isnan(t):
        raise ReportError(_T_DISTRIBUTION, "t is NaN")
    if t < 0.0:
        return 1.0 - t_sf(-t, dof)
    if t > _T_SQUARE_MAX:
        # t^2 would overflow (and x = dof / t^2 may underflow): work with ln x. Once x < e^-40
        # the continued fraction is 1 and (1 - x)^(1/2) is 1 to double precision, so I_x(a, 1/2)
        # is x^a / (a B(a, 1/2)) (DLMF 8.17.22 with its first term only).
        a = dof / 2.0
        log_x = math.log(dof) - 2.0 * math.log(t)
        if log_x < -40.0:
            return 0.5 * math.exp(a * log_x - log_beta(a, 0.5)) / a
        x = math.exp(log_x)
        return 0.5 * incomplete_beta(x, a, 0.5, one_minus_x=1.0 - x)
    t_squared = t * t
    total = dof + t_squared
    return 0.5 * incomplete_beta(dof / total, dof / 2.0, 0.5, one_minus_x=t_squared / total)


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom."""
    return 1.0 - t_sf(t, dof) if t >= 0.0 else t_sf(-t, dof)


def t_quantile(p: float, dof: float) -> float:
    """The t with P(T <= t) = p: the t distribution's inverse, by bisection on `t_sf`.

    The bisection stops at a relative width of 1e-13. Measured against 40-digit arithmetic
    (mpmath) on random p and dof, the relative error is below 1e-13 for dof <= 1000, 1e-11 up to
    1e6 and 1e-9 up to 1e8; the tests check the closed forms for 1 and 2 degrees of freedom, the
    published NIST table and the normal limit.
    """
    _check_dof(dof)
    if not 0.0 < p < 1.0:
        raise ReportError(_T_DISTRIBUTION, f"probability {p} must lie strictly between 0 and 1")
    if p == 0.5:
        return 0.0
    # Solve the upper tail: the smaller of p and 1 - p, so no digits are lost near 1.
    tail = 1.0 - p if p > 0.5 else p
    sign = 1.0 if p > 0.5 else -1.0
    low, high = 0.0, 1.0
    while t_sf(high, dof) > tail:
        low, high = high, high * 2.0
        if high > 1e300:
            raise ReportError(_T_DISTRIBUTION, f"quantile {p} is beyond the float range")
    for _ in range(_BISECT_MAX):
        middle = (low + high) / 2.0
        if t_sf(middle, dof) > tail:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return sign * (low + high) / 2.0


@dataclass(slots=True, frozen=True)
class LineFit:
    """An ordinary least-squares line y = intercept + slope * x with the slope's t interval."""

    slope: float
    intercept: float
    slope_se: float
    ci_low: float
    ci_high: float
    n: int
    dof: int
    t_crit: float


@dataclass(slots=True, frozen=True)
class Insufficient:
    """Why no number is given."""

    reason: str


def ols_fit(
    x: FloatArray, y: FloatArray, *, min_n: int = MIN_PAIRS, confidence: float = CONFIDENCE
) -> LineFit | Insufficient:
    """OLS slope of y on x with its two-sided t confidence interval (n - 2 degrees of freedom).

    slope = Sxy / Sxx, s^2 = SSE / (n - 2), se = sqrt(s^2 / Sxx), interval slope +- t * se with t
    the (1 + confidence) / 2 quantile. Insufficient with fewer than max(3, min_n) points or when
    x does not vary.
    """
    n = len(x)
    if len(y) != n:
        raise ReportError(_REGRESSION, f"{n} x values but {len(y)} y values")
    needed = max(3, min_n)
    if n < needed:
        return Insufficient(f"{n} pairs, fewer than the {needed} needed")
    x_mean, y_mean = float(np.mean(x)), float(np.mean(y))
    dx = x - x_mean
    sxx = float(dx @ dx)
    # Relative to the scale of x: readings quantised to 0.1 degrees that never change give 0.
    if sxx <= 1e-12 * n * max(1.0, x_mean * x_mean):
        return Insufficient(f"the room temperature does not vary over the {n} pairs")
    slope = float(dx @ (y - y_mean)) / sxx
    intercept = y_mean - slope * x_mean
    residual = y - (intercept + slope * x)
    dof = n - 2
    se = math.sqrt(float(residual @ residual) / dof / sxx)
    t_crit = t_quantile((1.0 + confidence) / 2.0, dof)
    return LineFit(slope, intercept, se, slope - t_crit * se, slope + t_crit * se, n, dof, t_crit)


def counter_increase(totals: Sequence[int]) -> int:
    """How much a cumulative counter grew across successive samples.

    The first sample is the baseline. A drop means the counter restarted from zero (the agent
    restarted), so after a drop the new value counts in full.
    """
    increase = 0
    for previous, current in itertools.pairwise(totals):
        increase += current - previous if current >= previous else current
    return increase


def sustained_below(
    ts_ns: IntArray, values: FloatArray, threshold: float, min_duration_s: float
) -> bool:
    """Whether consecutive readings (by time) stay below `threshold` for `min_duration_s`.

    A run is a maximal sequence of successive readings all below the threshold; it lasts from
    its first reading's time to its last one's, so a single low reading lasts zero seconds.
    """
    order = np.argsort(ts_ns, kind="stable")
    run_start: int | None = None
    min_ns = min_duration_s * NS
    for ts, value in zip(ts_ns[order].tolist(), values[order].tolist(), strict=True):
        if value < threshold:
            run_start = ts if run_start is None else run_start
            if ts - run_start >= min_ns:
                return True
        else:
            run_start = None
    return False


def nearest_within(
    query_ns: IntArray, ref_ns: IntArray, ref_values: FloatArray, max_gap_ns: int
) -> FloatArray:
    """For each query time the value of the reference reading nearest in time (NaN if none lies
    within `max_gap_ns`); at equal distance the earlier reference reading wins. `ref_ns` must be
    sorted."""
    out = np.full(len(query_ns), np.nan)
    if len(ref_ns) == 0 or len(query_ns) == 0:
        return out
    after = np.searchsorted(ref_ns, query_ns, side="left")
    before = np.clip(after - 1, 0, len(ref_ns) - 1)
    after = np.clip(after, 0, len(ref_ns) - 1)
    gap_before = np.abs(query_ns - ref_ns[before])
    gap_after = np.abs(ref_ns[after] - query_ns)
    pick = np.where(gap_after < gap_before, after, before)
    gap = np.minimum(gap_before, gap_after)
    close = gap <= max_gap_ns
    out[close] = ref_values[pick[close]]
    return out


def share_pct(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def kind_category(kind: str) -> str:
    if kind in WEARABLE_KINDS:
        return "wearable"
    if kind in IMPLANTABLE_KINDS:
        return "implantable"
    return "other"


# --------------------------------------------------------------------------------------------
# What the database holds
# --------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Track:
    """The usable readings (no artifact flag) of one metric from one device of one patient."""

    patient: str
    device: str
    ts_ns: IntArray
    values: FloatArray


@dataclass(slots=True, frozen=True)
class RoomTrack:
    """Room temperatures from one source: a room sensor's `vital` or a gateway's `environment`."""

    gateway: str | None
    source: str
    """The sensor's device token, or `environment` for the gateway's own points."""
    ts_ns: IntArray
    temps_c: FloatArray


@dataclass(slots=True, frozen=True)
class DeviceHistory:
    """A device's `device_health` records in the window, oldest first."""

    device: str
    kind: str
    gateway: str | None
    ts_ns: IntArray
    errors_total: IntArray


@dataclass(slots=True, frozen=True)
class SecurityCounts:
    """Sums of the sink's `sink_security` counters in the window."""

    rejected_by_reason: Mapping[str, int]
    rejecting_gateways: int
    accepted: int | None
    """None: no point carries an `accepted` count (the sink stores refusals only)."""


@dataclass(slots=True, frozen=True)
class PopulationData:
    """Everything the report is computed from; `read_population` fills it from InfluxDB."""

    population: frozenset[str]
    monitored: frozenset[str]
    profiles: Mapping[str, PatientProfile]
    vitals: Mapping[str, tuple[Track, ...]]
    unusable: Mapping[str, int]
    device_gateway: Mapping[str, str]
    devices: tuple[DeviceHistory, ...]
    devices_without_health: int
    rooms: tuple[RoomTrack, ...]
    advised: frozenset[str]
    security: SecurityCounts


def time_where(since_ns: int | None, until_ns: int) -> str:
    """The InfluxQL time condition of a report window (since None: from the beginning)."""
    lower = "" if since_ns is None else f"time >= {since_ns} AND "
    return f"{lower}time <= {until_ns}"


def _column(series: Series) -> dict[str, int]:
    return {name: i for i, name in enumerate(series.columns)}


def _quote(value: str) -> str:
    """An InfluxQL string literal: backslash and single quote escaped (InfluxQL spec, Strings)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _track(patient: str, series: Series) -> tuple[Track | None, int]:
    """One device's usable readings from a `value, flags` answer, and the artifacts dropped."""
    column = _column(series)
    i_value, i_flags = column["value"], column["flags"]
    rows = series.values
    n = len(rows)
    stamps = np.fromiter((row[0] for row in rows), dtype=np.int64, count=n)
    values = np.fromiter(
        (np.nan if row[i_value] is None else row[i_value] for row in rows),
        dtype=np.float64,
        count=n,
    )
    flags = np.fromiter((row[i_flags] or 0 for row in rows), dtype=np.int64, count=n)
    keep = ~np.isnan(values) & (flags & ARTIFACT_FLAGS == 0)
    kept = int(np.count_nonzero(keep))
    if not kept:
        return None, n
    order = np.argsort(stamps[keep], kind="stable")
    device = series.tags.get("device", "")
    return Track(patient, device, stamps[keep][order], values[keep][order]), n - kept


def _tracks(influx: InfluxV1, metric: str, window: str) -> tuple[tuple[Track, ...], int]:
    """Usable readings of one metric per patient and device, and how many artifacts were dropped.

    One query per patient, so only one patient's readings are ever decoded from JSON at once.
    """
    where = f"\"metric\" = '{metric}' AND {window}"
    counts = influx.query(
        f'SELECT count("value") FROM "vital" WHERE {where} GROUP BY "patient"'  # noqa: S608
    )
    tracks: list[Track] = []
    dropped = 0
    for count in counts:
        patient = count.tags.get("patient", "")
        expected = int(count.values[0][1]) if count.values else 0
        if not expected:
            continue
        series = influx.query(
            f'SELECT "value", "flags" FROM "vital" WHERE {where} '  # noqa: S608
            f'AND "patient" = {_quote(patient)} GROUP BY "device"'
        )
        returned = sum(len(s.values) for s in series)
        if returned < expected:
            reason = (
                f"InfluxDB returned {returned} of {expected} readings of a patient (its [http] "
                "max-row-limit truncates answers); set max-row-limit = 0 or narrow --since"
            )
            raise ReportError(metric, reason)
        for s in series:
            track, artifacts = _track(patient, s)
            dropped += artifacts
            if track is not None:
                tracks.append(track)
    return tuple(tracks), dropped


def _profiles(
    influx: InfluxV1, since_ns: int | None, until_ns: int
) -> tuple[dict[str, PatientProfile], set[str]]:
    """Each patient's newest profile snapshot up to `until`, and who was in a stay in the window:
    a snapshot inside it, or admitted by the last snapshot before it."""
    series = influx.query(
        f'SELECT * FROM "{PROFILE_MEASUREMENT}" WHERE time <= {until_ns} GROUP BY "patient"'  # noqa: S608
    )
    newest: dict[str, PatientProfile] = {}
    in_stay: set[str] = set()
    for s in series:
        patient = s.tags.get("patient", "")
        snapshots = sorted(
            (profile_from_row(patient, s.columns, row) for row in s.values),
            key=lambda p: p.ts_ns,
        )
        if not snapshots:
            continue
        newest[patient] = snapshots[-1]
        before = [p for p in snapshots if since_ns is not None and p.ts_ns < since_ns]
        if since_ns is None or len(before) < len(snapshots) or before[-1].state == "admitted":
            in_stay.add(patient)
    return newest, in_stay


def _monitored(influx: InfluxV1, window: str) -> tuple[set[str], set[str]]:
    """Patients with a reading of a patient metric in the window, and every device seen."""
    series = influx.query(
        f'SELECT count("value") FROM "vital" WHERE {window} '  # noqa: S608
        'GROUP BY "patient", "metric", "device"'
    )
    patients = {
        s.tags.get("patient", "")
        for s in series
        if s.values and s.tags.get("metric") not in NON_PATIENT_METRICS
    }
    devices = {s.tags.get("device", "") for s in series if s.values}
    return patients, devices


def _device_histories(influx: InfluxV1, window: str) -> tuple[DeviceHistory, ...]:
    series = influx.query(
        'SELECT "errors_total", "link_up" FROM "device_health" '  # noqa: S608
        f'WHERE {window} GROUP BY "device", "kind", "gateway"'
    )
    records: dict[str, list[tuple[int, int | None, str, str | None]]] = {}
    for s in series:
        column = _column(s)
        device = s.tags.get("device", "")
        kind = s.tags.get("kind") or UNKNOWN_KIND
        gateway = s.tags.get("gateway") or None
        for row in s.values:
            errors = row[column["errors_total"]]
            records.setdefault(device, []).append(
                (int(row[0]), None if errors is None else int(errors), kind, gateway)
            )
    histories = []
    for device, rows in sorted(records.items()):
        rows.sort(key=lambda r: r[0])
        samples = [(ts, errors) for ts, errors, _, _ in rows if errors is not None]
        _, _, kind, gateway = rows[-1]  # the newest record names the kind and the gateway
        histories.append(
            DeviceHistory(
                device,
                kind,
                gateway,
                np.array([ts for ts, _ in samples], dtype=np.int64),
                np.array([errors for _, errors in samples], dtype=np.int64),
            )
        )
    return tuple(histories)


def _device_gateways(influx: InfluxV1, until_ns: int) -> dict[str, str]:
    """The gateway each device's newest `device_health` record up to `until` names."""
    # `link_up` is in every device_health point (cloud_sink.validate writes it unconditionally).
    series = influx.query(
        f'SELECT last("link_up") FROM "device_health" WHERE time <= {until_ns} '  # noqa: S608
        'GROUP BY "device", "gateway"'
    )
    newest: dict[str, tuple[int, str]] = {}
    for s in series:
        device, gateway = s.tags.get("device", ""), s.tags.get("gateway", "")
        if not GATEWAY_ID_RE.fullmatch(gateway):
            continue
        for row in s.values:
            if device not in newest or int(row[0]) > newest[device][0]:
                newest[device] = (int(row[0]), gateway)
    return {device: gateway for device, (_, gateway) in newest.items()}


def _environment_rooms(influx: InfluxV1, window: str) -> list[RoomTrack]:
    series = influx.query(
        f'SELECT "room_temp_c" FROM "environment" WHERE {window} GROUP BY "gateway"'  # noqa: S608
    )
    rooms = []
    for s in series:
        column = _column(s)["room_temp_c"]
        rows = sorted((int(r[0]), float(r[column])) for r in s.values if r[column] is not None)
        if rows:
            stamps, temps = zip(*rows, strict=True)
            gateway = s.tags.get("gateway") or None
            rooms.append(
                RoomTrack(
                    gateway,
                    "environment",
                    np.array(stamps, dtype=np.int64),
                    np.array(temps, dtype=np.float64),
                )
            )
    return rooms


def _advised(influx: InfluxV1, window: str) -> set[str]:
    kinds = " OR ".join(f"\"kind\" = '{kind}'" for kind in ADVISORY_KINDS)
    series = influx.query(
        f'SELECT "id" FROM "alert" WHERE ({kinds}) AND {window} GROUP BY "patient"'  # noqa: S608
    )
    return {s.tags.get("patient", "") for s in series if s.values}


def _security(influx: InfluxV1, window: str) -> SecurityCounts:
    series = influx.query(
        'SELECT sum("rejected") AS "rejected", sum("accepted") AS "accepted" '  # noqa: S608
        f'FROM "sink_security" WHERE {window} GROUP BY "gateway", "reason"'
    )
    by_reason: Counter[str] = Counter()
    gateways: set[str] = set()
    accepted: int | None = None
    for s in series:
        column = _column(s)
        for row in s.values:
            rejected, taken = row[column["rejected"]], row[column["accepted"]]
            if rejected:
                by_reason[s.tags.get("reason") or "unknown"] += int(rejected)
                gateways.add(s.tags.get("gateway", ""))
            if taken is not None:
                accepted = (accepted or 0) + int(taken)
    return SecurityCounts(dict(sorted(by_reason.items())), len(gateways), accepted)


def read_population(influx: InfluxV1, since_ns: int | None, until_ns: int) -> PopulationData:
    """Query everything the report needs for the window [since, until] (since None: all data)."""
    if since_ns is not None and since_ns > until_ns:
        raise ReportError(_WINDOW, f"--since ({iso_utc(since_ns)}) lies in the future")
    window = time_where(since_ns, until_ns)
    profiles, in_stay = _profiles(influx, since_ns, until_ns)
    monitored, vital_devices = _monitored(influx, window)
    population = frozenset(monitored | in_stay)
    vitals: dict[str, tuple[Track, ...]] = {}
    unusable: dict[str, int] = {}
    for metric in REPORT_METRICS:
        vitals[metric], unusable[metric] = _tracks(influx, metric, window)
    devices = _device_histories(influx, window)
    with_health = {d.device for d in devices}
    device_gateway = _device_gateways(influx, until_ns)
    rooms = _environment_rooms(influx, window)
    rooms += [
        RoomTrack(device_gateway.get(t.device), t.device, t.ts_ns, t.values)
        for t in vitals["room_temp"]
    ]
    return PopulationData(
        population=population,
        monitored=frozenset(monitored),
        profiles={p: profile for p, profile in profiles.items() if p in population},
        vitals=vitals,
        unusable=unusable,
        device_gateway=device_gateway,
        devices=devices,
        devices_without_health=len(vital_devices - with_health),
        rooms=tuple(rooms),
        advised=frozenset(_advised(influx, window)),
        security=_security(influx, window),
    )


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Figure:
    """One number of the report and what it rests on."""

    title: str
    value: FigureValue
    how: str
    over: str | None
    """What `count` counts: patients, devices, readings, envelopes or exports."""
    count: int | None
    """None: the figure could not be computed, so it rests on nothing."""
    unit: str | None = None
    left_out: int | None = None
    """Patients (or devices) of the population without data for this figure."""
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class PlotData:
    """The distributions and trends behind the figures, for cloud_sink.report_plots."""

    ages_years: tuple[int, ...]
    heart_rates: FloatArray
    spo2_pct: FloatArray
    bp_medians: tuple[tuple[float, float], ...]
    """Per patient (median systolic, median diastolic), mmHg."""
    pair_temps_c: FloatArray
    pair_heart_rates: FloatArray
    fit: LineFit | Insufficient
    error_rate_by_kind: Mapping[str, float]
    rooms: tuple[RoomTrack, ...]


@dataclass(slots=True, frozen=True)
class Report:
    """The report over [since, until] (since None: from the first data on)."""

    since_ns: int | None
    until_ns: int
    generated_ns: int
    figures: Mapping[str, Figure]
    plots: PlotData


def counted(n: int, noun: str) -> str:
    """`1 patient`, `2 patients`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _left_out(n: int, whole: int, what: str) -> str:
    missing = whole - n
    return f"; {counted(missing, 'patient')} without {what} left out" if missing > 0 else ""


def _demographics(data: PopulationData) -> tuple[dict[str, Figure], tuple[int, ...]]:
    whole = len(data.population)
    profiles = data.profiles
    ages = tuple(sorted(p.age_years for p in profiles.values() if p.age_years is not None))
    sexes = Counter(p.sex for p in profiles.values() if p.sex is not None)
    n_sex = sum(sexes.values())
    chronic = sum(1 for p in profiles.values() if p.conditions)
    figures = {
        "average_age": Figure(
            "Average age",
            float(np.mean(ages)) if ages else None,
            "Mean of the age in each patient's newest profile snapshot up to the window's end"
            + _left_out(len(ages), whole, "a recorded age")
            + ".",
            "patients",
            len(ages),
            unit="a",
            left_out=whole - len(ages),
        ),
        "gender_distribution": Figure(
            "Gender distribution",
            {sex: 100.0 * n / n_sex for sex, n in sorted(sexes.items())} if n_sex else None,
            "Share of each administrative gender (FHIR codes) among patients whose newest "
            "profile records one" + _left_out(n_sex, whole, "a recorded gender") + ".",
            "patients",
            n_sex,
            unit="%",
            left_out=whole - n_sex,
        ),
        "chronic_conditions": Figure(
            "Patients with chronic conditions",
            share_pct(chronic, len(profiles)),
            "Share of profiled patients whose newest profile lists at least one chronic "
            "condition (an empty list counts as none)"
            + _left_out(len(profiles), whole, "a profile")
            + ".",
            "patients",
            len(profiles),
            unit="%",
            left_out=whole - len(profiles),
        ),
    }
    return figures, ages


def _by_patient(tracks: Iterable[Track]) -> dict[str, tuple[IntArray, FloatArray]]:
    """All of a patient's readings of one metric (every device), in time order."""
    grouped: dict[str, list[Track]] = {}
    for track in tracks:
        grouped.setdefault(track.patient, []).append(track)
    out = {}
    for patient, own in grouped.items():
        stamps = np.concatenate([t.ts_ns for t in own])
        values = np.concatenate([t.values for t in own])
        order = np.argsort(stamps, kind="stable")
        out[patient] = (stamps[order], values[order])
    return out


def heart_rate_tracks(data: PopulationData) -> dict[str, tuple[Track, ...]]:
    """Each population patient's heart-rate tracks: `heart_rate`, else `pulse_rate`."""
    chosen: dict[str, tuple[Track, ...]] = {}
    for metric in HEART_RATE_METRICS:
        found: dict[str, list[Track]] = {}
        for track in data.vitals.get(metric, ()):
            if track.patient in data.population and track.patient not in chosen:
                found.setdefault(track.patient, []).append(track)
        chosen.update((patient, tuple(tracks)) for patient, tracks in found.items())
    return chosen


def _population_tracks(data: PopulationData, metric: str) -> Iterable[Track]:
    return (t for t in data.vitals.get(metric, ()) if t.patient in data.population)


def _concat(arrays: Sequence[FloatArray]) -> FloatArray:
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=np.float64)


@dataclass(slots=True, frozen=True)
class _Vitals:
    figures: dict[str, Figure]
    heart_rates: FloatArray
    spo2_pct: FloatArray
    bp_medians: tuple[tuple[float, float], ...]


def _vital_figures(data: PopulationData, hr_tracks: Mapping[str, tuple[Track, ...]]) -> _Vitals:
    whole = len(data.population)
    artifacts = sum(data.unusable.get(metric, 0) for metric in HEART_RATE_METRICS)
    hr_values = {p: _concat([t.values for t in tracks]) for p, tracks in hr_tracks.items()}
    patient_means = [float(np.mean(values)) for values in hr_values.values()]
    systolic = _by_patient(_population_tracks(data, "bp_systolic"))
    diastolic = _by_patient(_population_tracks(data, "bp_diastolic"))
    bp_medians = tuple(
        (float(np.median(systolic[p][1])), float(np.median(diastolic[p][1])))
        for p in sorted(systolic.keys() & diastolic.keys())
    )
    elevated = sum(
        1 for sbp, dbp in bp_medians if sbp >= BP_SYSTOLIC_MMHG or dbp >= BP_DIASTOLIC_MMHG
    )
    spo2 = _by_patient(_population_tracks(data, "spo2"))
    low = sum(
        1
        for stamps, values in spo2.values()
        if sustained_below(stamps, values, SPO2_LOW_PCT, SPO2_SUSTAINED_S)
    )
    readings = sum(len(values) for values in hr_values.values())
    figures = {
        "average_heart_rate": Figure(
            "Average heart rate",
            float(np.mean(patient_means)) if patient_means else None,
            "Mean over patients of each patient's mean heart rate in the window (heart_rate, "
            f"else the oximeter's pulse_rate; {counted(artifacts, 'reading')} with artifact flags "
            "dropped)" + _left_out(len(patient_means), whole, "heart-rate readings") + ".",
            "patients",
            len(patient_means),
            unit="/min",
            left_out=whole - len(patient_means),
            extra={"readings": readings},
        ),
        "elevated_blood_pressure": Figure(
            "Patients with elevated blood pressure (>= 130/80 mmHg)",
            share_pct(elevated, len(bp_medians)),
            "Share of patients whose median systolic over the window is >= 130 mmHg or whose "
            "median diastolic is >= 80 mmHg"
            + _left_out(len(bp_medians), whole, "both a systolic and a diastolic reading")
            + ".",
            "patients",
            len(bp_medians),
            unit="%",
            left_out=whole - len(bp_medians),
        ),
        "low_spo2": Figure(
            "Patients with sustained SpO2 below 94 %",
            share_pct(low, len(spo2)),
            "Share of patients with a run of successive usable SpO2 readings all below 94 % "
            f"lasting {SPO2_SUSTAINED_S / 60:g} minutes or more "
            f"({counted(data.unusable.get('spo2', 0), 'reading')} with artifact flags dropped)"
            + _left_out(len(spo2), whole, "SpO2 readings")
            + ".",
            "patients",
            len(spo2),
            unit="%",
            left_out=whole - len(spo2),
        ),
    }
    return _Vitals(
        figures,
        _concat(list(hr_values.values())),
        _concat([values for _, values in spo2.values()]),
        bp_medians,
    )


def _rooms_by_gateway(rooms: Iterable[RoomTrack]) -> dict[str, tuple[IntArray, FloatArray]]:
    grouped: dict[str, list[RoomTrack]] = {}
    for room in rooms:
        if room.gateway is not None:
            grouped.setdefault(room.gateway, []).append(room)
    out = {}
    for gateway, own in grouped.items():
        stamps = np.concatenate([r.ts_ns for r in own])
        temps = np.concatenate([r.temps_c for r in own])
        order = np.argsort(stamps, kind="stable")
        out[gateway] = (stamps[order], temps[order])
    return out


@dataclass(slots=True, frozen=True)
class Pairs:
    """Heart-rate readings paired with their gateway's room temperature above 25 °C."""

    temps_c: FloatArray
    heart_rates: FloatArray
    patients: int
    gateways: int
    not_warm: int
    """Paired readings left out because the room was at or below 25 °C."""
    unpaired: int
    """Readings with no gateway, or no room reading of their gateway within the gap."""


def heart_rate_room_pairs(
    hr_tracks: Mapping[str, tuple[Track, ...]],
    rooms: Iterable[RoomTrack],
    device_gateway: Mapping[str, str],
) -> Pairs:
    """Pair each heart-rate reading with the room temperature of its device's gateway nearest in
    time (within PAIR_MAX_GAP_S); keep the pairs where the room is above ROOM_WARM_C."""
    by_gateway = _rooms_by_gateway(rooms)
    temps: list[FloatArray] = []
    rates: list[FloatArray] = []
    patients: set[str] = set()
    gateways: set[str] = set()
    not_warm = unpaired = 0
    for patient, tracks in hr_tracks.items():
        for track in tracks:
            gateway = device_gateway.get(track.device)
            if gateway is None or gateway not in by_gateway:
                unpaired += len(track.values)
                continue
            ref_ns, ref_temps = by_gateway[gateway]
            paired = nearest_within(track.ts_ns, ref_ns, ref_temps, int(PAIR_MAX_GAP_S * NS))
            found = ~np.isnan(paired)
            warm = found & (np.nan_to_num(paired, nan=-np.inf) > ROOM_WARM_C)
            unpaired += int(np.count_nonzero(~found))
            not_warm += int(np.count_nonzero(found & ~warm))
            if np.any(warm):
                temps.append(paired[warm])
                rates.append(track.values[warm])
                patients.add(patient)
                gateways.add(gateway)
    return Pairs(_concat(temps), _concat(rates), len(patients), len(gateways), not_warm, unpaired)


def _slope_figure(pairs: Pairs, fit: LineFit | Insufficient) -> Figure:
    method = (
        "OLS slope of heart rate on room temperature, each heart-rate reading paired with its "
        f"gateway's room temperature nearest in time (within {PAIR_MAX_GAP_S / 60:g} min), "
        f"pairs with the room above {ROOM_WARM_C:g} °C only "
        f"({counted(pairs.not_warm, 'cooler pair')} and "
        f"{counted(pairs.unpaired, 'unpaired reading')} left out), "
        f"{CONFIDENCE:.0%} interval from the t distribution with n - 2 degrees of freedom"
    )
    n = len(pairs.temps_c)
    common = {"patients": pairs.patients, "gateways": pairs.gateways, "n": n}
    if isinstance(fit, Insufficient):
        return Figure(
            "Heart-rate change per °C above 25 °C",
            None,
            f"Insufficient data ({fit.reason}); method: {method}.",
            "readings",
            n,
            unit="/min/K",
            extra={**common, "ci95": None},
        )
    return Figure(
        "Heart-rate change per °C above 25 °C",
        fit.slope,
        method + "; the readings are serially correlated, so the interval is optimistic.",
        "readings",
        n,
        unit="/min/K",
        extra={
            **common,
            "ci95": [fit.ci_low, fit.ci_high],
            "intercept": fit.intercept,
            "slope_se": fit.slope_se,
            "dof": fit.dof,
            "t_quantile": fit.t_crit,
        },
    )


def _room_figures(data: PopulationData) -> dict[str, Figure]:
    temps = _concat([room.temps_c for room in data.rooms])
    gateways = {room.gateway for room in data.rooms if room.gateway is not None}
    n = len(temps)
    sources = (
        "over every room-temperature reading in the window (gateway `environment` points and "
        f"usable room-sensor readings; {len(gateways)} gateways, readings pooled)"
    )
    variance = float(np.var(temps, ddof=1)) if n >= 2 else None
    extra = {"gateways": len(gateways)}
    return {
        "room_temperature_mean": Figure(
            "Average room temperature",
            float(np.mean(temps)) if n else None,
            f"Mean {sources}.",
            "readings",
            n,
            unit="Cel",
            extra=extra,
        ),
        "room_temperature_variance": Figure(
            "Room temperature variance",
            variance,
            f"Sample variance (n - 1) {sources}; needs two readings.",
            "readings",
            n,
            unit="K2",
            extra=extra,
        ),
        "room_temperature_sd": Figure(
            "Room temperature standard deviation",
            None if variance is None else math.sqrt(variance),
            f"Square root of the sample variance {sources}.",
            "readings",
            n,
            unit="K",
            extra=extra,
        ),
    }


@dataclass(slots=True, frozen=True)
class _Devices:
    figures: dict[str, Figure]
    rate_by_kind: dict[str, float]


def _device_figures(data: PopulationData) -> _Devices:
    rated = [d for d in data.devices if len(d.ts_ns) >= 2 and d.ts_ns[-1] > d.ts_ns[0]]
    errors = {d.device: counter_increase(d.errors_total.tolist()) for d in rated}
    hours = {d.device: int(d.ts_ns[-1] - d.ts_ns[0]) / NS_PER_HOUR for d in rated}
    kind_errors: Counter[str] = Counter()
    kind_hours: dict[str, float] = {}
    for d in rated:
        kind_errors[d.kind] += errors[d.device]
        kind_hours[d.kind] = kind_hours.get(d.kind, 0.0) + hours[d.device]
    total_hours = sum(hours.values())
    unrated = len(data.devices) - len(rated)
    without = data.devices_without_health
    left = (
        f"; {counted(unrated, 'device')} with fewer than two counter records in the window and "
        f"{counted(without, 'device')} with readings but no device_health record left out"
    )
    kinds = Counter(d.kind for d in data.devices)
    categories = Counter(kind_category(d.kind) for d in data.devices)
    n_devices = len(data.devices)
    mix_left = f"; {counted(without, 'device')} with readings but no device_health record left out"
    figures = {
        "device_error_rate": Figure(
            "Device errors per 100 hours",
            100.0 * sum(errors.values()) / total_hours if total_hours > 0 else None,
            "All devices' increase of the errors_total counter between their first and last "
            "device_health record in the window (a drop is a restart: the new value counts in "
            f"full), per 100 hours of those records' spans, pooled over devices{left}.",
            "devices",
            len(rated),
            unit="/100 h",
            left_out=unrated + without,
            extra={"errors": sum(errors.values()), "hours": total_hours},
        ),
        "devices_zero_errors": Figure(
            "Devices with zero errors",
            share_pct(sum(1 for e in errors.values() if e == 0), len(rated)),
            "Share of devices whose errors_total counter did not increase across their "
            f"device_health records in the window{left}.",
            "devices",
            len(rated),
            unit="%",
            left_out=unrated + without,
        ),
        "device_kinds": Figure(
            "Device kinds",
            {k: 100.0 * n / n_devices for k, n in sorted(kinds.items())} or None,
            "Share of each kind among devices with a device_health record in the window (the "
            f"kind of the newest record){mix_left}.",
            "devices",
            n_devices,
            unit="%",
            left_out=without,
        ),
        "device_categories": Figure(
            "Device types",
            {c: 100.0 * n / n_devices for c, n in sorted(categories.items())} or None,
            "The device kinds grouped: wearable (hr-strap, chest-patch, pulse-oximeter), "
            f"implantable (implant-receiver), other (every other kind){mix_left}.",
            "devices",
            n_devices,
            unit="%",
            left_out=without,
        ),
    }
    rate_by_kind = {
        kind: 100.0 * kind_errors[kind] / h for kind, h in sorted(kind_hours.items()) if h > 0
    }
    return _Devices(figures, rate_by_kind)


def _advisory_figure(data: PopulationData) -> Figure:
    whole = data.monitored | data.advised
    unmonitored = len(data.population - whole)
    left = f"; {counted(unmonitored, 'unmonitored patient')} left out" if unmonitored else ""
    return Figure(
        "Patients with personalised advisories",
        share_pct(len(data.advised), len(whole)),
        "Share of monitored patients (a patient vital in the window) with at least one "
        f"{' or '.join(ADVISORY_KINDS)} alert point in the window{left}.",
        "patients",
        len(whole),
        unit="%",
        left_out=unmonitored,
    )


def _security_figures(data: PopulationData, access: AccessFigures | None) -> dict[str, Figure]:
    security = data.security
    refused = sum(security.rejected_by_reason.values())
    accepted = security.accepted
    if accepted is None:
        compliance: float | None = None
        how = (
            "Not computable: InfluxDB holds the sink's refusals (sink_security.rejected) but no "
            "count of accepted envelopes (a sink_security `accepted` field), so the share of "
            "received envelopes stored sealed is unknown; the refusals are under "
            "envelopes_refused."
        )
        envelopes: int | None = None
    else:
        envelopes = accepted + refused
        compliance = share_pct(accepted, envelopes)
        how = (
            "Envelopes accepted (tag verified, opened, stored) over envelopes accepted plus "
            "refused, from the sums of sink_security `accepted` and `rejected` in the window."
        )
    figures = {
        "encryption_compliance": Figure(
            "Encryption compliance", compliance, how, "envelopes", envelopes, unit="%"
        ),
        "envelopes_refused": Figure(
            "Envelopes refused",
            refused,
            "Sum of sink_security `rejected` in the window: envelopes the sink refused "
            "(tampered, unknown key, retired epoch, misrouted, malformed) and never stored.",
            "gateways",
            security.rejecting_gateways,
            extra={"by_reason": dict(security.rejected_by_reason)},
        ),
    }
    if access is None:
        figures["exports_anonymised"] = Figure(
            "Anonymised share of exports", None, NO_AUDIT_LOG, "exports", None, unit="%"
        )
        figures["access_denied"] = Figure("Blocked access attempts", None, NO_AUDIT_LOG, None, None)
        return figures
    figures["exports_anonymised"] = Figure(
        "Anonymised share of exports",
        share_pct(access.exports_anonymised, access.exports_total),
        "Exports the audit log records as anonymised over all exports that went ahead in the "
        "window (refused exports count as blocked attempts).",
        "exports",
        access.exports_total,
        unit="%",
    )
    figures["access_denied"] = Figure(
        "Blocked access attempts",
        access.access_denied + access.auth_failures,
        "Audit-log entries of action access_denied (a known identity asking for more than its "
        "role allows) plus auth_failure (no token, or one matching no identity) in the window.",
        None,
        None,
        extra={"access_denied": access.access_denied, "auth_failures": access.auth_failures},
    )
    return figures


def build_report(
    data: PopulationData,
    *,
    since_ns: int | None,
    until_ns: int,
    generated_ns: int,
    access: AccessFigures | None,
) -> Report:
    """Every figure of the report from the data read for the window (no database access)."""
    demographics, ages = _demographics(data)
    hr_tracks = heart_rate_tracks(data)
    vitals = _vital_figures(data, hr_tracks)
    pairs = heart_rate_room_pairs(hr_tracks, data.rooms, data.device_gateway)
    fit = ols_fit(pairs.temps_c, pairs.heart_rates)
    devices = _device_figures(data)
    figures = {
        **demographics,
        **vitals.figures,
        **devices.figures,
        **_room_figures(data),
        "heart_rate_per_room_temp": _slope_figure(pairs, fit),
        "personalised_advisories": _advisory_figure(data),
        **_security_figures(data, access),
    }
    plots = PlotData(
        ages_years=ages,
        heart_rates=vitals.heart_rates,
        spo2_pct=vitals.spo2_pct,
        bp_medians=vitals.bp_medians,
        pair_temps_c=pairs.temps_c,
        pair_heart_rates=pairs.heart_rates,
        fit=fit,
        error_rate_by_kind=devices.rate_by_kind,
        rooms=data.rooms,
    )
    return Report(since_ns, until_ns, generated_ns, figures, plots)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class PlotFile:
    """One PNG the report wrote, and what it shows."""

    file: str
    shows: str


def figure_json(figure: Figure) -> dict[str, object]:
    """`value`, `unit`, `how`, the count it rests on (`patients`, `devices`, ...) and extras."""
    document: dict[str, object] = {"title": figure.title, "value": figure.value}
    if figure.unit is not None:
        document["unit"] = figure.unit
    document["how"] = figure.how
    if figure.over is not None:
        document[figure.over] = figure.count
    if figure.left_out is not None:
        document["left_out"] = figure.left_out
    document.update(figure.extra)
    return document


def report_json(report: Report, plots: Sequence[PlotFile] = ()) -> dict[str, object]:
    """The `report.json` document (and `cloud-sink report --json`)."""
    return {
        "since": None if report.since_ns is None else iso_utc(report.since_ns),
        "until": iso_utc(report.until_ns),
        "generated_at": iso_utc(report.generated_ns),
        "figures": {name: figure_json(figure) for name, figure in report.figures.items()},
        "plots": [{"file": p.file, "shows": p.shows} for p in plots],
    }


def dumps(document: Mapping[str, object]) -> str:
    """One line of JSON; a NaN or infinity anywhere is a bug, never silently written."""
    return json.dumps(document, allow_nan=False, ensure_ascii=False)


def format_value(figure: Figure) -> str:
    """The value as a person reads it in the terminal table."""
    value = figure.value
    if value is None:
        return "n/a"
    if isinstance(value, dict):
        return ", ".join(f"{key} {share:.1f}" for key, share in value.items())
    if isinstance(value, int):
        return str(value)
    text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    ci = figure.extra.get("ci95")
    if isinstance(ci, list):
        text += f" (95 % CI {ci[0]:.2f} to {ci[1]:.2f})"
    return text

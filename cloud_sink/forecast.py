"""Short-horizon outlook of a vital: least-squares line, prediction interval, NEWS2 band search."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cloud_sink.errors import CloudSinkError
from cloud_sink.news2 import PARAMETERS, News2Inputs, score
from cloud_sink.news2_chart import Band

NS: Final = 1_000_000_000
MIN_FIT_POINTS: Final = 3
"""A line through two points has no residual left to estimate its scatter from."""

DEFAULT_LEVEL: Final = 0.95
DEFAULT_HORIZONS_MIN: Final[tuple[float, ...]] = (15.0, 30.0)
CONFIDENT_POINTS: Final = 10
"""Fewer points than this in the window: the forecast is flagged low-confidence."""
CONFIDENT_SPAN_S: Final = 900.0
"""Points spanning less than this (half the 30-minute trend window): flagged low-confidence."""

DEFAULT_PROJECTION_HORIZON_MIN: Final = 240
DEFAULT_PROJECTION_STEP_MIN: Final = 1
MAX_PROJECTION_STEPS: Final = 10_080
"""A week of one-minute steps: bounds the work of one band-change search."""

NEWS2_FIELDS: Final[Mapping[str, str]] = {
    "rr": "rr_per_min",
    "spo2": "spo2_pct",
    "sbp": "sbp_mmhg",
    "hr": "hr_per_min",
    "temp": "temp_c",
}
"""The measured NEWS2 parameters (RCP 2017 Chart 1 rows) and their News2Inputs fields."""

# The continued fraction of the incomplete beta function converges in a few dozen terms for the
# degrees of freedom we meet (1 to a few thousand); the cap turns a bug into an error, not a hang.
_CF_MAX_TERMS: Final = 10_000
_CF_EPS: Final = 1e-15
_TINY: Final = 1e-300
_BISECTION_STEPS: Final = 200
_NO_SCATTER_RELATIVE: Final = 1e-9


class ForecastInputError(CloudSinkError):
    """A forecast setting or input is impossible (a negative horizon, a level of 1, NaN...)."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        super().__init__(f"forecast {parameter}={value!r}: {reason}")
        self.parameter = parameter
        self.value = value
        self.reason = reason


# --- Student's t distribution, from the regularized incomplete beta function -----------------


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) (DLMF §8.17(v)), evaluated by the modified Lentz method.

    I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))) with
    d(2m+1) = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and d(2m) = m(b-m) x / ((a+2m-1)(a+2m)).
    It converges fast for x < (a+1)/(a+b+2); the caller swaps (a, b) above that.
    """
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, _CF_MAX_TERMS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = c * d
            fraction *= step
        if abs(step - 1.0) < _CF_EPS:
            return fraction
    reason = f"no convergence for x={x!r}, a={a!r}, b={b!r}"
    raise ForecastInputError(parameter="incomplete_beta", value=(x, a, b), reason=reason)


def regularized_beta(x: float, a: float, b: float, *, complement: float | None = None) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1 and a, b > 0.

    `complement` may carry 1 - x computed without cancellation (for x close to 1).
    """
    y = 1.0 - x if complement is None else complement
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (
        a * math.log(x) + b * math.log(y) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    # The symmetry I_x(a, b) = 1 - I_{1-x}(b, a) moves x into the fast region.
    return 1.0 - math.exp(log_front) * _beta_fraction(y, b, a) / b


def _check_df(df: float) -> None:
    if isinstance(df, bool) or not isinstance(df, int | float) or not math.isfinite(df) or df <= 0:
        raise ForecastInputError(
            parameter="df", value=df, reason="degrees of freedom must be a finite number above 0"
        )


def student_t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom, t >= 0.

    P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2) (Abramowitz & Stegun §26.7, Student's t).
    """
    _check_df(df)
    if not t >= 0.0:
        raise ForecastInputError(
            parameter="t", value=t, reason="the upper tail is defined here for t >= 0"
        )
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return 0.5 * regularized_beta(df / (df + t2), df / 2.0, 0.5, complement=t2 / (df + t2))


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        raise ForecastInputError(parameter="t", value=t, reason="must be a number")
    tail = student_t_upper_tail(abs(t), df)
    return 1.0 - tail if t >= 0.0 else tail


@functools.lru_cache(maxsize=512)
def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (exact, not a normal proxy).

    Solved by bisection on the upper tail, which keeps full relative precision however close p
    is to 1; the result is accurate to about 1e-12 relative.
    """
    _check_df(df)
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p < 1.0:
        raise ForecastInputError(
            parameter="p", value=p, reason="a probability strictly between 0 and 1"
        )
    if p == 0.5:
        return 0.0
    # Solve for the smaller tail, which p carries exactly (1 - p is exact for p >= 0.5 by
    # Sterbenz, while 1 - p for a tiny p would round away its digits).
    sign, wanted = (-1.0, p) if p < 0.5 else (1.0, 1.0 - p)
    low, high = 0.0, 1.0
    while student_t_upper_tail(high, df) > wanted:
        low, high = high, high * 2.0
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if student_t_upper_tail(middle, df) > wanted:
            low = middle
        else:
            high = middle
    return sign * 0.5 * (low + high)


# --- ordinary least squares ----------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class LineFit:
    """An ordinary least-squares line y = level + slope * (t - t_mean) through a vital's window.

    Times are seconds relative to `origin_ns` (the newest point), which keeps the sums exact
    enough in float64 where epoch nanoseconds would not be.
    """

    n: int
    origin_ns: int
    t_mean_s: float
    level: float
    """The fitted value at t_mean."""
    slope_per_s: float
    sxx_s2: float
    """Sum of squared deviations of the times from their mean."""
    sse: float
    """Sum of squared residuals."""
    span_s: float
    """Newest minus oldest point time."""

    @property
    def dof(self) -> int:
        return self.n - 2

    @property
    def slope_per_h(self) -> float:
        return self.slope_per_s * 3600.0

    @property
    def residual_se(self) -> float:
        """The residual standard error s = sqrt(SSE / (n - 2))."""
        return math.sqrt(self.sse / self.dof)

    @property
    def slope_se_per_h(self) -> float:
        """Standard error of the slope, s / sqrt(Sxx), per hour."""
        return self.residual_se / math.sqrt(self.sxx_s2) * 3600.0

    def _x(self, ts_ns: int) -> float:
        return (ts_ns - self.origin_ns) / NS - self.t_mean_s

    def at(self, ts_ns: int) -> float:
        """The line's value at a time."""
        return self.level + self.slope_per_s * self._x(ts_ns)

    def prediction_se(self, ts_ns: int) -> float:
        """Standard error of one new observation at `ts_ns`: s * sqrt(1 + 1/n + x^2 / Sxx)."""
        x = self._x(ts_ns)
        return self.residual_se * math.sqrt(1.0 + 1.0 / self.n + x * x / self.sxx_s2)

    def slope_significant(self, level: float = DEFAULT_LEVEL) -> bool:
        """True when the two-sided `level` confidence interval of the slope excludes zero."""
        t = student_t_quantile(0.5 + level / 2.0, self.dof)
        return abs(self.slope_per_h) > t * self.slope_se_per_h


def fit_line(points: Iterable[tuple[int, float]]) -> LineFit | None:
    """Least-squares line through (ts_ns, value) points; None below 3 points or at one instant."""
    pairs = list(points)
    if len(pairs) < MIN_FIT_POINTS:
        return None
    for ts_ns, value in pairs:
        if not math.isfinite(value):
            raise ForecastInputError(
                parameter="value", value=value, reason=f"non-finite reading at ts_ns={ts_ns}"
            )
    origin_ns = max(ts for ts, _ in pairs)
    first_ns = min(ts for ts, _ in pairs)
    n = len(pairs)
    times = [(ts - origin_ns) / NS for ts, _ in pairs]
    values = [value for _, value in pairs]
    t_mean = math.fsum(times) / n
    y_mean = math.fsum(values) / n
    dt = [t - t_mean for t in times]
    sxx = math.fsum(x * x for x in dt)
    if sxx <= 0.0:
        return None
    slope = math.fsum(x * (y - y_mean) for x, y in zip(dt, values, strict=True)) / sxx
    sse = math.fsum((y - y_mean - slope * x) ** 2 for x, y in zip(dt, values, strict=True))
    return LineFit(n, origin_ns, t_mean, y_mean, slope, sxx, sse, (origin_ns - first_ns) / NS)


# --- forecast at fixed horizons --------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class HorizonForecast:
    """The line's value at one horizon with its prediction interval, inside the limits."""

    minutes: float
    at_ns: int
    value: float
    low: float
    high: float
    clamped: bool
    """True when the value or a bound was pulled back to a physiological limit."""


@dataclass(slots=True, frozen=True)
class VitalForecast:
    """A vital's least-squares projection at each horizon (OLS prediction interval, t quantile)."""

    metric: str
    points: int
    span_s: float
    slope_per_h: float
    residual_se: float
    level: float
    t_quantile: float
    horizons: tuple[HorizonForecast, ...]
    low_confidence: bool
    reasons: tuple[str, ...]


def check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise ForecastInputError(
            parameter="level", value=level, reason="a coverage strictly between 0 and 1, e.g. 0.95"
        )
    return float(level)


def check_horizons(horizons_min: Sequence[float]) -> tuple[float, ...]:
    if not horizons_min:
        raise ForecastInputError(
            parameter="horizons_min", value=horizons_min, reason="give at least one horizon"
        )
    for horizon in horizons_min:
        if not math.isfinite(horizon) or not 0.0 < horizon <= 24 * 60:
            raise ForecastInputError(
                parameter="horizons_min", value=horizon, reason="each horizon is 0-1440 minutes"
            )
    return tuple(sorted(set(map(float, horizons_min))))


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def forecast_vital(
    metric: str,
    fit: LineFit | None,
    now_ns: int,
    limits: tuple[float, float],
    *,
    horizons_min: Sequence[float] = DEFAULT_HORIZONS_MIN,
    level: float = DEFAULT_LEVEL,
    confident_points: int = CONFIDENT_POINTS,
    confident_span_s: float = CONFIDENT_SPAN_S,
    stale: bool = False,
) -> VitalForecast | None:
    """Project the fitted line to now + each horizon with a `level` prediction interval.

    interval = fit(t) +/- t_{(1+level)/2, n-2} * s * sqrt(1 + 1/n + (t - t_mean)^2 / Sxx), the
    OLS prediction interval for one new reading under independent normal residuals. Value and
    bounds are clamped to `limits` (the catalogue's plausible range). None without a fit.
    """
    if fit is None:
        return None
    level = check_level(level)
    horizons = check_horizons(horizons_min)
    low_limit, high_limit = limits
    t = student_t_quantile(0.5 + level / 2.0, fit.dof)
    out = []
    for minutes in horizons:
        at_ns = now_ns + round(minutes * 60 * NS)
        centre = fit.at(at_ns)
        half = t * fit.prediction_se(at_ns)
        raw = (centre, centre - half, centre + half)
        value, low, high = (_clamp(v, low_limit, high_limit) for v in raw)
        out.append(HorizonForecast(minutes, at_ns, value, low, high, (value, low, high) != raw))
    reasons = []
    if fit.n < confident_points:
        reasons.append(f"only {fit.n} readings in the window (fewer than {confident_points})")
    if fit.span_s < confident_span_s:
        reasons.append(
            f"the readings span {fit.span_s / 60:.1f} min (less than {confident_span_s / 60:g})"
        )
    # Exactly on a line up to rounding (a constant or quantised series that did not move):
    # the interval collapses to the line, which says nothing about the scatter to come.
    if fit.residual_se <= _NO_SCATTER_RELATIVE * max(1.0, abs(fit.level)):
        reasons.append("no scatter around the line: the interval only knows what it has seen")
    if stale:
        reasons.append("the vital is stale")
    return VitalForecast(
        metric=metric,
        points=fit.n,
        span_s=fit.span_s,
        slope_per_h=fit.slope_per_h,
        residual_se=fit.residual_se,
        level=level,
        t_quantile=t,
        horizons=tuple(out),
        low_confidence=bool(reasons),
        reasons=tuple(reasons),
    )


# --- time to a NEWS2 band change if the trends hold ----------------------------------------


@dataclass(slots=True, frozen=True)
class TrendingVital:
    """A measured NEWS2 parameter: its newest value, when, and its trend (None: held constant)."""

    parameter: str
    metric: str
    value: float
    ts_ns: int
    slope_per_h: float | None
    limits: tuple[float, float]
    significant: bool | None = None
    """Whether the slope's 95 % confidence interval excludes 0 (None without a trend)."""

    def value_at(self, ts_ns: int) -> float:
        """The newest value moved along the trend to `ts_ns`, inside the limits."""
        if self.slope_per_h is None:
            return self.value
        moved = self.value + self.slope_per_h * (ts_ns - self.ts_ns) / NS / 3600.0
        return _clamp(moved, *self.limits)


@dataclass(slots=True, frozen=True)
class ParameterChange:
    """A parameter whose NEWS2 sub-score differs at the projected moment from now."""

    parameter: str
    metric: str
    value: float
    points_now: int | None
    points_then: int | None


@dataclass(slots=True, frozen=True)
class News2Change:
    """The first projected step at which the score (or the band) differs from now."""

    minutes: int
    at_ns: int
    total: int
    band: Band
    drivers: tuple[ParameterChange, ...]


@dataclass(slots=True, frozen=True)
class News2Projection:
    """When NEWS2 would change if every trend held, from the current score."""

    total: int
    band: Band
    estimable: bool
    reason: str | None
    horizon_min: int
    step_min: int
    trending: tuple[TrendingVital, ...]
    held: tuple[str, ...]
    """Parameters held constant: the nurse's observations and vitals without a trend."""
    score_change: News2Change | None
    band_change: News2Change | None


def check_projection(horizon_min: int, step_min: int) -> None:
    if isinstance(step_min, bool) or not isinstance(step_min, int) or step_min < 1:
        raise ForecastInputError(
            parameter="step_min", value=step_min, reason="a whole number of minutes, at least 1"
        )
    if isinstance(horizon_min, bool) or not isinstance(horizon_min, int) or horizon_min < step_min:
        raise ForecastInputError(
            parameter="horizon_min", value=horizon_min, reason="whole minutes, at least one step"
        )
    if horizon_min // step_min > MAX_PROJECTION_STEPS:
        reason = f"at most {MAX_PROJECTION_STEPS} steps; lengthen the step or shorten the horizon"
        raise ForecastInputError(parameter="horizon_min", value=horizon_min, reason=reason)


def project_news2(
    inputs: News2Inputs,
    vitals: Sequence[TrendingVital],
    now_ns: int,
    *,
    horizon_min: int = DEFAULT_PROJECTION_HORIZON_MIN,
    step_min: int = DEFAULT_PROJECTION_STEP_MIN,
) -> News2Projection:
    """Score NEWS2 every `step_min` up to `horizon_min` with every trend held; report the first
    change of score and of band.

    `inputs` are the current NEWS2 inputs (observations included, held constant); each of
    `vitals` replaces its parameter by its value moved along its trend. An incomplete score is
    not estimable: a missing parameter could add points at any moment.
    """
    check_projection(horizon_min, step_min)
    now = score(inputs)
    trending = tuple(v for v in vitals if v.slope_per_h is not None)
    moving = {v.parameter for v in trending}
    held = tuple(p for p in PARAMETERS if p not in moving)
    base = News2Projection(
        now.total, now.band, False, None, horizon_min, step_min, trending, held, None, None
    )
    if not now.complete:
        missing = ", ".join(now.unscored)
        reason = f"NEWS2 is incomplete (missing {missing}); a missing parameter can add points"
        return dataclasses.replace(base, reason=reason)
    for vital in trending:
        if vital.parameter not in NEWS2_FIELDS:
            raise ForecastInputError(
                parameter="parameter", value=vital.parameter, reason="not a measured NEWS2 row"
            )
    score_change: News2Change | None = None
    band_change: News2Change | None = None
    for minutes in range(step_min, horizon_min + 1, step_min) if trending else ():
        at_ns = now_ns + minutes * 60 * NS
        moved = {NEWS2_FIELDS[v.parameter]: v.value_at(at_ns) for v in trending}
        then = score(dataclasses.replace(inputs, **moved))  # type: ignore[arg-type]
        if then.total == now.total and then.band == now.band:
            continue
        drivers = tuple(
            ParameterChange(
                v.parameter,
                v.metric,
                moved[NEWS2_FIELDS[v.parameter]],
                now.subscores[v.parameter],
                then.subscores[v.parameter],
            )
            for v in trending
            if then.subscores[v.parameter] != now.subscores[v.parameter]
        )
        change = News2Change(minutes, at_ns, then.total, then.band, drivers)
        if score_change is None and then.total != now.total:
            score_change = change
        if band_change is None and then.band != now.band:
            band_change = change
        if score_change is not None and band_change is not None:
            break
    return dataclasses.replace(
        base, estimable=True, score_change=score_change, band_change=band_change
    )

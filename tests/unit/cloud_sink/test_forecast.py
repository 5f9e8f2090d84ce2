"""Forecast math: t quantile, least-squares fit, prediction intervals, NEWS2 band search."""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.forecast import (
    ForecastInputError,
    LineFit,
    TrendingVital,
    fit_line,
    forecast_vital,
    project_news2,
    regularized_beta,
    student_t_cdf,
    student_t_quantile,
)
from cloud_sink.news2 import News2Inputs, score

S = 1_000_000_000
T0 = 1_700_000_000 * S
PROPERTY = settings(max_examples=200, deadline=None)

# Two-sided 95 % (p = 0.975) and 99 % (p = 0.995) points of Student's t, as printed in standard
# statistical tables (e.g. NIST/SEMATECH e-Handbook of Statistical Methods, §1.3.6.7.2).
T_TABLE = {
    (0.975, 1): 12.706205,
    (0.975, 2): 4.302653,
    (0.975, 3): 3.182446,
    (0.975, 5): 2.570582,
    (0.975, 10): 2.228139,
    (0.975, 30): 2.042272,
    (0.975, 100): 1.983972,
    (0.995, 1): 63.656741,
    (0.995, 10): 3.169273,
    (0.9, 10): 1.372184,
}


@pytest.mark.parametrize(("p", "df"), sorted(T_TABLE))
def test_t_quantile_matches_the_printed_tables(p: float, df: int) -> None:
    assert student_t_quantile(p, df) == pytest.approx(T_TABLE[p, df], abs=2e-6)


@PROPERTY
@given(st.floats(min_value=1e-9, max_value=1 - 1e-9))
def test_t_quantile_matches_the_closed_forms_for_one_and_two_degrees(p: float) -> None:
    # df = 1 is the Cauchy distribution, F^-1(p) = tan(pi (p - 1/2)) = -cot(pi p), written with
    # the smaller tail so the closed form keeps its own digits; df = 2 has
    # F^-1(p) = (2p - 1) / sqrt(2p(1 - p)).
    tail = min(p, 1.0 - p)
    cauchy = math.copysign(1.0 / math.tan(math.pi * tail), p - 0.5)
    assert student_t_quantile(p, 1) == pytest.approx(cauchy, rel=1e-9)
    closed = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert student_t_quantile(p, 2) == pytest.approx(closed, rel=1e-9, abs=1e-12)


@PROPERTY
@given(
    st.floats(min_value=1e-6, max_value=1 - 1e-6),
    st.floats(min_value=0.5, max_value=5000.0),
)
def test_t_quantile_inverts_the_cdf_and_is_odd(p: float, df: float) -> None:
    t = student_t_quantile(p, df)
    assert student_t_cdf(t, df) == pytest.approx(p, rel=1e-9, abs=1e-12)
    assert student_t_quantile(1.0 - p, df) == pytest.approx(-t, rel=1e-9, abs=1e-12)


def test_t_quantile_tends_to_the_normal_from_above() -> None:
    z = statistics.NormalDist().inv_cdf(0.975)
    previous = math.inf
    for df in (10, 100, 1_000, 10_000, 1_000_000):
        t = student_t_quantile(0.975, df)
        assert z < t < previous
        previous = t
    # Cornish-Fisher: t ~ z + (z^3 + z) / (4 df) for large df.
    assert previous == pytest.approx(z + (z**3 + z) / 4e6, abs=1e-9)


@PROPERTY
@given(
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.1, max_value=50.0),
)
def test_incomplete_beta_matches_its_closed_forms(x: float, a: float) -> None:
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b (DLMF 8.17.1-2 integrated directly).
    assert regularized_beta(x, a, 1.0) == pytest.approx(x**a, rel=1e-9, abs=1e-12)
    assert regularized_beta(x, 1.0, a) == pytest.approx(1 - (1 - x) ** a, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("p", "df"),
    [(0.0, 5), (1.0, 5), (math.nan, 5), (True, 5), (0.9, 0), (0.9, -1), (0.9, math.inf)],
)
def test_impossible_quantile_arguments_raise_our_error(p: float, df: float) -> None:
    with pytest.raises(ForecastInputError) as info:
        student_t_quantile(p, df)
    assert info.value.parameter in {"p", "df"}


def _points(values: list[float], step_s: float = 60.0) -> list[tuple[int, float]]:
    return [(T0 + round(k * step_s * S), v) for k, v in enumerate(values)]


def test_fit_recovers_an_exact_line_whatever_the_order() -> None:
    points = _points([70.0 + 0.5 * k for k in range(31)])  # +0.5 per minute = +30 per hour
    fit = fit_line(reversed(points))
    assert fit is not None
    assert (fit.n, fit.dof, fit.origin_ns, fit.span_s) == (31, 29, points[-1][0], 1800.0)
    assert fit.slope_per_h == pytest.approx(30.0)
    assert fit.at(points[-1][0]) == pytest.approx(85.0)
    assert fit.at(points[-1][0] + 600 * S) == pytest.approx(90.0)
    assert fit.sse == pytest.approx(0.0, abs=1e-18)


def test_fit_needs_three_points_at_two_instants_and_finite_values() -> None:
    assert fit_line(_points([1.0, 2.0])) is None
    assert fit_line([(T0, 1.0), (T0, 2.0), (T0, 3.0)]) is None
    assert fit_line([]) is None
    with pytest.raises(ForecastInputError, match="non-finite"):
        fit_line(_points([1.0, math.nan, 3.0]))


@PROPERTY
@given(
    st.lists(
        st.tuples(
            # Millisecond stamps: numpy's polyfit loses its slope on nanosecond-close ones.
            st.integers(min_value=0, max_value=1_800_000),
            st.floats(min_value=20.0, max_value=250.0),
        ),
        min_size=3,
        max_size=60,
        unique_by=lambda p: p[0],
    )
)
def test_fit_agrees_with_numpy(raw: list[tuple[int, float]]) -> None:
    points = [(T0 + ts_ms * 1_000_000, value) for ts_ms, value in raw]
    fit = fit_line(points)
    assert fit is not None
    t = np.array([(ts - fit.origin_ns) / S for ts, _ in points])
    y = np.array([value for _, value in points])
    slope, intercept = np.polyfit(t, y, 1)
    residual = y - (slope * t + intercept)
    assert fit.slope_per_s == pytest.approx(slope, rel=1e-6, abs=1e-9)
    assert fit.at(fit.origin_ns) == pytest.approx(intercept, rel=1e-9, abs=1e-6)
    assert fit.sse == pytest.approx(float(residual @ residual), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("n", [5, 30])
def test_prediction_intervals_cover_new_readings_at_the_nominal_rate(n: int) -> None:
    # Straight line + independent normal noise: the model the interval assumes. With n = 5
    # (3 degrees of freedom) a normal quantile would cover only about 88 %; the t quantile
    # must give 95 %. 4000 seeded replicates: binomial SE 0.0034, so +/- 0.015 is 4.4 SE.
    rng = np.random.default_rng(20261122)
    replicates, hits, z_hits = 4000, 0, 0
    z = statistics.NormalDist().inv_cdf(0.975)
    stamps = [T0 + round(k * 1800 / (n - 1)) * S for k in range(n)]
    horizon_ns = stamps[-1] + 1800 * S
    for _ in range(replicates):
        noise = rng.normal(0.0, 3.0, n + 1)
        values = [80.0 + 0.01 * (ts - T0) / S + e for ts, e in zip(stamps, noise[:n], strict=True)]
        fit = fit_line(zip(stamps, values, strict=True))
        assert fit is not None
        forecast = forecast_vital("heart_rate", fit, stamps[-1], (-1e9, 1e9), horizons_min=[30])
        assert forecast is not None
        (h,) = forecast.horizons
        future = 80.0 + 0.01 * (horizon_ns - T0) / S + noise[n]
        hits += h.low <= future <= h.high
        z_hits += abs(future - h.value) <= z * fit.prediction_se(horizon_ns)
    assert hits / replicates == pytest.approx(0.95, abs=0.015)
    if n == 5:
        assert z_hits / replicates < 0.92  # why the t quantile matters with few points


def _fit(values: list[float], step_s: float = 60.0) -> LineFit:
    fit = fit_line(_points(values, step_s))
    assert fit is not None
    return fit


def test_forecast_is_clamped_to_the_physiological_limits() -> None:
    # SpO2 climbing 1 % a minute would pass 100 %: value and bounds stop at the catalogue's limit.
    fit = _fit([90.0 + k + (0.3 if k % 2 else -0.3) for k in range(9)])
    now_ns = fit.origin_ns
    forecast = forecast_vital("spo2", fit, now_ns, (50.0, 100.0), horizons_min=[30, 15])
    assert forecast is not None
    first, second = forecast.horizons
    assert (first.minutes, second.minutes) == (15.0, 30.0)
    assert first.at_ns == now_ns + 900 * S
    assert (first.value, first.high, second.value, second.high) == (100.0, 100.0, 100.0, 100.0)
    assert first.clamped
    assert forecast.t_quantile == pytest.approx(student_t_quantile(0.975, 7))


def test_intervals_widen_with_the_horizon_and_centre_on_the_line() -> None:
    fit = _fit([70.0 + 0.2 * k + (0.5 if k % 3 else -1.0) for k in range(31)])
    forecast = forecast_vital("heart_rate", fit, fit.origin_ns, (20.0, 300.0))
    assert forecast is not None
    near, far = forecast.horizons
    assert far.high - far.low > near.high - near.low > 0.0
    for h in (near, far):
        assert h.value == pytest.approx(fit.at(h.at_ns))
        assert h.value - h.low == pytest.approx(h.high - h.value)
        assert not h.clamped
    assert forecast.low_confidence is False
    assert forecast.reasons == ()


def test_low_confidence_says_why() -> None:
    few = _fit([97.0, 97.0, 97.0, 97.0], step_s=120.0)  # 4 readings over 6 min, no scatter
    forecast = forecast_vital("spo2", few, few.origin_ns, (50.0, 100.0), stale=True)
    assert forecast is not None
    assert forecast.low_confidence
    assert [r.split()[0] for r in forecast.reasons] == ["only", "the", "no", "the"]
    assert "only 4 readings" in forecast.reasons[0]
    assert "6.0 min" in forecast.reasons[1]
    assert forecast.reasons[3] == "the vital is stale"
    assert all(h.low == h.high == 97.0 for h in forecast.horizons)
    assert forecast_vital("spo2", None, T0, (50.0, 100.0)) is None


def test_a_line_exact_up_to_rounding_has_no_scatter_to_speak_of() -> None:
    # 37.0, 37.1, 37.2 ... are not exact in binary: the residuals are rounding, not scatter.
    fit = _fit([37.0 + 0.1 * k for k in range(31)])
    assert 0.0 < fit.residual_se < 1e-12
    forecast = forecast_vital("body_temp", fit, fit.origin_ns, (25.0, 45.0))
    assert forecast is not None
    assert forecast.low_confidence
    assert forecast.reasons == (
        "no scatter around the line: the interval only knows what it has seen",
    )


@pytest.mark.parametrize(
    "horizons",
    [[], [0.0], [-5.0], [math.nan], [24 * 60 + 1.0]],
    ids=["none", "0", "-5", "nan", "25h"],
)
def test_impossible_horizons_raise_our_error(horizons: list[float]) -> None:
    fit = _fit([1.0, 2.0, 4.0])
    with pytest.raises(ForecastInputError, match="horizon"):
        forecast_vital("heart_rate", fit, T0, (0.0, 10.0), horizons_min=horizons)


# --- NEWS2 projection ---------------------------------------------------------------------

NORMAL = News2Inputs(
    rr_per_min=18.0,
    spo2_pct=97.0,
    on_oxygen=False,
    sbp_mmhg=120.0,
    hr_per_min=70.0,
    acvpu="A",
    temp_c=37.0,
)
LIMITS = {"rr": (2.0, 80.0), "spo2": (50.0, 100.0), "hr": (20.0, 300.0)}
METRIC = {"rr": "resp_rate", "spo2": "spo2", "hr": "heart_rate"}


def _trend(parameter: str, value: float, slope_per_h: float | None) -> TrendingVital:
    return TrendingVital(parameter, METRIC[parameter], value, T0, slope_per_h, LIMITS[parameter])


def test_a_rising_respiration_rate_changes_the_band_when_the_chart_says() -> None:
    # 18 /min rising 6 /h reaches 20.5 after 25 min; charted half up that is 21, which RCP 2017
    # Chart 1 scores 2 (21-24): total 2, band "low" -- the band changes at minute 25.
    projection = project_news2(
        dataclasses.replace(NORMAL, rr_per_min=18.0), [_trend("rr", 18.0, 6.0)], T0
    )
    assert (projection.total, projection.band, projection.estimable) == (0, "zero", True)
    assert [v.parameter for v in projection.trending] == ["rr"]
    assert "rr" not in projection.held
    assert "acvpu" in projection.held
    change = projection.band_change
    assert change is not None
    assert (change.minutes, change.total, change.band) == (25, 2, "low")
    assert change.at_ns == T0 + 25 * 60 * S
    assert [(d.parameter, d.points_now, d.points_then) for d in change.drivers] == [("rr", 0, 2)]
    assert change.drivers[0].value == pytest.approx(20.5)
    assert projection.score_change == change


def test_a_falling_saturation_reaches_the_red_score() -> None:
    # SpO2 93 % (Chart 1: 92-93 -> 2 points, band "low") falling 3 %/h: 91.5 after 30 min is
    # charted 92 (still 2); 91.45 after 31 min is 91, which scores 3 -- the red score, so the
    # band becomes "low-medium" although the total is only 3 (Chart 2).
    start = dataclasses.replace(NORMAL, spo2_pct=93.0)
    projection = project_news2(start, [_trend("spo2", 93.0, -3.0)], T0)
    assert (projection.total, projection.band) == (2, "low")
    change = projection.band_change
    assert change is not None
    assert (change.minutes, change.total, change.band) == (31, 3, "low-medium")
    assert change.drivers[0].value == pytest.approx(91.45)
    assert projection.score_change == change


def test_score_and_band_changes_are_the_first_ones() -> None:
    # 97 % falling 3 %/h: 95.5 after 30 min is charted 96 (0 points); 95.45 after 31 is 95 (1).
    projection = project_news2(NORMAL, [_trend("spo2", 97.0, -3.0)], T0)
    assert projection.score_change is not None
    assert projection.band_change is not None
    assert (projection.score_change.minutes, projection.band_change.minutes) == (31, 31)
    assert (projection.band_change.total, projection.band_change.band) == (1, "low")


def test_no_change_within_the_horizon_and_held_observations() -> None:
    on_oxygen = dataclasses.replace(NORMAL, on_oxygen=True)
    projection = project_news2(on_oxygen, [_trend("hr", 70.0, 1.0)], T0, horizon_min=60)
    # Oxygen scores 2 throughout (held); 70 + 1/h stays in 51-90 for the hour.
    assert (projection.total, projection.band) == (2, "low")
    assert projection.band_change is None
    assert projection.score_change is None


def test_without_any_trend_nothing_moves() -> None:
    projection = project_news2(NORMAL, [_trend("hr", 70.0, None)], T0)
    assert projection.trending == ()
    assert projection.estimable
    assert projection.band_change is None


def test_an_incomplete_score_is_not_estimable() -> None:
    projection = project_news2(
        dataclasses.replace(NORMAL, acvpu=None), [_trend("rr", 18.0, 30.0)], T0
    )
    assert projection.estimable is False
    assert projection.reason is not None
    assert "missing acvpu" in projection.reason
    assert projection.band_change is None


def test_values_stop_at_the_limits() -> None:
    vital = _trend("spo2", 97.0, -600.0)
    assert vital.value_at(T0 + 3600 * S) == 50.0
    assert _trend("spo2", 99.0, 600.0).value_at(T0 + 3600 * S) == 100.0
    assert _trend("spo2", 99.0, None).value_at(T0 + 3600 * S) == 99.0


@pytest.mark.parametrize(
    ("horizon_min", "step_min"), [(240, 0), (0, 1), (5, 10), (10**6, 1), (True, 1)]
)
def test_impossible_projection_settings_raise_our_error(horizon_min: int, step_min: int) -> None:
    with pytest.raises(ForecastInputError):
        project_news2(NORMAL, [], T0, horizon_min=horizon_min, step_min=step_min)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=-20.0, max_value=20.0),
    st.floats(min_value=-60.0, max_value=60.0),
    st.floats(min_value=-6.0, max_value=6.0),
    st.sampled_from([1, 5]),
)
def test_the_reported_change_is_the_first_scored_difference(
    rr_slope: float, hr_slope: float, spo2_slope: float, step_min: int
) -> None:
    vitals = [
        _trend("rr", 18.0, rr_slope),
        _trend("hr", 85.0, hr_slope),
        _trend("spo2", 96.0, spo2_slope),
    ]
    projection = project_news2(NORMAL, vitals, T0, horizon_min=120, step_min=step_min)
    now = score(NORMAL)
    fields = {"rr": "rr_per_min", "hr": "hr_per_min", "spo2": "spo2_pct"}
    first_score = first_band = None
    for minutes in range(step_min, 121, step_min):
        at_ns = T0 + minutes * 60 * S
        moved = {fields[v.parameter]: v.value_at(at_ns) for v in vitals}
        then = score(dataclasses.replace(NORMAL, **moved))  # type: ignore[arg-type]
        if first_score is None and then.total != now.total:
            first_score = (minutes, then.total)
        if first_band is None and then.band != now.band:
            first_band = (minutes, then.band)
    got_score = projection.score_change
    got_band = projection.band_change
    assert first_score == (None if got_score is None else (got_score.minutes, got_score.total))
    assert first_band == (None if got_band is None else (got_band.minutes, got_band.band))

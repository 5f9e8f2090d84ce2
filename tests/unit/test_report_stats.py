"""The population report's statistics and figures, without a database."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from cloud_sink.cli_report import report_table
from cloud_sink.profiles import PatientProfile
from cloud_sink.report import (
    AccessFigures,
    DeviceHistory,
    FloatArray,
    Insufficient,
    IntArray,
    LineFit,
    PopulationData,
    ReportError,
    RoomTrack,
    SecurityCounts,
    Track,
    build_report,
    counter_increase,
    dumps,
    heart_rate_tracks,
    incomplete_beta,
    kind_category,
    log_beta,
    nearest_within,
    ols_fit,
    report_json,
    sustained_below,
    t_cdf,
    t_quantile,
    t_sf,
)

S = 1_000_000_000
T0 = 1_741_939_200 * S  # 2025-03-14T08:00:00Z
PATIENT_A, PATIENT_B = "a" * 32, "b" * 32
DEVICE_A, DEVICE_B = "1" * 32, "2" * 32

probabilities = st.floats(min_value=1e-6, max_value=1 - 1e-6).filter(lambda p: p != 0.5)


def ints(values: list[int]) -> IntArray:
    return np.array(values, dtype=np.int64)


def floats(values: list[float]) -> FloatArray:
    return np.array(values, dtype=np.float64)


# NIST/SEMATECH e-Handbook of Statistical Methods, §1.3.6.7.2 "Critical Values of the Student's t
# Distribution": the upper critical value t(alpha, dof) with P(T > t) = alpha, three decimals.
NIST_UPPER_CRITICAL = [
    (1, 0.025, 12.706),
    (2, 0.025, 4.303),
    (3, 0.025, 3.182),
    (4, 0.001, 7.173),
    (5, 0.025, 2.571),
    (8, 0.025, 2.306),
    (10, 0.05, 1.812),
    (10, 0.005, 3.169),
    (10, 0.10, 1.372),
    (20, 0.025, 2.086),
    (30, 0.01, 2.457),
    (60, 0.025, 2.000),
    (100, 0.025, 1.984),
]


@pytest.mark.parametrize(("dof", "alpha", "table"), NIST_UPPER_CRITICAL)
def test_t_quantile_matches_the_nist_table(dof: int, alpha: float, table: float) -> None:
    assert round(t_quantile(1 - alpha, dof), 3) == table


def test_t_quantile_tends_to_the_normal_quantile() -> None:
    # z(0.975) = 1.959963985 (Abramowitz & Stegun Table 26.5); t exceeds z by about
    # (z^3 + z) / (4 dof) (Abramowitz & Stegun 26.7.5).
    z = 1.959963985
    dof = 1e6
    assert t_quantile(0.975, dof) == pytest.approx(z + (z**3 + z) / (4 * dof), abs=1e-8)


@settings(max_examples=200, deadline=None)
@given(p=probabilities)
def test_t_quantile_closed_forms_for_one_and_two_degrees_of_freedom(p: float) -> None:
    # One degree of freedom is the Cauchy distribution: t = tan(pi (p - 1/2)). Two: t =
    # (2p - 1) / sqrt(2 p (1 - p)). Both exact, so they check the digits beyond the tables.
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)


@settings(max_examples=200, deadline=None)
@given(p=probabilities, dof=st.floats(min_value=0.5, max_value=1000.0))
def test_t_quantile_inverts_the_cdf_and_is_symmetric(p: float, dof: float) -> None:
    t = t_quantile(p, dof)
    assert t_cdf(t, dof) == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert t_quantile(1 - p, dof) == pytest.approx(-t, rel=1e-9)
    assert (t > 0) == (p > 0.5)


@settings(max_examples=200, deadline=None)
@given(t=st.floats(min_value=-1e6, max_value=1e6))
def test_t_cdf_of_one_degree_of_freedom_is_the_cauchy_cdf(t: float) -> None:
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-13)


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(min_value=0.0, max_value=1.0),
    a=st.floats(min_value=0.1, max_value=50.0),
    b=st.floats(min_value=0.1, max_value=50.0),
)
def test_incomplete_beta_closed_forms_and_symmetry(x: float, a: float, b: float) -> None:
    # DLMF 8.17.4 (symmetry) and the closed forms for a = 1 or b = 1 (DLMF 8.17.1 integrated).
    mirrored = incomplete_beta(1 - x, b, a, one_minus_x=x)
    assert incomplete_beta(x, a, b) + mirrored == pytest.approx(1, abs=1e-12)
    assert incomplete_beta(x, a, 1.0) == pytest.approx(x**a, abs=1e-12)
    assert incomplete_beta(x, 1.0, b) == pytest.approx(1 - (1 - x) ** b, abs=1e-12)
    assert 0.0 <= incomplete_beta(x, a, b) <= 1.0


@pytest.mark.parametrize("n", [2, 49, 50, 51, 100, 1000, 20_000])
def test_log_beta_of_a_half_matches_exact_factorials(n: int) -> None:
    # B(n, 1/2) = Gamma(n) Gamma(1/2) / Gamma(n + 1/2) = (n - 1)! n! 4^n / (2n)!, since
    # Gamma(n + 1/2) = (2n)! sqrt(pi) / (4^n n!) (DLMF 5.5.5). Exact integers, scaled by 10^40
    # before the one rounding division, then one log: no cancellation in the reference.
    scaled = math.factorial(n - 1) * math.factorial(n) * 4**n * 10**40 // math.factorial(2 * n)
    exact = math.log(scaled) - 40 * math.log(10)
    assert log_beta(n, 0.5) == pytest.approx(exact, abs=1e-13)
    assert log_beta(0.5, n) == log_beta(n, 0.5)


@pytest.mark.parametrize(
    ("p", "dof"),
    [(0.0, 3), (1.0, 3), (-0.1, 3), (math.nan, 3), (0.9, 0), (0.9, -2), (0.9, math.inf)],
)
def test_t_quantile_refuses_what_has_no_answer(p: float, dof: float) -> None:
    with pytest.raises(ReportError) as caught:
        t_quantile(p, dof)
    assert caught.value.figure == "t distribution"


def test_incomplete_beta_refuses_arguments_outside_its_domain() -> None:
    for x, a, b in ((1.5, 1.0, 1.0), (0.5, 0.0, 1.0), (0.5, 1.0, -1.0)):
        with pytest.raises(ReportError):
            incomplete_beta(x, a, b)
    with pytest.raises(ReportError):
        t_sf(math.nan, 3)


def test_ols_on_a_line_with_orthogonal_residuals() -> None:
    # y = 1 + 2x + e, e = (1, -2, 0, 2, -1) sums to 0 and is orthogonal to x - mean(x): slope 2,
    # intercept 1, SSE = 10, Sxx = 10, se = sqrt(10 / 3 / 10); t(0.975, 3) = 3.182 (NIST).
    x = floats([26, 27, 28, 29, 30])
    y = 1 + 2 * x + floats([1, -2, 0, 2, -1])
    fit = ols_fit(x, y, min_n=3)
    assert isinstance(fit, LineFit)
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(1.0)
    assert (fit.n, fit.dof) == (5, 3)
    assert fit.slope_se == pytest.approx(math.sqrt(1 / 3))
    assert fit.t_crit == pytest.approx(3.182, abs=5e-4)
    assert fit.ci_low == pytest.approx(2 - fit.t_crit * math.sqrt(1 / 3))
    assert fit.ci_high == pytest.approx(2 + fit.t_crit * math.sqrt(1 / 3))


def test_ols_on_an_exact_line_has_a_zero_width_interval() -> None:
    x = floats(list(range(26, 40)))
    fit = ols_fit(x, 3.0 * x - 5.0)
    assert isinstance(fit, LineFit)
    assert fit.slope == pytest.approx(3.0)
    assert fit.ci_high - fit.ci_low == pytest.approx(0.0, abs=1e-9)


def test_ols_says_insufficient_rather_than_inventing_a_number() -> None:
    few = ols_fit(floats([26, 27, 28]), floats([70, 71, 72]))
    assert few == Insufficient("3 pairs, fewer than the 10 needed")
    assert isinstance(ols_fit(floats([26, 27]), floats([1, 2]), min_n=0), Insufficient)
    flat = ols_fit(floats([26.3] * 12), floats(list(range(12))))
    assert flat == Insufficient("the room temperature does not vary over the 12 pairs")
    with pytest.raises(ReportError):
        ols_fit(floats([1, 2, 3]), floats([1, 2]))


@pytest.mark.parametrize(
    ("totals", "increase"),
    [
        ([], 0),
        ([5], 0),  # one sample: a baseline, no increase seen
        ([5, 5, 5], 0),
        ([1, 3, 0, 2], 4),  # 1 -> 3: 2; 3 -> 0: a restart, 0 new; 0 -> 2: 2
        ([2, 3, 1, 1], 2),  # 2 -> 3: 1; restart to 1: 1 counts in full
    ],
)
def test_counter_increase(totals: list[int], increase: int) -> None:
    assert counter_increase(totals) == increase


def test_sustained_below_needs_the_whole_duration() -> None:
    minutes = ints([T0 + k * 60 * S for k in range(8)])
    low_five = floats([97, 92, 92, 92, 92, 92, 92, 97])  # 92 from minute 1 to 6: 5 minutes
    assert sustained_below(minutes, low_five, 94.0, 300.0)
    assert not sustained_below(minutes, low_five, 94.0, 301.0)
    broken = floats([97, 92, 92, 92, 95, 92, 92, 97])  # two runs of 2 and 1 minutes
    assert not sustained_below(minutes, broken, 94.0, 180.0)
    assert sustained_below(minutes, broken, 94.0, 120.0)
    # Order by time, whatever order the readings come in.
    shuffled = np.array([3, 0, 6, 1, 5, 2, 7, 4])
    assert sustained_below(minutes[shuffled], low_five[shuffled], 94.0, 300.0)
    assert sustained_below(minutes[:1], floats([80.0]), 94.0, 0.0)  # no duration asked
    assert not sustained_below(ints([]), floats([]), 94.0, 0.0)


def test_nearest_within_picks_the_closest_reading_inside_the_gap() -> None:
    ref = ints([0, 100, 200])
    values = floats([20.0, 21.0, 22.0])
    found = nearest_within(ints([-5, 40, 50, 60, 149, 260, 500]), ref, values, max_gap_ns=60)
    # At 50 both are 50 away: the earlier wins; 500 is 300 from the last reading.
    np.testing.assert_array_equal(found, [20.0, 20.0, 20.0, 21.0, 21.0, 22.0, np.nan])
    assert len(nearest_within(ints([1, 2]), ints([]), floats([]), 10)) == 2
    assert np.isnan(nearest_within(ints([1, 2]), ints([]), floats([]), 10)).all()


def test_kind_categories() -> None:
    assert [kind_category(k) for k in ("chest-patch", "implant-receiver", "bp-cuff", "x")] == [
        "wearable", "implantable", "other", "other",
    ]  # fmt: skip


def _track(patient: str, device: str, values: list[float], step_s: int = 60) -> Track:
    stamps = ints([T0 + k * step_s * S for k in range(len(values))])
    return Track(patient, device, stamps, floats(values))


def _data(**changes: object) -> PopulationData:
    base: dict[str, object] = {
        "population": frozenset({PATIENT_A, PATIENT_B}),
        "monitored": frozenset({PATIENT_A, PATIENT_B}),
        "profiles": {PATIENT_A: PatientProfile(PATIENT_A, "admitted", T0, age_years=40)},
        "vitals": {},
        "unusable": {},
        "device_gateway": {},
        "devices": (),
        "devices_without_health": 0,
        "rooms": (),
        "advised": frozenset(),
        "security": SecurityCounts({}, 0, None),
    }
    base.update(changes)
    return PopulationData(**base)  # type: ignore[arg-type]


def test_heart_rate_falls_back_to_the_pulse_rate_per_patient() -> None:
    data = _data(
        vitals={
            "heart_rate": (_track(PATIENT_A, DEVICE_A, [60.0, 70.0]),),
            "pulse_rate": (
                _track(PATIENT_A, DEVICE_B, [100.0]),
                _track(PATIENT_B, DEVICE_B, [90.0]),
            ),
        }
    )
    chosen = heart_rate_tracks(data)
    assert {p: [t.device for t in tracks] for p, tracks in chosen.items()} == {
        PATIENT_A: [DEVICE_A],
        PATIENT_B: [DEVICE_B],
    }
    report = build_report(data, since_ns=None, until_ns=T0, generated_ns=T0, access=None)
    assert report.figures["average_heart_rate"].value == pytest.approx((65 + 90) / 2)


def test_access_figures_from_the_audit_log() -> None:
    access = AccessFigures(exports_total=10, exports_anonymised=4, access_denied=3)
    report = build_report(_data(), since_ns=None, until_ns=T0, generated_ns=T0, access=access)
    share, denied = report.figures["exports_anonymised"], report.figures["access_denied"]
    assert (share.value, share.over, share.count, share.unit) == (40.0, "exports", 10, "%")
    assert denied.value == 3
    # Blocked attempts: refusals of known identities plus failed authentications.
    both = AccessFigures(exports_total=10, exports_anonymised=4, access_denied=3, auth_failures=2)
    blocked = build_report(
        _data(), since_ns=None, until_ns=T0, generated_ns=T0, access=both
    ).figures["access_denied"]
    assert (blocked.value, blocked.extra) == (5, {"access_denied": 3, "auth_failures": 2})
    none = build_report(
        _data(), since_ns=None, until_ns=T0, generated_ns=T0, access=AccessFigures(0, 0, 0)
    )
    assert none.figures["exports_anonymised"].value is None
    assert none.figures["access_denied"].value == 0
    without = build_report(_data(), since_ns=None, until_ns=T0, generated_ns=T0, access=None)
    for name in ("exports_anonymised", "access_denied"):
        assert without.figures[name].value is None
        assert without.figures[name].how == "no audit log configured"


def test_report_json_and_table_of_a_small_population() -> None:
    warm = [26.0 + k % 5 for k in range(12)]
    data = _data(
        vitals={"heart_rate": (_track(PATIENT_A, DEVICE_A, [60 + 2 * t for t in warm]),)},
        device_gateway={DEVICE_A: "ward-1"},
        rooms=(RoomTrack("ward-1", "environment", _track("", "", warm).ts_ns, floats(warm)),),
        devices=(
            DeviceHistory(
                DEVICE_A, "chest-patch", "ward-1", ints([T0, T0 + 3600 * S]), ints([0, 1])
            ),
        ),
        security=SecurityCounts({"tag_invalid": 2}, 1, 98),
    )
    report = build_report(data, since_ns=T0 - 60 * S, until_ns=T0, generated_ns=T0, access=None)
    document = json.loads(dumps(report_json(report)))
    assert (document["since"], document["until"]) == (
        "2025-03-14T07:59:00.000+00:00",
        "2025-03-14T08:00:00.000+00:00",
    )
    figures = document["figures"]
    assert figures["heart_rate_per_room_temp"]["value"] == pytest.approx(2.0)
    assert figures["heart_rate_per_room_temp"]["ci95"] == pytest.approx([2.0, 2.0])
    assert figures["device_error_rate"]["value"] == pytest.approx(100.0)
    assert figures["encryption_compliance"]["value"] == pytest.approx(98.0)
    assert figures["encryption_compliance"]["envelopes"] == 100
    for name, figure in figures.items():
        assert set(figure) >= {"title", "value", "how"}, name
        if figure["value"] is not None and name not in ("envelopes_refused", "access_denied"):
            assert {"patients", "devices", "readings", "envelopes", "exports"} & set(figure), name
    console = Console(width=400, record=True)
    console.print(report_table(report))
    text = console.export_text()
    assert "2.00 (95 % CI 2.00 to 2.00)" in text
    assert "tag_invalid" not in text  # the breakdown is in the JSON only


def test_dumps_never_writes_nan() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        dumps({"value": math.nan})

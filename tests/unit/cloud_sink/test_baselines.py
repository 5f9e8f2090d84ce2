"""Personal baselines (window, sufficiency, deviation) and deviation advisories (open, recent)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.baselines import (
    ADVISORY_KINDS,
    ARTIFACT_FLAGS,
    AdvisoryEvent,
    Baseline,
    BaselineSettings,
    BaselineSettingsError,
    advisories_from_events,
    baseline_window,
    judge_baseline,
)
from cloud_sink.clinical import ClinicalTwin, Freshness, Outlook, clinical_json
from cloud_sink.forecast import project_news2
from cloud_sink.news2 import News2Inputs, score
from cloud_sink.twin import TwinView, VitalState

S = 1_000_000_000
H = 3600 * S
T0 = 1_700_000_000 * S
PATIENT = "0123456789abcdef0123456789abcdef"


def test_artifact_flags_are_bits_zero_to_four() -> None:
    # docs/filters.md §2: implausible, missing, quality_bad, out_of_order, spike.
    assert [bit for bit in range(32) if ARTIFACT_FLAGS >> bit & 1] == [0, 1, 2, 3, 4]
    assert ADVISORY_KINDS == ("baseline_rise", "baseline_fall")


def test_the_window_ends_half_an_hour_before_the_newest_reading() -> None:
    assert baseline_window(T0, BaselineSettings()) == (T0 - 24 * H, T0 - 1800 * S)
    assert baseline_window(T0, BaselineSettings(lookback_s=7200.0, exclude_recent_s=0.0)) == (
        T0 - 2 * H,
        T0,
    )


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"lookback_s": 1800.0}, "lookback_s"),
        ({"lookback_s": math.nan}, "lookback_s"),
        ({"lookback_s": 91 * 86400.0}, "lookback_s"),
        ({"exclude_recent_s": -1.0}, "exclude_recent_s"),
        ({"min_readings": 1}, "min_readings"),
        ({"min_span_s": -1.0}, "min_span_s"),
        ({"lookback_s": 7200.0, "min_span_s": 7200.0}, "min_span_s"),
    ],
)
def test_impossible_settings_are_refused_by_name(changes: dict[str, float], setting: str) -> None:
    with pytest.raises(BaselineSettingsError) as info:
        BaselineSettings(**changes)  # type: ignore[arg-type]
    assert info.value.setting == setting


def _judge(
    readings: int, span_h: float, quartiles: tuple[float, float, float] | None, latest: float
) -> Baseline:
    first_ns = T0 - 20 * H
    median, q1, q3 = quartiles or (None, None, None)
    return judge_baseline(
        "heart_rate",
        window=(T0 - 24 * H, T0 - 1800 * S),
        summary=(readings, median, q1, q3),
        coverage=(first_ns, first_ns + round(span_h * H)) if readings else (None, None),
        latest=(latest, T0),
        settings=BaselineSettings(),
    )


def test_too_few_readings_or_too_short_a_stretch_give_no_baseline() -> None:
    baseline = _judge(19, 10.0, (70.0, 66.0, 74.0), 90.0)
    assert baseline.reason == "19 usable readings in the window, fewer than 20"
    assert (baseline.stats, baseline.deviation, baseline.position) == (None, None, None)
    baseline = _judge(1000, 0.5, (70.0, 66.0, 74.0), 90.0)
    assert baseline.reason == "the readings span 0.50 h, less than 1 h"
    assert (baseline.readings, baseline.stats) == (1000, None)
    empty = _judge(0, 0.0, None, 90.0)
    assert empty.reason == "0 usable readings in the window, fewer than 20"
    assert empty.span_s is None


def test_deviation_is_measured_from_the_median_in_units_and_iqrs() -> None:
    baseline = _judge(1000, 20.0, (70.0, 66.0, 74.0), 90.0)
    assert baseline.reason is None
    assert baseline.stats is not None
    assert baseline.span_s == 20 * 3600.0
    assert baseline.stats.iqr == 8.0
    assert (baseline.deviation, baseline.deviation_iqr, baseline.position) == (20.0, 2.5, "above")
    for latest, position in ((65.9, "below"), (66.0, "within"), (74.0, "within"), (74.1, "above")):
        assert _judge(1000, 20.0, (70.0, 66.0, 74.0), latest).position == position


def test_a_constant_series_has_no_deviation_in_iqrs() -> None:
    # Integer SpO2 that never moved: IQR 0, so only the deviation in % is meaningful.
    baseline = _judge(500, 5.0, (97.0, 97.0, 97.0), 93.0)
    assert (baseline.deviation, baseline.deviation_iqr, baseline.position) == (-4.0, None, "below")


def _event(
    ts_s: int, alert_id: str, state: str, kind: str = "baseline_rise", value: float = 95.0
) -> AdvisoryEvent:
    return AdvisoryEvent(
        T0 + ts_s * S, alert_id, kind, state, "heart_rate", value, f"advisory {kind}"
    )


EVENTS = [
    _event(-9 * 3600, "old", "raised"),
    _event(-8 * 3600, "old", "cleared", value=80.0),  # cleared 8 h ago: not recent
    _event(-3 * 3600, "recent", "raised", kind="baseline_fall", value=88.0),
    _event(-2 * 3600, "recent", "cleared", kind="baseline_fall", value=96.0),
    _event(-600, "open", "raised", value=101.0),
    _event(-600, "open", "raised", value=101.0),  # redelivered: the same point again
    _event(-30 * 3600, "ancient-open", "raised", value=99.0),  # never cleared: still open
]


def test_open_advisories_and_those_cleared_recently_are_listed_open_first() -> None:
    listed = advisories_from_events(EVENTS, T0)
    assert [(a.alert_id, a.state) for a in listed] == [
        ("open", "raised"),
        ("ancient-open", "raised"),
        ("recent", "cleared"),
    ]
    recent = listed[2]
    assert (recent.direction, recent.metric, recent.value) == ("fall", "heart_rate", 88.0)
    assert (recent.raised_ns, recent.cleared_ns) == (T0 - 3 * H, T0 - 2 * H)
    assert listed[0].cleared_ns is None
    assert listed[0].direction == "rise"
    # A longer memory brings the old episode back.
    assert "old" in {a.alert_id for a in advisories_from_events(EVENTS, T0, recent_s=9 * 3600)}


def test_a_clear_stamped_with_its_raise_wins() -> None:
    # Newest timestamp wins; at one instant the clear is the later event of the episode.
    (advisory,) = advisories_from_events(
        [_event(-60, "x", "cleared"), _event(-60, "x", "raised")], T0
    )
    assert advisory.state == "cleared"


@settings(max_examples=100, deadline=None)
@given(st.permutations(EVENTS))
def test_the_listing_does_not_depend_on_the_order_points_arrive_in(
    events: list[AdvisoryEvent],
) -> None:
    assert advisories_from_events(events, T0) == advisories_from_events(EVENTS, T0)


def test_the_outlook_adds_four_keys_only_when_computed() -> None:
    vital = VitalState("heart_rate", "Heart rate", "/min", 72.0, T0, "a" * 32, 10)
    twin = TwinView(PATIENT, (vital,))
    inputs = News2Inputs(hr_per_min=72.0)
    base = ClinicalTwin(
        twin, {"heart_rate": Freshness(1.0, 120.0)}, {"heart_rate": None}, {}, score(inputs), []
    )
    assert {"baselines", "advisories", "forecast", "news2_projection"}.isdisjoint(
        clinical_json(base)
    )
    outlook = Outlook(
        baselines={},
        advisories=advisories_from_events(EVENTS, T0),
        forecast={"heart_rate": None},
        news2_projection=project_news2(inputs, [], T0),
    )
    document = clinical_json(dataclasses.replace(base, outlook=outlook))
    assert list(document)[-4:] == ["baselines", "advisories", "forecast", "news2_projection"]
    assert document["forecast"] == {"heart_rate": None}
    projection = document["news2_projection"]
    assert isinstance(projection, dict)
    assert projection["estimable"] is False
    assert "incomplete" in projection["summary"]
    advisories = document["advisories"]
    assert isinstance(advisories, list)
    assert [a["id"] for a in advisories] == ["open", "ancient-open", "recent"]

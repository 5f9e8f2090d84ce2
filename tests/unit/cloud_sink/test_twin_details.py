"""Twin details: device data interval, error rate, environment choice, NEWS2 sources, JSON keys."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.clinical import (
    ClinicalTwin,
    Freshness,
    clinical_json,
    freshness,
    news2_for,
    news2_vitals,
)
from cloud_sink.news2 import News2Inputs, score
from cloud_sink.profiles import PatientProfile
from cloud_sink.twin import (
    DELIVERY_JOIN_NS,
    DeviceState,
    EnvironmentReading,
    HealthRecord,
    TwinView,
    VitalState,
    errors_per_100h,
    median_gap_s,
    newest_environment,
    recent_interval_s,
)

S = 1_000_000_000
H = 3600 * S
T0 = 1_700_000_000 * S
PATIENT = "0123456789abcdef0123456789abcdef"
DEVICE = "a" * 32


def _health(ts_ns: int, errors: int | None) -> HealthRecord:
    return HealthRecord(ts_ns, errors, None)


def test_median_gap_counts_readings_stamped_together_once() -> None:
    # A cuff delivers systolic, diastolic and mean at one instant every 15 minutes.
    stamps = [T0 + k * 900 * S for k in range(4) for _ in range(3)]
    assert median_gap_s(stamps) == 900.0
    assert median_gap_s([T0, T0]) is None
    assert median_gap_s([]) is None


def test_the_data_interval_ignores_records_stamped_long_ago() -> None:
    # An implant receiver forwards daily trend records stamped by the implant (midnights), and
    # delivers telemetry every 10 s now: the interval is the 10 s.
    midnights = [T0 - d * 24 * H for d in range(1, 8)]
    live = [T0 + k * 10 * S for k in range(6)]
    assert recent_interval_s(midnights + live) == 10.0
    assert recent_interval_s([]) is None
    assert recent_interval_s([T0]) is None


@given(
    st.lists(st.integers(DELIVERY_JOIN_NS + 1, 10**12), min_size=1),
    st.randoms(use_true_random=False),
)
@settings(max_examples=200, deadline=None)
def test_median_gap_is_the_median_of_successive_differences(
    gaps: list[int], rng: random.Random
) -> None:
    # Deliveries further apart than the join window: every stamp is its own delivery.
    stamps = list(itertools.accumulate(gaps, initial=T0))
    rng.shuffle(stamps)
    assert median_gap_s(stamps) == statistics.median(gaps) / S


def test_errors_per_100_hours_survive_an_agent_restart() -> None:
    # The counter climbs to 3, the agent restarts (counter back to 0), then climbs to 2: 5 errors
    # over the 10 hours since the first reading.
    records = [_health(T0 + 2 * H, 1), _health(T0 + 4 * H, 3), _health(T0 + 6 * H, 0),
               _health(T0 + 10 * H, 2)]  # fmt: skip
    assert errors_per_100h(records, first_seen_ns=T0) == pytest.approx(50.0)
    # Order of the records does not matter; a record without a counter is ignored.
    shuffled = [records[2], records[0], _health(T0 + 5 * H, None), records[3], records[1]]
    assert errors_per_100h(shuffled, first_seen_ns=T0) == pytest.approx(50.0)


def test_errors_per_100_hours_need_a_counter_and_a_span() -> None:
    assert errors_per_100h([], first_seen_ns=T0) is None
    assert errors_per_100h([_health(T0, None)], first_seen_ns=T0) is None
    assert errors_per_100h([_health(T0, 4)], first_seen_ns=T0) is None
    assert errors_per_100h([_health(T0 + H, 0)], first_seen_ns=T0) == 0.0


def _env(metric: str, ts_ns: int, source: str, value: float = 21.0) -> EnvironmentReading:
    return EnvironmentReading(metric, value, "Cel", ts_ns, source, DEVICE, "ward-1")


def test_the_newest_environment_reading_wins_and_the_bed_breaks_ties() -> None:
    picked = newest_environment(
        [
            _env("room_temp", T0, "bed", 20.0),
            _env("room_temp", T0 + S, "gateway", 22.0),
            _env("humidity", T0, "gateway", 40.0),
            _env("humidity", T0, "bed", 45.0),
        ]
    )
    assert picked["room_temp"].value == 22.0
    assert picked["humidity"].value == 45.0
    assert newest_environment([]) == {}


def _vital(metric: str, value: float, ts_ns: int = T0) -> VitalState:
    return VitalState(metric, metric, "", value, ts_ns, DEVICE, 1)


def test_news2_takes_heart_rate_before_pulse_rate_and_never_a_stale_vital() -> None:
    twin = TwinView(
        PATIENT,
        (_vital("heart_rate", 72.0), _vital("pulse_rate", 131.0), _vital("resp_rate", 30.0),
         _vital("spo2", 97.0)),
    )  # fmt: skip
    fresh = {v.metric: Freshness(1.0, 120.0) for v in twin.vitals}
    assert {p: v.metric for p, v in news2_vitals(twin, fresh).items()} == {
        "hr": "heart_rate",
        "rr": "resp_rate",
        "spo2": "spo2",
    }
    fresh["heart_rate"] = Freshness(500.0, 120.0)
    fresh["resp_rate"] = Freshness(500.0, 120.0)
    used = news2_vitals(twin, fresh)
    assert used["hr"].metric == "pulse_rate"
    assert "rr" not in used
    result = news2_for(twin, fresh, {})
    assert result.subscores["hr"] == 3  # 131 /min from the oximeter (RCP 2017 Chart 1: >= 131)
    assert result.subscores["rr"] is None


def test_twin_json_keeps_its_keys_and_adds_profile_devices_environment() -> None:
    twin = TwinView(PATIENT, (_vital("heart_rate", 72.0),))
    view = ClinicalTwin(
        twin=twin,
        freshness={"heart_rate": Freshness(2.0, 120.0)},
        trends={"heart_rate": None},
        observations={},
        news2=score(News2Inputs(hr_per_min=72.0)),
        alerts=[],
        now_ns=T0 + 2 * S,
        profile=PatientProfile(PATIENT, "admitted", T0, 70, "male", ("COPD",)),
        devices=(DeviceState(DEVICE, "chest-patch", "ward-1", T0, 3600, 1.0, 80.0, None),),
        environment={"room_temp": _env("room_temp", T0 - 8 * S, "gateway")},
    )
    document = clinical_json(view)
    assert list(document) == [
        "patient", "readings", "vitals", "observations", "news2", "alerts",
        "profile", "devices", "environment",
    ]  # fmt: skip
    assert set(document["vitals"]["heart_rate"]) == {  # type: ignore[index]
        "value", "unit", "time", "ts_ns", "device", "readings", "age_s", "stale", "trend_per_h",
    }  # fmt: skip
    assert document["profile"] == {
        "state": "admitted",
        "age": 70,
        "sex": "male",
        "conditions": ["COPD"],
        "diagnosis": None,
        "treatment": None,
        "next_appointment": None,
        "updated": "2023-11-14T22:13:20.000+00:00",
    }
    assert document["devices"] == {
        DEVICE: {
            "kind": "chest-patch",
            "gateway": "ward-1",
            "last_reading": "2023-11-14T22:13:20.000+00:00",
            "last_reading_age_s": 2.0,
            "readings_last_hour": 3600,
            "interval_s": 1.0,
            "battery_pct": 80.0,
            "errors_per_100h": None,
        }
    }
    environment = document["environment"]
    assert environment["humidity"] is None  # type: ignore[index]
    assert environment["room_temp"]["age_s"] == 10.0  # type: ignore[index]
    assert environment["room_temp"]["source"] == "gateway"  # type: ignore[index]
    # Without details (the ward view reads none) the keys are still there, empty.
    bare = ClinicalTwin(twin, view.freshness, view.trends, {}, view.news2, [], T0)
    assert {k: clinical_json(bare)[k] for k in ("profile", "devices")} == {
        "profile": None,
        "devices": {},
    }


def test_notifications_microseconds_apart_are_one_delivery() -> None:
    # A room sensor's temperature and humidity: two notifications, stamped 87 us apart, every 8 s.
    stamps = [T0 + k * 8_000_000_000 + extra for k in range(4) for extra in (0, 87_000)]
    assert median_gap_s(stamps) == 8.0
    # A 50 Hz device's deliveries stay apart.
    assert median_gap_s([T0 + k * 20_000_000 for k in range(10)]) == 0.02


def test_implant_records_are_judged_by_their_daily_rhythm_and_events_never_go_stale() -> None:
    hour = 3600 * S
    twin = TwinView(
        PATIENT,
        (
            _vital("night_heart_rate", 56.0, T0 - 30 * hour),  # a trend day, received today
            _vital("lead_impedance_rv", 540.0, T0 - 6 * 24 * hour),  # six days without a session
            _vital("episode_type", 2.0, T0 - 40 * 24 * hour),  # the last episode, weeks ago
            _vital("heart_rate", 70.0, T0 - 10 * 60 * S),
        ),
    )
    stale = {metric: f.stale for metric, f in freshness(twin, T0, 5.0).items()}
    assert stale == {
        "night_heart_rate": False,
        "lead_impedance_rv": True,
        "episode_type": False,
        "heart_rate": True,
    }

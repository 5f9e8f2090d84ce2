"""Hand-checked NEWS2 cases: every band edge of RCP NEWS2 (2017) Chart 1, bands, gaps, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloud_sink.errors import CloudSinkError
from cloud_sink.news2 import (
    PARAMETERS,
    News2InputError,
    News2Inputs,
    News2Score,
    parse_oxygen,
    round_temp_c,
    score,
    to_json_dict,
)
from cloud_sink.news2_chart import RESPONSES

# A complete set of observations that scores 0 on every Chart 1 row.
NORMAL: dict[str, Any] = {
    "rr_per_min": 16,
    "spo2_pct": 98,
    "spo2_scale": 1,
    "on_oxygen": False,
    "sbp_mmhg": 120,
    "hr_per_min": 70,
    "acvpu": "A",
    "temp_c": 37.0,
}


def _alone(**kwargs: Any) -> News2Score:
    return score(News2Inputs(**kwargs))


def _with(**changes: Any) -> News2Score:
    return score(News2Inputs(**(NORMAL | changes)))


# Chart 1, "Respiration rate": <=8 3 | 9-11 1 | 12-20 0 | 21-24 2 | >=25 3; whole numbers, half up.
@pytest.mark.parametrize(
    ("rr_per_min", "points"),
    [
        (0, 3),
        (8, 3),
        (8.49, 3),
        (8.5, 1),
        (9, 1),
        (11, 1),
        (11.49, 1),
        (11.5, 0),
        (12, 0),
        (20, 0),
        (20.5, 2),
        (21, 2),
        (24, 2),
        (24.49, 2),
        (24.5, 3),
        (25, 3),
        (60, 3),
    ],
)
def test_respiration_rate_edges(rr_per_min: float, points: int) -> None:
    assert _alone(rr_per_min=rr_per_min).subscores["rr"] == points


# Chart 1, "SpO2 Scale 1": <=91 3 | 92-93 2 | 94-95 1 | >=96 0; air or oxygen does not matter.
@pytest.mark.parametrize(
    ("spo2_pct", "points"),
    [
        (0, 3),
        (91, 3),
        (91.49, 3),
        (91.5, 2),
        (92, 2),
        (93, 2),
        (94, 1),
        (95, 1),
        (95.5, 0),
        (96, 0),
        (100, 0),
    ],
)
@pytest.mark.parametrize("on_oxygen", [None, False, True])
def test_spo2_scale_1_edges(spo2_pct: float, on_oxygen: bool | None, points: int) -> None:
    result = _alone(spo2_pct=spo2_pct, spo2_scale=1, on_oxygen=on_oxygen)
    assert result.subscores["spo2"] == points


# Chart 1, "SpO2 Scale 2": <=83 3 | 84-85 2 | 86-87 1 | 88-92 0 | >=93 on air 0 |
# 93-94 on oxygen 1 | 95-96 on oxygen 2 | >=97 on oxygen 3.
@pytest.mark.parametrize(
    ("spo2_pct", "on_air", "on_oxygen"),
    [
        (50, 3, 3),
        (83, 3, 3),
        (83.5, 2, 2),
        (84, 2, 2),
        (85, 2, 2),
        (86, 1, 1),
        (87, 1, 1),
        (87.5, 0, 0),
        (88, 0, 0),
        (92, 0, 0),
        (92.49, 0, 0),
        (92.5, 0, 1),
        (93, 0, 1),
        (94, 0, 1),
        (95, 0, 2),
        (96, 0, 2),
        (96.5, 0, 3),
        (97, 0, 3),
        (100, 0, 3),
    ],
)
def test_spo2_scale_2_edges(spo2_pct: float, on_air: int, on_oxygen: int) -> None:
    assert _alone(spo2_pct=spo2_pct, spo2_scale=2, on_oxygen=False).subscores["spo2"] == on_air
    assert _alone(spo2_pct=spo2_pct, spo2_scale=2, on_oxygen=True).subscores["spo2"] == on_oxygen


def test_spo2_scale_2_on_air_96_scores_0_in_a_complete_score() -> None:
    result = _with(spo2_pct=96, spo2_scale=2, on_oxygen=False)
    assert result.subscores["spo2"] == 0
    assert result.total == 0
    assert result.band == "zero"


def test_spo2_scale_2_on_oxygen_97_scores_3_plus_2_for_oxygen() -> None:
    result = _with(spo2_pct=97, spo2_scale=2, on_oxygen=True)
    assert result.subscores["spo2"] == 3
    assert result.subscores["oxygen"] == 2
    assert result.total == 5
    assert result.band == "medium"


@pytest.mark.parametrize(("spo2_pct", "points"), [(83, 3), (85, 2), (87, 1), (88, 0), (92, 0)])
def test_spo2_scale_2_without_oxygen_row_is_scored_where_both_rows_agree(
    spo2_pct: int, points: int
) -> None:
    assert _alone(spo2_pct=spo2_pct, spo2_scale=2).subscores["spo2"] == points


@pytest.mark.parametrize("spo2_pct", [92.5, 93, 95, 97, 100])
def test_spo2_scale_2_above_92_without_oxygen_row_is_unscored_not_zero(spo2_pct: float) -> None:
    result = _alone(spo2_pct=spo2_pct, spo2_scale=2)
    assert result.subscores["spo2"] is None
    assert result.unscored == ("rr", "spo2", "oxygen", "sbp", "hr", "acvpu", "temp")


# Chart 1, "Air or oxygen?": oxygen 2 | air 0.
@pytest.mark.parametrize(("on_oxygen", "points"), [(False, 0), (True, 2)])
def test_air_or_oxygen(on_oxygen: bool, points: int) -> None:
    assert _alone(on_oxygen=on_oxygen).subscores["oxygen"] == points


# Chart 1, "Systolic blood pressure": <=90 3 | 91-100 2 | 101-110 1 | 111-219 0 | >=220 3.
@pytest.mark.parametrize(
    ("sbp_mmhg", "points"),
    [
        (0, 3),
        (90, 3),
        (90.49, 3),
        (90.5, 2),
        (91, 2),
        (100, 2),
        (101, 1),
        (110, 1),
        (110.5, 0),
        (111, 0),
        (219, 0),
        (219.49, 0),
        (219.5, 3),
        (220, 3),
        (300, 3),
    ],
)
def test_systolic_bp_edges(sbp_mmhg: float, points: int) -> None:
    assert _alone(sbp_mmhg=sbp_mmhg).subscores["sbp"] == points


# Chart 1, "Pulse": <=40 3 | 41-50 1 | 51-90 0 | 91-110 1 | 111-130 2 | >=131 3.
@pytest.mark.parametrize(
    ("hr_per_min", "points"),
    [
        (0, 3),
        (40, 3),
        (40.5, 1),
        (41, 1),
        (50, 1),
        (50.5, 0),
        (51, 0),
        (90, 0),
        (90.5, 1),
        (91, 1),
        (110, 1),
        (111, 2),
        (130, 2),
        (130.49, 2),
        (130.5, 3),
        (131, 3),
        (220, 3),
    ],
)
def test_pulse_edges(hr_per_min: float, points: int) -> None:
    assert _alone(hr_per_min=hr_per_min).subscores["hr"] == points


# Chart 1, "Consciousness": Alert 0 | CVPU 3.
@pytest.mark.parametrize(
    ("acvpu", "points"),
    [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3), ("a", 0), ("u", 3)],
)
def test_consciousness(acvpu: str, points: int) -> None:
    assert _alone(acvpu=acvpu).subscores["acvpu"] == points


# Chart 1, "Temperature": <=35.0 3 | 35.1-36.0 1 | 36.1-38.0 0 | 38.1-39.0 1 | >=39.1 2;
# recorded to one decimal place, half up.
@pytest.mark.parametrize(
    ("temp_c", "points"),
    [
        (25.0, 3),
        (35.0, 3),
        (35.04, 3),
        (35.05, 1),
        (35.1, 1),
        (36.0, 1),
        (36.04, 1),
        (36.05, 0),
        (36.1, 0),
        (38.0, 0),
        (38.04, 0),
        (38.05, 1),
        (38.1, 1),
        (39.0, 1),
        (39.04, 1),
        (39.05, 2),
        (39.1, 2),
        (45.0, 2),
    ],
)
def test_temperature_edges(temp_c: float, points: int) -> None:
    assert _alone(temp_c=temp_c).subscores["temp"] == points


@pytest.mark.parametrize(
    ("temp_c", "recorded_c"),
    [(35.05, 35.1), (35.04, 35.0), (38.04, 38.0), (38.05, 38.1), (36.95, 37.0), (39.149, 39.1)],
)
def test_temperature_is_rounded_half_up_to_one_decimal(temp_c: float, recorded_c: float) -> None:
    assert round_temp_c(temp_c) == recorded_c


@pytest.mark.parametrize(
    ("changes", "total", "band"),
    [
        ({}, 0, "zero"),
        ({"hr_per_min": 95}, 1, "low"),
        ({"rr_per_min": 22, "hr_per_min": 115}, 4, "low"),
        ({"acvpu": "C"}, 3, "low-medium"),
        ({"acvpu": "V", "hr_per_min": 95}, 4, "low-medium"),
        ({"temp_c": 34.0}, 3, "low-medium"),
        ({"on_oxygen": True, "temp_c": 35.0}, 5, "medium"),
        ({"acvpu": "P", "rr_per_min": 22}, 5, "medium"),
        ({"rr_per_min": 22, "hr_per_min": 115, "temp_c": 38.5, "spo2_pct": 95}, 6, "medium"),
        ({"acvpu": "U", "sbp_mmhg": 85}, 6, "medium"),
        ({"acvpu": "C", "rr_per_min": 22, "hr_per_min": 115}, 7, "high"),
        (
            {
                "rr_per_min": 30,
                "spo2_pct": 99,
                "spo2_scale": 2,
                "on_oxygen": True,
                "sbp_mmhg": 80,
                "hr_per_min": 140,
                "acvpu": "U",
                "temp_c": 34.5,
            },
            20,
            "high",
        ),
    ],
)
def test_total_and_band_of_complete_scores(changes: dict[str, Any], total: int, band: str) -> None:
    result = _with(**changes)
    assert result.complete
    assert result.total == total
    assert result.band == band
    assert result.response == RESPONSES[result.band]


def test_responses_follow_chart_4_monitoring_frequencies() -> None:
    assert "12 hours" in RESPONSES["zero"]
    assert "4-6 hours" in RESPONSES["low"]
    assert "every hour" in RESPONSES["low-medium"]
    assert "every hour" in RESPONSES["medium"]
    assert "Urgent" in RESPONSES["medium"]
    assert "continuously" in RESPONSES["high"]
    assert "Emergency" in RESPONSES["high"]


def test_nothing_observed_is_incomplete_and_scores_nothing() -> None:
    result = score(News2Inputs())
    assert not result.complete
    assert result.total == 0
    assert result.band == "zero"
    assert dict(result.subscores) == dict.fromkeys(PARAMETERS)
    assert result.unscored == PARAMETERS


@pytest.mark.parametrize(
    ("field_name", "key"),
    [
        ("rr_per_min", "rr"),
        ("spo2_pct", "spo2"),
        ("on_oxygen", "oxygen"),
        ("sbp_mmhg", "sbp"),
        ("hr_per_min", "hr"),
        ("acvpu", "acvpu"),
        ("temp_c", "temp"),
    ],
)
def test_one_missing_parameter_is_unscored_and_incomplete(field_name: str, key: str) -> None:
    # The pulse of 115 scores 2 so that the remaining total is not trivially 0.
    result = score(News2Inputs(**(NORMAL | {"hr_per_min": 115} | {field_name: None})))
    assert not result.complete
    assert result.subscores[key] is None
    assert result.unscored == (key,)
    assert result.total == sum(p for p in result.subscores.values() if p is not None)


def test_missing_parameter_is_not_zero_and_present_ones_still_count() -> None:
    result = _alone(rr_per_min=26, acvpu="A")
    assert result.subscores["rr"] == 3
    assert result.subscores["acvpu"] == 0
    assert result.subscores["temp"] is None
    assert result.total == 3
    assert result.band == "low-medium"
    assert not result.complete


def test_scale_2_above_92_without_oxygen_row_leaves_spo2_out_of_total() -> None:
    result = _with(spo2_pct=95, spo2_scale=2, on_oxygen=None, hr_per_min=95)
    assert result.subscores["spo2"] is None
    assert result.subscores["oxygen"] is None
    assert result.total == 1
    assert result.unscored == ("spo2", "oxygen")


@pytest.mark.parametrize(
    ("kwargs", "parameter", "reason"),
    [
        ({"rr_per_min": -1}, "rr_per_min", "negative"),
        ({"rr_per_min": 121}, "rr_per_min", "between"),
        ({"rr_per_min": "12"}, "rr_per_min", "number"),
        ({"rr_per_min": True}, "rr_per_min", "number"),
        ({"rr_per_min": float("nan")}, "rr_per_min", "finite"),
        ({"hr_per_min": -0.5}, "hr_per_min", "negative"),
        ({"hr_per_min": float("inf")}, "hr_per_min", "finite"),
        ({"hr_per_min": 10**400}, "hr_per_min", "representable"),
        ({"sbp_mmhg": -10}, "sbp_mmhg", "negative"),
        ({"sbp_mmhg": 401}, "sbp_mmhg", "between"),
        ({"spo2_pct": 100.1}, "spo2_pct", "between"),
        ({"spo2_pct": 101}, "spo2_pct", "between"),
        ({"spo2_pct": -1}, "spo2_pct", "negative"),
        ({"temp_c": 24.9}, "temp_c", "between 25 and 45"),
        ({"temp_c": 45.1}, "temp_c", "between 25 and 45"),
        ({"temp_c": 98.6}, "temp_c", "between 25 and 45"),
        ({"temp_c": -3.0}, "temp_c", "between 25 and 45"),
        ({"acvpu": "X"}, "acvpu", "A, C, V, P, U"),
        ({"acvpu": ""}, "acvpu", "A, C, V, P, U"),
        ({"acvpu": "AV"}, "acvpu", "A, C, V, P, U"),
        ({"acvpu": 0}, "acvpu", "A, C, V, P, U"),
        ({"spo2_scale": 0}, "spo2_scale", "must be 1, or 2"),
        ({"spo2_scale": 3}, "spo2_scale", "must be 1, or 2"),
        ({"spo2_scale": True}, "spo2_scale", "must be 1, or 2"),
        ({"spo2_scale": 2.0}, "spo2_scale", "must be 1, or 2"),
        ({"spo2_scale": None}, "spo2_scale", "must be 1, or 2"),
        ({"on_oxygen": "o2"}, "on_oxygen", "parse_oxygen"),
        ({"on_oxygen": 1}, "on_oxygen", "True (oxygen) or False (air)"),
    ],
)
def test_impossible_inputs_name_the_parameter_and_reason(
    kwargs: dict[str, Any], parameter: str, reason: str
) -> None:
    with pytest.raises(News2InputError) as caught:
        News2Inputs(**kwargs)
    assert isinstance(caught.value, CloudSinkError)
    assert caught.value.parameter == parameter
    assert caught.value.value is next(iter(kwargs.values()))
    assert reason in caught.value.reason
    assert parameter in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize(("word", "on_oxygen"), [("air", False), ("o2", True), (" O2 ", True)])
def test_parse_oxygen(word: str, on_oxygen: bool) -> None:
    assert parse_oxygen(word) is on_oxygen


@pytest.mark.parametrize("word", ["", "oxygen", "room air", "02"])
def test_parse_oxygen_rejects_other_words(word: str) -> None:
    with pytest.raises(News2InputError) as caught:
        parse_oxygen(word)
    assert caught.value.parameter == "oxygen"
    assert "'air' or 'o2'" in str(caught.value)


def test_json_object_has_exactly_the_cli_keys_and_nulls_for_gaps() -> None:
    result = _with(temp_c=None, acvpu="C")
    document = json.loads(json.dumps(to_json_dict(result)))
    assert list(document) == ["total", "band", "complete", "subscores", "response"]
    assert document == {
        "total": 3,
        "band": "low-medium",
        "complete": False,
        "subscores": {
            "rr": 0,
            "spo2": 0,
            "oxygen": 0,
            "sbp": 0,
            "hr": 0,
            "acvpu": 3,
            "temp": None,
        },
        "response": RESPONSES["low-medium"],
    }


def test_json_subscores_are_a_plain_copy() -> None:
    result = _with()
    document = to_json_dict(result)
    subscores = document["subscores"]
    assert isinstance(subscores, dict)
    subscores["rr"] = 99
    assert result.subscores["rr"] == 0


def test_score_is_immutable() -> None:
    result = _with()
    with pytest.raises(TypeError):
        result.subscores["rr"] = 3  # type: ignore[index]

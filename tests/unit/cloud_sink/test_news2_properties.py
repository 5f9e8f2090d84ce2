"""Property tests of NEWS2 scoring: totals, bands, completeness, monotone chart rows, bad input."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.news2 import (
    JSON_KEYS,
    PARAMETERS,
    News2InputError,
    News2Inputs,
    News2Score,
    round_temp_c,
    round_whole,
    score,
    to_json_dict,
)
from cloud_sink.news2_chart import RESPONSES

# Deadlines are timing thresholds; the examples are cheap, so the counts stay modest instead.
PROPERTY = settings(max_examples=300, deadline=None)

FIELDS: tuple[str, ...] = (
    "rr_per_min",
    "spo2_pct",
    "on_oxygen",
    "sbp_mmhg",
    "hr_per_min",
    "acvpu",
    "temp_c",
)


def _measure(low: float, high: float) -> st.SearchStrategy[float]:
    # Whole numbers (as typed by a nurse), exact halves (the rounding edge) and arbitrary floats.
    whole = st.integers(int(low), int(high)).map(float)
    halves = st.integers(int(low) * 2, int(high) * 2).map(lambda n: n / 2)
    anything = st.floats(low, high, allow_nan=False, allow_infinity=False)
    return st.one_of(whole, halves, anything)


RR = _measure(0, 120)
SPO2 = _measure(0, 100)
SBP = _measure(0, 400)
HR = _measure(0, 400)
TEMP = st.one_of(
    st.integers(250, 450).map(lambda n: n / 10),
    st.integers(2500, 4500).map(lambda n: n / 100),
    st.floats(25.0, 45.0, allow_nan=False, allow_infinity=False),
)
ACVPU = st.sampled_from("ACVPU")


@st.composite
def inputs(draw: st.DrawFn) -> News2Inputs:
    return News2Inputs(
        rr_per_min=draw(st.none() | RR),
        spo2_pct=draw(st.none() | SPO2),
        spo2_scale=draw(st.sampled_from((1, 2))),
        on_oxygen=draw(st.none() | st.booleans()),
        sbp_mmhg=draw(st.none() | SBP),
        hr_per_min=draw(st.none() | HR),
        acvpu=draw(st.none() | ACVPU),
        temp_c=draw(st.none() | TEMP),
    )


@PROPERTY
@given(inputs())
def test_total_is_the_sum_of_scored_parameters(observed: News2Inputs) -> None:
    result = score(observed)
    present = [p for p in result.subscores.values() if p is not None]
    assert result.total == sum(present)
    assert 0 <= result.total <= 20
    assert tuple(result.subscores) == PARAMETERS
    assert all(0 <= p <= 3 for p in present)
    assert result.subscores["oxygen"] in (None, 0, 2)


@PROPERTY
@given(inputs())
def test_band_agrees_with_total_and_red_scores(observed: News2Inputs) -> None:
    result = score(observed)
    red = 3 in result.subscores.values()
    # Chart 2 thresholds, restated independently of the implementation's order of checks.
    assert (result.band == "zero") == (result.total == 0)
    assert (result.band == "high") == (result.total >= 7)
    assert (result.band == "medium") == (5 <= result.total <= 6)
    assert (result.band == "low-medium") == (red and result.total < 5)
    assert (result.band == "low") == (1 <= result.total <= 4 and not red)
    assert result.response == RESPONSES[result.band]


@PROPERTY
@given(inputs())
def test_complete_iff_all_seven_parameters_present(observed: News2Inputs) -> None:
    result = score(observed)
    all_present = all(getattr(observed, name) is not None for name in FIELDS)
    assert result.complete == all_present
    assert result.complete == (result.unscored == ())
    assert set(result.unscored) == {k for k, p in result.subscores.items() if p is None}


@PROPERTY
@given(inputs(), st.sampled_from(FIELDS))
def test_dropping_a_parameter_never_raises_the_total(observed: News2Inputs, name: str) -> None:
    # An incomplete score is a lower bound of the complete one: gaps are never scored.
    gap: dict[str, Any] = {name: None}
    fewer = score(dataclasses.replace(observed, **gap))
    full = score(observed)
    assert fewer.total <= full.total
    assert not fewer.complete


@PROPERTY
@given(inputs())
def test_json_object_mirrors_the_score(observed: News2Inputs) -> None:
    result = score(observed)
    document = to_json_dict(result)
    assert tuple(document) == JSON_KEYS
    assert document["subscores"] == dict(result.subscores)
    assert document["total"] == result.total
    assert document["band"] == result.band
    assert document["complete"] is result.complete


def _points(key: str, **kwargs: Any) -> int:
    points = score(News2Inputs(**kwargs)).subscores[key]
    assert points is not None
    return points


def _pair(values: st.SearchStrategy[float]) -> st.SearchStrategy[tuple[float, float]]:
    return st.tuples(values, values).map(lambda ab: (min(ab), max(ab)))


# Chart 1 rows with a normal band in the middle are V-shaped: points never fall as a value moves
# further above the normal band's lower edge, nor as it moves further below its upper edge.
@PROPERTY
@given(_pair(_measure(12, 120)), _pair(_measure(0, 20)))
def test_respiration_rate_is_monotone_either_side_of_normal(
    upper: tuple[float, float], lower: tuple[float, float]
) -> None:
    assert _points("rr", rr_per_min=upper[0]) <= _points("rr", rr_per_min=upper[1])
    assert _points("rr", rr_per_min=lower[0]) >= _points("rr", rr_per_min=lower[1])


@PROPERTY
@given(_pair(_measure(111, 400)), _pair(_measure(0, 219)))
def test_systolic_bp_is_monotone_either_side_of_normal(
    upper: tuple[float, float], lower: tuple[float, float]
) -> None:
    assert _points("sbp", sbp_mmhg=upper[0]) <= _points("sbp", sbp_mmhg=upper[1])
    assert _points("sbp", sbp_mmhg=lower[0]) >= _points("sbp", sbp_mmhg=lower[1])


@PROPERTY
@given(_pair(_measure(51, 400)), _pair(_measure(0, 90)))
def test_pulse_is_monotone_either_side_of_normal(
    upper: tuple[float, float], lower: tuple[float, float]
) -> None:
    assert _points("hr", hr_per_min=upper[0]) <= _points("hr", hr_per_min=upper[1])
    assert _points("hr", hr_per_min=lower[0]) >= _points("hr", hr_per_min=lower[1])


@PROPERTY
@given(_pair(TEMP.filter(lambda t: t >= 36.1)), _pair(TEMP.filter(lambda t: t <= 38.0)))
def test_temperature_is_monotone_either_side_of_normal(
    upper: tuple[float, float], lower: tuple[float, float]
) -> None:
    assert _points("temp", temp_c=upper[0]) <= _points("temp", temp_c=upper[1])
    assert _points("temp", temp_c=lower[0]) >= _points("temp", temp_c=lower[1])


@PROPERTY
@given(TEMP.filter(lambda t: t >= 39.1))
def test_fever_above_39_1_never_scores_lower_than_38_5(temp_c: float) -> None:
    assert _points("temp", temp_c=temp_c) >= _points("temp", temp_c=38.5)


@PROPERTY
@given(_pair(SPO2), st.booleans())
def test_spo2_scale_1_and_scale_2_on_air_never_score_more_for_higher_saturation(
    pair: tuple[float, float], on_oxygen: bool
) -> None:
    low, high = pair
    scale_1 = {"spo2_scale": 1, "on_oxygen": on_oxygen}
    assert _points("spo2", spo2_pct=low, **scale_1) >= _points("spo2", spo2_pct=high, **scale_1)
    on_air = {"spo2_scale": 2, "on_oxygen": False}
    assert _points("spo2", spo2_pct=low, **on_air) >= _points("spo2", spo2_pct=high, **on_air)


@PROPERTY
@given(_pair(_measure(88, 100)), _pair(_measure(0, 92)))
def test_spo2_scale_2_on_oxygen_is_monotone_either_side_of_target(
    upper: tuple[float, float], lower: tuple[float, float]
) -> None:
    # Scale 2 on oxygen is V-shaped around the 88-92 % target (Chart 1).
    on_o2 = {"spo2_scale": 2, "on_oxygen": True}
    assert _points("spo2", spo2_pct=upper[0], **on_o2) <= _points(
        "spo2", spo2_pct=upper[1], **on_o2
    )
    assert _points("spo2", spo2_pct=lower[0], **on_o2) >= _points(
        "spo2", spo2_pct=lower[1], **on_o2
    )


@PROPERTY
@given(
    st.sampled_from(
        (("rr_per_min", "rr", 119), ("spo2_pct", "spo2", 99), ("hr_per_min", "hr", 399))
    ),
    st.data(),
)
def test_whole_number_parameters_round_half_up(
    spec: tuple[str, str, int], data: st.DataObject
) -> None:
    name, key, top = spec
    whole = data.draw(st.integers(1, top), label="whole")
    # An offset in hundredths from -0.50 (rounds up to whole) to +0.49 (rounds down to whole).
    hundredths = data.draw(st.integers(-50, 49), label="hundredths")
    typed = float(Decimal(whole) + Decimal(hundredths) / 100)
    assert round_whole(typed) == whole
    assert _points(key, **{name: typed}) == _points(key, **{name: whole})


@PROPERTY
@given(st.integers(251, 449), st.integers(-50, 49))
def test_temperature_rounds_half_up_to_tenths(tenths: int, thousandths: int) -> None:
    # 37.25 -> 37.3, 37.349 -> 37.3: an offset of -0.050 to +0.049 around a charted tenth.
    recorded = float(Decimal(tenths) / 10)
    typed = float(Decimal(tenths) / 10 + Decimal(thousandths) / 1000)
    assert round_temp_c(typed) == recorded
    assert _points("temp", temp_c=typed) == _points("temp", temp_c=recorded)


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=3),
    st.sampled_from(("A", "c", "air", "o2", 1, 2)),
    st.lists(st.integers(), max_size=2),
    st.complex_numbers(),
)


def _attempt(kwargs: dict[str, Any]) -> News2Score | News2InputError:
    try:
        return score(News2Inputs(**kwargs))
    except News2InputError as exc:
        return exc


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({name: JUNK for name in (*FIELDS, "spo2_scale")}))
def test_any_input_scores_or_raises_only_our_error(kwargs: dict[str, Any]) -> None:
    # Anything else (TypeError, ValueError, decimal.InvalidOperation...) propagates and fails.
    outcome = _attempt(kwargs)
    if isinstance(outcome, News2InputError):
        assert outcome.parameter in (*FIELDS, "spo2_scale")
        assert outcome.reason
    else:
        assert outcome.total == sum(p for p in outcome.subscores.values() if p is not None)

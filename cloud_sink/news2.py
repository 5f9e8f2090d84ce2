"""NEWS2 scoring (RCP 2017): validate and round the inputs, score them, shape the CLI's JSON."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Final

from cloud_sink import news2_chart as chart
from cloud_sink.errors import CloudSinkError
from cloud_sink.news2_chart import Band

PARAMETERS: Final[tuple[str, ...]] = ("rr", "spo2", "oxygen", "sbp", "hr", "acvpu", "temp")
"""The seven NEWS2 parameters (Chart 1 rows), in chart order; the keys of every sub-score map."""

JSON_KEYS: Final[tuple[str, ...]] = ("total", "band", "complete", "subscores", "response")

OXYGEN_WORDS: Final[Mapping[str, bool]] = MappingProxyType({"air": False, "o2": True})

# Limits beyond any living patient: they catch typos and unit mix-ups (kPa for mmHg, °F for °C),
# not clinical extremes, which the chart itself scores. Temperature: 25-45 °C, as issue #7 asks.
RR_MAX_PER_MIN: Final = 120.0
SPO2_MAX_PCT: Final = 100.0
SBP_MAX_MMHG: Final = 400.0
HR_MAX_PER_MIN: Final = 400.0
TEMP_MIN_C: Final = 25.0
TEMP_MAX_C: Final = 45.0

_WHOLE: Final = Decimal(1)
_TENTH: Final = Decimal("0.1")


class News2InputError(CloudSinkError):
    """A NEWS2 input is impossible (wrong type, out of range, unknown code); fix that value."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        super().__init__(f"NEWS2 input {parameter}={value!r}: {reason}")
        self.parameter = parameter
        self.value = value
        self.reason = reason


def _check_number(parameter: str, value: object, low: float, high: float, unit: str) -> None:
    # bool is an int subclass; True as a respiration rate is a bug upstream, not a 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise News2InputError(parameter, value, f"must be a number in {unit}")
    try:
        as_float = float(value)
    except (OverflowError, ValueError, TypeError) as exc:
        raise News2InputError(parameter, value, f"is not representable in {unit}") from exc
    if not math.isfinite(as_float):
        raise News2InputError(parameter, value, "must be a finite number")
    # Rates, pressures and saturations start at 0: say "negative" rather than quote a range.
    if as_float < 0.0 and low == 0.0:
        raise News2InputError(parameter, value, f"cannot be negative (unit {unit})")
    if not low <= as_float <= high:
        raise News2InputError(parameter, value, f"must be between {low:g} and {high:g} {unit}")


def _check_scale(parameter: str, value: object) -> None:
    # Checked as an Integral first: comparing an arbitrary object with == could raise or lie.
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or int(value) not in (1, 2)
    ):
        reason = "must be 1, or 2 for a prescribed 88-92 % target (hypercapnic respiratory failure)"
        raise News2InputError(parameter, value, reason)


def _check_flag(parameter: str, value: object) -> None:
    if not isinstance(value, bool):
        reason = "must be True (oxygen) or False (air); parse 'air'/'o2' with parse_oxygen()"
        raise News2InputError(parameter, value, reason)


def _check_acvpu(parameter: str, value: object) -> None:
    if not isinstance(value, str) or value.upper() not in chart.ACVPU_POINTS:
        reason = "unknown ACVPU level; use one of A, C, V, P, U"
        raise News2InputError(parameter, value, reason)


@dataclass(slots=True, frozen=True)
class News2Inputs:
    """One set of observations; None means missing (or stale: the twin passes None for those).

    Numbers may carry any precision; they are rounded as the chart records them before banding.
    `on_oxygen` is True for supplemental oxygen, False for air (see `parse_oxygen`). `acvpu` is one
    of A, C, V, P, U (either case). Construction rejects impossible values with News2InputError.
    """

    rr_per_min: float | None = None
    spo2_pct: float | None = None
    spo2_scale: int = 1
    on_oxygen: bool | None = None
    sbp_mmhg: float | None = None
    hr_per_min: float | None = None
    acvpu: str | None = None
    temp_c: float | None = None

    def __post_init__(self) -> None:
        if self.rr_per_min is not None:
            _check_number("rr_per_min", self.rr_per_min, 0.0, RR_MAX_PER_MIN, "breaths/min")
        if self.spo2_pct is not None:
            _check_number("spo2_pct", self.spo2_pct, 0.0, SPO2_MAX_PCT, "%")
        _check_scale("spo2_scale", self.spo2_scale)
        if self.on_oxygen is not None:
            _check_flag("on_oxygen", self.on_oxygen)
        if self.sbp_mmhg is not None:
            _check_number("sbp_mmhg", self.sbp_mmhg, 0.0, SBP_MAX_MMHG, "mmHg")
        if self.hr_per_min is not None:
            _check_number("hr_per_min", self.hr_per_min, 0.0, HR_MAX_PER_MIN, "beats/min")
        if self.acvpu is not None:
            _check_acvpu("acvpu", self.acvpu)
        if self.temp_c is not None:
            _check_number("temp_c", self.temp_c, TEMP_MIN_C, TEMP_MAX_C, "°C")


@dataclass(slots=True, frozen=True)
class News2Score:
    """A NEWS2 result. When incomplete, total and band count only the scored parameters.

    An incomplete score is a lower bound: a missing parameter can only add points.
    `subscores` maps every key of PARAMETERS to its points, or None where it was not scored.
    """

    total: int
    band: Band
    complete: bool
    subscores: Mapping[str, int | None] = field(hash=False)
    response: str

    @property
    def unscored(self) -> tuple[str, ...]:
        """The parameters without a sub-score, in chart order."""
        return tuple(name for name in PARAMETERS if self.subscores[name] is None)


def parse_oxygen(word: str) -> bool:
    """'o2' -> True, 'air' -> False (case-insensitive); anything else raises News2InputError."""
    key = word.strip().lower() if isinstance(word, str) else None
    if key is None or key not in OXYGEN_WORDS:
        parameter, reason = "oxygen", "must be 'air' or 'o2'"
        raise News2InputError(parameter, word, reason)
    return OXYGEN_WORDS[key]


def _round_half_up(value: float, quantum: Decimal) -> Decimal:
    # The chart records whole numbers (temperature to 0.1 °C) and we round half up. We round the
    # shortest decimal that reproduces the float (its repr: what was typed or displayed), so 35.05
    # becomes 35.1 even though the nearest double is 35.04999...; binary rounding would give 35.0.
    return Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP)


def round_whole(value: float) -> int:
    """RR, SpO2, systolic BP or pulse as charted: a whole number, half up (8.5 -> 9)."""
    return int(_round_half_up(value, _WHOLE))


def _whole(value: float | None) -> int | None:
    return None if value is None else round_whole(value)


def round_temp_c(temp_c: float) -> float:
    """Temperature as the chart records it: one decimal place, half up (38.05 -> 38.1)."""
    return float(_round_half_up(temp_c, _TENTH))


def score(inputs: News2Inputs) -> News2Score:
    """Score validated inputs against RCP NEWS2 Chart 1, band them per Chart 2, respond per Chart 4.

    RR, SpO2, systolic BP and pulse are rounded to whole numbers and temperature to one decimal
    place, half up, before banding. Missing parameters score None and make `complete` False;
    the twin passes None for a stale parameter, so stale is treated exactly like missing.
    """
    spo2 = _whole(inputs.spo2_pct)
    rr = _whole(inputs.rr_per_min)
    sbp = _whole(inputs.sbp_mmhg)
    hr = _whole(inputs.hr_per_min)
    temp_deci_c = (
        None if inputs.temp_c is None else int(_round_half_up(inputs.temp_c, _TENTH).scaleb(1))
    )
    oxygen: int | None = None
    if inputs.on_oxygen is not None:
        oxygen = chart.OXYGEN_POINTS if inputs.on_oxygen else chart.AIR_POINTS
    subscores: dict[str, int | None] = {
        "rr": None if rr is None else chart.RESPIRATION_RATE.points(rr),
        "spo2": None
        if spo2 is None
        else chart.spo2_points(spo2, inputs.spo2_scale, inputs.on_oxygen),
        "oxygen": oxygen,
        "sbp": None if sbp is None else chart.SYSTOLIC_BP.points(sbp),
        "hr": None if hr is None else chart.PULSE.points(hr),
        "acvpu": None if inputs.acvpu is None else chart.ACVPU_POINTS[inputs.acvpu.upper()],
        "temp": None if temp_deci_c is None else chart.TEMPERATURE_DECI_C.points(temp_deci_c),
    }
    present = [points for points in subscores.values() if points is not None]
    total = sum(present)
    band = chart.band_for(total, red_score=chart.RED_SCORE in present)
    return News2Score(
        total=total,
        band=band,
        complete=len(present) == len(PARAMETERS),
        subscores=MappingProxyType(subscores),
        response=chart.RESPONSES[band],
    )


def to_json_dict(result: News2Score) -> dict[str, object]:
    """The `cloud-sink news2 --json` object: exactly total, band, complete, subscores, response."""
    return {
        "total": result.total,
        "band": result.band,
        "complete": result.complete,
        "subscores": {name: result.subscores[name] for name in PARAMETERS},
        "response": result.response,
    }

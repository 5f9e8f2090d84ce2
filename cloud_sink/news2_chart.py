"""The RCP NEWS2 (2017) chart as data: points per band, trigger thresholds, clinical response."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

# Source for every table below: Royal College of Physicians, "National Early Warning Score (NEWS) 2:
# Standardising the assessment of acute-illness severity in the NHS", updated report of a working
# party, December 2017 -- Chart 1 (the NEWS scoring system), Chart 2 (NEWS thresholds and
# triggers) and Chart 4 (clinical response to the NEWS trigger thresholds). The tables take values
# already rounded as the chart records them (whole numbers; temperature in tenths of a degree).

Band = Literal["zero", "low", "low-medium", "medium", "high"]

BANDS: Final[tuple[Band, ...]] = ("zero", "low", "low-medium", "medium", "high")

RED_SCORE: Final = 3
"""Chart 2: a score of 3 in any single parameter is the "red score" trigger (low-medium risk)."""

MEDIUM_MIN_TOTAL: Final = 5
"""Chart 2 / Chart 4: an aggregate of 5 or more is the key threshold for an urgent response."""

HIGH_MIN_TOTAL: Final = 7
"""Chart 2 / Chart 4: an aggregate of 7 or more is the threshold for an emergency response."""


@dataclass(slots=True, frozen=True)
class BandTable:
    """One row of Chart 1: ascending (inclusive upper bound, points) bands, then points above."""

    bands: tuple[tuple[int, int], ...]
    points_above: int

    def points(self, value: int) -> int:
        """Points for a value already rounded to the unit the bounds are written in."""
        for upper, points in self.bands:
            if value <= upper:
                return points
        return self.points_above


# Chart 1, "Respiration rate (per minute)": <=8 -> 3, 9-11 -> 1, 12-20 -> 0, 21-24 -> 2, >=25 -> 3.
RESPIRATION_RATE: Final = BandTable(((8, 3), (11, 1), (20, 0), (24, 2)), points_above=3)

# Chart 1, "SpO2 Scale 1 (%)": <=91 -> 3, 92-93 -> 2, 94-95 -> 1, >=96 -> 0.
SPO2_SCALE_1: Final = BandTable(((91, 3), (93, 2), (95, 1)), points_above=0)

# Chart 1, "SpO2 Scale 2 (%)", for a prescribed target of 88-92 % (hypercapnic respiratory
# failure): <=83 -> 3, 84-85 -> 2, 86-87 -> 1, 88-92 -> 0; above 92 the row splits on the
# "Air or oxygen?" row: >=93 on air -> 0, but on oxygen 93-94 -> 1, 95-96 -> 2, >=97 -> 3, because
# saturating above target on supplemental oxygen risks hypercapnia.
SPO2_SCALE_2_ON_AIR: Final = BandTable(((83, 3), (85, 2), (87, 1)), points_above=0)
SPO2_SCALE_2_ON_OXYGEN: Final = BandTable(
    ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2)), points_above=3
)

# Chart 1, "Air or oxygen?": oxygen -> 2, air -> 0.
OXYGEN_POINTS: Final = 2
AIR_POINTS: Final = 0

# Chart 1, "Systolic blood pressure (mmHg)": <=90 -> 3, 91-100 -> 2, 101-110 -> 1, 111-219 -> 0,
# >=220 -> 3.
SYSTOLIC_BP: Final = BandTable(((90, 3), (100, 2), (110, 1), (219, 0)), points_above=3)

# Chart 1, "Pulse (per minute)": <=40 -> 3, 41-50 -> 1, 51-90 -> 0, 91-110 -> 1, 111-130 -> 2,
# >=131 -> 3.
PULSE: Final = BandTable(((40, 3), (50, 1), (90, 0), (110, 1), (130, 2)), points_above=3)

# Chart 1, "Temperature (°C)", in tenths of a degree so the bounds stay exact integers:
# <=35.0 -> 3, 35.1-36.0 -> 1, 36.1-38.0 -> 0, 38.1-39.0 -> 1, >=39.1 -> 2.
TEMPERATURE_DECI_C: Final = BandTable(((350, 3), (360, 1), (380, 0), (390, 1)), points_above=2)

# Chart 1, "Consciousness": Alert -> 0; new Confusion, responds to Voice, to Pain, Unresponsive
# (CVPU) -> 3.
ACVPU_POINTS: Final[Mapping[str, int]] = MappingProxyType({"A": 0, "C": 3, "V": 3, "P": 3, "U": 3})


def spo2_points(spo2_pct: int, scale: int, on_oxygen: bool | None) -> int | None:
    """Chart 1 SpO2 points on scale 1 or 2; None when scale 2 needs the unknown air/oxygen row."""
    if scale == 1:
        return SPO2_SCALE_1.points(spo2_pct)
    if on_oxygen is None:
        # At or below 92 % both scale 2 rows agree; above it the score depends on a missing
        # parameter, and a missing parameter is never scored as 0.
        on_air = SPO2_SCALE_2_ON_AIR.points(spo2_pct)
        return on_air if on_air == SPO2_SCALE_2_ON_OXYGEN.points(spo2_pct) else None
    table = SPO2_SCALE_2_ON_OXYGEN if on_oxygen else SPO2_SCALE_2_ON_AIR
    return table.points(spo2_pct)


def band_for(total: int, *, red_score: bool) -> Band:
    """Chart 2 trigger band of an aggregate score; red_score: some parameter scored 3."""
    if total >= HIGH_MIN_TOTAL:
        return "high"
    if total >= MEDIUM_MIN_TOTAL:
        return "medium"
    if red_score:
        return "low-medium"
    if total == 0:
        return "zero"
    return "low"


# Chart 4, "Clinical response to the NEWS trigger thresholds", in our own words: the minimum
# monitoring frequency first, then who is told and what they do.
_RESPONSE_TEXT: Final[dict[Band, str]] = {
    "zero": "Monitor at least every 12 hours; continue routine NEWS2 monitoring.",
    "low": (
        "Monitor at least every 4-6 hours; tell the registered nurse, who assesses the patient"
        " and decides whether to monitor more often or escalate care."
    ),
    "low-medium": (
        "Monitor at least every hour; the registered nurse tells the medical team caring for the"
        " patient, who review the patient and decide whether care must be escalated."
    ),
    "medium": (
        "Urgent response: monitor at least every hour; the registered nurse tells the medical team"
        " caring for the patient at once and asks for an urgent assessment by a clinician or team"
        " competent in caring for acutely ill patients; care for the patient where monitoring"
        " facilities are available."
    ),
    "high": (
        "Emergency response: monitor vital signs continuously; the registered nurse tells the"
        " medical team caring for the patient at once (at least specialist registrar level);"
        " emergency assessment by a team with critical-care competencies, including advanced"
        " airway management; consider transfer to level 2 or 3 care (HDU or ICU); care for the"
        " patient where monitoring facilities are available."
    ),
}
RESPONSES: Final[Mapping[Band, str]] = MappingProxyType(_RESPONSE_TEXT)

"""Anonymised FHIR exports (`export fhir --anonymised`): nothing in them leads back to the twin.

A pseudonymous export carries the patient and device tokens, which the sink (and anyone with
its database) can link to the stored twin and, through the identity registry, to the person.
An anonymised export replaces both with random ids minted for that one export, shifts every
time by one random whole number of weeks, and keeps of the profile only what a study needs and
HIPAA's Safe Harbor list (45 CFR 164.514(b)(2)) allows: sex and whether the stay is open. Age,
conditions, diagnosis, treatment (free text that may name anything) and the next appointment
(a date) are left out. docs/twin.md says what this protects against and what it does not.
"""

from __future__ import annotations

import secrets
from typing import Final

from cloud_sink.fhir import ExportData, News2Export, Reading
from cloud_sink.profiles import PatientProfile

WEEK_NS: Final = 7 * 86_400 * 1_000_000_000
# Forward by about 50 to 150 years: the dates are plainly not real (as MIMIC-IV shifts its
# dates into 2100-2200), and whole weeks keep the time of day and the day of the week, so
# circadian and weekday patterns survive. The interval is drawn from the system CSPRNG, so one
# export's shift says nothing about another's.
SHIFT_WEEKS_MIN: Final = 2_609
SHIFT_WEEKS_MAX: Final = 7_827
_ID_BYTES: Final = 16  # the same shape as a token (32 hex digits), so check_token accepts it


def random_shift_ns() -> int:
    """A fresh shift: a whole number of weeks between SHIFT_WEEKS_MIN and SHIFT_WEEKS_MAX."""
    weeks = SHIFT_WEEKS_MIN + secrets.randbelow(SHIFT_WEEKS_MAX - SHIFT_WEEKS_MIN + 1)
    return weeks * WEEK_NS


def anonymise(data: ExportData) -> tuple[ExportData, int]:
    """`data` with a random patient id, random device ids and shifted times; and the shift.

    The ids are new at every call: two anonymised exports of one patient cannot be joined on
    them. The caller shifts the bundle's own timestamp by the same amount.
    """
    shift_ns = random_shift_ns()
    patient = secrets.token_hex(_ID_BYTES)
    device_ids: dict[str, str] = {}

    def device(token: str) -> str:
        if token not in device_ids:
            device_ids[token] = secrets.token_hex(_ID_BYTES)
        return device_ids[token]

    def moved(reading: Reading) -> Reading:
        return Reading(reading.metric, device(reading.device), reading.ts_ns + shift_ns,
                       reading.value)  # fmt: skip

    profile = data.profile
    kept = (
        None
        if profile is None
        else PatientProfile(patient, profile.state, profile.ts_ns + shift_ns, sex=profile.sex)
    )
    news2 = data.news2
    shifted_news2 = (
        None
        if news2 is None
        else News2Export(
            news2.score,
            news2.as_of_ns + shift_ns,
            {parameter: moved(reading) for parameter, reading in news2.used.items()},
        )
    )
    readings = tuple(moved(reading) for reading in data.readings)
    anonymous = ExportData(
        patient=patient,
        profile=kept,
        device_kinds={device(token): kind for token, kind in data.device_kinds.items()},
        readings=readings,
        news2=shifted_news2,
        since_ns=None if data.since_ns is None else data.since_ns + shift_ns,
    )
    return anonymous, shift_ns

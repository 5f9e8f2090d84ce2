"""The status file's per-device last reading: kept current reading by reading."""

from __future__ import annotations

from edge_agent.protocol import by_name
from edge_agent.sources import Reading
from edge_agent.status import BATTERY_CODE, LastReading, note_reading

DEVICE = "cd" * 16
PATIENT = "ab" * 16
HEART_RATE = by_name("heart_rate").code


def _reading(code: int, value: float, device: str = DEVICE) -> Reading:
    return Reading(device, PATIENT, "hr-strap", code, 1_767_225_600_000_000_000, value)


def test_the_last_reading_moves_on_and_the_battery_level_stays_until_the_next_one() -> None:
    last: dict[str, LastReading] = {}
    note_reading(last, _reading(HEART_RATE, 61.0))
    assert (last[DEVICE].metric_code, last[DEVICE].value, last[DEVICE].battery_pct) == (
        HEART_RATE,
        61.0,
        None,
    )
    first_seen_ns = last[DEVICE].received_ns
    note_reading(last, _reading(BATTERY_CODE, 80.0))
    note_reading(last, _reading(HEART_RATE, 62.0))
    entry = last[DEVICE]
    assert (entry.metric_code, entry.value, entry.battery_pct) == (HEART_RATE, 62.0, 80.0)
    assert entry.received_ns >= first_seen_ns
    note_reading(last, _reading(BATTERY_CODE, 79.0))
    assert last[DEVICE].battery_pct == 79.0
    note_reading(last, _reading(BATTERY_CODE, 50.0, device="ef" * 16))
    assert last[DEVICE].battery_pct == 79.0  # one entry per device
    assert last["ef" * 16].battery_pct == 50.0

"""The simulated bedside monitor's printer against the hand-computed vectors, independently."""

from __future__ import annotations

import json
from typing import Any, Final

import pytest

from firmware_sims.serial.monitor import (
    BedsideMonitorSim,
    VitalsRecord,
    encode_sentence,
    format_time,
    nmea_checksum,
)
from firmware_sims.vectors import SERIAL_DIR

VECTORS: Final[dict[str, Any]] = json.loads((SERIAL_DIR / "monitor_lines.json").read_text())
_PRINTED: Final = [v for v in VECTORS["sentences"] if v.get("simulator_prints_it")]


def _record(fields: dict[str, Any]) -> VitalsRecord:
    nibp = fields["nibp_mmhg"]
    return VitalsRecord(
        seq=fields["seq"],
        ts_ns=fields["ts_ns"],
        heart_rate_bpm=fields["heart_rate_bpm"],
        resp_rate_per_min=fields["resp_rate_per_min"],
        spo2_pct=fields["spo2_pct"],
        nibp_mmhg=None if nibp is None else tuple(nibp),
        temp_c=fields["temp_c"],
    )


@pytest.mark.parametrize("vector", _PRINTED, ids=lambda v: v["name"])
def test_records_print_as_the_vector_lines(vector: dict[str, Any]) -> None:
    assert encode_sentence(_record(vector["fields"])).decode("ascii") == vector["line"]


@pytest.mark.parametrize("vector", VECTORS["sentences"], ids=lambda v: v["name"])
def test_checksum_of_every_vector(vector: dict[str, Any]) -> None:
    sentence = vector["line"].rstrip("\r\n")
    body, _, digits = sentence[1:].rpartition("*")
    assert nmea_checksum(body) == digits.upper()


def test_time_has_milliseconds_only_when_nonzero() -> None:
    assert format_time(1_795_373_101_000_000_000) == "2026-11-22T18:45:01Z"
    assert format_time(1_795_373_102_500_000_000) == "2026-11-22T18:45:02.500Z"


def test_corruption_breaks_only_the_checksum() -> None:
    record = _record(VECTORS["sentences"][0]["fields"])
    good, bad = encode_sentence(record), encode_sentence(record, corrupt=True)
    assert good[:-4] == bad[:-4]
    assert good[-4:-2] != bad[-4:-2]


def test_the_monitor_is_seeded_with_increasing_times_and_periodic_nibp() -> None:
    def run() -> list[VitalsRecord]:
        sim = BedsideMonitorSim(seed=5, nibp_every=3, clock_ns=lambda: 1_795_373_101_000_000_000)
        records: list[VitalsRecord] = []
        for _ in range(7):
            record = sim.next_unit().record
            assert isinstance(record, VitalsRecord)
            records.append(record)
        return records

    records = run()
    assert records == run()
    stamps = [r.ts_ns for r in records]
    assert stamps == sorted(set(stamps))  # a frozen clock still gives distinct identities
    assert [r.nibp_mmhg is not None for r in records] == [n % 3 == 0 for n in range(7)]
    assert [r.seq for r in records] == list(range(7))


def test_garbage_always_ends_its_own_line() -> None:
    sim = BedsideMonitorSim(seed=5)
    assert all(sim.garbage().endswith(b"\r\n") for _ in range(20))

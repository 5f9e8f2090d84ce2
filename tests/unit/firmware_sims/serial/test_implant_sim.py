"""The simulated implant receiver's encoder against the hand-computed vectors, independently."""

from __future__ import annotations

import json
from typing import Any, Final

import pytest

from firmware_sims.serial.implant import (
    BatteryRecord,
    EpisodeRecord,
    ImplantReceiverSim,
    ImplantRecord,
    LeadRecord,
    StatusRecord,
    TrendRecord,
    cobs_encode,
    crc16_ccitt_false,
    encode_frame,
    encode_record,
)
from firmware_sims.vectors import SERIAL_DIR

VECTORS: Final[dict[str, Any]] = json.loads((SERIAL_DIR / "implant_frames.json").read_text())
_RECORDS: Final[dict[int, type[ImplantRecord]]] = {
    1: StatusRecord,
    2: TrendRecord,
    3: BatteryRecord,
    4: LeadRecord,
    5: EpisodeRecord,
}


def _expand(pairs: list[list[Any]]) -> bytes:
    return b"".join(bytes.fromhex(hex_text) * count for hex_text, count in pairs)


def _record(vector: dict[str, Any]) -> ImplantRecord:
    fields = dict(vector["fields"])
    if "impedances" in fields:
        fields["impedances"] = tuple(tuple(entry) for entry in fields["impedances"])
    return _RECORDS[vector["msg_type"]](**fields)


def test_bitwise_crc_meets_the_check_value() -> None:
    check = VECTORS["crc_check"]
    assert crc16_ccitt_false(check["ascii"].encode()) == int(check["crc"], 16)


@pytest.mark.parametrize("vector", VECTORS["cobs"], ids=lambda v: f"{len(_expand(v['data']))}B")
def test_cobs_encoder_matches_the_paper_form(vector: dict[str, Any]) -> None:
    assert cobs_encode(_expand(vector["data"])) == _expand(vector["encoded"])


# The one vector with bytes past its layout cannot come from a record; it is checked raw below.
_FROM_RECORDS: Final = [v for v in VECTORS["frames"] if "appended" not in v["name"]]


@pytest.mark.parametrize("vector", _FROM_RECORDS, ids=lambda v: v["name"])
def test_records_encode_to_the_vector_bytes(vector: dict[str, Any]) -> None:
    assert encode_record(_record(vector), vector["seq"]).hex(" ") == vector["hex"]


def test_raw_frame_with_appended_bytes_matches_its_vector() -> None:
    (vector,) = [v for v in VECTORS["frames"] if "appended" in v["name"]]
    payload = _record(vector).payload() + b"\x01\x02"
    assert encode_frame(vector["msg_type"], vector["seq"], payload).hex(" ") == vector["hex"]


def test_corruption_changes_only_the_crc() -> None:
    record = StatusRecord(1_795_373_100, 8, 0, -72)
    good, bad = encode_record(record, 1), encode_record(record, 1, corrupt=True)
    assert good != bad
    assert len(good) == len(bad)


def test_payload_too_long_for_the_length_byte_is_refused() -> None:
    with pytest.raises(ValueError, match="u8 length"):
        encode_frame(1, 0, b"\x01" * 256)


def test_the_simulator_is_seeded_and_numbers_every_frame() -> None:
    def run() -> list[bytes]:
        sim = ImplantReceiverSim(seed=7, clock_s=lambda: 1_795_373_100, start_seq=65534)
        return [sim.next_unit(corrupt=n == 1).data for n in range(8)]

    first, second = run(), run()
    assert first == second
    sim = ImplantReceiverSim(seed=7, clock_s=lambda: 1_795_373_100, start_seq=65534)
    units = [sim.next_unit(corrupt=n == 1) for n in range(3)]
    assert [u.intact for u in units] == [True, False, True]
    assert sim.seq == 1  # 65534, 65535, 0 were used
    assert (sim.frames_sent, sim.frames_corrupted) == (3, 1)


def test_the_cycle_covers_every_message_type() -> None:
    sim = ImplantReceiverSim(seed=3, clock_s=lambda: 1_795_373_100)
    kinds = {type(sim.next_record()) for _ in range(12)}
    assert kinds == set(_RECORDS.values())

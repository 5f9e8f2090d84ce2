"""Implant receiver framing: the agent's decoder against hand-computed vectors; stream rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import pytest

from edge_agent.devices.serial_frames import (
    MAX_ENCODED_BYTES,
    ArrhythmiaEpisode,
    Battery,
    DeviceStatus,
    FrameDecoder,
    FrameFault,
    ImplantMessage,
    LeadImpedance,
    MessageType,
    NightlyTrend,
    SerialFrameError,
    cobs_decode,
    crc16_ccitt_false,
    decode_frame,
)
from firmware_sims.serial.implant import StatusRecord, encode_record
from firmware_sims.vectors import SERIAL_DIR

VECTORS: Final[dict[str, Any]] = json.loads((SERIAL_DIR / "implant_frames.json").read_text())


def _expand(pairs: list[list[Any]]) -> bytes:
    return b"".join(bytes.fromhex(hex_text) * count for hex_text, count in pairs)


def _wire(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["hex"])


def wire_fields(message: ImplantMessage) -> dict[str, Any]:
    """The decoded message in the vectors' wire units (enums as numbers, AF burden in 0.1 %)."""
    match message:
        case DeviceStatus():
            return {
                "device_time_s": message.device_time_s,
                "flags": int(message.flags),
                "error_code": message.error_code,
                "link_rssi_dbm": message.link_rssi_dbm,
            }
        case NightlyTrend():
            burden = message.af_burden_pct
            return {
                "period_start_s": message.period_start_s,
                "night_heart_rate_bpm": message.night_heart_rate_bpm,
                "activity_min": message.activity_min,
                "af_burden_tenths_pct": None if burden is None else round(burden * 10),
                "fluid_index_ohm_d": message.fluid_index_ohm_d,
            }
        case Battery():
            return {
                "device_time_s": message.device_time_s,
                "voltage_mv": message.voltage_mv,
                "longevity_months": message.longevity_months,
                "phase": int(message.phase),
            }
        case LeadImpedance():
            return {
                "device_time_s": message.device_time_s,
                "impedances": [[int(m.channel), m.impedance_ohm] for m in message.channels],
            }
        case ArrhythmiaEpisode():
            return {
                "episode_id": message.episode_id,
                "episode_type": int(message.episode_type),
                "start_s": message.start_s,
                "duration_s": message.duration_s,
                "max_rate_bpm": message.max_rate_bpm,
                "therapy": int(message.therapy),
            }


def test_crc_is_ccitt_false_by_its_check_value() -> None:
    check = VECTORS["crc_check"]
    assert crc16_ccitt_false(check["ascii"].encode()) == int(check["crc"], 16)


@pytest.mark.parametrize("vector", VECTORS["cobs"], ids=lambda v: f"{len(_expand(v['data']))}B")
def test_cobs_vectors_decode(vector: dict[str, Any]) -> None:
    assert cobs_decode(_expand(vector["encoded"])) == _expand(vector["data"])


def test_cobs_accepts_a_full_final_block_without_the_phantom_code() -> None:
    assert cobs_decode(b"\xff" + b"\x11" * 254) == b"\x11" * 254


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_vector_frames_decode_to_their_fields(vector: dict[str, Any]) -> None:
    wire = _wire(vector)
    assert (wire[0], wire[-1]) == (0, 0)
    frame = decode_frame(wire[1:-1])
    assert frame.msg_type == MessageType(vector["msg_type"])
    assert frame.seq == vector["seq"]
    assert wire_fields(frame.message) == vector["fields"]


@pytest.mark.parametrize("vector", VECTORS["rejects"], ids=lambda v: v["name"])
def test_vector_rejects_name_the_fault_and_offset(vector: dict[str, Any]) -> None:
    wire = _wire(vector)
    with pytest.raises(SerialFrameError) as caught:
        decode_frame(wire[1:-1])
    assert caught.value.fault == FrameFault(vector["fault"])
    assert caught.value.offset == vector["offset"]
    assert f"byte {vector['offset']}" in str(caught.value)


@pytest.mark.parametrize("vector", VECTORS["rejects"], ids=lambda v: v["name"])
def test_stream_counts_a_reject_and_keeps_the_next_frame(vector: dict[str, Any]) -> None:
    good = VECTORS["frames"][0]
    decoder = FrameDecoder()
    frames = decoder.feed(_wire(vector) + _wire(good))
    assert [f.seq for f in frames] == [good["seq"]]
    assert decoder.counters.frames_rejected == 1
    assert decoder.last_error is not None
    assert decoder.last_error.fault == FrameFault(vector["fault"])


def test_every_vector_frame_survives_one_concatenated_stream() -> None:
    stream = b"".join(_wire(v) for v in VECTORS["frames"])
    decoder = FrameDecoder()
    frames = decoder.feed(stream)
    assert [f.seq for f in frames] == [v["seq"] for v in VECTORS["frames"]]
    assert decoder.counters.frames_ok == len(VECTORS["frames"])
    assert decoder.counters.frames_rejected == 0


def test_bytes_before_the_first_delimiter_are_discarded_as_a_partial_frame() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(b"\x12\x34\x56" + _wire(VECTORS["frames"][0]))
    assert len(frames) == 1
    assert decoder.counters.bytes_discarded == 3
    assert decoder.counters.frames_rejected == 0


def test_garbage_between_frames_costs_no_intact_frame() -> None:
    first, second = VECTORS["frames"][0], VECTORS["frames"][1]
    decoder = FrameDecoder()
    frames = decoder.feed(_wire(first) + b"\x07\x99\x42\x42\x42\x42\x42\x42\x42" + _wire(second))
    assert [f.seq for f in frames] == [first["seq"], second["seq"]]
    assert decoder.counters.frames_rejected == 1


def test_a_run_past_the_cap_is_counted_once_and_never_buffered() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00")
    for _ in range(10):
        decoder.feed(b"\x01" * 100)
    assert decoder.counters.oversize_frames == 1
    frames = decoder.feed(_wire(VECTORS["frames"][0]))
    assert len(frames) == 1
    assert decoder.counters.frames_rejected == 1


def test_a_run_of_exactly_the_cap_is_not_oversize() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00" + b"\x01" * MAX_ENCODED_BYTES + b"\x00")
    assert decoder.counters.oversize_frames == 0
    decoder.feed(b"\x01" * (MAX_ENCODED_BYTES + 1) + b"\x00")
    assert decoder.counters.oversize_frames == 1


def test_decode_frame_rejects_an_oversize_run() -> None:
    with pytest.raises(SerialFrameError) as caught:
        decode_frame(b"\x01" * (MAX_ENCODED_BYTES + 1))
    assert caught.value.fault is FrameFault.OVERSIZE


def test_a_zero_inside_a_run_is_a_cobs_error_with_its_offset() -> None:
    with pytest.raises(SerialFrameError) as caught:
        cobs_decode(b"\x03\x11\x00")
    assert (caught.value.fault, caught.value.offset) == (FrameFault.COBS, 2)


def _status_frame(seq: int) -> bytes:
    # Frames with chosen sequence numbers, from the simulator's independent encoder.
    return encode_record(StatusRecord(1_795_373_100, 0, 0, -60), seq)


def test_sequence_gaps_duplicates_and_wrap_are_counted() -> None:
    decoder = FrameDecoder()
    for seq in (65534, 65535, 0, 1, 3, 3, 7):
        decoder.feed(_status_frame(seq))
    counters = decoder.counters
    assert counters.frames_ok == 7
    assert counters.seq_gaps == 2  # 1 -> 3, 3 -> 7
    assert counters.frames_missed == 1 + 3
    assert counters.seq_duplicates == 1


def test_a_backward_jump_is_a_gap_without_a_missed_count() -> None:
    decoder = FrameDecoder()
    for seq in (500, 501, 2):
        decoder.feed(_status_frame(seq))
    assert decoder.counters.seq_gaps == 1
    assert decoder.counters.frames_missed == 0


def test_reset_drops_a_partial_frame_and_keeps_the_sequence() -> None:
    decoder = FrameDecoder()
    decoder.feed(_status_frame(10))
    decoder.feed(_status_frame(11)[:6])  # unplugged mid-frame
    decoder.reset()
    frames = decoder.feed(_status_frame(12))
    assert [f.seq for f in frames] == [12]
    assert decoder.counters.frames_rejected == 0
    assert decoder.counters.seq_gaps == 1
    assert decoder.counters.frames_missed == 1


def test_reserved_status_bits_are_ignored() -> None:
    frame = decode_frame(encode_record(StatusRecord(1, 0xFFC8, 3, None), 5)[1:-1])
    assert isinstance(frame.message, DeviceStatus)
    assert int(frame.message.flags) == 0x08
    assert frame.message.error_code == 3
    assert frame.message.link_rssi_dbm is None


def test_every_frame_in_the_normative_doc_is_a_checked_vector() -> None:
    doc = (Path(__file__).resolve().parents[4] / "docs/serial-formats.md").read_text()
    shown = re.findall(r"`(00(?: [0-9a-f]{2})+ 00)`", doc)
    known = {v["hex"] for v in VECTORS["frames"]}
    assert len(shown) >= len(known)
    assert set(shown) <= known

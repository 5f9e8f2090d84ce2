"""Implant framing properties: simulator-to-agent round trips; noise never raises."""

from __future__ import annotations

import itertools
from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.devices import serial_frames as agent
from edge_agent.devices.serial_frames import (
    MAX_ENCODED_BYTES,
    FrameDecoder,
    ImplantFrame,
    ImplantMessage,
    MessageType,
    cobs_decode,
    decode_frame,
)
from firmware_sims.serial import implant as sim

SETTINGS: Final = settings(max_examples=150, deadline=None)

u8 = st.integers(0, 0xFE)
u16 = st.integers(0, 0xFFFE)
u32 = st.integers(0, 0xFFFF_FFFF)


def _optional(values: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | values


statuses = st.builds(
    sim.StatusRecord,
    device_time_s=u32,
    flags=st.integers(0, 0x3F),
    error_code=st.integers(0, 0xFFFF),
    link_rssi_dbm=_optional(st.integers(-128, 126)),
)
trends = st.builds(
    sim.TrendRecord,
    period_start_s=u32,
    night_heart_rate_bpm=_optional(u8),
    activity_min=_optional(st.integers(0, 1440)),
    af_burden_tenths_pct=_optional(st.integers(0, 1000)),
    fluid_index_ohm_d=_optional(u16),
)
batteries = st.builds(
    sim.BatteryRecord,
    device_time_s=u32,
    voltage_mv=st.integers(0, 0xFFFF),
    longevity_months=_optional(u8),
    phase=st.sampled_from([sim.PHASE_BOS, sim.PHASE_ERI, sim.PHASE_EOS]),
)
leads = st.builds(
    sim.LeadRecord,
    device_time_s=u32,
    impedances=st.lists(
        st.tuples(st.integers(1, 4), _optional(u16)), max_size=4, unique_by=lambda e: e[0]
    ).map(tuple),
)
episodes = st.builds(
    sim.EpisodeRecord,
    episode_id=st.integers(0, 0xFFFF),
    episode_type=st.integers(1, 8),
    start_s=u32,
    duration_s=u32,
    max_rate_bpm=_optional(u16),
    therapy=st.integers(0, 3),
)
records = statuses | trends | batteries | leads | episodes
seqs = st.integers(0, 0xFFFF)


def expected_message(record: sim.ImplantRecord) -> ImplantMessage:
    """What the agent should decode from a simulator record, built field by field."""
    match record:
        case sim.StatusRecord():
            return agent.DeviceStatus(
                record.device_time_s,
                agent.StatusFlags(record.flags),
                record.error_code,
                record.link_rssi_dbm,
            )
        case sim.TrendRecord():
            tenths = record.af_burden_tenths_pct
            return agent.NightlyTrend(
                record.period_start_s,
                record.night_heart_rate_bpm,
                record.activity_min,
                None if tenths is None else tenths / 10,
                record.fluid_index_ohm_d,
            )
        case sim.BatteryRecord():
            return agent.Battery(
                record.device_time_s,
                record.voltage_mv,
                record.longevity_months,
                agent.BatteryPhase(record.phase),
            )
        case sim.LeadRecord():
            return agent.LeadImpedance(
                record.device_time_s,
                tuple(
                    agent.LeadMeasurement(agent.LeadChannel(channel), ohm)
                    for channel, ohm in record.impedances
                ),
            )
        case sim.EpisodeRecord():
            return agent.ArrhythmiaEpisode(
                record.episode_id,
                agent.EpisodeType(record.episode_type),
                record.start_s,
                record.duration_s,
                record.max_rate_bpm,
                agent.Therapy(record.therapy),
            )


@SETTINGS
@given(record=records, seq=seqs)
def test_every_message_type_round_trips(record: sim.ImplantRecord, seq: int) -> None:
    wire = sim.encode_record(record, seq)
    assert wire.count(0) == 2
    frame = decode_frame(wire[1:-1])
    assert frame.msg_type == MessageType(record.TYPE)
    assert frame.seq == seq
    assert frame.message == expected_message(record)


@SETTINGS
@given(record=records, seq=seqs)
def test_a_corrupted_crc_is_caught_and_only_as_a_crc_failure(
    record: sim.ImplantRecord, seq: int
) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(sim.encode_record(record, seq, corrupt=True)) == []
    assert decoder.counters.crc_failures == 1
    assert decoder.counters.frames_rejected == 1


# Long zero-free runs are where COBS has its 0xFF blocks; random binary rarely makes them.
_RUNS: Final = st.lists(
    st.tuples(st.integers(0, 600), st.integers(1, 255)), min_size=1, max_size=4
).map(lambda runs: b"\x00".join(bytes([fill]) * length for length, fill in runs))


@SETTINGS
@given(data=st.binary(max_size=800) | _RUNS)
def test_cobs_round_trips_within_its_overhead_bound(data: bytes) -> None:
    encoded = sim.cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _feed_all(chunks: list[bytes]) -> tuple[FrameDecoder, list[ImplantFrame]]:
    decoder = FrameDecoder()
    frames: list[ImplantFrame] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return decoder, frames


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=1500)
    | st.lists(st.sampled_from([b"\x00", b"\x01", b"\xff"])).map(b"".join),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_random_bytes_in_random_chunks_raise_nothing_and_every_run_is_accounted(
    data: bytes, cuts: list[int]
) -> None:
    stream = data + b"\x00"  # the final delimiter closes the last run
    decoder, frames = _feed_all(_chunked(stream, cuts))
    whole, whole_frames = _feed_all([stream])
    assert frames == whole_frames
    assert decoder.counters == whole.counters
    for frame in frames:
        # Anything yielded is a complete message of a defined type (enums were validated).
        assert isinstance(frame, ImplantFrame)
        assert frame.msg_type in set(MessageType)
    runs = [run for run in stream.split(b"\x00")[1:] if run]
    counters = decoder.counters
    assert counters.frames_ok == len(frames)
    assert counters.frames_ok + counters.frames_rejected == len(runs)
    assert counters.bytes_discarded == len(stream.split(b"\x00")[0])
    assert counters.oversize_frames == sum(len(run) > MAX_ENCODED_BYTES for run in runs)


@settings(max_examples=100, deadline=None)
@given(
    units=st.lists(st.tuples(records, st.booleans(), st.binary(max_size=60)), max_size=12),
    cuts=st.lists(st.integers(0, 3000), max_size=30),
)
def test_intact_frames_survive_interleaved_noise_and_corruption(
    units: list[tuple[sim.ImplantRecord, bool, bytes]], cuts: list[int]
) -> None:
    stream = b""
    expected: list[tuple[int, ImplantMessage]] = []
    for seq, (record, corrupt, noise) in enumerate(units):
        stream += sim.encode_record(record, seq, corrupt=corrupt) + noise
        if not corrupt:
            expected.append((seq, expected_message(record)))
    decoder, frames = _feed_all(_chunked(stream, cuts))
    assert [(f.seq, f.message) for f in frames] == expected
    corrupted = sum(corrupt for _, corrupt, _ in units)
    assert decoder.counters.crc_failures >= corrupted

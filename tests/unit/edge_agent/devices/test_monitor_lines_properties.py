"""Monitor line properties: simulator-to-agent round trips; noise never raises and is counted."""

from __future__ import annotations

import itertools
from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.devices.monitor_lines import LineDecoder, Nibp, VitalsSentence
from firmware_sims.serial.monitor import VitalsRecord, encode_sentence

SETTINGS: Final = settings(max_examples=150, deadline=None)
_NS_PER_MS: Final = 1_000_000

records = st.builds(
    VitalsRecord,
    seq=st.integers(0, 65535),
    # 2000-01-01 .. 2099-12-31, at the monitor's millisecond resolution.
    ts_ns=st.integers(946_684_800_000, 4_102_444_799_999).map(lambda ms: ms * _NS_PER_MS),
    heart_rate_bpm=st.none() | st.integers(0, 400),
    resp_rate_per_min=st.none() | st.integers(0, 200),
    spo2_pct=st.none() | st.integers(0, 100),
    nibp_mmhg=st.none() | st.tuples(st.integers(0, 400), st.integers(0, 400), st.integers(0, 400)),
    temp_c=st.none() | st.integers(0, 600).map(lambda tenths: tenths / 10),
)


def expected_sentence(record: VitalsRecord) -> VitalsSentence:
    nibp = record.nibp_mmhg
    return VitalsSentence(
        seq=record.seq,
        ts_ns=record.ts_ns,
        heart_rate_bpm=record.heart_rate_bpm,
        resp_rate_per_min=record.resp_rate_per_min,
        spo2_pct=record.spo2_pct,
        nibp=None if nibp is None else Nibp(*nibp),
        temp_c=record.temp_c,
    )


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]


def _feed_all(chunks: list[bytes]) -> tuple[LineDecoder, list[VitalsSentence]]:
    decoder = LineDecoder()
    out: list[VitalsSentence] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return decoder, out


@SETTINGS
@given(record=records)
def test_every_sentence_round_trips(record: VitalsRecord) -> None:
    decoder = LineDecoder()
    assert decoder.feed(encode_sentence(record)) == [expected_sentence(record)]


@SETTINGS
@given(record=records)
def test_a_corrupted_checksum_is_caught_as_a_bad_checksum(record: VitalsRecord) -> None:
    decoder = LineDecoder()
    assert decoder.feed(encode_sentence(record, corrupt=True)) == []
    assert decoder.counters.bad_checksums == 1
    assert decoder.counters.lines_bad == 1


_NOISY_BYTES: Final = st.lists(
    st.sampled_from([b"$", b"*", b"\r", b"\n", b",", b"=", b"VS", b"\x00", b"\xff", b" ", b"7F"])
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=1500) | _NOISY_BYTES,
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_random_bytes_in_random_chunks_raise_nothing_and_every_line_is_accounted(
    data: bytes, cuts: list[int]
) -> None:
    stream = data + b"\n"  # the final line feed closes the last line
    decoder, out = _feed_all(_chunked(stream, cuts))
    whole, whole_out = _feed_all([stream])
    assert out == whole_out
    assert decoder.counters == whole.counters
    assert all(isinstance(sentence, VitalsSentence) for sentence in out)
    lines = stream.split(b"\n")[:-1]
    counted = [line for line in lines if b"$" in line or line.strip(b" \t\r")]
    c = decoder.counters
    assert c.lines_ok == len(out)
    assert c.lines_ok + c.lines_bad + c.unknown_sentences == len(counted)
    assert c.garbage_bytes == sum(line.rfind(b"$") if b"$" in line else len(line) for line in lines)


@settings(max_examples=100, deadline=None)
@given(
    units=st.lists(
        st.tuples(
            records,
            st.booleans(),
            st.binary(max_size=40).filter(lambda b: b"\n" not in b),
            st.binary(max_size=40),
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(0, 3000), max_size=30),
)
def test_intact_sentences_survive_noise_lines_and_noise_prefixes(
    units: list[tuple[VitalsRecord, bool, bytes, bytes]], cuts: list[int]
) -> None:
    stream = b""
    expected: list[VitalsSentence] = []
    for record, corrupt, prefix, noise_line in units:
        stream += prefix + encode_sentence(record, corrupt=corrupt) + noise_line + b"\r\n"
        if not corrupt:
            expected.append(expected_sentence(record))
    decoder, out = _feed_all(_chunked(stream, cuts))
    assert out == expected
    assert decoder.counters.bad_checksums >= sum(corrupt for _, corrupt, _, _ in units)

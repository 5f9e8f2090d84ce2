"""The opening and decoding shortcuts build exactly what the plain definitions build."""

from __future__ import annotations

import dataclasses
import pickle

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import (
    DeviceBlock,
    Direction,
    Frame,
    FrameError,
    decode_frame,
    derive_session_key,
    encode_frame,
    open_envelope,
    seal,
)
from edge_agent.protocol._slots import twin
from edge_agent.protocol.envelope import CONTENT_FRAME_V1, Header, Opened, _nonce, parse_header
from edge_agent.protocol.keys import SessionKey

KEY = derive_session_key(bytes(range(32)), "ward-1", 3, Direction.UP)
TOPIC = "bt/v1/gw/ward-1/up/telemetry"
TOKEN = "0123456789abcdef" * 2


def _lookup(_gateway: str, _epoch: int) -> SessionKey:
    return KEY


@settings(max_examples=300)
@given(seq=st.integers(0, 2**64 - 1))
def test_integer_nonce_equals_the_key_nonce(seq: int) -> None:
    assert _nonce(KEY, seq) == KEY.nonce(seq)


def test_decoded_values_equal_constructed_ones() -> None:
    opened = open_envelope(TOPIC, seal(KEY, TOPIC, 9, b"plain", CONTENT_FRAME_V1), _lookup)
    header = Header("ward-1", 3, 9, CONTENT_FRAME_V1)
    assert opened == Opened(header, b"plain")
    assert opened.header == header
    assert hash(opened.header) == hash(header)
    assert repr(opened) == repr(Opened(header, b"plain"))
    assert pickle.loads(pickle.dumps(opened.header)) == header  # noqa: S301 - our own bytes
    assert parse_header(header.to_bytes()) == header
    with pytest.raises(AttributeError):
        opened.header.seq = 10  # type: ignore[misc]  # still frozen


def test_decoded_blocks_and_frames_hold_every_field() -> None:
    block = DeviceBlock(
        TOKEN, TOKEN[::-1], "hr-strap", np.array([1, 2], np.uint16),
        np.array([5, 6], np.int64), np.array([7.5, 8.0]), np.array([1, 0], np.uint32),
        np.array([0, 3], np.uint32),
    )  # fmt: skip
    frame = Frame("ward-1", 42, (block,))
    decoded = decode_frame(encode_frame(frame))
    assert (decoded.gateway_id, decoded.sent_ns, decoded.alerts) == ("ward-1", 42, ())
    got = decoded.blocks[0]
    assert (got.device_token, got.patient_token, got.device_kind) == (
        TOKEN,
        TOKEN[::-1],
        "hr-strap",
    )
    for name in ("metric_codes", "ts_ns", "values", "quality", "flags"):
        assert getattr(got, name).dtype == getattr(block, name).dtype
        assert getattr(got, name).tolist() == getattr(block, name).tolist()
    with pytest.raises(AttributeError):
        got.device_kind = "x"  # type: ignore[misc]
    # Built as mutable twins, they are plain instances of the frozen dataclasses all the same.
    assert (type(decoded), type(got), type(opened_header())) == (Frame, DeviceBlock, Header)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.sent_ns = 1  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(decoded))  # noqa: S301 - our own bytes
    assert type(again) is Frame
    assert encode_frame(again) == encode_frame(decoded) == encode_frame(frame)
    assert repr(decoded.blocks[0]).startswith("DeviceBlock(device_token=")


def opened_header() -> Header:
    return open_envelope(TOPIC, seal(KEY, TOPIC, 1, b"x", CONTENT_FRAME_V1), _lookup).header


def test_a_twin_of_another_layout_is_refused_at_once() -> None:
    class Base:
        __slots__ = ("extra",)

    @dataclasses.dataclass(slots=True, frozen=True)
    class Child(Base):
        value: int

    with pytest.raises(TypeError):
        twin(Child)
    assert type(twin(Header)).__name__ == "type"


@settings(max_examples=200)
@given(stamps=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20))
def test_any_negative_timestamp_is_refused_and_no_other(stamps: list[int]) -> None:
    n = len(stamps)
    raw = [
        TOKEN, TOKEN, "k", np.zeros(n, "<u2").tobytes(), np.array(stamps, "<i8").tobytes(),
        np.zeros(n, "<f8").tobytes(), np.zeros(n, "<u4").tobytes(), np.zeros(n, "<u4").tobytes(),
    ]  # fmt: skip
    data = msgpack.packb([1, "ward-1", 1, [raw], [], [], []])
    if min(stamps) < 0:
        with pytest.raises(
            FrameError, match=r"blocks\[0\]\.ts_ns: timestamps must not be negative"
        ):
            decode_frame(data)
    else:
        assert decode_frame(data).blocks[0].ts_ns.tolist() == stamps


def test_a_remembered_token_does_not_vouch_for_another() -> None:
    good = [TOKEN, TOKEN, "k", b"", b"", b"", b"", b""]
    decode_frame(msgpack.packb([1, "ward-1", 1, [good], [], [], []]))
    bad = [TOKEN.upper(), TOKEN, "k", b"", b"", b"", b"", b""]
    with pytest.raises(FrameError, match=r"blocks\[0\]\.device_token"):
        decode_frame(msgpack.packb([1, "ward-1", 1, [bad], [], [], []]))
    with pytest.raises(FrameError, match="gateway_id"):
        decode_frame(msgpack.packb([1, "WARD-1", 1, [], [], [], []]))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (3, b"\x00", r"metric_codes: must be a binary column of 2-byte items"),
        (5, "text", r"values: must be a binary column of 8-byte items"),
        (6, b"\x00" * 8, r"quality: has 2 items, the block's other columns have 1"),
        (7, b"", r"flags: has 0 items, the block's other columns have 1"),
    ],
)
def test_each_bad_column_is_named(column: int, value: object, message: str) -> None:
    raw: list[object] = [TOKEN, TOKEN, "k", b"\x01\x00", b"\x00" * 8, b"\x00" * 8, b"\x00" * 4,
                         b"\x00" * 4]  # fmt: skip
    raw[column] = value
    with pytest.raises(FrameError, match=rf"blocks\[0\]\.{message}"):
        decode_frame(msgpack.packb([1, "ward-1", 1, [raw], [], [], []]))

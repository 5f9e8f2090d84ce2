"""Frames v1 and v2: columnar round trip, and structural rejection of anything else."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import (
    AlertEvent,
    BindingEvent,
    DeviceBlock,
    DeviceStatus,
    Frame,
    FrameError,
    GatewayHealth,
    decode_frame,
    encode_frame,
)

TOKEN = st.binary(min_size=16, max_size=16).map(bytes.hex)
NAME = st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True)
NS = st.integers(0, 2**63 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def blocks(draw: st.DrawFn) -> DeviceBlock:
    n = draw(st.integers(0, 20))
    return DeviceBlock(
        device_token=draw(TOKEN),
        patient_token=draw(TOKEN),
        device_kind=draw(NAME),
        metric_codes=np.array(
            draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)), dtype=np.uint16
        ),
        ts_ns=np.array(draw(st.lists(NS, min_size=n, max_size=n)), dtype=np.int64),
        values=np.array(draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype=np.float64),
        quality=np.array(
            draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)), dtype=np.uint32
        ),
        flags=np.array(
            draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)), dtype=np.uint32
        ),
    )


alerts = st.builds(
    AlertEvent,
    alert_id=st.text(max_size=64),
    patient_token=TOKEN,
    device_token=TOKEN,
    metric_code=st.integers(0, 0xFFFF),
    kind=NAME,
    severity=st.sampled_from(["info", "warning", "critical"]),
    state=st.sampled_from(["raised", "cleared"]),
    ts_ns=NS,
    value=st.none() | FINITE,
    detail=st.text(max_size=100),
)
statuses = st.builds(
    DeviceStatus,
    device_token=TOKEN,
    device_kind=NAME,
    ts_ns=NS,
    link_up=st.booleans(),
    battery_pct=st.none() | FINITE,
    rssi_dbm=st.none() | st.integers(-150, 20),
    interval_s=st.none() | FINITE,
    errors_total=st.integers(0, 2**63 - 1),
    error_code=st.none() | st.integers(0, 2**32 - 1),
)
bindings = st.builds(
    BindingEvent,
    device_token=TOKEN,
    patient_token=TOKEN,
    action=st.sampled_from(["bound", "unbound"]),
    ts_ns=NS,
    patient_ref=st.none() | st.text(max_size=40),
)
gateways = st.builds(
    GatewayHealth,
    ts_ns=NS,
    uptime_s=FINITE,
    spool_frames=st.integers(0, 2**63 - 1),
    spool_bytes=st.integers(0, 2**63 - 1),
    oldest_unsent_s=st.none() | FINITE,
    publish_lag_s=st.none() | FINITE,
    dropped_total=st.integers(0, 2**63 - 1),
    evicted_frames=st.integers(0, 2**63 - 1),
    cpu_pct=st.none() | FINITE,
    rss_mb=st.none() | FINITE,
    connections_total=st.integers(0, 2**63 - 1),
)
frames = st.builds(
    Frame,
    gateway_id=st.from_regex(r"[a-z0-9-]{3,32}", fullmatch=True),
    sent_ns=NS,
    blocks=st.lists(blocks(), max_size=4).map(tuple),
    alerts=st.lists(alerts, max_size=3).map(tuple),
    statuses=st.lists(statuses, max_size=3).map(tuple),
    bindings=st.lists(bindings, max_size=3).map(tuple),
    gateway=st.none() | gateways,
)


def _same_block(a: DeviceBlock, b: DeviceBlock) -> bool:
    return (
        (a.device_token, a.patient_token, a.device_kind)
        == (b.device_token, b.patient_token, b.device_kind)
        and np.array_equal(a.metric_codes, b.metric_codes)
        and np.array_equal(a.ts_ns, b.ts_ns)
        and np.array_equal(a.values.view(np.uint64), b.values.view(np.uint64))  # NaN payloads too
        and np.array_equal(a.quality, b.quality)
        and np.array_equal(a.flags, b.flags)
    )


@settings(max_examples=150)
@given(frame=frames)
def test_round_trip_is_exact(frame: Frame) -> None:
    decoded = decode_frame(encode_frame(frame))
    assert (decoded.gateway_id, decoded.sent_ns) == (frame.gateway_id, frame.sent_ns)
    assert len(decoded.blocks) == len(frame.blocks)
    assert all(_same_block(a, b) for a, b in zip(decoded.blocks, frame.blocks, strict=True))
    assert decoded.alerts == frame.alerts
    assert decoded.statuses == frame.statuses
    assert decoded.bindings == frame.bindings
    assert decoded.gateway == frame.gateway


@settings(max_examples=300)
@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_frame_errors(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(data)


@settings(max_examples=100)
@given(frame=frames, cut=st.integers(min_value=1))
def test_truncated_frames_raise_frame_errors(frame: Frame, cut: int) -> None:
    encoded = encode_frame(frame)
    with pytest.raises(FrameError):
        decode_frame(encoded[: cut % len(encoded)])


def _frame_with_block(block: Sequence[object]) -> bytes:
    return msgpack.packb([1, "ward-1", 1, [block], [], [], []])


def test_column_length_mismatch_names_the_field() -> None:
    block = [
        "a" * 32,
        "b" * 32,
        "hr-strap",
        b"\x01\x00",
        b"\x00" * 16,
        b"\x00" * 8,
        b"\x00" * 4,
        b"\x00" * 4,
    ]
    with pytest.raises(
        FrameError, match=r"blocks\[0\]\.ts_ns: has 2 items, the block's other columns have 1"
    ):
        decode_frame(_frame_with_block(block))


def test_uppercase_token_is_refused() -> None:
    block = ["A" * 32, "b" * 32, "hr-strap", b"", b"", b"", b"", b""]
    with pytest.raises(FrameError, match=r"blocks\[0\]\.device_token"):
        decode_frame(_frame_with_block(block))


def test_unknown_schema_version_is_refused() -> None:
    with pytest.raises(FrameError, match="schema_version"):
        decode_frame(msgpack.packb([3, "ward-1", 1, [], [], [], [], None]))


def test_frame_without_gateway_health_keeps_the_v1_bytes() -> None:
    raw = msgpack.unpackb(encode_frame(Frame("ward-1", 5)))
    assert raw == [1, "ward-1", 5, [], [], [], []]


def test_gateway_health_makes_a_v2_frame() -> None:
    health = GatewayHealth(7, 12.5, 3, 900, 4.0, None, 10, 2, 1.5, 80.0, 4)
    raw = msgpack.unpackb(encode_frame(Frame("ward-1", 5, gateway=health)))
    assert raw[0] == 2
    assert len(raw) == 8
    assert decode_frame(msgpack.packb(raw)).gateway == health


def test_element_count_must_match_the_version() -> None:
    with pytest.raises(FrameError, match="a v1 frame has 7 elements, not 8"):
        decode_frame(msgpack.packb([1, "ward-1", 1, [], [], [], [], None]))
    with pytest.raises(FrameError, match="a v2 frame has 8 elements, not 7"):
        decode_frame(msgpack.packb([2, "ward-1", 1, [], [], [], []]))


def test_negative_spool_count_names_the_field() -> None:
    record = [1, 1.0, -1, 0, None, None, 0, 0, None, None, 0]
    with pytest.raises(FrameError, match=r"gateway\.spool_frames"):
        decode_frame(msgpack.packb([2, "ward-1", 1, [], [], [], [], record]))


def test_non_finite_alert_value_is_refused() -> None:
    alert = ["id", "a" * 32, "b" * 32, 1, "spo2_low", "critical", "raised", 5, math.inf, ""]
    with pytest.raises(FrameError, match=r"alerts\[0\]\.value: must be a finite number"):
        decode_frame(msgpack.packb([1, "ward-1", 1, [], [alert], [], []]))


def test_encoder_refuses_ragged_columns() -> None:
    block = DeviceBlock(
        "a" * 32, "b" * 32, "x", np.zeros(2, np.uint16), np.zeros(1, np.int64),
        np.zeros(2), np.zeros(2, np.uint32), np.zeros(2, np.uint32),
    )  # fmt: skip
    with pytest.raises(FrameError, match="columns differ in length"):
        encode_frame(Frame("ward-1", 0, (block,)))

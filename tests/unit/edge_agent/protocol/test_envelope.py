"""Envelope v1: seal/open round trip, and every way a received envelope can be wrong."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import (
    AuthenticationError,
    Direction,
    EnvelopeError,
    UnknownKeyError,
    WireError,
    derive_session_key,
    open_envelope,
    seal,
)
from edge_agent.protocol.envelope import CONTENT_FRAME_V1, Header, aad, split
from edge_agent.protocol.keys import SessionKey

SECRET = bytes(range(32))
GATEWAY = "ward3-bed12"
TOPIC = f"bt/v1/gw/{GATEWAY}/up/telemetry"
KEY = derive_session_key(SECRET, GATEWAY, 7, Direction.UP)


def lookup(gateway_id: str, epoch: int) -> SessionKey:
    if (gateway_id, epoch) != (GATEWAY, 7):
        msg = f"no key for {gateway_id} epoch {epoch}"
        raise UnknownKeyError(msg)
    return KEY


def test_round_trip_returns_header_and_plaintext() -> None:
    envelope = seal(KEY, TOPIC, 42, b"frame bytes", CONTENT_FRAME_V1)
    opened = open_envelope(TOPIC, envelope, lookup)
    assert opened.plaintext == b"frame bytes"
    assert opened.header == Header(GATEWAY, 7, 42, CONTENT_FRAME_V1)


def test_directions_and_epochs_derive_distinct_keys() -> None:
    keys = {
        derive_session_key(SECRET, GATEWAY, epoch, direction).key
        for epoch in (1, 2)
        for direction in Direction
    }
    assert len(keys) == 4


def test_nonce_is_iv_base_xor_sequence_number() -> None:
    assert KEY.nonce(0) == KEY.iv_base
    nonce = KEY.nonce(0x0102030405060708)
    tail = bytes(
        a ^ b for a, b in zip(KEY.iv_base[4:], bytes.fromhex("0102030405060708"), strict=True)
    )
    assert nonce == KEY.iv_base[:4] + tail
    with pytest.raises(WireError):
        KEY.nonce(2**64)


def test_other_topic_fails_authentication() -> None:
    envelope = seal(KEY, TOPIC, 1, b"x", CONTENT_FRAME_V1)
    with pytest.raises(AuthenticationError, match="tag did not verify"):
        open_envelope(f"bt/v1/gw/{GATEWAY}/up/alerts", envelope, lookup)


def test_unknown_gateway_key_is_refused() -> None:
    other = derive_session_key(SECRET, "other-gw", 7, Direction.UP)
    envelope = seal(other, "bt/v1/gw/other-gw/up/telemetry", 1, b"x", CONTENT_FRAME_V1)
    with pytest.raises(UnknownKeyError):
        open_envelope("bt/v1/gw/other-gw/up/telemetry", envelope, lookup)


def test_header_swapped_for_another_sequence_number_fails() -> None:
    envelope = seal(KEY, TOPIC, 5, b"payload", CONTENT_FRAME_V1)
    _header, ciphertext = split(envelope)
    forged = msgpack.packb([Header(GATEWAY, 7, 6).to_bytes(), ciphertext])
    with pytest.raises(AuthenticationError):
        open_envelope(TOPIC, forged, lookup)


def test_aad_binds_label_topic_length_and_header() -> None:
    header = Header(GATEWAY, 7, 1).to_bytes()
    assert aad(TOPIC, header).endswith(header)
    assert aad("a/b", header) != aad("a/bc", header)


@pytest.mark.parametrize(
    ("header_fields", "reason"),
    [
        ([2, "A256GCM", GATEWAY, 7, 1, CONTENT_FRAME_V1], "version"),
        ([1, "A128GCM", GATEWAY, 7, 1, CONTENT_FRAME_V1], "algorithm"),
        ([1, "A256GCM", "Bad_GW", 7, 1, CONTENT_FRAME_V1], "gateway id"),
        ([1, "A256GCM", GATEWAY, -1, 1, CONTENT_FRAME_V1], "epoch"),
        ([1, "A256GCM", GATEWAY, 7, "1", CONTENT_FRAME_V1], "sequence"),
        ([1, "A256GCM", GATEWAY, 7, 1, "text/plain"], "content type"),
        ([1, "A256GCM", GATEWAY, 7], "6-element"),
    ],
)
def test_bad_headers_name_the_problem(header_fields: list[object], reason: str) -> None:
    envelope = msgpack.packb([msgpack.packb(header_fields), b"\x00" * 32])
    with pytest.raises(WireError, match=reason):
        open_envelope(TOPIC, envelope, lookup)


@settings(max_examples=200)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    with pytest.raises(WireError):
        open_envelope(TOPIC, data, lookup)


@settings(max_examples=200)
@given(plaintext=st.binary(max_size=200), seq=st.integers(0, 2**64 - 1), data=st.data())
def test_any_single_bit_flip_is_rejected(plaintext: bytes, seq: int, data: st.DataObject) -> None:
    envelope = seal(KEY, TOPIC, seq, plaintext, CONTENT_FRAME_V1)
    assert open_envelope(TOPIC, envelope, lookup).plaintext == plaintext
    bit = data.draw(st.integers(0, len(envelope) * 8 - 1))
    flipped = bytearray(envelope)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(EnvelopeError):
        open_envelope(TOPIC, bytes(flipped), lookup)

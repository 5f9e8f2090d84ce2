"""MQTT 5.0 packets of the sink's consumer: hand-built vectors, any chunking, any garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.mqtt_packets import (
    MAX_REMAINING_LENGTH,
    PUBLISH,
    MqttProtocolError,
    PacketReader,
    connect_packet,
    decode_connack,
    decode_disconnect,
    decode_publish,
    decode_suback,
    pubacks,
    publish_packet,
    subscribe_packet,
    varint,
)


def test_varint_matches_the_standard_examples() -> None:
    # MQTT 5.0 §1.5.5: the boundaries of one to four bytes.
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(16_383) == b"\xff\x7f"
    assert varint(16_384) == b"\x80\x80\x01"
    assert varint(2_097_151) == b"\xff\xff\x7f"
    assert varint(2_097_152) == b"\x80\x80\x80\x01"
    assert varint(MAX_REMAINING_LENGTH) == b"\xff\xff\xff\x7f"
    with pytest.raises(ValueError, match="variable byte integer"):
        varint(MAX_REMAINING_LENGTH + 1)


def test_connect_packet_byte_by_byte() -> None:
    packet = connect_packet(
        client_id="s1",
        keepalive_s=10,
        session_expiry_s=86_400,
        receive_maximum=1000,
        maximum_packet_bytes=65_536,
        username="u",
        password="p",  # noqa: S106 - a one-letter test vector, not a secret
    )
    assert packet == bytes.fromhex(
        "10"  # CONNECT (§3.1.1)
        "22"  # remaining length 34
        "00044d515454"  # "MQTT" (§3.1.2.1)
        "05"  # version 5
        "c0"  # user name + password, clean start 0: resume the session (§3.1.2.3)
        "000a"  # keep alive 10 s
        "0d"  # 13 bytes of properties
        "1100015180"  # session expiry 86400 s
        "2103e8"  # receive maximum 1000
        "2700010000"  # maximum packet size 65536
        "00027331"  # client id "s1"
        "000175"  # user name "u"
        "000170"  # password "p"
    )


def test_subscribe_puback_and_publish_packets() -> None:
    assert subscribe_packet(1, "a/+", 1) == bytes.fromhex("82090001000003612f2b01")
    assert pubacks([1, 0x1234]) == bytes.fromhex("4002000140021234")
    assert publish_packet("t", 7, b"xy") == bytes.fromhex("32080001740007007879")


def test_connack_suback_and_disconnect_decode() -> None:
    # session present, success, properties: receive maximum 1000, server keep alive 20
    connack = decode_connack(bytes.fromhex("0100062103e8130014"))
    assert (connack.session_present, connack.reason_code) == (True, 0)
    assert (connack.receive_maximum, connack.server_keep_alive_s) == (1000, 20)
    refused = decode_connack(bytes.fromhex("0087051f00026e6f"))  # reason string "no"
    assert (refused.reason_code, refused.reason_string) == (0x87, "no")
    suback = decode_suback(bytes.fromhex("0001000180"))
    assert (suback.packet_id, suback.reason_codes) == (1, (0x01, 0x80))
    assert decode_disconnect(b"").reason_code == 0
    assert decode_disconnect(bytes.fromhex("8b")).reason_code == 0x8B


def test_publish_with_properties_and_qos0() -> None:
    # QoS 1, properties: message expiry (4 bytes) and a user property pair, then the payload.
    body = bytes.fromhex("00017401020c020000001026000161000162") + b"payload"
    assert decode_publish(0x32, body) == ("t", 0x0102, 1, b"payload")
    assert decode_publish(0x30, bytes.fromhex("00017400") + b"p") == ("t", 0, 0, b"p")


@pytest.mark.parametrize(
    ("first_byte", "body", "reason_code"),
    [
        (0x36, bytes.fromhex("000174000100"), 0x81),  # QoS 3
        (0x32, bytes.fromhex("0000000100"), 0x94),  # empty topic: a topic alias
        (0x32, bytes.fromhex("000174000000"), 0x81),  # packet identifier 0
        (0x32, bytes.fromhex("00017400"), 0x81),  # truncated before the packet id
        (0x32, bytes.fromhex("0001740001ff"), 0x81),  # property length runs off the end
    ],
)
def test_malformed_publish_names_its_reason(first_byte: int, body: bytes, reason_code: int) -> None:
    with pytest.raises(MqttProtocolError) as caught:
        decode_publish(first_byte, body)
    assert caught.value.reason_code == reason_code


publishes = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=40),
        st.integers(1, 65_535),
        st.binary(max_size=300),
    ),
    max_size=12,
)


@settings(max_examples=150)
@given(messages=publishes, cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_reader_yields_the_same_packets_whatever_the_chunking(
    messages: list[tuple[str, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(publish_packet(t, pid, payload) for t, pid, payload in messages)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    reader = PacketReader(1 << 20)
    got = []
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        got += reader.feed(stream[start:end])
    assert [first >> 4 for first, _ in got] == [PUBLISH] * len(messages)
    assert [decode_publish(first, body) for first, body in got] == [
        (t, pid, 1, payload) for t, pid, payload in messages
    ]


def test_reader_refuses_a_packet_over_its_limit_and_a_five_byte_length() -> None:
    with pytest.raises(MqttProtocolError) as too_large:
        PacketReader(100).feed(b"\x30" + varint(101))
    assert too_large.value.reason_code == 0x95
    with pytest.raises(MqttProtocolError, match="longer than 4 bytes"):
        PacketReader(1 << 20).feed(b"\x30\xff\xff\xff\xff\x01")


@settings(max_examples=300)
@given(data=st.binary(max_size=200), first_byte=st.integers(0, 255))
def test_random_bytes_raise_only_protocol_errors(data: bytes, first_byte: int) -> None:
    for decode in (decode_connack, decode_suback, decode_disconnect):
        with contextlib.suppress(MqttProtocolError):
            decode(data)
    with contextlib.suppress(MqttProtocolError):
        decode_publish(first_byte, data)
    with contextlib.suppress(MqttProtocolError):
        PacketReader(1 << 16).feed(data)

"""The few MQTT 5.0 packets a consuming client needs, encoded and decoded from the OASIS standard.

Section numbers are those of "MQTT Version 5.0", OASIS Standard, 7 March 2019. The sink only
subscribes and acknowledges: it sends CONNECT, SUBSCRIBE, PUBACK, PINGREQ and DISCONNECT, and
reads CONNACK, SUBACK, PUBLISH (QoS 0 and 1), PINGRESP and DISCONNECT. Anything else from the
server is a protocol error for a client in that role.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cloud_sink.errors import CloudSinkError

# Control packet types, the high nibble of the first byte (§2.1.2).
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

# Reason codes (§2.4) this client sends or reads.
SUCCESS: Final = 0x00
MALFORMED_PACKET: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
TOPIC_ALIAS_INVALID: Final = 0x94
PACKET_TOO_LARGE: Final = 0x95
FAILURE_THRESHOLD: Final = 0x80  # §2.4: a reason code of 0x80 or more is a failure

# A remaining length is at most four variable-byte-integer bytes (§1.5.5, §2.1.4).
MAX_REMAINING_LENGTH: Final = 268_435_455
_VARINT_BYTES: Final = 4
_HIGH_BIT: Final = 0x80
_SEVEN_BITS: Final = 0x7F
_QOS_MASK: Final = 0x03
_INVALID_QOS: Final = 3

PINGREQ_PACKET: Final = b"\xc0\x00"  # §3.12: fixed header only
DISCONNECT_PACKET: Final = b"\xe0\x00"  # §3.14.2.1: no reason code means 0x00 normal disconnection

# Property identifiers (§2.2.2.2) this client writes or reads.
PROP_SESSION_EXPIRY: Final = 0x11
PROP_SERVER_KEEP_ALIVE: Final = 0x13
PROP_REASON_STRING: Final = 0x1F
PROP_RECEIVE_MAXIMUM: Final = 0x21
PROP_MAXIMUM_PACKET_SIZE: Final = 0x27

# Property identifier -> how its value is encoded (§2.2.2.2 table), for skipping or reading.
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final = {
    0x01: _BYTE, 0x02: _U32, 0x03: _UTF8, 0x08: _UTF8, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _U32, 0x12: _UTF8, 0x13: _U16, 0x15: _UTF8, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _U32, 0x19: _BYTE, 0x1A: _UTF8, 0x1C: _UTF8, 0x1F: _UTF8, 0x21: _U16,
    0x22: _U16, 0x23: _U16, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _U32,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip
_FIXED_WIDTH: Final = {_BYTE: 1, _U16: 2, _U32: 4}

_PUBACK_WORD: Final = 0x4002_0000  # §3.4: type 4, flags 0, remaining length 2, then the id


class MqttProtocolError(CloudSinkError):
    """The broker sent something MQTT 5.0 forbids here; the link is closed with `reason_code`."""

    def __init__(self, reason_code: int, reason: str) -> None:
        super().__init__(f"MQTT protocol error 0x{reason_code:02X}: {reason}")
        self.reason_code = reason_code
        self.reason = reason


@dataclass(slots=True, frozen=True)
class ConnAck:
    """§3.2: whether the broker kept our session, and its verdict."""

    session_present: bool
    reason_code: int
    server_keep_alive_s: int | None
    reason_string: str | None
    receive_maximum: int = 65_535  # §3.2.2.3.3: how many QoS 1 PUBLISHes we may have unacked


@dataclass(slots=True, frozen=True)
class SubAck:
    """§3.9: one reason code per topic filter of the SUBSCRIBE."""

    packet_id: int
    reason_codes: tuple[int, ...]
    reason_string: str | None


@dataclass(slots=True, frozen=True)
class Disconnect:
    """§3.14: the broker is closing the link, and why."""

    reason_code: int
    reason_string: str | None


Publish = tuple[str, int, int, bytes]
"""(topic, packet id (0 at QoS 0), QoS, payload) of a received PUBLISH (§3.3)."""


# --- encoding -------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """Variable Byte Integer (§1.5.5): seven bits per byte, least significant group first."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        msg = f"{value} does not fit a variable byte integer"
        raise ValueError(msg)
    out = bytearray()
    while True:
        byte, value = value & _SEVEN_BITS, value >> 7
        out.append(byte | _HIGH_BIT if value else byte)
        if not value:
            return bytes(out)


def _utf8(text: str) -> bytes:
    """UTF-8 Encoded String (§1.5.4): u16 big-endian length, then the bytes."""
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    """Fixed header (§2.1.1): type and flags, remaining length, then the rest."""
    return bytes((first_byte,)) + varint(len(body)) + body


def connect_packet(
    *,
    client_id: str,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int,
    maximum_packet_bytes: int,
    username: str | None = None,
    password: str | None = None,
    clean_start: bool = False,
) -> bytes:
    """CONNECT (§3.1) asking the broker to keep our session and bound what it sends us."""
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)  # §3.1.2.3
    if password is not None:
        flags |= 0x40
    properties = (
        bytes((PROP_SESSION_EXPIRY,)) + struct.pack(">I", session_expiry_s)  # §3.1.2.11.2
        + bytes((PROP_RECEIVE_MAXIMUM,)) + struct.pack(">H", receive_maximum)  # §3.1.2.11.3
        + bytes((PROP_MAXIMUM_PACKET_SIZE,)) + struct.pack(">I", maximum_packet_bytes)  # 3.1.2.11.4
    )  # fmt: skip
    variable_header = (
        _utf8("MQTT")  # §3.1.2.1 protocol name
        + b"\x05"  # §3.1.2.2 protocol version 5
        + bytes((flags,))
        + struct.pack(">H", keepalive_s)  # §3.1.2.10
        + varint(len(properties))
        + properties
    )
    payload = _utf8(client_id)  # §3.1.3.1
    if username is not None:
        payload += _utf8(username)  # §3.1.3.5
    if password is not None:
        secret = password.encode("utf-8")
        payload += struct.pack(">H", len(secret)) + secret  # §3.1.3.6 binary data
    return _packet(CONNECT << 4, variable_header + payload)


def subscribe_packet(packet_id: int, topic_filter: str, qos: int) -> bytes:
    """SUBSCRIBE (§3.8) to one filter; the fixed header's flags are 0b0010 (§3.8.1)."""
    body = struct.pack(">H", packet_id) + varint(0) + _utf8(topic_filter) + bytes((qos,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH at QoS 1 (§3.3) with no properties: tests and benchmarks load a broker with it."""
    body = _utf8(topic) + struct.pack(">H", packet_id) + varint(0) + payload
    return _packet(PUBLISH << 4 | 0x02, body)  # §3.3.1: DUP 0, QoS 1 (bits 2-1), RETAIN 0


def pubacks(packet_ids: Sequence[int]) -> bytes:
    """Back-to-back PUBACKs (§3.4), each four bytes: success needs no reason code (§3.4.2.1)."""
    return struct.pack(f">{len(packet_ids)}I", *[_PUBACK_WORD | pid for pid in packet_ids])


# --- decoding -------------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); -1 as value when `data` ends before the integer does."""
    value = 0
    for shift in range(0, 7 * _VARINT_BYTES, 7):
        if pos >= len(data):
            return -1, pos
        byte = data[pos]
        pos += 1
        value |= (byte & _SEVEN_BITS) << shift
        if byte < _HIGH_BIT:
            return value, pos
    raise MqttProtocolError(MALFORMED_PACKET, "variable byte integer longer than 4 bytes")


def _properties(data: bytes, pos: int) -> tuple[dict[int, int | str | bytes], int]:
    """A property block (§2.2.2): returns the single-valued properties and the position after."""
    length, pos = _read_varint(data, pos)
    end = pos + length
    if length < 0 or end > len(data):
        raise MqttProtocolError(MALFORMED_PACKET, "property length runs past the packet")
    found: dict[int, int | str | bytes] = {}
    while pos < end:
        identifier = data[pos]
        kind = _PROPERTY_TYPES.get(identifier)
        if kind is None:
            raise MqttProtocolError(MALFORMED_PACKET, f"unknown property 0x{identifier:02X}")
        pos += 1
        if kind in _FIXED_WIDTH:
            width = _FIXED_WIDTH[kind]
            found[identifier] = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif kind == _VARINT:
            found[identifier], pos = _read_varint(data, pos)
        else:
            for _ in range(2 if kind == _PAIR else 1):
                size = int.from_bytes(data[pos : pos + 2], "big")
                raw = data[pos + 2 : pos + 2 + size]
                found[identifier] = raw if kind == _BINARY else raw.decode("utf-8", "replace")
                pos += 2 + size
        if pos > end:
            raise MqttProtocolError(MALFORMED_PACKET, f"property 0x{identifier:02X} is truncated")
    return found, end


def _reason_string(properties: dict[int, int | str | bytes]) -> str | None:
    reason = properties.get(PROP_REASON_STRING)
    return reason if isinstance(reason, str) else None


def decode_connack(body: bytes) -> ConnAck:
    """CONNACK (§3.2): acknowledge flags, reason code, properties."""
    if len(body) < 2:
        raise MqttProtocolError(MALFORMED_PACKET, "CONNACK shorter than 2 bytes")
    properties, _ = _properties(body, 2) if len(body) > 2 else ({}, 2)
    keep_alive = properties.get(PROP_SERVER_KEEP_ALIVE)
    receive_maximum = properties.get(PROP_RECEIVE_MAXIMUM)
    return ConnAck(
        session_present=bool(body[0] & 0x01),
        reason_code=body[1],
        server_keep_alive_s=keep_alive if isinstance(keep_alive, int) else None,
        reason_string=_reason_string(properties),
        receive_maximum=receive_maximum if isinstance(receive_maximum, int) else 65_535,
    )


def decode_suback(body: bytes) -> SubAck:
    """SUBACK (§3.9): packet identifier, properties, one reason code per filter."""
    if len(body) < 3:
        raise MqttProtocolError(MALFORMED_PACKET, "SUBACK shorter than 3 bytes")
    properties, pos = _properties(body, 2)
    return SubAck(
        packet_id=int.from_bytes(body[:2], "big"),
        reason_codes=tuple(body[pos:]),
        reason_string=_reason_string(properties),
    )


def decode_disconnect(body: bytes) -> Disconnect:
    """DISCONNECT (§3.14): an empty body means normal disconnection (§3.14.2.1)."""
    if not body:
        return Disconnect(SUCCESS, None)
    properties, _ = _properties(body, 1) if len(body) > 1 else ({}, 1)
    return Disconnect(body[0], _reason_string(properties))


def decode_publish(first_byte: int, body: bytes) -> Publish:
    """PUBLISH (§3.3): topic, packet identifier at QoS > 0, properties (skipped), payload.

    A zero-length topic would need a topic alias (§3.3.2.3.4), which this client never allows
    (it sends no Topic Alias Maximum, so the server must not use one).
    """
    qos = first_byte >> 1 & _QOS_MASK  # §3.3.1.2
    if qos == _INVALID_QOS:
        raise MqttProtocolError(MALFORMED_PACKET, "PUBLISH with QoS 3")
    size = len(body)
    if size < 2:
        raise MqttProtocolError(MALFORMED_PACKET, "PUBLISH without a topic")
    pos = 2 + (body[0] << 8 | body[1])
    if pos == 2:
        raise MqttProtocolError(TOPIC_ALIAS_INVALID, "PUBLISH with an empty topic (topic alias)")
    topic = body[2:pos].decode("utf-8", "replace")
    packet_id = 0
    if qos:
        if pos + 2 > size:
            raise MqttProtocolError(MALFORMED_PACKET, "PUBLISH truncated before its packet id")
        packet_id = body[pos] << 8 | body[pos + 1]
        pos += 2
        if not packet_id:
            raise MqttProtocolError(MALFORMED_PACKET, "PUBLISH with packet identifier 0")
    if pos < size and body[pos] < _HIGH_BIT:  # the usual one-byte property length
        pos += 1 + body[pos]
    else:
        length, pos = _read_varint(body, pos)
        if length < 0:
            raise MqttProtocolError(MALFORMED_PACKET, "PUBLISH truncated in its properties")
        pos += length
    if pos > size:
        raise MqttProtocolError(MALFORMED_PACKET, "PUBLISH properties run past the packet")
    return topic, packet_id, qos, body[pos:]


class PacketReader:
    """Cuts a TCP byte stream into (first byte, body) packets, whatever the chunking."""

    def __init__(self, max_packet_bytes: int) -> None:
        self._max_packet_bytes = max_packet_bytes
        self._pending = bytearray()
        self._needed = 0  # total bytes the first pending packet needs, once its header is known

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Every packet completed by `data`, in order; raises MqttProtocolError on a bad header."""
        if self._pending:
            self._pending += data
            if len(self._pending) < self._needed:
                return []  # a large packet still arriving: no copy until it is whole
            data = bytes(self._pending)
            self._pending.clear()
        packets: list[tuple[int, bytes]] = []
        pos, size = 0, len(data)
        self._needed = 0  # until a header says otherwise, any new byte may complete something
        while size - pos >= 2:
            length = data[pos + 1]
            head = pos + 2
            if length >= _HIGH_BIT:
                length, head = _read_varint(data, pos + 1)
                if length < 0:
                    break
            if length > self._max_packet_bytes:
                msg = f"packet of {length} bytes exceeds {self._max_packet_bytes}"
                raise MqttProtocolError(PACKET_TOO_LARGE, msg)
            end = head + length
            if end > size:
                self._needed = end - pos
                break
            packets.append((data[pos], data[head:end]))
            pos = end
        if pos < size:
            self._pending += data[pos:]
        return packets

"""Envelope v1: a msgpack header serialised once, AES-256-GCM ciphertext bound to topic+header."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

import msgpack
from cryptography.exceptions import InvalidTag

from edge_agent.protocol._slots import twin
from edge_agent.protocol.errors import AuthenticationError, EnvelopeError
from edge_agent.protocol.keys import MAX_EPOCH, MAX_SEQ, SessionKey
from edge_agent.protocol.topics import GATEWAY_ID_RE

VERSION: Final = 1
ALGORITHM: Final = "A256GCM"
CONTENT_FRAME_V1: Final = "frame/v1"
CONTENT_COMMAND_V1: Final = "command/v1"
"""A downlink command (edge_agent.protocol.commands)."""
CONTENT_TYPES: Final = frozenset({CONTENT_FRAME_V1, CONTENT_COMMAND_V1})
AAD_LABEL: Final = b"bedside-twin/envelope/v1\x00"
TAG_BYTES: Final = 16
IV_BYTES: Final = 12
_U16: Final = struct.Struct(">H")
# A sink sees the same few topics again and again; their AAD prefixes are built once. Bounded,
# like the gateway-id memo below, so garbage topics cannot grow it.
_MEMO_LIMIT: Final = 1 << 14
_aad_prefixes: Final[dict[str, bytes]] = {}
# A frame is a few hundred readings; anything near the broker's limit is hostile.
MAX_ENVELOPE_BYTES: Final = 4 * 1024 * 1024
_MSGPACK_ERRORS: Final = (ValueError, TypeError, OverflowError, msgpack.UnpackException)
_unpackb: Final = msgpack.unpackb


@dataclass(slots=True, frozen=True)
class Header:
    """The authenticated, unencrypted part of an envelope."""

    gateway_id: str
    epoch: int
    seq: int
    content_type: str = CONTENT_FRAME_V1
    # Constants, not fields: this module writes and accepts envelope v1 with AES-256-GCM only
    # (a parsed header with anything else is refused), and two fewer slots to fill per envelope.
    version: ClassVar[int] = VERSION
    algorithm: ClassVar[str] = ALGORITHM

    def to_bytes(self) -> bytes:
        """Serialise once; the exact bytes are both sent and authenticated."""
        return msgpack.packb(
            [self.version, self.algorithm, self.gateway_id, self.epoch, self.seq, self.content_type]
        )


@dataclass(slots=True, frozen=True)
class Opened:
    """A verified envelope: its header and the decrypted plaintext."""

    header: Header
    plaintext: bytes


def _aad_prefix(topic: str) -> bytes:
    """label | u16 big-endian topic length | topic (UTF-8): all of the AAD but the header."""
    prefix = _aad_prefixes.get(topic)
    if prefix is None:
        topic_bytes = topic.encode("utf-8")
        prefix = AAD_LABEL + _U16.pack(len(topic_bytes)) + topic_bytes
        if len(_aad_prefixes) >= _MEMO_LIMIT:
            _aad_prefixes.clear()
        _aad_prefixes[topic] = prefix
    return prefix


def aad(topic: str, header_bytes: bytes) -> bytes:
    """AAD = label | u16 big-endian topic length | topic (UTF-8) | header bytes as sent."""
    return _aad_prefix(topic) + header_bytes


def _nonce(key: SessionKey, seq: int) -> bytes:
    """IV base XOR the sequence number left-padded to 12 bytes (wire-format §3, RFC 8446 §5.3).

    The same value as `key.nonce(seq)`, as one integer XOR instead of twelve byte XORs: this runs
    once per envelope. `seq` was range-checked when the header was parsed or the frame sealed.
    """
    return (key.iv_int ^ seq).to_bytes(IV_BYTES, "big")


def seal(key: SessionKey, topic: str, seq: int, plaintext: bytes, content_type: str) -> bytes:
    """Encrypt `plaintext` for `topic` under `key` with sequence number `seq` (never reuse one)."""
    header_bytes = Header(key.gateway_id, key.epoch, seq, content_type).to_bytes()
    ciphertext = key.aead.encrypt(key.nonce(seq), plaintext, aad(topic, header_bytes))
    return msgpack.packb([header_bytes, ciphertext], use_bin_type=True)


# Gateway ids repeat from envelope to envelope: one regex per new id, then a set lookup. Only ids
# that matched enter, and the set is emptied at its limit, so garbage cannot grow it.
_valid_gateways: Final[set[str]] = set()


def _learn_gateway(gateway_id: str) -> bool:
    if GATEWAY_ID_RE.fullmatch(gateway_id) is None:
        return False
    if len(_valid_gateways) >= _MEMO_LIMIT:
        _valid_gateways.clear()
    _valid_gateways.add(gateway_id)
    return True


# A frozen dataclass's __init__ sets every field through object.__setattr__, which costs more than
# the checks around it: headers are built as their mutable twin and then become Headers
# (_slots.py), identical to constructed ones (equality, repr, hashing, pickling).
_new: Final = object.__new__
_HEADER_TWIN: Final = twin(Header)
_O0, _O1 = (Opened.__dict__[name].__set__ for name in Opened.__slots__)


def parse_header(header_bytes: bytes) -> Header:
    """Decode and check a header; raise EnvelopeError naming the first problem."""
    try:
        fields = _unpackb(header_bytes, raw=False, use_list=False)
    except _MSGPACK_ERRORS as exc:
        msg = f"header is not msgpack: {exc}"
        raise EnvelopeError(msg) from exc
    if not isinstance(fields, tuple) or len(fields) != 6:
        msg = "header must be a 6-element array"
        raise EnvelopeError(msg)
    version, algorithm, gateway_id, epoch, seq, content_type = fields
    if version != VERSION or type(version) is not int:
        msg = f"unsupported envelope version {version!r} (this sink reads {VERSION})"
        raise EnvelopeError(msg)
    if algorithm != ALGORITHM:
        msg = f"unsupported algorithm {algorithm!r} (expected {ALGORITHM})"
        raise EnvelopeError(msg)
    if type(gateway_id) is not str or (
        gateway_id not in _valid_gateways and not _learn_gateway(gateway_id)
    ):
        msg = f"header gateway id {gateway_id!r} is not a valid gateway id"
        raise EnvelopeError(msg)
    if type(epoch) is not int or not 0 <= epoch <= MAX_EPOCH:
        msg = f"header key epoch {epoch!r} is not an integer in 0..2^32-1"
        raise EnvelopeError(msg)
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        msg = f"header sequence number {seq!r} is not an integer in 0..2^64-1"
        raise EnvelopeError(msg)
    if content_type not in CONTENT_TYPES:
        msg = f"unknown content type {content_type!r}"
        raise EnvelopeError(msg)
    header: Any = _new(_HEADER_TWIN)
    header.gateway_id = gateway_id
    header.epoch = epoch
    header.seq = seq
    header.content_type = content_type
    header.__class__ = Header
    return cast("Header", header)


def split(envelope: bytes) -> tuple[bytes, bytes]:
    """Split an envelope into (header bytes, ciphertext with tag) without decrypting."""
    if len(envelope) > MAX_ENVELOPE_BYTES:
        msg = f"envelope of {len(envelope)} bytes exceeds {MAX_ENVELOPE_BYTES}"
        raise EnvelopeError(msg)
    try:
        outer = msgpack.unpackb(envelope, raw=False, use_list=False)
    except _MSGPACK_ERRORS as exc:
        msg = f"envelope is not msgpack: {exc}"
        raise EnvelopeError(msg) from exc
    if (
        not isinstance(outer, tuple)
        or len(outer) != 2
        or not isinstance(outer[0], bytes)
        or not isinstance(outer[1], bytes)
    ):
        msg = "envelope must be a 2-element array of binaries [header, ciphertext]"
        raise EnvelopeError(msg)
    if len(outer[1]) < TAG_BYTES:
        msg = f"ciphertext shorter than the {TAG_BYTES}-byte tag"
        raise EnvelopeError(msg)
    return outer[0], outer[1]


KeyLookup = Callable[[str, int], SessionKey]
"""Returns the key for (gateway id, epoch), or raises a WireError subclass when there is none."""


def open_envelope(topic: str, envelope: bytes, lookup: KeyLookup) -> Opened:
    """Verify and decrypt; any failure raises an EnvelopeError subclass and yields no plaintext."""
    # split()'s accepting case, the nonce and the AAD inline: this runs for every message the
    # sink takes. Anything split() would refuse goes through it, for its exact error.
    outer: object = None
    if len(envelope) <= MAX_ENVELOPE_BYTES:
        try:
            outer = _unpackb(envelope, raw=False, use_list=False)
        except _MSGPACK_ERRORS:
            outer = None  # split() below says what is wrong
    if (
        type(outer) is tuple
        and len(outer) == 2
        and type(outer[0]) is bytes
        and type(outer[1]) is bytes
        and len(outer[1]) >= TAG_BYTES
    ):
        header_bytes, ciphertext = outer
    else:
        header_bytes, ciphertext = split(envelope)
    header = parse_header(header_bytes)
    key = lookup(header.gateway_id, header.epoch)
    prefix = _aad_prefixes.get(topic) or _aad_prefix(topic)
    # The nonce as in _nonce(): the IV base XOR the (range-checked) sequence number.
    nonce = (key.iv_int ^ header.seq).to_bytes(IV_BYTES, "big")
    try:
        plaintext = key.aead.decrypt(nonce, ciphertext, prefix + header_bytes)
    except InvalidTag:
        msg = (
            f"tag did not verify for gateway {header.gateway_id!r} epoch {header.epoch} "
            f"seq {header.seq}: tampered, misrouted or sealed under another key"
        )
        raise AuthenticationError(msg) from None
    opened: Opened = _new(Opened)
    _O0(opened, header)
    _O1(opened, plaintext)
    return opened

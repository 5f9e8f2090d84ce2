"""Gateway enrolment: an X25519 exchange authenticated by a single-use token (docs/enrolment.md).

`cloud-sink gateways add` mints a token (128 random bits, shown as base32, valid 10 minutes) that
a clinical engineer carries to the gateway. The gateway sends its ephemeral X25519 public key and
a nonce, MACed under a key derived from the token; the sink checks the MAC, answers with its own
ephemeral public key, nonce and the key epoch, MACed over the whole transcript; both derive the
gateway master secret with HKDF-SHA256 from the X25519 shared secret, salted with the token's
digest and bound to the transcript. Neither side stores anything unless the other side's MAC
verified, and the token is refused after one use.

Primitives: X25519 (RFC 7748 §5), HKDF-SHA256 (RFC 5869), HMAC-SHA256 (RFC 2104); messages are
msgpack arrays (docs/enrolment.md gives the layout and a test vector).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import Final

import msgpack
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_agent.protocol.errors import WireError
from edge_agent.protocol.keys import MASTER_SECRET_BYTES, MAX_EPOCH
from edge_agent.protocol.topics import validate_gateway_id

VERSION: Final = 1
TOKEN_BYTES: Final = 16
NONCE_BYTES: Final = 16
KEY_BYTES: Final = 32
MAC_BYTES: Final = 32
AUTH_SALT: Final = b"bedside-twin/v1/enrol-auth"
MASTER_LABEL: Final = b"bedside-twin/v1/master"
REQUEST_LABEL: Final = b"request"
RESPONSE_LABEL: Final = b"response"
_REQUEST_FIELDS: Final = 5
_RESPONSE_FIELDS: Final = 6


class EnrolmentError(WireError):
    """An enrolment message is malformed or does not verify; nothing was stored."""


def mint_token() -> str:
    """128 random bits as upper-case base32 without padding (26 characters, easy to type)."""
    return base64.b32encode(os.urandom(TOKEN_BYTES)).decode("ascii").rstrip("=")


def token_bytes(token: str) -> bytes:
    """The token's 16 bytes; spaces, dashes and case are forgiven (people type it)."""
    text = token.replace(" ", "").replace("-", "").upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raw = b""
    if len(raw) != TOKEN_BYTES:
        msg = "the enrolment token is not the 26-character code `cloud-sink gateways add` printed"
        raise EnrolmentError(msg)
    return raw


def token_digest(token: str) -> bytes:
    """What the sink keeps of a pending token (SHA-256), never the token itself."""
    return hashlib.sha256(token_bytes(token)).digest()


def _auth_key(token: str, gateway_id: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=AUTH_SALT,
        info=gateway_id.encode("ascii"),
    ).derive(token_bytes(token))


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _exchange(private: X25519PrivateKey, peer: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError as exc:
        # RFC 7748 §6.1: a low-order point gives the all-zero secret, which must be refused.
        msg = "enrolment: the peer's public key is not usable (low-order point)"
        raise EnrolmentError(msg) from exc


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    body = b"".join(struct.pack(">H", len(part)) + part for part in parts)
    return hmac.new(key, label + b"|" + body, hashlib.sha256).digest()


def _master(shared: bytes, token: str, gateway_id: str, transcript: tuple[bytes, ...]) -> bytes:
    info = MASTER_LABEL + b"|" + gateway_id.encode("ascii") + b"|" + b"".join(transcript)
    return HKDF(
        algorithm=hashes.SHA256(),
        length=MASTER_SECRET_BYTES,
        salt=token_digest(token),
        info=info,
    ).derive(shared)


@dataclass(slots=True, frozen=True)
class EnrolRequest:
    """Gateway → sink: its ephemeral public key and nonce, MACed under the token's key."""

    gateway_id: str
    public_key: bytes
    nonce: bytes
    mac: bytes

    def encode(self) -> bytes:
        return msgpack.packb(
            [VERSION, self.gateway_id, self.public_key, self.nonce, self.mac], use_bin_type=True
        )

    @classmethod
    def decode(cls, payload: bytes) -> EnrolRequest:
        fields = _fields(payload, _REQUEST_FIELDS, "request")
        return cls(
            _gateway(fields[1]),
            _bytes(fields[2], KEY_BYTES),
            _bytes(fields[3], NONCE_BYTES),
            _bytes(fields[4], MAC_BYTES),
        )

    @property
    def transcript(self) -> tuple[bytes, ...]:
        return (self.gateway_id.encode("ascii"), self.public_key, self.nonce)


@dataclass(slots=True, frozen=True)
class EnrolResponse:
    """Sink → gateway: its ephemeral public key, nonce and the key epoch, MACed over both."""

    gateway_id: str
    public_key: bytes
    nonce: bytes
    epoch: int
    mac: bytes

    def encode(self) -> bytes:
        return msgpack.packb(
            [VERSION, self.gateway_id, self.public_key, self.nonce, self.epoch, self.mac],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, payload: bytes) -> EnrolResponse:
        fields = _fields(payload, _RESPONSE_FIELDS, "response")
        epoch = fields[4]
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCH:
            msg = f"enrolment response: key epoch {epoch!r} is not in 0..2^32-1"
            raise EnrolmentError(msg)
        return cls(
            _gateway(fields[1]),
            _bytes(fields[2], KEY_BYTES),
            _bytes(fields[3], NONCE_BYTES),
            epoch,
            _bytes(fields[5], MAC_BYTES),
        )


def _fields(payload: bytes, count: int, what: str) -> list[object]:
    try:
        fields = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        msg = f"enrolment {what} is not msgpack: {exc}"
        raise EnrolmentError(msg) from exc
    if not isinstance(fields, list) or len(fields) != count or fields[0] != VERSION:
        msg = f"enrolment {what} must be a {count}-field array of version {VERSION}"
        raise EnrolmentError(msg)
    return fields


def _gateway(value: object) -> str:
    if not isinstance(value, str):
        msg = "enrolment message: the gateway id must be text"
        raise EnrolmentError(msg)
    try:
        return validate_gateway_id(value)
    except WireError as exc:
        raise EnrolmentError(str(exc)) from exc


def _bytes(value: object, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        msg = f"enrolment message: expected {size} bytes, got {type(value).__name__}"
        raise EnrolmentError(msg)
    return value


@dataclass(slots=True)
class GatewayEnrolment:
    """The gateway's side: `request()` to send, `finish(response)` for the master secret."""

    gateway_id: str
    token: str
    _private: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _nonce: bytes = field(default_factory=lambda: os.urandom(NONCE_BYTES), repr=False)

    def request(self) -> EnrolRequest:
        public = _raw(self._private.public_key())
        gateway = validate_gateway_id(self.gateway_id)
        key = _auth_key(self.token, gateway)
        mac = _mac(key, REQUEST_LABEL, gateway.encode("ascii"), public, self._nonce)
        return EnrolRequest(gateway, public, self._nonce, mac)

    def finish(self, response: EnrolResponse) -> tuple[bytes, int]:
        """(master secret, key epoch) once the sink's MAC verifies; EnrolmentError otherwise."""
        request = self.request()
        if response.gateway_id != request.gateway_id:
            msg = "enrolment response names another gateway"
            raise EnrolmentError(msg)
        key = _auth_key(self.token, request.gateway_id)
        expected = _mac(
            key,
            RESPONSE_LABEL,
            *request.transcript,
            response.public_key,
            response.nonce,
            struct.pack(">I", response.epoch),
        )
        if not hmac.compare_digest(expected, response.mac):
            msg = "enrolment response does not verify: wrong token, or not from our sink"
            raise EnrolmentError(msg)
        shared = _exchange(self._private, response.public_key)
        transcript = (*request.transcript, response.public_key, response.nonce)
        return _master(shared, self.token, request.gateway_id, transcript), response.epoch


def answer(request: EnrolRequest, token: str, epoch: int) -> tuple[EnrolResponse, bytes]:
    """The sink's side: check the request's MAC, answer it, and derive the master secret."""
    key = _auth_key(token, request.gateway_id)
    expected = _mac(key, REQUEST_LABEL, *request.transcript)
    if not hmac.compare_digest(expected, request.mac):
        msg = f"enrolment request for {request.gateway_id} does not verify: wrong or old token"
        raise EnrolmentError(msg)
    private = X25519PrivateKey.generate()
    public = _raw(private.public_key())
    nonce = os.urandom(NONCE_BYTES)
    mac = _mac(key, RESPONSE_LABEL, *request.transcript, public, nonce, struct.pack(">I", epoch))
    shared = _exchange(private, request.public_key)
    master = _master(shared, token, request.gateway_id, (*request.transcript, public, nonce))
    return EnrolResponse(request.gateway_id, public, nonce, epoch, mac), master

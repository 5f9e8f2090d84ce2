"""The vectors in docs/wire-format.md, checked through our code and through an independent
re-implementation of the spec's §2-§3 (HMAC-based HKDF per RFC 5869, AES-GCM, msgpack by hand)."""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_agent.protocol import Direction, decode_frame, derive_session_key, open_envelope, seal
from edge_agent.protocol.keys import SessionKey

DOC = Path(__file__).resolve().parents[4] / "docs" / "wire-format.md"


def _vectors() -> list[dict[str, str]]:
    blocks = re.findall(r"```vector\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return [dict(line.split(": ", 1) for line in block.strip().splitlines()) for block in blocks]


VECTORS = _vectors()


def test_the_spec_has_at_least_three_vectors() -> None:
    assert len(VECTORS) >= 3


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def _msgpack_str(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 32
    return bytes([0xA0 | len(raw)]) + raw


def _msgpack_uint(value: int) -> bytes:
    if value < 128:
        return bytes([value])
    for tag, fmt in ((0xCC, ">B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q")):
        if value < 256 ** struct.calcsize(fmt):
            return bytes([tag]) + struct.pack(fmt, value)
    raise AssertionError(value)


def _msgpack_bin(data: bytes) -> bytes:
    if len(data) < 256:
        return b"\xc4" + bytes([len(data)]) + data
    return b"\xc5" + struct.pack(">H", len(data)) + data


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"].split(":")[0])
def test_independent_implementation_reproduces_the_vector(vector: dict[str, str]) -> None:
    secret = bytes.fromhex(vector["master_secret"])
    gateway, epoch, seq = vector["gateway_id"], int(vector["epoch"]), int(vector["seq"])
    info = b"|".join(
        [
            b"bedside-twin/v1/envelope-key",
            gateway.encode(),
            struct.pack(">I", epoch),
            vector["direction"].encode(),
        ]
    )
    okm = _hkdf_sha256(secret, b"bedside-twin/v1/hkdf-salt", info, 44)
    assert okm[:32].hex() == vector["key"]
    assert okm[32:].hex() == vector["iv_base"]
    nonce = bytes(
        a ^ b for a, b in zip(okm[32:], b"\x00" * 4 + struct.pack(">Q", seq), strict=True)
    )
    assert nonce.hex() == vector["nonce"]
    header = (
        b"\x96\x01"
        + _msgpack_str("A256GCM")
        + _msgpack_str(gateway)
        + _msgpack_uint(epoch)
        + _msgpack_uint(seq)
        + _msgpack_str(vector["content_type"])
    )
    assert header.hex() == vector["header"]
    topic = vector["topic"].encode()
    aad = b"bedside-twin/envelope/v1\x00" + struct.pack(">H", len(topic)) + topic + header
    assert aad.hex() == vector["aad"]
    ciphertext = AESGCM(okm[:32]).encrypt(nonce, bytes.fromhex(vector["plaintext"]), aad)
    assert (b"\x92" + _msgpack_bin(header) + _msgpack_bin(ciphertext)).hex() == vector["envelope"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"].split(":")[0])
def test_our_code_reproduces_and_opens_the_vector(vector: dict[str, str]) -> None:
    key = derive_session_key(
        bytes.fromhex(vector["master_secret"]),
        vector["gateway_id"],
        int(vector["epoch"]),
        Direction.UP,
    )
    plaintext = bytes.fromhex(vector["plaintext"])
    envelope = seal(key, vector["topic"], int(vector["seq"]), plaintext, vector["content_type"])
    assert envelope.hex() == vector["envelope"]

    def lookup(_gateway: str, _epoch: int) -> SessionKey:
        return key

    opened = open_envelope(vector["topic"], bytes.fromhex(vector["envelope"]), lookup)
    assert opened.plaintext == plaintext
    assert decode_frame(opened.plaintext).gateway_id == vector["gateway_id"]

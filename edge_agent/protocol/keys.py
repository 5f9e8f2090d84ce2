"""Per-gateway, per-epoch, per-direction AES-256-GCM keys derived with HKDF-SHA256 (RFC 5869)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_agent.protocol.errors import WireError
from edge_agent.protocol.topics import validate_gateway_id

MASTER_SECRET_BYTES: Final = 32
KEY_BYTES: Final = 32
IV_BASE_BYTES: Final = 12
MAX_EPOCH: Final = 2**32 - 1
MAX_SEQ: Final = 2**64 - 1
HKDF_SALT: Final = b"bedside-twin/v1/hkdf-salt"
HKDF_INFO_LABEL: Final = b"bedside-twin/v1/envelope-key"


class Direction(StrEnum):
    """Which way a key protects traffic; the two directions never share a key or a nonce space."""

    UP = "up"
    DOWN = "down"


@dataclass(slots=True, frozen=True)
class SessionKey:
    """An AEAD key and its IV base; `nonce(seq)` is the only way this key gets a nonce."""

    gateway_id: str
    epoch: int
    direction: Direction
    key: bytes = field(repr=False)
    iv_base: bytes = field(repr=False)
    aead: AESGCM = field(repr=False, compare=False)
    # The IV base as one integer: an opener XORs it with each sequence number (hot path).
    iv_int: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "iv_int", int.from_bytes(self.iv_base, "big"))

    def nonce(self, seq: int) -> bytes:
        """12-byte nonce = IV base XOR the 64-bit sequence number, left-padded (RFC 8446 §5.3)."""
        if not 0 <= seq <= MAX_SEQ:
            msg = f"sequence number {seq} is outside 0..2^64-1"
            raise WireError(msg)
        padded = b"\x00\x00\x00\x00" + struct.pack(">Q", seq)
        return bytes(a ^ b for a, b in zip(self.iv_base, padded, strict=True))


def hkdf_info(gateway_id: str, epoch: int, direction: Direction) -> bytes:
    """HKDF `info`: label | gateway id | epoch (u32 big-endian) | direction, '|'-separated."""
    return b"|".join(
        (
            HKDF_INFO_LABEL,
            validate_gateway_id(gateway_id).encode("ascii"),
            struct.pack(">I", epoch),
            direction.value.encode("ascii"),
        )
    )


def derive_session_key(
    master_secret: bytes, gateway_id: str, epoch: int, direction: Direction
) -> SessionKey:
    """Derive the key and IV base for one gateway, epoch and direction from the master secret."""
    if len(master_secret) != MASTER_SECRET_BYTES:
        msg = f"master secret must be {MASTER_SECRET_BYTES} bytes, got {len(master_secret)}"
        raise WireError(msg)
    if not 0 <= epoch <= MAX_EPOCH:
        msg = f"key epoch {epoch} is outside 0..2^32-1"
        raise WireError(msg)
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES + IV_BASE_BYTES,
        salt=HKDF_SALT,
        info=hkdf_info(gateway_id, epoch, direction),
    ).derive(master_secret)
    key, iv_base = okm[:KEY_BYTES], okm[KEY_BYTES:]
    return SessionKey(gateway_id, epoch, direction, key, iv_base, AESGCM(key))

"""Downlink commands (sink → gateway), sealed like uplink frames under the downlink key.

The only command so far is a key rotation: "seal from key epoch E on". It travels on
`bt/v1/gw/{gateway_id}/down/keys`, retained, sealed with the (gateway, E, down) key at sequence
number 0 (docs/wire-format.md §6). E is strictly greater than every epoch the sink asked for
before, so each downlink key seals exactly one message and no nonce repeats. A replayed or stale
command names an epoch the gateway has already passed, and the gateway ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgpack

from edge_agent.protocol.errors import FrameError
from edge_agent.protocol.keys import MAX_EPOCH

COMMAND_VERSION: Final = 1
ROTATE: Final = "rotate"
ROTATION_SEQ: Final = 0
_MSGPACK_ERRORS: Final = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


@dataclass(slots=True, frozen=True)
class RotateKeys:
    """Seal everything from `epoch` on; frames already sealed keep their epoch."""

    epoch: int
    issued_ns: int


def encode_command(command: RotateKeys) -> bytes:
    """[version, "rotate", epoch, issued_ns] in msgpack."""
    return msgpack.packb([COMMAND_VERSION, ROTATE, command.epoch, command.issued_ns])


def decode_command(data: bytes) -> RotateKeys:
    """Parse a command; raise FrameError naming the problem for anything else."""
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=False)
    except _MSGPACK_ERRORS as exc:
        msg = "$"
        raise FrameError(msg, f"command is not msgpack: {exc}") from exc
    if type(raw) is not tuple or len(raw) != 4:
        msg = "$"
        raise FrameError(msg, "a command is a 4-element array [version, name, epoch, issued_ns]")
    version, name, epoch, issued_ns = raw
    if version != COMMAND_VERSION or type(version) is not int:
        msg = "version"
        raise FrameError(msg, f"unsupported command version {version!r} (this reader knows 1)")
    if name != ROTATE:
        msg = "name"
        raise FrameError(msg, f"unknown command {name!r} (this reader knows 'rotate')")
    if type(epoch) is not int or not 0 <= epoch <= MAX_EPOCH:
        msg = "epoch"
        raise FrameError(msg, f"must be an integer in 0..2^32-1, got {epoch!r}")
    if type(issued_ns) is not int or not 0 <= issued_ns < 2**63:
        msg = "issued_ns"
        raise FrameError(msg, f"must be a non-negative int64, got {issued_ns!r}")
    return RotateKeys(epoch, issued_ns)

"""Key rotation at the gateway: open the sink's sealed `down/keys` command and move the sealer.

The command is sealed under the (gateway, new epoch, down) key, so only the holder of this
gateway's master secret (the sink) can make one, and the AAD binds it to this gateway's topic.
A command naming an epoch the gateway has reached already (a retained message seen again after
a restart, or a replay) changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_agent.errors import EdgeAgentError
from edge_agent.protocol import Direction, SessionKey, WireError, derive_session_key, open_envelope
from edge_agent.protocol.commands import ROTATION_SEQ, decode_command
from edge_agent.protocol.envelope import CONTENT_COMMAND_V1
from edge_agent.sealer import Sealer

_LOGGER = logging.getLogger(__name__)


class RotationRefused(EdgeAgentError):
    """A `down/keys` message that is not a valid rotation command for this gateway."""


@dataclass(slots=True, frozen=True)
class RotationOutcome:
    epoch: int
    applied: bool


def apply_rotation(
    sealer: Sealer, master_secret: bytes, gateway_id: str, full_topic: str, payload: bytes
) -> RotationOutcome:
    """Verify the command and rotate the sealer; raise RotationRefused saying why not."""

    def lookup(header_gateway: str, epoch: int) -> SessionKey:
        if header_gateway != gateway_id:
            msg = f"command sealed for gateway {header_gateway!r}, this is {gateway_id!r}"
            raise RotationRefused(msg)
        return derive_session_key(master_secret, gateway_id, epoch, Direction.DOWN)

    try:
        opened = open_envelope(full_topic, payload, lookup)
        if opened.header.content_type != CONTENT_COMMAND_V1:
            msg = f"content type {opened.header.content_type!r} on the keys topic"
            raise RotationRefused(msg)
        if opened.header.seq != ROTATION_SEQ:
            msg = f"a rotation is sealed at sequence number 0, not {opened.header.seq}"
            raise RotationRefused(msg)
        command = decode_command(opened.plaintext)
    except WireError as exc:
        msg = f"rotation command refused: {exc}"
        raise RotationRefused(msg) from exc
    if command.epoch != opened.header.epoch:
        msg = f"command names epoch {command.epoch} but is sealed under {opened.header.epoch}"
        raise RotationRefused(msg)
    applied = sealer.rotate(command.epoch)
    if applied:
        _LOGGER.warning("key rotation: sealing under epoch %d from now on", command.epoch)
    else:
        _LOGGER.info("key rotation to epoch %d: already there or past it", command.epoch)
    return RotationOutcome(command.epoch, applied)

"""Key epochs per gateway: which uplink epochs the sink accepts, and rotation with a grace.

Every epoch's key is derived from the gateway's master secret (DESIGN §3), so without a policy
any epoch would open. The policy is a floor: epochs at or above it are current (a gateway that
lost its counter state starts a new epoch at the current UNIX time, which is above the floor),
epochs below it are retired. `cloud-sink gateways rotate` raises the floor to a fresh epoch and
keeps the range it retired open for a grace (72 h by default), so frames a gateway spooled
under the old epoch during an outage still open; after the grace they are refused as
`epoch_retired`. The state is `<keyring>/<gateway_id>.epochs` (JSON, mode 0600, replaced
atomically); no file means no rotation yet: every epoch is current.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.protocol import (
    Channel,
    Direction,
    UnknownKeyError,
    derive_session_key,
    seal,
    topic,
)
from edge_agent.protocol.commands import ROTATION_SEQ, RotateKeys, encode_command
from edge_agent.protocol.envelope import CONTENT_COMMAND_V1
from edge_agent.protocol.keys import MAX_EPOCH

STATE_VERSION: Final = 1
DEFAULT_GRACE_S: Final = 72 * 3600.0


class RetiredEpochError(UnknownKeyError):
    """An envelope sealed under an epoch that a rotation retired and whose grace has ended."""


class EpochStateError(UnknownKeyError):
    """The epoch state file is unreadable: the gateway's envelopes are refused until it is fixed."""


@dataclass(slots=True, frozen=True)
class RetiredRange:
    """Epochs in [low, high) stay accepted until `until_s` (UNIX seconds)."""

    low: int
    high: int
    until_s: float


@dataclass(slots=True, frozen=True)
class EpochPolicy:
    floor: int
    retired: tuple[RetiredRange, ...] = ()

    def accepts(self, epoch: int, now_s: float) -> bool:
        if epoch >= self.floor:
            return True
        return any(r.low <= epoch < r.high and now_s < r.until_s for r in self.retired)


def state_file(keyring_dir: Path, gateway_id: str) -> Path:
    return keyring_dir / f"{gateway_id}.epochs"


def read_policy(path: Path) -> EpochPolicy | None:
    """The policy in `path`, None when there is no file; EpochStateError when it is corrupt."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"epoch state {path.name} is unreadable ({exc}); restore it or rotate again"
        raise EpochStateError(msg) from exc
    try:
        if raw["version"] != STATE_VERSION:
            msg = (
                f"epoch state {path.name} has version {raw['version']!r}, expected 1; "
                "restore it or rotate again"
            )
            raise EpochStateError(msg)
        floor = int(raw["floor"])
        retired = tuple(
            RetiredRange(int(r["low"]), int(r["high"]), float(r["until_s"])) for r in raw["retired"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"epoch state {path.name} is malformed ({exc!r}); restore it or rotate again"
        raise EpochStateError(msg) from exc
    return EpochPolicy(floor, retired)


def _write_policy(path: Path, policy: EpochPolicy) -> None:
    staging = path.with_name(path.name + ".new")
    document = {
        "version": STATE_VERSION,
        "floor": policy.floor,
        "retired": [{"low": r.low, "high": r.high, "until_s": r.until_s} for r in policy.retired],
    }
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def plan_rotation(
    keyring_dir: Path, gateway_id: str, grace_s: float, now_s: float | None = None
) -> EpochPolicy:
    """The policy after a rotation (not yet saved): its floor is the new epoch, the current
    UNIX time (or one above the old floor if the clock is behind it), so it is above every
    epoch the gateway can have used; the epochs below stay open for `grace_s`."""
    now_s = time.time() if now_s is None else now_s
    old = read_policy(state_file(keyring_dir, gateway_id)) or EpochPolicy(floor=0)
    new_floor = min(max(int(now_s), old.floor + 1), MAX_EPOCH)
    if new_floor <= old.floor:
        msg = f"gateway {gateway_id}: the epoch space is exhausted; enrol the gateway again"
        raise EpochStateError(msg)
    kept = tuple(r for r in old.retired if now_s < r.until_s)
    return EpochPolicy(new_floor, (*kept, RetiredRange(old.floor, new_floor, now_s + grace_s)))


def save_policy(keyring_dir: Path, gateway_id: str, policy: EpochPolicy) -> None:
    _write_policy(state_file(keyring_dir, gateway_id), policy)


def rotate(keyring_dir: Path, gateway_id: str, grace_s: float, now_s: float | None = None) -> int:
    """Plan and save a rotation; return the new epoch."""
    policy = plan_rotation(keyring_dir, gateway_id, grace_s, now_s)
    save_policy(keyring_dir, gateway_id, policy)
    return policy.floor


def check_epoch(policy: EpochPolicy | None, gateway_id: str, epoch: int, now_s: float) -> None:
    """Raise RetiredEpochError when the policy no longer accepts `epoch`."""
    if policy is not None and not policy.accepts(epoch, now_s):
        msg = (
            f"gateway {gateway_id!r} epoch {epoch} was retired by a key rotation "
            f"(current epochs start at {policy.floor}) and its grace has ended"
        )
        raise RetiredEpochError(msg)


def rotation_message(
    master_secret: bytes, gateway_id: str, epoch: int, topic_prefix: str = ""
) -> tuple[str, bytes]:
    """The retained `down/keys` message that moves a gateway to `epoch`: (topic, envelope).

    Sealed with the (gateway, epoch, down) key at sequence number 0; epochs only grow, so each
    such key seals this one message and its nonce is never reused.
    """
    full_topic = topic(gateway_id, Channel.KEYS, topic_prefix)
    key = derive_session_key(master_secret, gateway_id, epoch, Direction.DOWN)
    plaintext = encode_command(RotateKeys(epoch, time.time_ns()))
    return full_topic, seal(key, full_topic, ROTATION_SEQ, plaintext, CONTENT_COMMAND_V1)

"""Seals frames into envelopes with a crash-safe sequence counter: a nonce is never used twice."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.errors import EdgeAgentError
from edge_agent.protocol import CONTENT_FRAME_V1, Direction, SessionKey, derive_session_key, seal
from edge_agent.protocol.keys import MAX_EPOCH, MAX_SEQ

_LOGGER = logging.getLogger(__name__)
STATE_VERSION: Final = 1


class CounterStateError(EdgeAgentError):
    """The sequence-counter state file is unreadable; the agent starts a new key epoch instead."""


@dataclass(slots=True, frozen=True)
class CounterState:
    """What is on disk: the epoch in use and the first sequence number not yet reserved."""

    epoch: int
    reserved_until: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SequenceCounter:
    """Hands out sequence numbers, reserving blocks ahead on disk (write, fsync, rename, fsync dir).

    After a crash the counter resumes at the last reservation's end, so it may skip numbers but
    never repeats one. If the state file is missing or unreadable, a new epoch begins: the epoch
    is the current UNIX time in seconds, so a wiped gateway never returns to an epoch (and hence
    a key) it used before, as long as its clock moves forward.
    """

    def __init__(self, state_file: Path, reserve_block: int = 1024) -> None:
        self.state_file = state_file
        self.reserve_block = reserve_block
        state = self._read()
        if state is None:
            epoch = min(int(time.time()), MAX_EPOCH)
            state = CounterState(epoch=epoch, reserved_until=0)
            _LOGGER.warning("counter state missing or unreadable: starting key epoch %d", epoch)
        self.epoch = state.epoch
        self._next = state.reserved_until
        self._reserved_until = state.reserved_until
        self._reserve()

    def _read(self) -> CounterState | None:
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
            state = CounterState(epoch=int(raw["epoch"]), reserved_until=int(raw["reserved_until"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _LOGGER.exception(
                "counter state %s is corrupt (%s)", self.state_file, type(exc).__name__
            )
            return None
        if raw.get("version") != STATE_VERSION or not 0 <= state.epoch <= MAX_EPOCH:
            return None
        return state

    def _write_state(self, epoch: int, reserved_until: int) -> None:
        """Put (epoch, reserved_until) on disk: write, fsync, rename, fsync the directory."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        payload = {"version": STATE_VERSION, "epoch": epoch, "reserved_until": reserved_until}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_file)
        _fsync_dir(self.state_file.parent)

    def _reserve(self) -> None:
        target = self._reserved_until + self.reserve_block
        if target > MAX_SEQ:
            msg = "sequence space of this epoch is exhausted; rotate the key"
            raise CounterStateError(msg)
        self._write_state(self.epoch, target)
        self._reserved_until = target

    def start_epoch(self, epoch: int) -> None:
        """Move to a later epoch (a key rotation): its sequence numbers start again at 0.

        The new state is on disk before anything changes in memory, so a failed write leaves
        the counter in its old epoch; an epoch only ever moves forward, so no (key, nonce)
        pair can repeat.
        """
        if not self.epoch < epoch <= MAX_EPOCH:
            msg = f"cannot move from key epoch {self.epoch} to {epoch}: epochs only move forward"
            raise CounterStateError(msg)
        self._write_state(epoch, self.reserve_block)
        self.epoch = epoch
        self._next = 0
        self._reserved_until = self.reserve_block

    def next(self) -> int:
        """The next unused sequence number; blocks briefly for an fsync once per reserve block."""
        if self._next >= self._reserved_until:
            self._reserve()
        seq = self._next
        self._next += 1
        return seq


class Sealer:
    """Seals frame plaintext into an envelope for a topic under the current uplink key."""

    def __init__(self, master_secret: bytes, gateway_id: str, counter: SequenceCounter) -> None:
        self._counter = counter
        self._master_secret = master_secret
        self._gateway_id = gateway_id
        self._key: SessionKey = derive_session_key(
            master_secret, gateway_id, counter.epoch, Direction.UP
        )

    def rotate(self, epoch: int) -> bool:
        """Seal from `epoch` on (a rotation the sink asked for); False if already there or past.

        Frames sealed before keep their epoch; the sink accepts it for its grace period.
        """
        if epoch <= self._counter.epoch:
            return False
        key = derive_session_key(self._master_secret, self._gateway_id, epoch, Direction.UP)
        # The counter moves first and only once its state is on disk; the key follows. If the
        # write fails, both stay in the old epoch (the error reaches the caller).
        self._counter.start_epoch(epoch)
        self._key = key
        return True

    @property
    def epoch(self) -> int:
        return self._key.epoch

    def seal(self, topic: str, plaintext: bytes) -> tuple[int, bytes]:
        """Return (sequence number, envelope bytes)."""
        seq = self._counter.next()
        return seq, seal(self._key, topic, seq, plaintext, CONTENT_FRAME_V1)

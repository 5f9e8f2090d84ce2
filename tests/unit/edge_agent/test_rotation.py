"""Key rotation at the gateway: the sink's sealed command moves the sealer to a new epoch."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.epochs import rotation_message
from cloud_sink.keyring import Keyring
from edge_agent.protocol import FrameError, open_envelope
from edge_agent.protocol.commands import RotateKeys, decode_command, encode_command
from edge_agent.protocol.settings import write_secret_file
from edge_agent.rotation import RotationRefused, apply_rotation
from edge_agent.sealer import CounterStateError, Sealer, SequenceCounter

GATEWAY = "ward-1"


def _sealer(tmp_path: Path, secret: bytes) -> Sealer:
    return Sealer(secret, GATEWAY, SequenceCounter(tmp_path / "counter.json", reserve_block=4))


def test_a_rotation_moves_sealing_to_the_new_epoch_and_the_sink_opens_both(
    tmp_path: Path,
) -> None:
    secret = os.urandom(32)
    sealer = _sealer(tmp_path, secret)
    old_epoch = sealer.epoch
    _, before = sealer.seal("bt/v1/gw/ward-1/up/telemetry", b"before")
    full_topic, command = rotation_message(secret, GATEWAY, old_epoch + 100)
    assert full_topic == "bt/v1/gw/ward-1/down/keys"
    outcome = apply_rotation(sealer, secret, GATEWAY, full_topic, command)
    assert (outcome.epoch, outcome.applied) == (old_epoch + 100, True)
    seq, after = sealer.seal("bt/v1/gw/ward-1/up/telemetry", b"after")
    assert (sealer.epoch, seq) == (old_epoch + 100, 0)
    keys = tmp_path / "keyring"
    keys.mkdir()
    write_secret_file(keys / "ward-1.key", secret)
    keyring = Keyring(keys)
    topic = "bt/v1/gw/ward-1/up/telemetry"
    assert open_envelope(topic, before, keyring.lookup).plaintext == b"before"
    assert open_envelope(topic, after, keyring.lookup).plaintext == b"after"
    # The new epoch survives a restart: the counter state moved with it.
    reopened = SequenceCounter(tmp_path / "counter.json", reserve_block=4)
    assert reopened.epoch == old_epoch + 100
    assert reopened.next() >= 1


def test_a_replayed_or_stale_command_changes_nothing(tmp_path: Path) -> None:
    secret = os.urandom(32)
    sealer = _sealer(tmp_path, secret)
    epoch = sealer.epoch
    full_topic, first = rotation_message(secret, GATEWAY, epoch + 1)
    _, second = rotation_message(secret, GATEWAY, epoch + 2)
    assert apply_rotation(sealer, secret, GATEWAY, full_topic, second).applied
    assert not apply_rotation(sealer, secret, GATEWAY, full_topic, first).applied
    assert not apply_rotation(sealer, secret, GATEWAY, full_topic, second).applied
    assert sealer.epoch == epoch + 2


def test_a_command_for_another_gateway_or_key_is_refused(tmp_path: Path) -> None:
    secret = os.urandom(32)
    sealer = _sealer(tmp_path, secret)
    full_topic, forged = rotation_message(os.urandom(32), GATEWAY, sealer.epoch + 1)
    with pytest.raises(RotationRefused, match="tag did not verify"):
        apply_rotation(sealer, secret, GATEWAY, full_topic, forged)
    other_topic, other = rotation_message(secret, "ward-2", sealer.epoch + 1)
    with pytest.raises(RotationRefused, match="sealed for gateway 'ward-2'"):
        apply_rotation(sealer, secret, GATEWAY, other_topic, other)
    with pytest.raises(RotationRefused, match="tag did not verify"):
        apply_rotation(sealer, secret, GATEWAY, full_topic.replace("ward-1", "ward-2"), forged)
    tampered = bytearray(rotation_message(secret, GATEWAY, sealer.epoch + 1)[1])
    tampered[-1] ^= 1
    with pytest.raises(RotationRefused):
        apply_rotation(sealer, secret, GATEWAY, full_topic, bytes(tampered))
    assert sealer.epoch == SequenceCounter(tmp_path / "counter.json").epoch  # never moved


def test_epochs_only_move_forward(tmp_path: Path) -> None:
    counter = SequenceCounter(tmp_path / "counter.json")
    with pytest.raises(CounterStateError, match="only move forward"):
        counter.start_epoch(counter.epoch)


def test_command_round_trip() -> None:
    command = RotateKeys(epoch=1_800_000_000, issued_ns=5)
    assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([2, "rotate", 1, 1], "version"),
        ([1, "reboot", 1, 1], "name"),
        ([1, "rotate", -1, 1], "epoch"),
        ([1, "rotate", 2**32, 1], "epoch"),
        ([1, "rotate", 1, -1], "issued_ns"),
        ([1, "rotate", 1], r"\$"),
    ],
)
def test_bad_commands_name_the_field(raw: list[object], field: str) -> None:
    with pytest.raises(FrameError, match=field):
        decode_command(msgpack.packb(raw))


@settings(max_examples=300)
@given(data=st.binary(max_size=64))
def test_random_bytes_raise_only_frame_errors(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_command(data)


def test_a_failed_state_write_leaves_counter_and_key_in_the_old_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = os.urandom(32)
    counter = SequenceCounter(tmp_path / "counter.json", reserve_block=4)
    sealer = Sealer(secret, GATEWAY, counter)
    epoch = sealer.epoch
    seqs = [sealer.seal("t", b"x")[0] for _ in range(2)]

    def disk_full(_epoch: int, _reserved_until: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(counter, "_write_state", disk_full)
    full_topic, command = rotation_message(secret, GATEWAY, epoch + 1)
    with pytest.raises(OSError, match="No space"):
        apply_rotation(sealer, secret, GATEWAY, full_topic, command)
    monkeypatch.undo()
    # Same epoch, same key, and the sequence numbers go on where they were: no nonce repeats.
    seq, envelope = sealer.seal("t", b"y")
    assert (sealer.epoch, counter.epoch) == (epoch, epoch)
    assert seq == seqs[-1] + 1
    keys = tmp_path / "keys"
    keys.mkdir()
    write_secret_file(keys / "ward-1.key", secret)
    assert open_envelope("t", envelope, Keyring(keys).lookup).plaintext == b"y"

"""Key epochs at the sink: rotation raises the floor, the retired range stays open for its grace."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import cloud_sink.keyring as keyring_module
from cloud_sink.epochs import (
    EpochStateError,
    RetiredEpochError,
    read_policy,
    rotate,
    state_file,
)
from cloud_sink.keyring import Keyring
from cloud_sink.pipeline import rejection_reason
from edge_agent.protocol.settings import write_secret_file

GRACE_S = 72 * 3600.0
NOW_S = 1_800_000_000.0


def test_rotation_retires_older_epochs_after_the_grace(tmp_path: Path) -> None:
    epoch = rotate(tmp_path, "ward-1", GRACE_S, now_s=NOW_S)
    assert epoch == int(NOW_S)
    policy = read_policy(state_file(tmp_path, "ward-1"))
    assert policy is not None
    assert policy.floor == epoch
    assert policy.accepts(epoch, NOW_S)
    assert policy.accepts(epoch + 10, NOW_S)  # a counter lost later starts above the floor
    assert policy.accepts(epoch - 1, NOW_S + GRACE_S - 1)  # the spooled backlog still opens
    assert not policy.accepts(epoch - 1, NOW_S + GRACE_S)
    assert stat.S_IMODE(state_file(tmp_path, "ward-1").stat().st_mode) == 0o600


def test_each_rotation_is_a_new_epoch_even_when_the_clock_stands_still(tmp_path: Path) -> None:
    first = rotate(tmp_path, "ward-1", GRACE_S, now_s=NOW_S)
    second = rotate(tmp_path, "ward-1", GRACE_S, now_s=NOW_S)
    assert second == first + 1
    policy = read_policy(state_file(tmp_path, "ward-1"))
    assert policy is not None
    # Both retired ranges are open during their grace: the epoch before the first rotation and
    # the first rotation's own epoch.
    assert policy.accepts(first - 5, NOW_S + 1)
    assert policy.accepts(first, NOW_S + 1)
    assert not policy.accepts(first, NOW_S + GRACE_S + 1)


def test_expired_ranges_are_dropped_at_the_next_rotation(tmp_path: Path) -> None:
    rotate(tmp_path, "ward-1", 10.0, now_s=NOW_S)
    rotate(tmp_path, "ward-1", 10.0, now_s=NOW_S + 100)
    policy = read_policy(state_file(tmp_path, "ward-1"))
    assert policy is not None
    assert len(policy.retired) == 1


def test_keyring_refuses_a_retired_epoch_by_its_own_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyring_module, "REVALIDATE_S", 0.0)
    write_secret_file(tmp_path / "ward-1.key", os.urandom(32))
    keyring = Keyring(tmp_path)
    old_epoch = 1_000
    assert keyring.lookup("ward-1", old_epoch).epoch == old_epoch  # no rotation yet: any epoch
    new_epoch = rotate(tmp_path, "ward-1", grace_s=0.0)
    assert keyring.lookup("ward-1", new_epoch).epoch == new_epoch
    with pytest.raises(RetiredEpochError, match="retired by a key rotation") as refused:
        keyring.lookup("ward-1", old_epoch)  # cached key, but the policy is checked every time
    assert rejection_reason(refused.value) == "epoch_retired"


def test_keyring_keeps_the_old_epoch_during_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyring_module, "REVALIDATE_S", 0.0)
    write_secret_file(tmp_path / "ward-1.key", os.urandom(32))
    keyring = Keyring(tmp_path)
    rotate(tmp_path, "ward-1", GRACE_S)
    assert keyring.lookup("ward-1", 1_000).epoch == 1_000


@pytest.mark.parametrize("content", ["{not json", '{"version": 9}', '{"version": 1, "floor": 3}'])
def test_a_corrupt_state_file_refuses_the_gateway_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    monkeypatch.setattr(keyring_module, "REVALIDATE_S", 0.0)
    write_secret_file(tmp_path / "ward-1.key", os.urandom(32))
    state_file(tmp_path, "ward-1").write_text(content, encoding="utf-8")
    with pytest.raises(EpochStateError, match=r"ward-1\.epochs"):
        Keyring(tmp_path).lookup("ward-1", 5)
    with pytest.raises(EpochStateError, match="rotate again"):
        rotate(tmp_path, "ward-1", GRACE_S)

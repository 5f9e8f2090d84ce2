"""The keyring follows its files: a removed key is refused, a replaced key is reloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cloud_sink.keyring as keyring_module
from cloud_sink.keyring import Keyring
from edge_agent.protocol import UnknownKeyError
from edge_agent.protocol.settings import write_secret_file


def test_revocation_and_re_enrolment_take_effect_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyring_module, "REVALIDATE_S", 0.0)
    monkeypatch.setattr(keyring_module, "NEGATIVE_CACHE_S", 0.0)
    path = tmp_path / "ward-1.key"
    write_secret_file(path, os.urandom(32))
    keyring = Keyring(tmp_path)
    first = keyring.lookup("ward-1", 5).key
    assert keyring.lookup("ward-1", 5).key == first  # cached while the file is unchanged
    path.unlink()  # `cloud-sink gateways revoke`
    with pytest.raises(UnknownKeyError, match="not enrolled"):
        keyring.lookup("ward-1", 5)
    write_secret_file(path, os.urandom(32))  # enrolled again, with a new secret
    assert keyring.lookup("ward-1", 5).key != first

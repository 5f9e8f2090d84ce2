"""The sink's keyring: gateway master secrets on disk (0600), keys derived per (gateway, epoch)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Final

from cloud_sink.epochs import EpochPolicy, check_epoch, read_policy, state_file
from edge_agent.protocol import Direction, SessionKey, UnknownKeyError, derive_session_key
from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import SettingsError, read_secret_file
from edge_agent.protocol.topics import GATEWAY_ID_RE

_LOGGER = logging.getLogger(__name__)
NEGATIVE_CACHE_S: Final = 5.0
REVALIDATE_S: Final = 1.0
"""How often a cached secret is checked against its file: a revoked gateway (its file moved
away by `cloud-sink gateways revoke`) is refused within this long, without a restart."""


class Keyring:
    """Looks up uplink keys by (gateway id, epoch). Secrets are `<dir>/<gateway_id>.key` (hex).

    A new gateway's file is picked up without a restart; a gateway with no file is refused
    (and re-checked at most every few seconds, so garbage cannot make us hammer the disk). A
    cached secret is checked against its file at most every REVALIDATE_S: a file removed or
    replaced (revocation, re-enrolment) drops the secret and every key derived from it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._secrets: dict[str, bytes] = {}
        self._keys: dict[tuple[str, int], SessionKey] = {}
        self._misses: dict[str, float] = {}
        self._stamps: dict[str, tuple[float, int, int]] = {}
        """Per gateway: when its file was last checked, and the file's (inode, mtime_ns)."""
        self._policies: dict[str, tuple[float, EpochPolicy | None]] = {}
        """Per gateway: its epoch policy (cloud_sink.epochs) and when it was read."""

    def _policy(self, gateway_id: str) -> EpochPolicy | None:
        """The gateway's epoch policy, re-read at most every REVALIDATE_S (a rotation made by
        `cloud-sink gateways rotate` in another process is seen within that long)."""
        now = time.monotonic()
        cached = self._policies.get(gateway_id)
        if cached is not None and now - cached[0] < REVALIDATE_S:
            return cached[1]
        policy = read_policy(state_file(self.directory, gateway_id))
        self._policies[gateway_id] = (now, policy)
        return policy

    def _file_stamp(self, gateway_id: str) -> tuple[int, int] | None:
        try:
            stat = (self.directory / f"{gateway_id}.key").stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def _revalidate(self, gateway_id: str) -> None:
        now = time.monotonic()
        checked = self._stamps.get(gateway_id)
        if checked is None or now - checked[0] < REVALIDATE_S:
            return
        stamp = self._file_stamp(gateway_id)
        if stamp == checked[1:]:
            self._stamps[gateway_id] = (now, *checked[1:])
            return
        # Revoked (the file is gone) or enrolled again (a new file): forget what we derived.
        self._secrets.pop(gateway_id, None)
        self._stamps.pop(gateway_id, None)
        for key in [key for key in self._keys if key[0] == gateway_id]:
            del self._keys[key]
        _LOGGER.warning("keyring: the key file of gateway %s changed; reloading it", gateway_id)

    def _secret(self, gateway_id: str) -> bytes:
        secret = self._secrets.get(gateway_id)
        if secret is not None:
            return secret
        if not GATEWAY_ID_RE.fullmatch(gateway_id):
            msg = f"gateway id {gateway_id!r} is not a valid id"
            raise UnknownKeyError(msg)
        missed_at = self._misses.get(gateway_id)
        if missed_at is not None and time.monotonic() - missed_at < NEGATIVE_CACHE_S:
            msg = f"gateway {gateway_id!r} is not enrolled"
            raise UnknownKeyError(msg)
        path = self.directory / f"{gateway_id}.key"
        if not path.exists():
            self._misses[gateway_id] = time.monotonic()
            msg = f"gateway {gateway_id!r} is not enrolled"
            raise UnknownKeyError(msg)
        try:
            secret = read_secret_file(path, MASTER_SECRET_BYTES)
        except SettingsError as exc:
            self._misses[gateway_id] = time.monotonic()
            _LOGGER.exception("keyring file for gateway %s refused: %s", gateway_id, exc.why)
            msg = f"gateway {gateway_id!r} key file is unusable"
            raise UnknownKeyError(msg) from exc
        self._secrets[gateway_id] = secret
        stamp = self._file_stamp(gateway_id)
        if stamp is not None:
            self._stamps[gateway_id] = (time.monotonic(), *stamp)
        return secret

    def lookup(self, gateway_id: str, epoch: int) -> SessionKey:
        """The uplink key for (gateway, epoch); raises UnknownKeyError when there is none, and
        RetiredEpochError when a rotation retired the epoch and its grace has ended."""
        self._revalidate(gateway_id)
        key = self._keys.get((gateway_id, epoch))
        if key is None:
            key = derive_session_key(self._secret(gateway_id), gateway_id, epoch, Direction.UP)
            self._keys[(gateway_id, epoch)] = key
        # Only an enrolled gateway gets here (the secret lookup refused anything else).
        policy = self._policy(gateway_id)
        if policy is not None and epoch < policy.floor:
            check_epoch(policy, gateway_id, epoch, time.time())
        return key

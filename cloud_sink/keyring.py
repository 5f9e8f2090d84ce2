"""The sink's keyring: gateway master secrets on disk (0600), keys derived per (gateway, epoch)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Final

from edge_agent.protocol import Direction, SessionKey, UnknownKeyError, derive_session_key
from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import SettingsError, read_secret_file
from edge_agent.protocol.topics import GATEWAY_ID_RE

_LOGGER = logging.getLogger(__name__)
NEGATIVE_CACHE_S: Final = 5.0


class Keyring:
    """Looks up uplink keys by (gateway id, epoch). Secrets are `<dir>/<gateway_id>.key` (hex).

    A new gateway's file is picked up without a restart; a gateway with no file is refused
    (and re-checked at most every few seconds, so garbage cannot make us hammer the disk).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._secrets: dict[str, bytes] = {}
        self._keys: dict[tuple[str, int], SessionKey] = {}
        self._misses: dict[str, float] = {}

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
        return secret

    def lookup(self, gateway_id: str, epoch: int) -> SessionKey:
        """The uplink key for (gateway, epoch); raises UnknownKeyError when there is none."""
        key = self._keys.get((gateway_id, epoch))
        if key is None:
            key = derive_session_key(self._secret(gateway_id), gateway_id, epoch, Direction.UP)
            self._keys[(gateway_id, epoch)] = key
        return key

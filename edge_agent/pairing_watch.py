"""The running agent follows the pairing registry: devices paired or unpaired take effect live.

`edge-agent pair add/remove` change `state_dir/registry.json` while the agent runs (a separate
process). The agent reads the file every few seconds (a few kilobytes) and, when its digest
changed, parses it again and reconciles: a confirmed new binding gets its source (a BLE link
added to the running BleManager, or a serial source of its own), an ended one has its source
stopped, after whatever it queued was emitted. Bindings still `pending` (pair add is proving the
device) are left alone, so the agent and pair add never contend for one device. Sources the agent
was given otherwise ([[serial]] sections, simulated devices) are not the watcher's.

Tokens key everything: binding a device again mints a new device token, so a re-bound device is
one source stopped and one started, and readings of two patients never share a source.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edge_agent.hardware import Hardware, bonded_device, serial_source
from edge_agent.registry import Binding, Registry, RegistryError
from edge_agent.sources import Source
from edge_agent.sources.ble import BleManager

_LOGGER = logging.getLogger(__name__)

POLL_INTERVAL_S: Final = 2.0
"""How soon a pairing change reaches the running agent (a stat of one file per poll)."""


@dataclass(slots=True)
class SourceChanges:
    """What the pipeline must start and stop after a reconcile (BLE links change in place)."""

    start: list[Source] = field(default_factory=list)
    stop: list[Source] = field(default_factory=list)
    added: int = 0
    released: list[str] = field(default_factory=list)
    """Device tokens let go: the detection stage stops expecting them."""


def _digest(path: Path) -> bytes | None:
    """The file's SHA-256 (None: no file). Not its mtime: two changes within one clock tick of
    the file system, same size, reused inode, would look like none."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"{path}: cannot read the device registry: {exc.strerror}"
        raise RegistryError(msg) from exc


class PairingWatcher:
    """The registry's devices as running sources, kept in step with the file."""

    def __init__(self, registry_path: Path, master_secret: bytes, hardware: Hardware) -> None:
        self._path = registry_path
        self._master_secret = master_secret
        self._hardware = hardware
        self._seen: bytes | None = None
        self._ble: BleManager | None = None
        self._ble_tokens: set[str] = set()
        self._serial: dict[str, Source] = {}
        self.reload_failures = 0

    def initial_sources(self) -> list[Source]:
        """The sources of the registry as it is now (raises RegistryError if it is unreadable)."""
        self._seen = _digest(self._path)
        bindings = Registry(self._path, self._master_secret).in_service()
        changes = self._apply_adds(bindings)
        return changes.start

    def read_if_changed(self) -> list[Binding] | None:
        """The in-service bindings when the file changed since the last look, else None.

        Blocking file IO: the pipeline calls it in a worker thread. An unreadable registry is
        logged and counted, and the agent keeps the devices it has."""
        try:
            digest = _digest(self._path)
            if digest == self._seen:
                return None
            # Looked at once per change of the file: a broken one is reported once, not per poll.
            self._seen = digest
            return Registry(self._path, self._master_secret).in_service()
        except RegistryError as exc:
            self.reload_failures += 1
            _LOGGER.warning("pairing registry not reloaded, the devices stay as they were: %s", exc)
            return None

    async def reconcile(self, bindings: list[Binding]) -> SourceChanges:
        """Bring the sources in step with `bindings` (on the event loop)."""
        wanted = {binding.device_token for binding in bindings}
        changes = SourceChanges()
        for token in sorted(self._ble_tokens - wanted):
            assert self._ble is not None  # noqa: S101 -- a BLE token implies its manager
            await self._ble.remove(token)
            self._ble_tokens.discard(token)
            changes.released.append(token)
        if self._ble is not None and not self._ble_tokens:
            # Its last device went: the manager (and its scanner) stop with it.
            changes.stop.append(self._ble)
            self._ble = None
        for token in sorted(set(self._serial) - wanted):
            changes.stop.append(self._serial.pop(token))
            changes.released.append(token)
        added = self._apply_adds(bindings)
        changes.start.extend(added.start)
        changes.added = added.added
        return changes

    def _apply_adds(self, bindings: list[Binding]) -> SourceChanges:
        changes = SourceChanges()
        known = self._ble_tokens | set(self._serial)
        for binding in bindings:
            if binding.device_token in known:
                continue
            changes.added += 1
            if binding.transport == "serial":
                source = serial_source(binding)
                self._serial[binding.device_token] = source
                changes.start.append(source)
                continue
            device = bonded_device(binding)
            if self._ble is None:
                self._ble = BleManager(
                    [device],
                    client_backend=self._hardware.client_backend,
                    scanner_backend=self._hardware.scanner_backend,
                )
                changes.start.append(self._ble)
            else:
                self._ble.add(device)
            self._ble_tokens.add(binding.device_token)
        return changes


def describe(changes: SourceChanges) -> str:
    """For the log: counts only (device tokens are pseudonyms, addresses never appear)."""
    return f"{changes.added} device(s) paired, {len(changes.released)} released"

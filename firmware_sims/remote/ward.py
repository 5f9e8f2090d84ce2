"""The agent's handle on a simulated ward served by another process (`firmware-sims ward`).

It gives the agent what `SimulatedWard` gives it in one process: the sources that read the
ward through the agent's own BLE and serial code (`sources`), the ports of unbound devices for
pairing, and `quiesce` before a stop. The ward's devices send only once the agent holds their
port, so this handle tells the ward when each serial source has opened its port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError

from edge_agent.sources import Source
from edge_agent.sources.ble import BleManager, BleSettings, BondedDevice
from edge_agent.sources.serial import SerialKind, SerialSource
from firmware_sims.remote.radio import WardConnection, remote_backends
from firmware_sims.remote.wire import WardLinkError

_LOGGER = logging.getLogger(__name__)
_PORT_POLL_S: Final = 0.02
_CONNECT_POLL_S: Final = 0.1
# What the agent gives the ward to stop its devices and let their last values arrive; the ward
# itself waits at most 10 s for its serial ports to be read.
QUIESCE_TIMEOUT_S: Final = 10.0
_QUIESCE_SETTLE_S: Final = 0.02
# The ward's own flush of its sockets after the quiesce (server._FLUSH_TIMEOUT_S) and slack.
_QUIESCE_MARGIN_S: Final = 10.0


@dataclass(slots=True, frozen=True)
class RemoteSerial:
    """A serial device of the remote ward: its pty path and whom it reports for ("" unbound)."""

    label: str
    kind: SerialKind
    path: Path
    device_token: str
    patient_token: str


@dataclass(slots=True, frozen=True)
class RemoteBed:
    index: int
    devices: tuple[BondedDevice, ...]


@dataclass(slots=True, frozen=True)
class WardManifest:
    beds: tuple[RemoteBed, ...]
    serial: tuple[RemoteSerial, ...]

    @classmethod
    def parse(cls, raw: object) -> WardManifest:
        """The manifest a ward sent; anything malformed raises WardLinkError."""
        try:
            return cls._parse(raw)
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"the ward's manifest is malformed ({type(exc).__name__}: {exc})"
            raise WardLinkError(msg) from exc

    @classmethod
    def _parse(cls, raw: Any) -> WardManifest:
        beds = tuple(
            RemoteBed(
                index=_typed(bed["bed"], int),
                devices=tuple(
                    BondedDevice(
                        address=_typed(device["address"], str),
                        device_token=_typed(device["device"], str),
                        patient_token=_typed(bed["patient"], str),
                        device_kind=_typed(device["kind"], str),
                        expected_interval_s=float(_typed(device["interval_s"], (int, float))),
                    )
                    for device in _typed(bed["devices"], list)
                ),
            )
            for bed in _typed(raw["beds"], list)
        )
        serial = tuple(
            RemoteSerial(
                label=_typed(entry["label"], str),
                kind=SerialKind(_typed(entry["kind"], str)),
                path=Path(_typed(entry["path"], str)),
                device_token=_typed(entry["device"], str),
                patient_token=_typed(entry["patient"], str),
            )
            for entry in _typed(raw["serial"], list)
        )
        return cls(beds, serial)


def ward_sources(
    manifest: WardManifest,
    client_backend: type[BaseBleakClient],
    scanner_backend: type[BaseBleakScanner],
    ble_settings: BleSettings | None = None,
) -> tuple[list[Source], dict[str, SerialSource]]:
    """The agent's real sources for a ward: a BleManager per bed (one adapter per bed) and a
    SerialSource per bound serial device; also those serial sources by label."""
    sources: list[Source] = [
        BleManager(
            list(bed.devices),
            settings=ble_settings,
            client_backend=client_backend,
            scanner_backend=scanner_backend,
            name=f"ble-bed{bed.index:02d}",
        )
        for bed in manifest.beds
    ]
    readers: dict[str, SerialSource] = {}
    for sim in manifest.serial:
        if not sim.patient_token:
            continue  # a bench device: read only once the registry binds it
        reader = SerialSource(
            sim.label,
            sim.path,
            sim.kind,
            device_token=sim.device_token,
            patient_token=sim.patient_token,
        )
        readers[sim.label] = reader
        sources.append(reader)
    return sources, readers


def _typed(value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        msg = f"expected {kind}, got {type(value).__name__}"
        raise TypeError(msg)
    return value


class RemoteWard:
    """A connected ward: backends bound to its socket, its manifest and its control line."""

    def __init__(self, socket_path: Path, control: WardConnection, manifest: WardManifest) -> None:
        self.manifest = manifest
        self._control = control
        client, scanner = remote_backends(socket_path)
        self.client_backend: type[BaseBleakClient] = client
        self.scanner_backend: type[BaseBleakScanner] = scanner
        self._readers: dict[str, SerialSource] | None = None  # once `sources` built them

    @property
    def unbound_ports(self) -> list[Path]:
        """The ports of devices on the bench, for pairing through the registry."""
        return [sim.path for sim in self.manifest.serial if not sim.patient_token]

    def sources(self, ble_settings: BleSettings | None = None) -> list[Source]:
        """The agent's real sources, pointed at the remote ward (as SimulatedWard.sources)."""
        sources, self._readers = ward_sources(
            self.manifest, self.client_backend, self.scanner_backend, ble_settings
        )
        return sources

    async def announce_open_ports(self) -> None:
        """Tell the ward each port the agent opened, so that device starts sending; ends once
        every serial source `sources` built has been announced."""
        announced: set[str] = set()
        while self._readers is None or len(announced) < len(self._readers):
            for label, reader in (self._readers or {}).items():
                if label not in announced and reader.is_open:
                    try:
                        await self._control.request("port_open", label)
                    except (BleakError, WardLinkError) as exc:
                        # The ward is gone; the agent goes on (its sources see the ports go).
                        _LOGGER.warning("simulated ward: cannot announce open ports: %s", exc)
                        return
                    announced.add(label)
            await asyncio.sleep(_PORT_POLL_S)

    async def quiesce(self, timeout_s: float = QUIESCE_TIMEOUT_S) -> None:
        """Stop the ward's devices and wait until what they sent is with this process."""
        # Bounded: a hung ward must not keep the agent from stopping (its caller logs this).
        async with asyncio.timeout(timeout_s + _QUIESCE_MARGIN_S):
            await self._control.request("quiesce", timeout_s)
        # The ward answers once its sockets are flushed: let the loop read what is in flight.
        await asyncio.sleep(_QUIESCE_SETTLE_S)


@contextlib.asynccontextmanager
async def remote_ward(socket_path: Path, wait_s: float) -> AsyncIterator[RemoteWard]:
    """Connect to the ward at `socket_path` (waiting up to `wait_s` for it to listen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            control = await WardConnection.open(socket_path)
            break
        except OSError as exc:
            if loop.time() > deadline:
                msg = (
                    f"no simulated ward listens on {socket_path} ({exc.strerror}): start "
                    "`firmware-sims ward --config` with this config first"
                )
                raise WardLinkError(msg) from exc
            await asyncio.sleep(_CONNECT_POLL_S)
    try:
        manifest = WardManifest.parse(await control.request("manifest"))
        ward = RemoteWard(socket_path, control, manifest)
        async with asyncio.TaskGroup() as group:
            announcing = group.create_task(ward.announce_open_ports(), name="sims.remote.ports")
            try:
                yield ward
            finally:
                announcing.cancel()
    finally:
        control.close()

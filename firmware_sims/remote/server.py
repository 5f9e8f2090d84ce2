"""The simulated ward served on a unix socket, so the agent reading it runs in its own process.

Every connection is one of: a BLE link (`connect` ... `disconnect`), a scanner (`scan`), or the
ward's control line (`manifest`, `port_open`, `quiesce`). The server drives the very same
in-process radio (`SimulatedRadio.client_backend`/`scanner_backend`) on the agent's behalf, so
scripted faults, link drops and the ground-truth ledger behave exactly as in one process; a
value counts as delivered once it is handed to the agent's socket, as a real one is once the
gateway's Bluetooth stack has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from firmware_sims.ble.backend import (
    SimulatedClientBackend,
    SimulatedRadio,
    SimulatedScannerBackend,
)
from firmware_sims.remote.wire import (
    ADVERT,
    LINK_LOST,
    NOTIFY,
    REPLY,
    MessageReader,
    WardLinkError,
    check_socket_path,
    encode_error,
    gatt_spec,
    pack,
)
from firmware_sims.ward import SimulatedWard

_LOGGER = logging.getLogger(__name__)
_FLUSH_POLL_S: Final = 0.005
_FLUSH_TIMEOUT_S: Final = 5.0
# An agent waits for each answer before it asks again; one that queues this many is broken.
_MAX_QUEUED_REQUESTS: Final = 256


class _Session(asyncio.Protocol):
    """One connection: requests are served in order of arrival, each answered by its id."""

    def __init__(self, server: WardServer) -> None:
        self._server = server
        self._reader = MessageReader()
        self._transport: asyncio.Transport | None = None
        self._requests: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._client: SimulatedClientBackend | None = None
        self._scanner: SimulatedScannerBackend | None = None

    @property
    def pending_bytes(self) -> int:
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0
        return transport.get_write_buffer_size()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server
        self._transport = transport
        self._server.sessions.add(self)
        self._worker = self._server.spawn(self._serve(), "sims.remote.session")

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except WardLinkError as exc:
            _LOGGER.warning("ward socket: dropping a connection that sent garbage: %s", exc)
            self.close()
            return
        if self._requests.qsize() + len(messages) > _MAX_QUEUED_REQUESTS:
            _LOGGER.warning("ward socket: dropping a connection that does not wait for answers")
            self.close()
            return
        for message in messages:
            self._requests.put_nowait(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.sessions.discard(self)
        self._transport = None
        if self._worker is not None:
            self._worker.cancel()
        # The agent went away: its link ends as a central's would, its scanner stops.
        self._server.spawn(self._release(), "sims.remote.release")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _send(self, message: list[object]) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(pack(message))

    async def _serve(self) -> None:
        while True:
            request = await self._requests.get()
            match request:
                case [int(request_id), str(op), *args]:
                    try:
                        result = await self._dispatch(op, args)
                    except Exception as exc:
                        # The agent gets the radio's own exception type (bleak's), or a ward
                        # failure naming what went wrong; the session serves on.
                        self._send([REPLY, request_id, encode_error(exc), None])
                    else:
                        self._send([REPLY, request_id, None, result])
                case _:
                    _LOGGER.warning("ward socket: dropping a connection with a malformed request")
                    self.close()
                    return

    async def _dispatch(self, op: str, args: list[Any]) -> object:
        handler = self._handlers.get(op)
        if handler is None:
            msg = f"unknown request {op!r}"
            raise WardLinkError(msg)
        return await handler(self, *args)

    # --- a BLE link ----------------------------------------------------------------------------

    async def _connect(self, address: str, timeout_s: float) -> list[object]:
        if self._client is not None:
            msg = "this connection already holds a link; open another"
            raise WardLinkError(msg)
        server = self._server
        client = server.client_backend(
            address, disconnected_callback=self._link_lost, timeout=float(timeout_s)
        )
        await client.connect(pair=False)
        self._client = client
        peripheral = server.radio.peripheral(address)
        assert peripheral is not None  # noqa: S101 - connect() found it
        return [peripheral.local_name, gatt_spec(peripheral.services)]

    def _link_lost(self) -> None:
        self._client = None
        self._send([LINK_LOST])

    def _linked(self) -> SimulatedClientBackend:
        if self._client is None:
            msg = "Not connected"
            raise BleakError(msg)
        return self._client

    def _characteristic(self, uuid: str) -> BleakGATTCharacteristic:
        client = self._linked()
        char = client.services.get_characteristic(uuid) if client.services else None
        if char is None:
            msg = f"no characteristic {uuid} on this device"
            raise BleakError(msg)
        return char

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.disconnect()

    async def _start_notify(self, uuid: str) -> None:
        char = self._characteristic(uuid)
        await self._linked().start_notify(char, functools.partial(self._notify, char.uuid))

    def _notify(self, uuid: str, value: bytearray) -> None:
        self._send([NOTIFY, uuid, bytes(value)])

    async def _stop_notify(self, uuid: str) -> None:
        await self._linked().stop_notify(self._characteristic(uuid))

    async def _read(self, uuid: str) -> bytes:
        return bytes(await self._linked().read_gatt_char(self._characteristic(uuid)))

    async def _write(self, uuid: str, data: bytes, response: bool) -> None:
        await self._linked().write_gatt_char(self._characteristic(uuid), data, bool(response))

    async def _read_descriptor(self, char_uuid: str, descriptor_uuid: str) -> bytes:
        descriptor = self._characteristic(char_uuid).get_descriptor(descriptor_uuid)
        if descriptor is None:
            msg = f"no descriptor {descriptor_uuid} on {char_uuid}"
            raise BleakError(msg)
        return bytes(await self._linked().read_gatt_descriptor(descriptor))

    async def _write_descriptor(self, char_uuid: str, descriptor_uuid: str, data: bytes) -> None:
        descriptor = self._characteristic(char_uuid).get_descriptor(descriptor_uuid)
        if descriptor is None:
            msg = f"no descriptor {descriptor_uuid} on {char_uuid}"
            raise BleakError(msg)
        await self._linked().write_gatt_descriptor(descriptor, data)

    # --- a scanner -----------------------------------------------------------------------------

    async def _scan(self, service_uuids: list[str] | None) -> None:
        if self._scanner is not None:
            msg = "this connection already scans"
            raise WardLinkError(msg)
        scanner = self._server.scanner_backend(self._advert, service_uuids)
        await scanner.start()
        self._scanner = scanner

    def _advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._send([ADVERT, device.address, adv.local_name, adv.service_uuids, adv.rssi])

    async def _scan_stop(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            await scanner.stop()

    # --- the ward ------------------------------------------------------------------------------

    async def _manifest(self) -> dict[str, object]:
        return self._server.require_ward().manifest()

    async def _port_open(self, label: str) -> None:
        self._server.require_ward().port_opened(label)

    async def _quiesce(self, timeout_s: float) -> None:
        await self._server.quiesce(float(timeout_s))

    async def _release(self) -> None:
        with contextlib.suppress(BleakError):
            await self._disconnect()
        with contextlib.suppress(BleakError):
            await self._scan_stop()

    _handlers: Final[dict[str, Callable[..., Awaitable[object]]]] = {
        "connect": _connect,
        "disconnect": _disconnect,
        "start_notify": _start_notify,
        "stop_notify": _stop_notify,
        "read": _read,
        "write": _write,
        "read_descriptor": _read_descriptor,
        "write_descriptor": _write_descriptor,
        "scan": _scan,
        "scan_stop": _scan_stop,
        "manifest": _manifest,
        "port_open": _port_open,
        "quiesce": _quiesce,
    }


class WardServer:
    """Serves a running radio (and the ward it belongs to, for the control requests) on
    `socket_path`, mode 0600, until `serve` is cancelled."""

    def __init__(
        self, radio: SimulatedRadio, socket_path: Path, ward: SimulatedWard | None = None
    ) -> None:
        self.radio = radio
        self.ward = ward
        self.socket_path = socket_path
        # Taken now: the radio's own in-process backends are what this server drives.
        self.client_backend = radio.client_backend
        self.scanner_backend = radio.scanner_backend
        self.sessions: set[_Session] = set()
        self._group: asyncio.TaskGroup | None = None

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run `work` in the server's task group; dropped once the server is stopping."""
        group = self._group
        if group is not None:
            wrapped = _quietly(work)
            try:
                return group.create_task(wrapped, name=name)
            except RuntimeError:  # the group is shutting down
                wrapped.close()
        work.close()
        return None

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Listen until cancelled; `ready` runs once the socket accepts connections."""
        path = check_socket_path(str(self.socket_path))
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()  # a previous ward's, left by a kill
        loop = asyncio.get_running_loop()
        old_umask = os.umask(0o177)  # the socket is born 0600: only this user's agent connects
        try:
            server = await loop.create_unix_server(lambda: _Session(self), path)
        finally:
            os.umask(old_umask)
        try:
            async with server, asyncio.TaskGroup() as group:
                self._group = group
                if ready is not None:
                    ready()
                await asyncio.Event().wait()
        finally:
            self._group = None
            for session in list(self.sessions):
                session.close()  # its central sees the link go, as when the ward process ends
            self.socket_path.unlink(missing_ok=True)

    def require_ward(self) -> SimulatedWard:
        if self.ward is None:
            msg = "this server serves a radio without a ward"
            raise WardLinkError(msg)
        return self.ward

    async def quiesce(self, timeout_s: float) -> None:
        """The ward's quiesce, then until every value sent is out of this process's buffers."""
        await self.require_ward().quiesce(timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FLUSH_TIMEOUT_S
        while any(session.pending_bytes for session in self.sessions):
            if loop.time() > deadline:
                _LOGGER.warning("ward socket: values still buffered for a slow agent at quiesce")
                return
            await asyncio.sleep(_FLUSH_POLL_S)


async def _quietly(work: Awaitable[None]) -> None:
    # A session ending (its agent gone) must not take the server's task group down with it.
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        _LOGGER.exception("ward socket: a session failed")

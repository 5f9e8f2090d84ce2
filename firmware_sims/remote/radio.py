"""bleak backends for a simulated ward in another process (the central's side of the socket).

`remote_backends(path)` gives a client and a scanner backend class bound to a ward socket, for
`BleakClient(..., backend=...)` and `BleakScanner(..., backend=...)` exactly as
`SimulatedRadio.client_backend` is used in one process. Each link and each scanner is a
connection of its own; notifications arrive as the socket is read, on the event loop, as
bleak's BlueZ backend delivers them from D-Bus.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError

from firmware_sims.ble.backend import ATT_DEFAULT_MTU, gatt_collection
from firmware_sims.remote.wire import (
    ADVERT,
    LINK_LOST,
    NOTIFY,
    REPLY,
    MessageReader,
    WardLinkError,
    check_socket_path,
    decode_error,
    pack,
    services_from_spec,
)

_LOGGER = logging.getLogger(__name__)
_PUSHES: Final = frozenset({NOTIFY, ADVERT, LINK_LOST})


class WardConnection(asyncio.Protocol):
    """One connection to the ward: requests answered by id, and what the ward pushes."""

    def __init__(
        self,
        address: str,
        on_push: Callable[[list[Any]], None] | None = None,
        on_closed: Callable[[WardConnection], None] | None = None,
    ) -> None:
        self._address = address  # for the exceptions a ward error becomes; never logged
        self._on_push = on_push
        self._on_closed = on_closed
        self._reader = MessageReader()
        self._transport: asyncio.Transport | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}

    @classmethod
    async def open(
        cls,
        socket_path: Path,
        address: str = "",
        on_push: Callable[[list[Any]], None] | None = None,
        on_closed: Callable[[WardConnection], None] | None = None,
    ) -> WardConnection:
        """Connect; OSError when no ward listens there (the agent treats it as a link error)."""
        loop = asyncio.get_running_loop()
        path = check_socket_path(str(socket_path))
        _transport, connection = await loop.create_unix_connection(
            lambda: cls(address, on_push, on_closed), path
        )
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream connection
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
            for message in messages:
                self._dispatch(message)
        except WardLinkError as exc:
            _LOGGER.warning("simulated ward: closing a connection that broke the protocol: %s", exc)
            self.close()

    def _dispatch(self, message: list[Any]) -> None:
        kind = message[0]
        if kind in _PUSHES:
            if self._on_push is None:
                msg = "a push on a connection that takes none"
                raise WardLinkError(msg)
            self._on_push(message)
            return
        if kind != REPLY or len(message) != 4 or type(message[1]) is not int:
            msg = f"unknown ward message {message!r:.80}"
            raise WardLinkError(msg)
        _, request_id, error, result = message
        future = self._pending.pop(request_id, None)
        if future is None or future.done():
            return  # its requester gave up (a timeout) before the answer came
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(decode_error(error, self._address))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(BleakError("the simulated ward closed the connection"))
        if self._on_closed is not None:
            self._on_closed(self)

    async def request(self, op: str, *args: object) -> Any:
        transport = self._transport
        if transport is None or transport.is_closing():
            msg = "the simulated ward connection is closed"
            raise BleakError(msg)
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        transport.write(pack([request_id, op, *args]))
        return await future

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class RemoteClientBackend(BaseBleakClient):
    """bleak client backend: one link to a peripheral of a ward served on a socket."""

    bound_socket: ClassVar[Path | None] = None

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._connection: WardConnection | None = None
        self._callbacks: dict[str, NotifyCallback] = {}
        self._name = self.address.replace(":", "-")

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        socket_path = self.bound_socket
        if socket_path is None:
            msg = f"{type(self).__name__} is not bound to a ward socket: use remote_backends()"
            raise BleakError(msg)
        connection = await WardConnection.open(
            socket_path, self.address, self._on_push, self._on_closed
        )
        try:
            name, spec = await connection.request("connect", self.address, self._timeout)
            self.services = gatt_collection(services_from_spec(spec))
        except BaseException:
            connection.close()
            raise
        self._name = str(name)
        self._connection = connection

    def _on_closed(self, connection: WardConnection) -> None:
        # The ward process went away: for the central that is a link lost.
        if self._connection is connection:
            self._lost()

    def _on_push(self, message: list[Any]) -> None:
        if message[0] == NOTIFY and len(message) == 3 and type(message[2]) is bytes:
            callback = self._callbacks.get(message[1])
            if callback is not None:
                callback(bytearray(message[2]))
        elif message == [LINK_LOST]:
            self._lost()
        else:
            msg = f"a link takes notifications and link loss only, got {message!r:.80}"
            raise WardLinkError(msg)

    def _lost(self) -> None:
        connection, self._connection = self._connection, None
        self._callbacks.clear()
        if connection is not None:
            connection.close()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _linked(self) -> WardConnection:
        if self._connection is None:
            msg = "Not connected"
            raise BleakError(msg)
        return self._connection

    async def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._callbacks.clear()
        if connection is None:
            return
        try:
            await connection.request("disconnect")
        finally:
            connection.close()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Simulated devices are bonded already."""

    async def unpair(self) -> None:
        """Simulated devices stay bonded."""

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._linked().request("read", characteristic.uuid))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        value = await self._linked().request(
            "read_descriptor", descriptor.characteristic_uuid, descriptor.uuid
        )
        return bytearray(value)

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        await self._linked().request("write", characteristic.uuid, bytes(data), response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        await self._linked().request(
            "write_descriptor", descriptor.characteristic_uuid, descriptor.uuid, bytes(data)
        )

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        connection = self._linked()
        # Registered first: the ward may notify as soon as it has subscribed.
        self._callbacks[characteristic.uuid] = callback
        try:
            await connection.request("start_notify", characteristic.uuid)
        except BaseException:
            self._callbacks.pop(characteristic.uuid, None)
            raise

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        await self._linked().request("stop_notify", characteristic.uuid)
        self._callbacks.pop(characteristic.uuid, None)


class RemoteScannerBackend(BaseBleakScanner):
    """bleak scanner backend hearing the advertisements of a ward served on a socket."""

    bound_socket: ClassVar[Path | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._service_uuids = service_uuids
        self._connection: WardConnection | None = None
        self.advertisements_heard = 0

    async def start(self) -> None:
        socket_path = self.bound_socket
        if socket_path is None:
            msg = f"{type(self).__name__} is not bound to a ward socket: use remote_backends()"
            raise BleakError(msg)
        self.seen_devices = {}
        connection = await WardConnection.open(socket_path, on_push=self._on_push)
        try:
            await connection.request("scan", self._service_uuids)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    async def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.request("scan_stop")
        finally:
            connection.close()

    def _on_push(self, message: list[Any]) -> None:
        match message:
            case [kind, str(address), name, list(uuids), int(rssi)] if kind == ADVERT:
                self.advertisements_heard += 1
                adv = AdvertisementData(
                    local_name=name if isinstance(name, str) else None,
                    manufacturer_data={},
                    service_data={},
                    service_uuids=[str(uuid) for uuid in uuids],
                    tx_power=None,
                    rssi=rssi,
                    platform_data=(),
                )
                device = self.create_or_update_device(address, address, adv.local_name, None, adv)
                self.call_detection_callbacks(device, adv)
            case _:
                msg = f"a scanner takes advertisements only, got {message!r:.80}"
                raise WardLinkError(msg)


def remote_backends(
    socket_path: Path,
) -> tuple[type[RemoteClientBackend], type[RemoteScannerBackend]]:
    """Client and scanner backend classes bound to the ward at `socket_path`."""

    class _BoundClient(RemoteClientBackend):
        bound_socket: ClassVar[Path | None] = socket_path

    class _BoundScanner(RemoteScannerBackend):
        bound_socket: ClassVar[Path | None] = socket_path

    return _BoundClient, _BoundScanner

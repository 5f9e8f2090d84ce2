"""A simulated BLE radio: bleak client and scanner backends serving in-process peripherals."""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak.uuids import normalize_uuid_16, normalize_uuid_str

# Core Specification v5.3, Vol 3, Part F, §3.2.8: the LE default ATT_MTU is 23 octets, so a
# notification (ATT_HANDLE_VALUE_NTF, 3 octets of header) carries at most 20 octets of value.
ATT_DEFAULT_MTU: Final = 23
MAX_NOTIFY_PAYLOAD_BYTES: Final = ATT_DEFAULT_MTU - 3

# Client Characteristic Configuration descriptor, Core Specification v5.3, Vol 3, Part G, §3.3.3.3.
CCCD_UUID: Final = normalize_uuid_16(0x2902)

# The D-Bus error names BlueZ answers with; a simulated fault raises exactly what the real stack
# raises, so the agent's error classification is exercised on the real exception types.
BLUEZ_IN_PROGRESS: Final = "org.bluez.Error.InProgress"
BLUEZ_FAILED: Final = "org.bluez.Error.Failed"

_ATTRIBUTE_HANDLE_FIRST: Final = 1
_NO_TX_POWER: Final = None


class ConnectFault(enum.Enum):
    """A scripted failure of the next connection attempt."""

    NOT_FOUND = "not_found"
    """The stack does not know the device (bleak raises BleakDeviceNotFoundError)."""
    IN_PROGRESS = "in_progress"
    """The adapter is busy with another operation (BlueZ org.bluez.Error.InProgress)."""
    ABORTED = "aborted"
    """The link layer gave up while connecting (BlueZ org.bluez.Error.Failed)."""


@dataclass(slots=True, frozen=True)
class CharacteristicDef:
    """One characteristic of a simulated GATT table; `uuid` is 16-bit or 128-bit text."""

    uuid: str
    properties: tuple[CharacteristicPropertyName, ...]

    @property
    def full_uuid(self) -> str:
        return normalize_uuid_str(self.uuid)

    @property
    def notifiable(self) -> bool:
        return "notify" in self.properties or "indicate" in self.properties


@dataclass(slots=True, frozen=True)
class ServiceDef:
    """One primary service of a simulated GATT table."""

    uuid: str
    characteristics: tuple[CharacteristicDef, ...]

    @property
    def full_uuid(self) -> str:
        return normalize_uuid_str(self.uuid)


@dataclass(slots=True)
class ConnectionRecord:
    """What happened on one simulated connection; tests read it to prove re-arming."""

    connection_id: int
    address: str
    subscribed_uuids: list[str] = field(default_factory=list)
    notifications_delivered: int = 0
    closed: bool = False
    closed_by_peripheral: bool = False


@dataclass(slots=True)
class _Link:
    client: SimulatedClientBackend
    record: ConnectionRecord
    subscriptions: dict[str, NotifyCallback] = field(default_factory=dict)


def gatt_collection(services: Sequence[ServiceDef]) -> BleakGATTServiceCollection:
    """A GATT table as bleak objects, handles numbered as a server would (Core Vol 3 G §3).

    Both radios build it from the same definitions, so a central sees the same handles whether
    the peripheral runs in its process or in the ward's (firmware_sims.remote).
    """
    collection = BleakGATTServiceCollection()
    handle = _ATTRIBUTE_HANDLE_FIRST
    for service_def in services:
        service = BleakGATTService(None, handle, service_def.full_uuid)
        collection.add_service(service)
        handle += 1
        for char_def in service_def.characteristics:
            # A declaration handle, then the value handle bleak reports as the handle.
            handle += 1
            char = BleakGATTCharacteristic(
                None,
                handle,
                char_def.full_uuid,
                list(char_def.properties),
                lambda: MAX_NOTIFY_PAYLOAD_BYTES,
                service,
            )
            collection.add_characteristic(char)
            handle += 1
            if char_def.notifiable:
                collection.add_descriptor(BleakGATTDescriptor(None, handle, CCCD_UUID, char))
                handle += 1
    return collection


class SimulatedPeripheral:
    """A GATT server on the simulated radio with scripted faults; subclasses produce the data.

    Subclasses override `run` (the device's own measurement loop, run by the radio), `read_value`
    for dynamic reads and `handle_write` for control points. `notify` sends one value to the
    connected central when it has subscribed; it is silently lost otherwise, as on air.
    """

    def __init__(
        self,
        address: str,
        local_name: str,
        services: Sequence[ServiceDef],
        *,
        rssi_dbm: int = -60,
        advertised_service_uuids: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.address = address.upper()
        self.local_name = local_name
        self.services = tuple(services)
        self.rssi_dbm = rssi_dbm
        advertised = (
            advertised_service_uuids
            if advertised_service_uuids is not None
            else [service.uuid for service in self.services]
        )
        self.advertised_service_uuids = [normalize_uuid_str(uuid) for uuid in advertised]
        self._chars: dict[str, CharacteristicDef] = {
            char.full_uuid: char for service in self.services for char in service.characteristics
        }
        self._values: dict[str, bytes] = {}
        self._rng = random.Random(seed)  # noqa: S311 -- garbage payloads, not secrets
        self._radio: SimulatedRadio | None = None
        self._link: _Link | None = None
        self._connect_faults: list[ConnectFault] = []
        self._garbage: list[bytes | None] = []
        self._silenced = False
        self._silence_until_reconnect = False
        self.in_range = True
        self.notifications_sent = 0
        self.notifications_lost = 0

    # --- GATT table -----------------------------------------------------------------------------

    def characteristic(self, uuid: str) -> CharacteristicDef:
        """The characteristic definition, or KeyError for a UUID this device does not have."""
        return self._chars[normalize_uuid_str(uuid)]

    def has_characteristic(self, uuid: str) -> bool:
        return normalize_uuid_str(uuid) in self._chars

    def set_value(self, uuid: str, payload: bytes) -> None:
        """Store the value a read returns (device information strings, battery level...)."""
        self._values[normalize_uuid_str(uuid)] = bytes(payload)

    def read_value(self, uuid: str) -> bytes:
        """The value of a readable characteristic; override for values computed on demand."""
        full = normalize_uuid_str(uuid)
        if full not in self._values:
            # Core Specification v5.3, Vol 3, Part F, §3.4.1.1: a readable attribute with no
            # value yet answers "Unlikely Error" rather than an empty value.
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.UNLIKELY_ERROR)
        return self._values[full]

    def handle_write(self, uuid: str, data: bytes) -> None:
        """A write from the central; the default device accepts none."""
        raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED)

    def build_services(self) -> BleakGATTServiceCollection:
        """The GATT table as bleak objects (see `gatt_collection`)."""
        return gatt_collection(self.services)

    # --- the device's own behaviour ---------------------------------------------------------------

    async def run(self) -> None:
        """The measurement loop; the radio runs it while the radio runs. Idle by default."""
        await asyncio.Event().wait()

    @property
    def is_connected(self) -> bool:
        return self._link is not None

    @property
    def is_advertising(self) -> bool:
        """Health sensors stop advertising while a central holds the link."""
        return self.in_range and self._link is None

    def is_subscribed(self, uuid: str) -> bool:
        link = self._link
        return link is not None and normalize_uuid_str(uuid) in link.subscriptions

    def notify(
        self, uuid: str, payload: bytes, *, on_delivered: Callable[[], None] | None = None
    ) -> bool:
        """Send a notification/indication; True when it went on air to a subscribed central.

        `on_delivered` runs once the value reached the central's callback intact (not when the
        link went down in between, and not when a scripted garbage payload replaced it): the
        simulators' ground-truth ledger records exactly what a central received.
        """
        full = normalize_uuid_str(uuid)
        link = self._link
        if link is None or full not in link.subscriptions or self._silenced:
            self.notifications_lost += 1
            return False
        value, replaced = self._next_payload(payload)
        if len(value) > MAX_NOTIFY_PAYLOAD_BYTES:
            msg = (
                f"{self.local_name}: {len(value)}-byte value for {full} exceeds the "
                f"{MAX_NOTIFY_PAYLOAD_BYTES}-byte notification payload of the default ATT_MTU"
            )
            raise ValueError(msg)
        self.notifications_sent += 1
        link.record.notifications_delivered += 1
        asyncio.get_running_loop().call_soon(
            self._deliver, link, full, value, None if replaced else on_delivered
        )
        return True

    def _next_payload(self, payload: bytes) -> tuple[bytes, bool]:
        """The value to put on air, and whether a scripted garbage payload replaced it."""
        if not self._garbage:
            return bytes(payload), False
        scripted = self._garbage.pop(0)
        if scripted is not None:
            return scripted, True
        return bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(21))), True

    def _deliver(
        self, link: _Link, uuid: str, value: bytes, on_delivered: Callable[[], None] | None
    ) -> None:
        # Queued through the loop, as an OS stack delivers: a value sent before a link drop can
        # never arrive on the next connection.
        if self._link is not link:
            return
        callback = link.subscriptions.get(uuid)
        if callback is not None:
            callback(bytearray(value))
            if on_delivered is not None:
                on_delivered()

    # --- scripted faults --------------------------------------------------------------------------

    def drop_link(self) -> bool:
        """The link is lost (supervision timeout): the central's disconnected callback fires."""
        link = self._link
        if link is None:
            return False
        link.record.closed_by_peripheral = True
        self._detach(link.client)
        asyncio.get_running_loop().call_soon(link.client.link_lost)
        if self._radio is not None:
            self._radio.advertise_now(self)
        return True

    def silence_notifications(self, *, until_reconnect: bool = True) -> None:
        """The link stays up but notifications stop (a hung sensor task in the firmware).

        With `until_reconnect` the firmware recovers when a central connects again, which is
        what a link reset does to most sensors; otherwise call `resume_notifications`.
        """
        self._silenced = True
        self._silence_until_reconnect = until_reconnect

    def resume_notifications(self) -> None:
        self._silenced = False

    @property
    def silenced(self) -> bool:
        return self._silenced

    def fail_next_connects(self, fault: ConnectFault, count: int = 1) -> None:
        """The next `count` connection attempts fail with `fault`."""
        self._connect_faults.extend([fault] * count)

    def inject_garbage(self, count: int = 1, payload: bytes | None = None) -> None:
        """Replace the next `count` notified values with `payload` (random bytes when None)."""
        self._garbage.extend([payload] * count)

    def set_rssi(self, rssi_dbm: int) -> None:
        """Move the device: it re-advertises at once with the new signal strength."""
        self.rssi_dbm = rssi_dbm
        if self._radio is not None:
            self._radio.advertise_now(self)

    def leave_range(self) -> None:
        """Out of range: no advertisements, connects fail as device-not-found, links drop."""
        self.in_range = False
        self.drop_link()

    def enter_range(self) -> None:
        self.in_range = True
        if self._radio is not None:
            self._radio.advertise_now(self)

    # --- link management (called by the client backend) -------------------------------------------

    def _take_connect_fault(self) -> ConnectFault | None:
        return self._connect_faults.pop(0) if self._connect_faults else None

    def _attach(self, client: SimulatedClientBackend, record: ConnectionRecord) -> None:
        self._link = _Link(client, record)
        if self._silence_until_reconnect:
            self._silenced = False
        self.on_connect()

    def _detach(self, client: SimulatedClientBackend) -> None:
        link = self._link
        if link is None or link.client is not client:
            return
        if self._radio is not None:
            self._radio._close_connection(link.record)
        link.record.closed = True
        self._link = None
        self.on_disconnect()

    def _subscribe(
        self, client: SimulatedClientBackend, uuid: str, callback: NotifyCallback
    ) -> None:
        link = self._require_link(client)
        link.subscriptions[uuid] = callback
        link.record.subscribed_uuids.append(uuid)
        self.on_subscribe(uuid)

    def _unsubscribe(self, client: SimulatedClientBackend, uuid: str) -> None:
        self._require_link(client).subscriptions.pop(uuid, None)

    def _subscribed(self, client: SimulatedClientBackend, uuid: str) -> bool:
        return uuid in self._require_link(client).subscriptions

    def _require_link(self, client: SimulatedClientBackend) -> _Link:
        link = self._link
        if link is None or link.client is not client:
            msg = "Not connected"
            raise BleakError(msg)
        return link

    def on_connect(self) -> None:
        """Hook: a central connected."""

    def on_disconnect(self) -> None:
        """Hook: the link ended (either side)."""

    def on_subscribe(self, uuid: str) -> None:
        """Hook: the central enabled notifications or indications on `uuid`."""


_P = TypeVar("_P", bound=SimulatedPeripheral)


class SimulatedRadio:
    """The in-process registry of simulated peripherals, and the air between them and bleak.

    `async with radio:` runs every peripheral's measurement loop and the advertising loop.
    `radio.client_backend` / `radio.scanner_backend` are bleak backend classes bound to this
    radio, for `BleakClient(..., backend=...)` and `BleakScanner(..., backend=...)`.
    """

    def __init__(
        self, *, advertising_interval_s: float = 0.1, connect_latency_s: float = 0.0
    ) -> None:
        if advertising_interval_s <= 0:
            msg = f"advertising_interval_s must be positive, got {advertising_interval_s}"
            raise ValueError(msg)
        self.advertising_interval_s = advertising_interval_s
        self.connect_latency_s = connect_latency_s
        self._peripherals: dict[str, SimulatedPeripheral] = {}
        self._scanners: list[SimulatedScannerBackend] = []
        self.connections: list[ConnectionRecord] = []
        # Link-layer bookkeeping tests read: how many links and connection attempts overlapped.
        self.active_links = 0
        self.peak_active_links = 0
        self.connecting = 0
        self.peak_connecting = 0
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        radio = self

        class _BoundClient(SimulatedClientBackend):
            bound_radio: ClassVar[SimulatedRadio | None] = radio

        class _BoundScanner(SimulatedScannerBackend):
            bound_radio: ClassVar[SimulatedRadio | None] = radio

        self.client_backend: type[SimulatedClientBackend] = _BoundClient
        self.scanner_backend: type[SimulatedScannerBackend] = _BoundScanner

    def add(self, peripheral: _P) -> _P:
        """Register a peripheral; its loop starts now if the radio is running."""
        if peripheral.address in self._peripherals:
            msg = f"a peripheral named {peripheral.local_name!r} already uses that address"
            raise ValueError(msg)
        self._peripherals[peripheral.address] = peripheral
        peripheral._radio = self
        if self._group is not None:
            self._start(peripheral)
        return peripheral

    def peripheral(self, address: str) -> SimulatedPeripheral | None:
        return self._peripherals.get(address.upper())

    @property
    def peripherals(self) -> list[SimulatedPeripheral]:
        return list(self._peripherals.values())

    def connections_to(self, address: str) -> list[ConnectionRecord]:
        key = address.upper()
        return [record for record in self.connections if record.address == key]

    def _start(self, peripheral: SimulatedPeripheral) -> None:
        assert self._group is not None  # noqa: S101 -- guarded by every caller
        task = self._group.create_task(
            peripheral.run(), name=f"sims.ble.peripheral[{peripheral.local_name}]"
        )
        self._tasks.append(task)

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        for peripheral in self._peripherals.values():
            self._start(peripheral)
        self._tasks.append(group.create_task(self._advertise_loop(), name="sims.ble.advertising"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        for peripheral in self._peripherals.values():
            link = peripheral._link
            if link is not None:
                peripheral._detach(link.client)
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if group is not None:
            await group.__aexit__(exc_type, exc, tb)

    async def _advertise_loop(self) -> None:
        while True:
            for peripheral in list(self._peripherals.values()):
                self.advertise_now(peripheral)
            await asyncio.sleep(self.advertising_interval_s)

    def advertise_now(self, peripheral: SimulatedPeripheral) -> None:
        """One advertising event of `peripheral`, heard by every running scanner."""
        if not peripheral.is_advertising:
            return
        for scanner in list(self._scanners):
            scanner.hear(peripheral)

    def _open_connection(self, address: str) -> ConnectionRecord:
        record = ConnectionRecord(connection_id=len(self.connections) + 1, address=address)
        self.connections.append(record)
        self.active_links += 1
        self.peak_active_links = max(self.peak_active_links, self.active_links)
        return record

    def _close_connection(self, record: ConnectionRecord) -> None:
        if not record.closed:
            record.closed = True
            self.active_links -= 1

    def _attach_scanner(self, scanner: SimulatedScannerBackend) -> None:
        if scanner not in self._scanners:
            self._scanners.append(scanner)

    def _detach_scanner(self, scanner: SimulatedScannerBackend) -> None:
        if scanner in self._scanners:
            self._scanners.remove(scanner)


def _unbound(backend: type) -> BleakError:
    # Constructed, not raised, here: the caller raises it so the traceback points at the call.
    return BleakError(
        f"{backend.__name__} is not bound to a simulated radio: pass "
        "SimulatedRadio().client_backend / .scanner_backend as bleak's backend="
    )


class SimulatedClientBackend(BaseBleakClient):
    """bleak client backend talking to a SimulatedPeripheral over the simulated radio."""

    bound_radio: ClassVar[SimulatedRadio | None] = None

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
        self._peripheral: SimulatedPeripheral | None = None

    @property
    def name(self) -> str:
        radio = self.bound_radio
        peripheral = radio.peripheral(self.address) if radio is not None else None
        return peripheral.local_name if peripheral is not None else self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        peripheral = self._peripheral
        if peripheral is None:
            return False
        link = peripheral._link
        return link is not None and link.client is self

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        radio = self.bound_radio
        if radio is None:
            raise _unbound(type(self))
        radio.connecting += 1
        radio.peak_connecting = max(radio.peak_connecting, radio.connecting)
        try:
            # A connection takes radio time: yield so other links and the scanner interleave.
            await asyncio.sleep(radio.connect_latency_s)
        finally:
            radio.connecting -= 1
        peripheral = radio.peripheral(self.address)
        if peripheral is None or not peripheral.in_range:
            raise BleakDeviceNotFoundError(self.address, "Device was not found.")
        match peripheral._take_connect_fault():
            case ConnectFault.NOT_FOUND:
                raise BleakDeviceNotFoundError(self.address, "Device was not found.")
            case ConnectFault.IN_PROGRESS:
                raise BleakDBusError(BLUEZ_IN_PROGRESS, ["Operation already in progress"])
            case ConnectFault.ABORTED:
                raise BleakDBusError(BLUEZ_FAILED, ["le-connection-abort-by-local"])
            case None:
                pass
        if peripheral.is_connected:
            # A peripheral serves one central; BlueZ reports the busy device like this.
            raise BleakDBusError(BLUEZ_IN_PROGRESS, ["Device already connected to a central"])
        self.services = peripheral.build_services()
        self._peripheral = peripheral
        peripheral._attach(self, radio._open_connection(peripheral.address))

    async def disconnect(self) -> None:
        peripheral = self._peripheral
        if peripheral is not None:
            peripheral._detach(self)
            if radio := self.bound_radio:
                radio.advertise_now(peripheral)
        self._peripheral = None

    def link_lost(self) -> None:
        """Called by the peripheral side when the link drops: bleak's unsolicited disconnect."""
        self._peripheral = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Simulated devices are bonded already."""

    async def unpair(self) -> None:
        """Simulated devices stay bonded."""

    def _connected_peripheral(self) -> SimulatedPeripheral:
        peripheral = self._peripheral
        if peripheral is None or not self.is_connected:
            msg = "Not connected"
            raise BleakError(msg)
        return peripheral

    async def read_gatt_char(
        self,
        characteristic: BleakGATTCharacteristic,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        peripheral = self._connected_peripheral()
        await asyncio.sleep(0)
        if "read" not in characteristic.properties:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.READ_NOT_PERMITTED)
        return bytearray(peripheral.read_value(characteristic.uuid))

    async def read_gatt_descriptor(
        self,
        descriptor: BleakGATTDescriptor,
        *,
        use_cached: bool = False,
        **kwargs: Any,
    ) -> bytearray:
        peripheral = self._connected_peripheral()
        await asyncio.sleep(0)
        if descriptor.uuid != CCCD_UUID:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.READ_NOT_PERMITTED)
        # Core Specification v5.3, Vol 3, Part G, §3.3.3.3: bit 0 notifications, bit 1 indications.
        subscribed = peripheral._subscribed(self, descriptor.characteristic_uuid)
        char = peripheral.characteristic(descriptor.characteristic_uuid)
        if not subscribed:
            return bytearray(b"\x00\x00")
        return bytearray(b"\x01\x00" if "notify" in char.properties else b"\x02\x00")

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        peripheral = self._connected_peripheral()
        await asyncio.sleep(0)
        wanted: CharacteristicPropertyName = "write" if response else "write-without-response"
        if wanted not in characteristic.properties:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED)
        peripheral.handle_write(characteristic.uuid, bytes(data))

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        self._connected_peripheral()
        await asyncio.sleep(0)
        raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED)

    async def start_notify(
        self,
        characteristic: BleakGATTCharacteristic,
        callback: NotifyCallback,
        **kwargs: Any,
    ) -> None:
        peripheral = self._connected_peripheral()
        await asyncio.sleep(0)
        props = characteristic.properties
        if "notify" not in props and "indicate" not in props:
            # Writing a CCCD that does not exist: Core v5.3 Vol 3 Part F §3.4.1.1.
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.ATTRIBUTE_NOT_FOUND)
        peripheral._subscribe(self, characteristic.uuid, callback)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peripheral = self._connected_peripheral()
        await asyncio.sleep(0)
        peripheral._unsubscribe(self, characteristic.uuid)


class SimulatedScannerBackend(BaseBleakScanner):
    """bleak scanner backend hearing the advertisements of the simulated radio's peripherals."""

    bound_radio: ClassVar[SimulatedRadio | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.scanning_mode = scanning_mode
        self.advertisements_heard = 0

    async def start(self) -> None:
        radio = self.bound_radio
        if radio is None:
            raise _unbound(type(self))
        self.seen_devices = {}
        radio._attach_scanner(self)

    async def stop(self) -> None:
        radio = self.bound_radio
        if radio is not None:
            radio._detach_scanner(self)

    def hear(self, peripheral: SimulatedPeripheral) -> None:
        """One advertising event reaches this scanner (called by the radio)."""
        if not self.is_allowed_uuid(peripheral.advertised_service_uuids):
            return
        self.advertisements_heard += 1
        adv = AdvertisementData(
            local_name=peripheral.local_name,
            manufacturer_data={},
            service_data={},
            service_uuids=list(peripheral.advertised_service_uuids),
            tx_power=_NO_TX_POWER,
            rssi=peripheral.rssi_dbm,
            platform_data=(),
        )
        device = self.create_or_update_device(
            peripheral.address, peripheral.address, peripheral.local_name, None, adv
        )
        self.call_detection_callbacks(device, adv)

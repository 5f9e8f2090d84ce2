"""The simulated radio through bleak's public API: scanning, GATT, notifications and faults."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak.uuids import normalize_uuid_16

from firmware_sims.ble.backend import (
    BLUEZ_IN_PROGRESS,
    CCCD_UUID,
    CharacteristicDef,
    ConnectFault,
    ServiceDef,
    SimulatedClientBackend,
    SimulatedPeripheral,
    SimulatedRadio,
    SimulatedScannerBackend,
)

HRM = normalize_uuid_16(0x2A37)
HR_SERVICE = normalize_uuid_16(0x180D)
MANUFACTURER = normalize_uuid_16(0x2A29)
# Heart Rate Measurement (Heart Rate Service v1.0 §3.1): flags 0x00 = UINT8 rate, nothing else;
# then 0x48 = 72 bpm.
HRM_72_BPM = bytes.fromhex("0048")
ADDRESS = "C0:FF:EE:00:00:01"


class Strap(SimulatedPeripheral):
    """A minimal strap: the test pushes values with `notify`; no measurement loop."""

    def __init__(self, address: str = ADDRESS, service: str = "180d") -> None:
        super().__init__(
            address,
            "strap",
            [
                ServiceDef(service, (CharacteristicDef("2a37", ("notify",)),)),
                ServiceDef("180a", (CharacteristicDef("2a29", ("read",)),)),
            ],
            rssi_dbm=-55,
        )
        self.set_value("2a29", b"Simulated Ltd")


@pytest_asyncio.fixture
async def radio() -> AsyncIterator[SimulatedRadio]:
    async with SimulatedRadio(advertising_interval_s=0.005) as running:
        yield running


async def _until(predicate: Callable[[], object], what: str) -> None:
    """Yield to the loop until `predicate()` holds; the cap only turns a hang into a failure."""
    try:
        async with asyncio.timeout(10):
            for _ in itertools.count():
                if predicate():
                    return
                await asyncio.sleep(0.001)
    except TimeoutError:
        pytest.fail(f"simulated radio never produced: {what}")


async def _connected(radio: SimulatedRadio) -> BleakClient:
    client = BleakClient(ADDRESS, backend=radio.client_backend)
    await client.connect()
    return client


@pytest.mark.asyncio
async def test_scanner_hears_only_filtered_services_and_follows_rssi(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    radio.add(Strap("C0:FF:EE:00:00:02", service="1812"))  # HID: not a health service
    heard: list[tuple[str, int]] = []

    def on_adv(device: BLEDevice, adv: AdvertisementData) -> None:
        heard.append((device.address, adv.rssi))

    scanner = BleakScanner(on_adv, service_uuids=[HR_SERVICE], backend=radio.scanner_backend)
    async with scanner:
        await _until(lambda: len(heard) >= 3, "advertisements")
        strap = radio.peripheral(ADDRESS)
        assert strap is not None
        strap.set_rssi(-80)
        await _until(lambda: heard[-1][1] == -80, "new rssi")
    assert {address for address, _ in heard} == {ADDRESS}
    assert list(scanner.discovered_devices_and_advertisement_data) == [ADDRESS]


@pytest.mark.asyncio
async def test_connected_peripheral_stops_advertising(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    client = await _connected(radio)
    assert not strap.is_advertising
    await client.disconnect()
    assert strap.is_advertising


@pytest.mark.asyncio
async def test_gatt_table_has_uuids_properties_and_cccd(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    client = await _connected(radio)
    hrm = client.services.get_characteristic(HRM)
    assert hrm is not None
    assert hrm.service_uuid == HR_SERVICE
    assert hrm.properties == ["notify"]
    assert [d.uuid for d in hrm.descriptors] == [CCCD_UUID]
    assert client.mtu_size == 23
    assert bytes(await client.read_gatt_char(MANUFACTURER)) == b"Simulated Ltd"
    with pytest.raises(BleakGATTProtocolError) as info:
        await client.write_gatt_char(MANUFACTURER, b"x", response=True)
    assert info.value.code == BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED
    await client.disconnect()


@pytest.mark.asyncio
async def test_notifications_arrive_through_bleaks_callback_path(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    client = await _connected(radio)
    received: list[tuple[str, bytes]] = []

    def on_value(char: BleakGATTCharacteristic, data: bytearray) -> None:
        received.append((char.uuid, bytes(data)))

    assert not strap.notify("2a37", HRM_72_BPM)  # not subscribed yet: lost, as on air
    await client.start_notify(HRM, on_value)
    assert strap.notify("2a37", HRM_72_BPM)
    await _until(lambda: received, "notification")
    assert received == [(HRM, HRM_72_BPM)]
    cccd = client.services.get_characteristic(HRM)
    assert cccd is not None
    assert bytes(await client.read_gatt_descriptor(cccd.descriptors[0])) == b"\x01\x00"
    await client.stop_notify(HRM)
    assert not strap.notify("2a37", HRM_72_BPM)
    await client.disconnect()


@pytest.mark.asyncio
async def test_link_drop_fires_disconnected_callback(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    dropped: list[BleakClient] = []
    client = BleakClient(ADDRESS, dropped.append, backend=radio.client_backend)
    await client.connect()
    assert strap.drop_link()
    await _until(lambda: dropped, "disconnected callback")
    assert dropped == [client]
    assert not client.is_connected
    assert radio.connections[0].closed_by_peripheral
    with pytest.raises(BleakError):
        await client.read_gatt_char(MANUFACTURER)


@pytest.mark.asyncio
async def test_solicited_disconnect_does_not_fire_the_callback(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    dropped: list[BleakClient] = []
    client = BleakClient(ADDRESS, dropped.append, backend=radio.client_backend)
    await client.connect()
    await client.disconnect()
    await asyncio.sleep(0)
    assert dropped == []


@pytest.mark.asyncio
async def test_silence_keeps_link_up_until_reconnect(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    client = await _connected(radio)
    await client.start_notify(HRM, lambda _c, _d: None)
    strap.silence_notifications()
    assert client.is_connected
    assert not strap.notify("2a37", HRM_72_BPM)
    await client.disconnect()
    client = await _connected(radio)
    await client.start_notify(HRM, lambda _c, _d: None)
    assert strap.notify("2a37", HRM_72_BPM)
    await client.disconnect()


@pytest.mark.asyncio
async def test_scripted_connect_faults_raise_what_bluez_raises(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    strap.fail_next_connects(ConnectFault.NOT_FOUND)
    strap.fail_next_connects(ConnectFault.IN_PROGRESS)
    with pytest.raises(BleakDeviceNotFoundError):
        await _connected(radio)
    with pytest.raises(BleakDBusError) as info:
        await _connected(radio)
    assert info.value.dbus_error == BLUEZ_IN_PROGRESS
    client = await _connected(radio)
    assert client.is_connected
    await client.disconnect()


@pytest.mark.asyncio
async def test_out_of_range_device_is_not_found(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    strap.leave_range()
    assert not strap.is_advertising
    with pytest.raises(BleakDeviceNotFoundError):
        await _connected(radio)
    strap.enter_range()
    client = await _connected(radio)
    await client.disconnect()


@pytest.mark.asyncio
async def test_unknown_address_is_not_found(radio: SimulatedRadio) -> None:
    with pytest.raises(BleakDeviceNotFoundError):
        await _connected(radio)


@pytest.mark.asyncio
async def test_garbage_replaces_the_next_values(radio: SimulatedRadio) -> None:
    strap = radio.add(Strap())
    client = await _connected(radio)
    received: list[bytes] = []
    await client.start_notify(HRM, lambda _c, data: received.append(bytes(data)))
    strap.inject_garbage(payload=b"\xff")
    strap.inject_garbage()  # random bytes, at most one notification payload long
    for _ in range(3):
        strap.notify("2a37", HRM_72_BPM)
    await _until(lambda: len(received) == 3, "notifications")
    assert received[0] == b"\xff"
    assert len(received[1]) <= 20
    assert received[2] == HRM_72_BPM
    await client.disconnect()


@pytest.mark.asyncio
async def test_value_queued_before_a_drop_never_reaches_the_next_connection(
    radio: SimulatedRadio,
) -> None:
    strap = radio.add(Strap())
    client = await _connected(radio)
    received: list[bytes] = []
    await client.start_notify(HRM, lambda _c, data: received.append(bytes(data)))
    strap.notify("2a37", HRM_72_BPM)
    strap.drop_link()  # before the loop delivers the queued value
    client = await _connected(radio)
    await client.start_notify(HRM, lambda _c, data: received.append(bytes(data)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert received == []
    await client.disconnect()


@pytest.mark.asyncio
async def test_connection_records_start_notify_per_connection(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    for _ in range(3):
        client = await _connected(radio)
        await client.start_notify(HRM, lambda _c, _d: None)
        await client.disconnect()
    records = radio.connections_to(ADDRESS)
    assert [record.subscribed_uuids for record in records] == [[HRM]] * 3
    assert all(record.closed for record in records)
    assert radio.active_links == 0


@pytest.mark.asyncio
async def test_one_central_per_peripheral(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    first = await _connected(radio)
    with pytest.raises(BleakDBusError):
        await _connected(radio)
    await first.disconnect()


@pytest.mark.asyncio
async def test_unbound_backends_refuse_with_a_hint() -> None:
    with pytest.raises(BleakError, match="not bound to a simulated radio"):
        await BleakClient(ADDRESS, backend=SimulatedClientBackend).connect()
    with pytest.raises(BleakError, match="not bound to a simulated radio"):
        await BleakScanner(backend=SimulatedScannerBackend).start()


@pytest.mark.asyncio
async def test_radio_rejects_a_duplicate_address(radio: SimulatedRadio) -> None:
    radio.add(Strap())
    with pytest.raises(ValueError, match="already uses that address"):
        radio.add(Strap())

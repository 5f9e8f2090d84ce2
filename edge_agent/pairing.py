"""Pairing on the real device paths: find health devices, and hear a bound device's first values.

Used by `edge-agent pair`: the scan is bleak's scanner filtered by the health services, and a
device is proven by running the agent's own source for it (BleSource or SerialSource) until it
delivers a valid reading, so what pairing shows is exactly what the agent will read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edge_agent.errors import EdgeAgentError
from edge_agent.hardware import Hardware, bonded_device, serial_source
from edge_agent.protocol import by_name
from edge_agent.registry import Binding
from edge_agent.sources import Reading, Source
from edge_agent.sources.ble import HEALTH_SERVICE_UUIDS, BleSettings, BleSource

# The kind a device advertising this service most likely is (Assigned Numbers §3.4); a chest
# patch advertises Heart Rate too and is told apart by its vendor service once connected.
KIND_BY_SERVICE: Final = {
    "180d": "hr-strap",
    "1822": "pulse-oximeter",
    "1809": "thermometer",
    "1810": "bp-cuff",
    "1808": "glucose-meter",
    "181a": "env-sensor",
}
# Pairing wants an answer quickly: the silence watchdog and connect timeouts of a ward link are
# sized for hours of streaming, not for a clinician waiting at the bedside.
PAIRING_BLE: Final = BleSettings(scan_timeout_s=15.0, connect_timeout_s=15.0)
BATTERY_CODE: Final = by_name("battery").code


class PairingError(EdgeAgentError):
    """Pairing could not prove the device; the message says what to check."""


@dataclass(slots=True, frozen=True)
class Found:
    """A device heard while scanning (BLE) or a serial port present."""

    transport: str
    address: str
    name: str | None
    rssi_dbm: int | None
    services: tuple[str, ...] = ()
    kind: str | None = None


def _short(uuid: str) -> str:
    text = uuid.lower()
    if text.startswith("0000") and text.endswith("-0000-1000-8000-00805f9b34fb"):
        return text[4:8]
    return text


def kind_of(services: Sequence[str]) -> str | None:
    for service in services:
        kind = KIND_BY_SERVICE.get(_short(service))
        if kind is not None:
            return kind
    return None


async def scan(
    timeout_s: float, hardware: Hardware, *, until_address: str | None = None
) -> list[Found]:
    """Listen for health-service advertisements for `timeout_s` (or until `until_address` is
    heard); strongest signal first, then the serial ports present."""
    heard: dict[str, Found] = {}
    wanted = asyncio.Event()

    def on_advertisement(device: BLEDevice, adv: AdvertisementData) -> None:
        services = tuple(_short(uuid) for uuid in adv.service_uuids)
        if device.address.upper() == until_address:
            wanted.set()
        heard[device.address.upper()] = Found(
            "ble",
            device.address.upper(),
            adv.local_name or device.name,
            adv.rssi,
            services,
            kind_of(adv.service_uuids),
        )

    scanner = BleakScanner(
        detection_callback=on_advertisement,
        service_uuids=list(HEALTH_SERVICE_UUIDS),
        backend=hardware.scanner_backend,
    )
    await scanner.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wanted.wait(), timeout_s)
    finally:
        await scanner.stop()
    found = sorted(heard.values(), key=lambda f: -(f.rssi_dbm or -999))
    found += [Found("serial", str(port), port.name, None) for port in hardware.serial_ports]
    return found


def source_for(binding: Binding, hardware: Hardware, ble: BleSettings | None = None) -> Source:
    """The agent's own source for one bound device."""
    if binding.transport == "ble":
        return BleSource(
            bonded_device(binding),
            settings=ble,
            client_backend=hardware.client_backend,
            scanner_backend=hardware.scanner_backend,
        )
    return serial_source(binding)


async def listen(
    binding: Binding, hardware: Hardware, *, seconds: float, until_first: bool = False
) -> list[Reading]:
    """Run the device's source for up to `seconds` (or until its first measured value); returns
    every reading heard, battery levels included."""
    source = source_for(binding, hardware, PAIRING_BLE)
    readings: list[Reading] = []
    first = asyncio.Event()

    async def emit(reading: Reading) -> None:
        readings.append(reading)
        # The battery level is read on connect; the proof is the first measured value.
        if reading.metric_code != BATTERY_CODE:
            first.set()

    task = asyncio.create_task(source.run(emit), name=f"pair.{binding.log_name}")
    deadline = time.monotonic() + seconds
    try:
        if until_first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first.wait(), seconds)
        else:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        source.stop()
        await task
    return readings

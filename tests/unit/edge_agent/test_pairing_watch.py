"""Pairing while the agent runs: the registry's changes become BLE links and serial sources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from edge_agent.errors import ConfigError
from edge_agent.hardware import Hardware
from edge_agent.pairing_watch import PairingWatcher
from edge_agent.registry import Binding, Registry
from edge_agent.sources.base import Reading
from edge_agent.sources.ble import Backoff, BleManager, BleSettings
from edge_agent.sources.serial import SerialSource
from firmware_sims.ble.backend import SimulatedRadio
from firmware_sims.ble.peripherals import PulseOximeter, simulated_address
from tests.support.ble import bonded
from tests.support.polling import until

SECRET = bytes(range(32))
FAST = Backoff(initial_s=0.001, max_s=0.01)
SETTINGS = BleSettings(
    silence_factor=10.0,
    scan_timeout_s=2.0,
    connect_timeout_s=2.0,
    io_timeout_s=2.0,
    backoff_not_found=FAST,
    backoff_in_progress=FAST,
    backoff_other=FAST,
)


@pytest_asyncio.fixture
async def radio() -> AsyncIterator[SimulatedRadio]:
    async with SimulatedRadio(advertising_interval_s=0.005) as running:
        yield running


@pytest.mark.asyncio
async def test_a_running_manager_takes_a_new_device_and_lets_one_go(
    radio: SimulatedRadio,
) -> None:
    first = radio.add(PulseOximeter(simulated_address(1, 0), seed=1, interval_s=0.02))
    second = radio.add(PulseOximeter(simulated_address(1, 1), seed=2, interval_s=0.02))
    manager = BleManager(
        [bonded(first, 1)],
        settings=SETTINGS,
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
    )
    readings: list[Reading] = []

    async def emit(reading: Reading) -> None:
        readings.append(reading)

    def from_device(token: str) -> int:
        return sum(1 for r in readings if r.device_token == token)

    task = asyncio.create_task(manager.run(emit))
    await until(lambda: from_device("01" * 16) > 0, "readings of the first device")
    assert not second.is_connected
    manager.add(bonded(second, 2))
    await until(lambda: from_device("02" * 16) > 0, "readings of the device added live")
    await manager.remove("01" * 16)
    assert "01" * 16 not in manager.links
    await until(lambda: not first.is_connected, "the released device disconnected")
    released = from_device("01" * 16)
    # The other link goes on; the released one adds nothing more.
    later = from_device("02" * 16)
    await until(lambda: from_device("02" * 16) > later + 5, "more readings of the kept device")
    assert from_device("01" * 16) == released
    manager.stop()
    await task
    assert not second.is_connected


@pytest.mark.asyncio
async def test_a_device_is_taken_once(radio: SimulatedRadio) -> None:
    peripheral = radio.add(PulseOximeter(simulated_address(1, 0), seed=1, interval_s=0.02))
    manager = BleManager([bonded(peripheral, 1)], settings=SETTINGS)
    with pytest.raises(ConfigError, match="taken already"):
        manager.add(bonded(peripheral, 3))


def changed(watcher: PairingWatcher) -> list[Binding]:
    bindings = watcher.read_if_changed()
    assert bindings is not None, "the change was not seen"
    return bindings


@pytest.mark.asyncio
async def test_the_watcher_follows_the_registry_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    registry = Registry(path, SECRET)
    oximeter = registry.bind("C6:B7:00:00:06:01", "pulse-oximeter", "MRN-1")
    watcher = PairingWatcher(path, SECRET, Hardware())
    [manager] = watcher.initial_sources()
    assert isinstance(manager, BleManager)
    assert list(manager.links) == [oximeter.device_token]
    assert watcher.read_if_changed() is None  # nothing changed since

    # pair add is still proving a thermometer: not the agent's yet.
    thermometer = registry.bind("C6:B7:00:00:07:01", "thermometer", "MRN-1", pending=True)
    bindings = watcher.read_if_changed()
    assert bindings is not None
    changes = await watcher.reconcile(bindings)
    assert (changes.added, changes.released, changes.start, changes.stop) == (0, [], [], [])

    # Confirmed, it joins the running manager in place; a serial port gets its own source.
    registry.confirm(thermometer)
    registry.bind("/dev/serial/by-id/usb-monitor", "bedside-monitor", "MRN-1")
    bindings = watcher.read_if_changed()
    assert bindings is not None
    changes = await watcher.reconcile(bindings)
    assert changes.added == 2
    [serial] = changes.start
    assert isinstance(serial, SerialSource)
    assert thermometer.device_token in manager.links

    # Unpaired: the BLE link goes in place, the serial source is handed back to stop; when
    # the last BLE device goes, so does its manager.
    registry.unbind(oximeter.device_token[:8])
    registry.unbind("/dev/serial/by-id/usb-monitor")
    changes = await watcher.reconcile(changed(watcher))
    assert (len(changes.released), changes.stop) == (2, [serial])
    assert list(manager.links) == [thermometer.device_token]
    registry.unbind(thermometer.device_token[:8])
    changes = await watcher.reconcile(changed(watcher))
    assert changes.stop == [manager]


@pytest.mark.asyncio
async def test_an_unreadable_registry_keeps_the_devices_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.json"
    Registry(path, SECRET).bind("C6:B7:00:00:06:01", "pulse-oximeter", "MRN-1")
    watcher = PairingWatcher(path, SECRET, Hardware())
    assert len(watcher.initial_sources()) == 1
    path.write_text("{not json", encoding="utf-8")
    assert watcher.read_if_changed() is None
    assert watcher.read_if_changed() is None
    assert watcher.reload_failures == 1
    assert "not a device registry" in caplog.text

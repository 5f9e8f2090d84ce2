"""BLE test helpers: a bonded-device record for a simulated peripheral, and the simulated radio
reached across a ward socket."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from edge_agent.sources.ble import BondedDevice
from firmware_sims.ble.backend import SimulatedRadio
from firmware_sims.ble.peripherals import HealthPeripheral
from firmware_sims.remote.radio import remote_backends
from firmware_sims.remote.server import WardServer


def bonded(peripheral: HealthPeripheral, n: int) -> BondedDevice:
    """The peripheral as the agent knows it once paired: device token n (hex, repeated)."""
    return BondedDevice(
        address=peripheral.address,
        device_token=f"{n:02x}" * 16,
        patient_token="ab" * 16,
        device_kind=peripheral.kind,
        expected_interval_s=peripheral.interval_s,
    )


@contextlib.asynccontextmanager
async def over_ward_socket(radio: SimulatedRadio) -> AsyncIterator[SimulatedRadio]:
    """The same running radio, its peripherals now reached across a ward socket.

    A WardServer in this loop drives the radio's own in-process backends; the radio's
    `client_backend`/`scanner_backend` are swapped for the socket ones for the duration, so a
    test written against the radio (scripted faults, connection records) runs unchanged with
    every GATT operation, notification and link loss crossing the socket, as when the ward runs
    in its own process (`firmware-sims ward`).
    """
    with tempfile.TemporaryDirectory(prefix="ward-") as folder:
        socket_path = Path(folder) / "ward.sock"
        server = WardServer(radio, socket_path)
        listening = asyncio.Event()
        serving = asyncio.create_task(server.serve(listening.set), name="test.ward-socket")
        await listening.wait()
        in_process = radio.client_backend, radio.scanner_backend
        client, scanner = remote_backends(socket_path)
        radio.client_backend, radio.scanner_backend = client, scanner  # type: ignore[assignment]
        try:
            yield radio
        finally:
            radio.client_backend, radio.scanner_backend = in_process
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

"""BLE test helpers: a bonded-device record for a simulated peripheral."""

from __future__ import annotations

from edge_agent.sources.ble import BondedDevice
from firmware_sims.ble.peripherals import HealthPeripheral


def bonded(peripheral: HealthPeripheral, n: int) -> BondedDevice:
    """The peripheral as the agent knows it once paired: device token n (hex, repeated)."""
    return BondedDevice(
        address=peripheral.address,
        device_token=f"{n:02x}" * 16,
        patient_token="ab" * 16,
        device_kind=peripheral.kind,
        expected_interval_s=peripheral.interval_s,
    )

"""Where the agent's device paths lead: the real adapter and serial ports, or simulated hardware.

A `[simulation]` section in the config is the documented switch (README "Simulated hardware"):
the agent's own BLE and serial sources are then pointed at the simulators' bleak backend and at
pseudo-terminals. The simulators live in `firmware_sims` and are imported only then.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from edge_agent.config import AgentConfig, SimulationSettings
from edge_agent.registry import Binding
from edge_agent.sources.ble import BondedDevice
from edge_agent.sources.serial import SerialKind, SerialSource

if TYPE_CHECKING:
    from firmware_sims.ward import SimulatedWard

BY_ID_DIR: Final = Path("/dev/serial/by-id")


@dataclass(slots=True)
class Hardware:
    """The radio backends (None: the system's BlueZ) and the serial ports present."""

    client_backend: type[BaseBleakClient] | None = None
    scanner_backend: type[BaseBleakScanner] | None = None
    serial_ports: list[Path] = field(default_factory=list)


def serial_ports() -> list[Path]:
    """The stable by-id links udev makes for USB serial adapters (empty when there are none)."""
    with contextlib.suppress(OSError):
        return sorted(BY_ID_DIR.iterdir())
    return []


@contextlib.asynccontextmanager
async def open_hardware(
    config: AgentConfig,
) -> AsyncIterator[tuple[Hardware, SimulatedWard | None]]:
    """The hardware for this config, powered for as long as the context lasts."""
    if config.simulation is None:
        yield Hardware(serial_ports=serial_ports()), None
        return
    async with _simulated(config.simulation, config.gateway.state_dir) as ward:
        ports = [sim.port.path.absolute() for sim in ward.serial if not sim.patient_token]
        backends = ward.radio.client_backend, ward.radio.scanner_backend
        yield Hardware(*backends, serial_ports=ports), ward


@contextlib.asynccontextmanager
async def _simulated(
    simulation: SimulationSettings, state_dir: Path
) -> AsyncIterator[SimulatedWard]:
    from firmware_sims.ledger import Ledger  # noqa: PLC0415 - only when simulating
    from firmware_sims.ward import SimulatedWard, WardSettings  # noqa: PLC0415

    settings = WardSettings(
        patients=simulation.patients,
        seed=simulation.seed,
        interval_scale=simulation.interval_scale,
        events_per_hour=simulation.events_per_hour,
        scripted_event=simulation.scripted_event,
        implant_receivers=simulation.implant_receivers,
        bedside_monitors=simulation.bedside_monitors,
        warm_room=simulation.warm_room,
    )
    with Ledger(simulation.ledger_file) as ledger:
        ward = SimulatedWard(settings, ports_dir=state_dir / "sim-ports", ledger=ledger)
        async with ward.powered():
            yield ward


def bonded_device(binding: Binding) -> BondedDevice:
    """What the BLE source needs of a bound BLE device."""
    return BondedDevice(
        address=binding.address,
        device_token=binding.device_token,
        patient_token=binding.patient_token,
        device_kind=binding.kind,
        expected_interval_s=binding.expected_interval_s,
    )


def serial_source(binding: Binding) -> SerialSource:
    """The serial source of a bound port, named by its log-safe name (never the path)."""
    return SerialSource(
        binding.log_name,
        binding.address,
        SerialKind(binding.kind),
        device_token=binding.device_token,
        patient_token=binding.patient_token,
    )

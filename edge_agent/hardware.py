"""Where the agent's device paths lead: the real adapter and serial ports, or simulated hardware.

A `[simulation]` section in the config is the documented switch (README "Simulated hardware"):
the agent's own BLE and serial sources are then pointed at the simulators' bleak backend and at
pseudo-terminals. The simulators live in `firmware_sims` and are imported only then; with
`ward_socket` they run in a process of their own (`firmware-sims ward`) and the agent reaches
them through a bleak backend on that socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from edge_agent.config import AgentConfig, SimulationSettings
from edge_agent.errors import EdgeAgentError
from edge_agent.registry import Binding
from edge_agent.sources import Source
from edge_agent.sources.ble import BondedDevice
from edge_agent.sources.serial import SerialKind, SerialSource

if TYPE_CHECKING:
    from firmware_sims.ward import SimulatedWard

BY_ID_DIR: Final = Path("/dev/serial/by-id")
# How long an agent waits for `firmware-sims ward` to listen when both start together.
WARD_WAIT_S: Final = 30.0


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


class SimulatedDevices(Protocol):
    """A simulated ward as the agent uses it, powered here or served by another process."""

    def sources(self) -> list[Source]: ...

    async def quiesce(self) -> None: ...


@contextlib.asynccontextmanager
async def open_hardware(
    config: AgentConfig,
) -> AsyncIterator[tuple[Hardware, SimulatedDevices | None]]:
    """The hardware for this config, powered for as long as the context lasts."""
    simulation = config.simulation
    if simulation is None:
        yield Hardware(serial_ports=serial_ports()), None
        return
    if simulation.ward_socket is not None:
        from firmware_sims.remote.ward import remote_ward  # noqa: PLC0415 - only when simulating
        from firmware_sims.remote.wire import WardLinkError  # noqa: PLC0415

        async with contextlib.AsyncExitStack() as stack:
            try:
                remote = await stack.enter_async_context(
                    remote_ward(simulation.ward_socket, WARD_WAIT_S)
                )
            except WardLinkError as exc:
                raise EdgeAgentError(str(exc)) from exc
            backends = remote.client_backend, remote.scanner_backend
            yield Hardware(*backends, serial_ports=remote.unbound_ports), remote
        return
    async with _simulated(simulation, config.gateway.state_dir) as ward:
        ports = [sim.port.path.absolute() for sim in ward.serial if not sim.patient_token]
        backends = ward.radio.client_backend, ward.radio.scanner_backend
        yield Hardware(*backends, serial_ports=ports), ward


@contextlib.asynccontextmanager
async def _simulated(
    simulation: SimulationSettings, state_dir: Path
) -> AsyncIterator[SimulatedWard]:
    from firmware_sims.ledger import Ledger  # noqa: PLC0415 - only when simulating
    from firmware_sims.ward import SimulatedWard, WardSettings  # noqa: PLC0415

    settings = WardSettings.of(simulation)
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

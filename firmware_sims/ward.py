"""The simulated ward behind the agent's real device paths (the `[simulation]` switch).

Instead of a Bluetooth adapter and serial ports, the agent gets: every patient's wearables as
peripherals on one simulated radio, read by the agent's own `BleManager` through bleak's backend
seam (one manager per bed, as one adapter per bed on the ward), and implant receivers and bedside
monitors writing to pseudo-terminals that the agent's own `SerialSource` opens with pyserial.
Nothing in the agent's device code knows it is simulated.

Every value a device delivered reaches the ground-truth ledger: BLE values once the central
received them intact, serial frames and lines once they were written whole to the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import numpy as np

from edge_agent.config import SimulationSettings
from edge_agent.sources import Source
from edge_agent.sources.ble import BleSettings
from edge_agent.sources.serial import SerialKind, SerialSource
from firmware_sims.ble.backend import SimulatedRadio
from firmware_sims.ble.peripherals import (
    PERIPHERAL_KINDS,
    HealthPeripheral,
    SentValue,
    simulated_address,
)
from firmware_sims.events import EventSchedule
from firmware_sims.ledger import Identity, Ledger, LedgerEntry
from firmware_sims.patient import SimulatedPatient, mint_token
from firmware_sims.physiology import RoomClimate
from firmware_sims.remote.ward import WardManifest, ward_sources
from firmware_sims.serial import BedsideMonitorSim, ImplantReceiverSim, PtyPort, Sent, stream

_LOGGER = logging.getLogger(__name__)
DAY_S: Final = 86_400.0
# How often each serial device sends a frame or a line at interval scale 1.
SERIAL_INTERVAL_S: Final = {SerialKind.IMPLANT: 2.0, SerialKind.MONITOR: 1.0}
# What each serial model reports (docs/serial-formats.md §1.3 and §2.2), for `firmware-sims list`.
SERIAL_METRICS: Final = {
    SerialKind.IMPLANT: (
        "night_heart_rate",
        "activity_time",
        "af_burden",
        "fluid_index",
        "battery_voltage",
        "battery_longevity",
        "battery_phase",
        "lead_impedance_ra",
        "lead_impedance_rv",
        "lead_impedance_lv",
        "lead_impedance_hv",
        "episode_type",
        "episode_duration",
        "episode_max_rate",
        "episode_therapy",
        "implant_error_code",
        "implant_link_rssi",
    ),
    SerialKind.MONITOR: (
        "heart_rate",
        "resp_rate",
        "spo2",
        "body_temp",
        "bp_systolic",
        "bp_diastolic",
        "bp_mean",
    ),
}
# An implant receiver cycles through six record kinds, each stamped in whole seconds of the
# implant clock: more than a second between two of a kind keeps their stamps apart.
_MIN_SERIAL_INTERVAL_S: Final = 0.2
_QUIESCE_POLL_S: Final = 0.02


# The scripted warm room, compressed for a demo as the scripted patient event is: from one second
# after start the room warms over 15 s to the middle of the warm-room range (29.5 °C) and stays
# there for a minute, so even a 20 s run sees the room sensor pass 25 °C several times, and the
# heart rates follow (firmware_sims.physiology.HEART_RATE_BPM_PER_C).
WARM_ROOM_START_S: Final = 1.0
WARM_ROOM_ONSET_S: Final = 15.0
WARM_ROOM_PLATEAU_S: Final = 60.0


@dataclass(slots=True, frozen=True)
class WardSettings:
    """The simulated ward: patients, seed, pace, events and serial devices."""

    patients: int
    seed: int
    interval_scale: float = 1.0
    events_per_hour: float = 0.0
    scripted_event: str | None = None
    implant_receivers: int = 0
    bedside_monitors: int = 0
    warm_room: bool = False
    """Script the warm room from the start (`[simulation] warm_room` in the agent config)."""

    @classmethod
    def of(cls, simulation: SimulationSettings) -> WardSettings:
        """The ward an agent config's `[simulation]` section describes."""
        return cls(
            patients=simulation.patients,
            seed=simulation.seed,
            interval_scale=simulation.interval_scale,
            events_per_hour=simulation.events_per_hour,
            scripted_event=simulation.scripted_event,
            implant_receivers=simulation.implant_receivers,
            bedside_monitors=simulation.bedside_monitors,
            warm_room=simulation.warm_room,
        )


class _ReportsReadings(Protocol):
    def readings(self) -> list[tuple[str, int, float]]: ...


@dataclass(slots=True)
class SerialSim:
    """One simulated serial device writing to its pseudo-terminal."""

    label: str
    kind: SerialKind
    device: ImplantReceiverSim | BedsideMonitorSim
    port: PtyPort
    device_token: str
    patient_token: str
    interval_s: float


class _LedgerTap:
    """Writes delivered values to the ledger; a record sent again is one reading, not two."""

    def __init__(self, ledger: Ledger | None) -> None:
        self._ledger = ledger
        self._device_stamped: dict[Identity, float] = {}

    def record(self, entry: LedgerEntry) -> None:
        if self._ledger is None:
            return
        if entry.device_clock:
            # Implant receivers re-send the last week of trends; the store keeps one reading
            # per identity, and so does the ledger. A different value under the same identity
            # is written anyway, so reconciliation reports it.
            if self._device_stamped.get(entry.identity) == entry.value:
                return
            self._device_stamped[entry.identity] = entry.value
        self._ledger.record(entry)


class SimulatedWard:
    """Patients with BLE wearables on a simulated radio, plus serial devices on ptys."""

    def __init__(
        self,
        settings: WardSettings,
        *,
        ports_dir: Path,
        ledger: Ledger | None,
        readers_elsewhere: bool = False,
    ) -> None:
        """`readers_elsewhere`: the agent reading the ports runs in another process (the ward
        served over a socket, firmware_sims.remote), which says when it opened a port."""
        self.settings = settings
        self.radio = SimulatedRadio()
        self._tap = _LedgerTap(ledger)
        self._stop_serial = asyncio.Event()
        self._streams: list[asyncio.Task[None]] = []
        self._readers: dict[str, SerialSource] = {}
        self._readers_elsewhere = readers_elsewhere
        self._opened_elsewhere: dict[str, asyncio.Event] = {}
        now_s = time.time()
        # One room: the ward's room sensor (at bed 1) measures it and every patient is in it.
        self.room = RoomClimate.draw(np.random.default_rng([settings.seed, 0, 3]))
        if settings.warm_room:
            self.room.events.scripted(
                "warm_room",
                start_s=now_s + WARM_ROOM_START_S,
                onset_s=WARM_ROOM_ONSET_S,
                plateau_s=WARM_ROOM_PLATEAU_S,
            )
        self.patients: list[SimulatedPatient] = []
        for index in range(1, settings.patients + 1):
            rng = np.random.default_rng([settings.seed, index, 1])
            schedule = EventSchedule.draw(rng, now_s, DAY_S, settings.events_per_hour)
            if settings.scripted_event is not None and index == 1:
                # From one second after start to eleven: at half the usual device intervals a
                # short demo sees the thermometer catch the fever and then its end.
                schedule.scripted(
                    settings.scripted_event, start_s=now_s + 1.0, onset_s=1.0, plateau_s=8.0
                )
            patient = SimulatedPatient(
                index,
                settings.seed,
                interval_scale=settings.interval_scale,
                schedule=schedule,
                room=self.room,
            )
            for device in patient.devices:
                device.peripheral.on_sent = self._ble_tap(
                    patient.patient_token, device.device_token, device.peripheral.kind
                )
                self.radio.add(device.peripheral)
            self.patients.append(patient)
        self.serial: list[SerialSim] = []
        self.bench: list[HealthPeripheral] = []
        if settings.patients == 0:
            self._bench_kit(ports_dir)
            return
        if settings.implant_receivers or settings.bedside_monitors:
            ports_dir.mkdir(parents=True, exist_ok=True)
        count = settings.patients
        implants = self.patients[: settings.implant_receivers]
        monitors = self.patients[count - settings.bedside_monitors :]
        for patient in implants:
            self.serial.append(self._serial_sim(patient, SerialKind.IMPLANT, ports_dir))
        for patient in monitors:
            self.serial.append(self._serial_sim(patient, SerialKind.MONITOR, ports_dir))

    def _bench_kit(self, ports_dir: Path) -> None:
        """Unbound devices for pairing: one of every BLE model, an implant receiver and a
        bedside monitor; what the agent reads is up to the device registry."""
        for number, kind in enumerate(sorted(PERIPHERAL_KINDS), start=1):
            peripheral = PERIPHERAL_KINDS[kind](
                simulated_address(0, number), seed=self.settings.seed, room=self.room
            )
            self.bench.append(self.radio.add(peripheral))
        ports_dir.mkdir(parents=True, exist_ok=True)
        for kind in (SerialKind.IMPLANT, SerialKind.MONITOR):
            self.serial.append(
                self._new_serial_sim(
                    kind,
                    self.settings.seed,
                    where="bench",
                    port_suffix="00",
                    ports_dir=ports_dir,
                    device_token="",
                    patient_token="",
                )
            )

    def _serial_sim(
        self, patient: SimulatedPatient, kind: SerialKind, ports_dir: Path
    ) -> SerialSim:
        rng = np.random.default_rng([self.settings.seed, patient.index, 2, len(self.serial)])
        device_seed = int(rng.integers(0, 2**31))
        return self._new_serial_sim(
            kind,
            device_seed,
            where=f"bed{patient.index:02d}",
            port_suffix=f"{patient.index:02d}",
            ports_dir=ports_dir,
            device_token=mint_token(rng),
            patient_token=patient.patient_token,
        )

    def _new_serial_sim(
        self,
        kind: SerialKind,
        device_seed: int,
        *,
        where: str,
        port_suffix: str,
        ports_dir: Path,
        device_token: str,
        patient_token: str,
    ) -> SerialSim:
        short = "implant" if kind is SerialKind.IMPLANT else "monitor"
        device: ImplantReceiverSim | BedsideMonitorSim = (
            ImplantReceiverSim(device_seed)
            if kind is SerialKind.IMPLANT
            else BedsideMonitorSim(device_seed, room=self.room)
        )
        interval_s = max(
            _MIN_SERIAL_INTERVAL_S, SERIAL_INTERVAL_S[kind] * self.settings.interval_scale
        )
        return SerialSim(
            label=f"{short}-{where}",
            kind=kind,
            device=device,
            port=PtyPort(ports_dir / f"{short}-{port_suffix}"),
            device_token=device_token,
            patient_token=patient_token,
            interval_s=interval_s,
        )

    def _ble_tap(self, patient: str, device: str, kind: str) -> Callable[[SentValue], None]:
        def tap(value: SentValue) -> None:
            self._tap.record(
                LedgerEntry(
                    patient,
                    value.metric,
                    device,
                    value.ts_ns,
                    value.value,
                    value.device_clock,
                    kind,
                )
            )

        return tap

    def _serial_tap(self, sim: SerialSim) -> Callable[[Sent], None]:
        def tap(sent: Sent) -> None:
            if not sent.intact or not sim.patient_token:
                return  # bench devices are bound through the registry, not the ledger
            record: _ReportsReadings = sent.record  # type: ignore[assignment]
            for metric, ts_ns, value in record.readings():
                self._tap.record(
                    LedgerEntry(
                        sim.patient_token,
                        metric,
                        sim.device_token,
                        ts_ns,
                        value,
                        device_kind=sim.kind.value,
                    )
                )

        return tap

    def sources(self, ble_settings: BleSettings | None = None) -> list[Source]:
        """The agent's real sources, pointed at the simulated hardware: built from the same
        manifest an agent in another process reads (firmware_sims.remote.ward)."""
        sources, self._readers = ward_sources(
            WardManifest.parse(self.manifest()),
            self.radio.client_backend,
            self.radio.scanner_backend,
            ble_settings,
        )
        return sources

    @contextlib.asynccontextmanager
    async def powered(self) -> AsyncIterator[None]:
        """Devices on: the radio advertises and measures, serial devices stream to their ports."""
        for sim in self.serial:
            sim.port.plug()
        try:
            async with self.radio, asyncio.TaskGroup() as group:
                self._streams = [
                    group.create_task(self._stream(sim), name=f"sims.serial[{sim.label}]")
                    for sim in self.serial
                ]
                try:
                    yield
                finally:
                    self._stop_serial.set()
        finally:
            for sim in self.serial:
                sim.port.unplug()

    async def _stream(self, sim: SerialSim) -> None:
        # Bytes a device sends before the gateway opens the port are lost on a real line too
        # (pyserial flushes the input queue on open), and were never delivered: the device is
        # switched on once the agent's source holds the port, so the ledger counts only what
        # could be read.
        reader = self._readers.get(sim.label)
        # The source has no "opened" event to wait on, so the device polls its cable.
        while reader is not None and not reader.is_open and not self._stop_serial.is_set():  # noqa: ASYNC110
            await asyncio.sleep(_QUIESCE_POLL_S)
        if self._readers_elsewhere and sim.patient_token:
            await self._opened_or_stopped(sim.label)
        await stream(
            sim.device,
            sim.port,
            self._stop_serial,
            interval_s=sim.interval_s,
            on_sent=self._serial_tap(sim),
        )

    async def _opened_or_stopped(self, label: str) -> None:
        opened = self._opened_elsewhere.setdefault(label, asyncio.Event())
        waits = {
            asyncio.ensure_future(opened.wait()),
            asyncio.ensure_future(self._stop_serial.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def port_opened(self, label: str) -> None:
        """The agent in another process holds the port `label`: its device may start."""
        if not any(sim.label == label for sim in self.serial):
            msg = f"this ward has no serial device {label!r}"
            raise KeyError(msg)
        self._opened_elsewhere.setdefault(label, asyncio.Event()).set()

    def manifest(self) -> dict[str, object]:
        """What an agent in another process needs to read this ward (firmware_sims.remote):
        every bed's wearables and every serial device with its port."""
        return {
            "beds": [
                {
                    "bed": patient.index,
                    "patient": patient.patient_token,
                    "devices": [
                        {
                            "address": device.peripheral.address,
                            "device": device.device_token,
                            "kind": device.peripheral.kind,
                            "interval_s": device.peripheral.interval_s,
                        }
                        for device in patient.devices
                    ],
                }
                for patient in self.patients
            ],
            "serial": [
                {
                    "label": sim.label,
                    "kind": sim.kind.value,
                    "path": str(sim.port.path.absolute()),
                    "device": sim.device_token,
                    "patient": sim.patient_token,
                }
                for sim in self.serial
            ],
        }

    async def quiesce(self, timeout_s: float = 10.0) -> None:
        """Stop every device measuring and wait until what they sent has been read.

        Called before the agent stops its sources, so a run ends with every delivered value
        read: BLE values are in the central's queue once delivered, serial bytes once the
        pseudo-terminal's input queue is empty.
        """
        for peripheral in self.bench:
            peripheral.halt()
        for patient in self.patients:
            for device in patient.devices:
                device.peripheral.halt()
        self._stop_serial.set()
        if self._streams:
            await asyncio.wait(self._streams, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while any(sim.port.unread_bytes() for sim in self.serial):
            if time.monotonic() > deadline:
                _LOGGER.warning("simulated serial ports still hold unread bytes at stop")
                break
            await asyncio.sleep(_QUIESCE_POLL_S)
        # Notifications go on air through the loop: let those already sent arrive.
        await asyncio.sleep(_QUIESCE_POLL_S)

"""A simulated patient with a set of bedside devices, served to the agent as a Source."""

from __future__ import annotations

import asyncio
import heapq
import time
from dataclasses import dataclass
from typing import Final

import numpy as np

from edge_agent.protocol import by_name
from edge_agent.sources.base import Emit, Reading
from firmware_sims.events import EventSchedule
from firmware_sims.ledger import Ledger, LedgerEntry
from firmware_sims.physiology import MODELS, VitalGenerator, quantise


@dataclass(slots=True, frozen=True)
class DeviceModel:
    """A simulated device: which vitals it reports and how often."""

    kind: str
    metrics: tuple[str, ...]
    interval_s: float


# The ward kit every simulated patient wears. Blood pressure is a periodic cuff; its mean arterial
# pressure is derived from the same cycle's systolic and diastolic values, as cuffs do.
WARD_KIT: Final[tuple[DeviceModel, ...]] = (
    DeviceModel("hr-strap", ("heart_rate",), 1.0),
    DeviceModel("pulse-oximeter", ("spo2",), 1.0),
    DeviceModel("resp-patch", ("resp_rate",), 4.0),
    DeviceModel("thermometer", ("body_temp",), 10.0),
    DeviceModel("bp-cuff", ("bp_systolic", "bp_diastolic", "bp_mean"), 15.0),
)


def mint_token(rng: np.random.Generator) -> str:
    """A 128-bit surrogate token, drawn from the seeded generator so runs replay exactly."""
    return bytes(rng.integers(0, 256, size=16, dtype=np.uint8)).hex()


@dataclass(slots=True)
class _Device:
    model: DeviceModel
    token: str
    generators: dict[str, VitalGenerator]
    last_ts_ns: int = 0


class SimulatedPatient:
    """Implements the agent's Source protocol: emits each device's readings on its schedule."""

    def __init__(
        self,
        index: int,
        seed: int,
        ledger: Ledger | None,
        interval_scale: float = 1.0,
        schedule: EventSchedule | None = None,
    ) -> None:
        rng = np.random.default_rng([seed, index])
        self.schedule = schedule or EventSchedule.none()
        self.index = index
        self.patient_token = mint_token(rng)
        self._ledger = ledger
        self._interval_scale = interval_scale
        self._stopped = asyncio.Event()
        self.devices: list[_Device] = []
        for model in WARD_KIT:
            generators = {
                metric: VitalGenerator(MODELS[metric], rng)
                for metric in model.metrics
                if metric in MODELS
            }
            self.devices.append(_Device(model, mint_token(rng), generators))
        self.readings_emitted = 0

    @property
    def name(self) -> str:
        return f"sim-patient-{self.index:02d}"

    def stop(self) -> None:
        self._stopped.set()

    def _measure(self, device: _Device, ts_ns: int) -> dict[str, float]:
        t_s = ts_ns / 1e9
        values = {
            metric: quantise(gen.model, self.schedule.apply(metric, t_s, gen.sample(t_s)))
            for metric, gen in device.generators.items()
        }
        if "bp_mean" in device.model.metrics:
            systolic, diastolic = values["bp_systolic"], values["bp_diastolic"]
            values["bp_mean"] = float(round(diastolic + (systolic - diastolic) / 3.0))
        return values

    async def _emit_device(self, device: _Device, emit: Emit) -> None:
        # Strictly increasing per device: a reading's identity includes its timestamp.
        ts_ns = max(time.time_ns(), device.last_ts_ns + 1)
        device.last_ts_ns = ts_ns
        for metric, value in self._measure(device, ts_ns).items():
            reading = Reading(
                device_token=device.token,
                patient_token=self.patient_token,
                device_kind=device.model.kind,
                metric_code=by_name(metric).code,
                ts_ns=ts_ns,
                value=value,
            )
            if self._ledger is not None:
                self._ledger.record(
                    LedgerEntry(self.patient_token, metric, device.token, ts_ns, value)
                )
            await emit(reading)
            self.readings_emitted += 1

    async def run(self, emit: Emit) -> None:
        start = time.monotonic()
        # Stagger devices so patients do not all fire in the same millisecond.
        schedule = [
            (start + (self.index * 0.037 + n * 0.011) % 1.0, n) for n in range(len(self.devices))
        ]
        heapq.heapify(schedule)
        while not self._stopped.is_set():
            due, n = heapq.heappop(schedule)
            wait_s = due - time.monotonic()
            if wait_s > 0:
                try:
                    await asyncio.wait_for(self._stopped.wait(), wait_s)
                except TimeoutError:
                    pass
                else:
                    return
            device = self.devices[n]
            await self._emit_device(device, emit)
            heapq.heappush(schedule, (due + device.model.interval_s * self._interval_scale, n))

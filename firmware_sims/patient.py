"""A simulated patient: pseudonymous tokens, clinical events, and the BLE wearables at the bed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from firmware_sims.ble.peripherals import PERIPHERAL_KINDS, HealthPeripheral, simulated_address
from firmware_sims.events import EventSchedule
from firmware_sims.physiology import RoomClimate


@dataclass(slots=True, frozen=True)
class KitItem:
    """One simulated device model at the bedside, and how often it measures."""

    kind: str
    interval_s: float


# What every simulated patient wears: heart rate and respiration from a chest patch, SpO2 and
# pulse rate from a finger oximeter, a thermometer and a periodic blood-pressure cuff.
WEARABLE_KIT: Final[tuple[KitItem, ...]] = (
    KitItem("chest-patch", 1.0),
    KitItem("pulse-oximeter", 1.0),
    KitItem("thermometer", 10.0),
    KitItem("bp-cuff", 15.0),
)
# Extras by bed: the room's environmental sensor at bed 1, a glucose meter at bed 2. With the four
# wearables that is five links per bed, the most one adapter holds (BleSettings.max_links).
BED_EXTRAS: Final[dict[int, tuple[KitItem, ...]]] = {
    1: (KitItem("env-sensor", 5.0),),
    2: (KitItem("glucose-meter", 60.0),),
}
# Devices that stamp readings with their own clock, in whole seconds: they never measure more
# often than once a second, whatever the interval scale, so two readings never share a stamp.
DEVICE_CLOCK_KINDS: Final = frozenset({"thermometer", "bp-cuff", "glucose-meter"})
_MIN_CLOCKED_INTERVAL_S: Final = 1.0


def mint_token(rng: np.random.Generator) -> str:
    """A 128-bit surrogate token, drawn from the seeded generator so runs replay exactly."""
    return bytes(rng.integers(0, 256, size=16, dtype=np.uint8)).hex()


def kit_for(index: int) -> tuple[KitItem, ...]:
    """The devices at bed `index` (1-based)."""
    return WEARABLE_KIT + BED_EXTRAS.get(index, ())


@dataclass(slots=True, frozen=True)
class BedsideDevice:
    """A simulated peripheral and the pseudonym the gateway stores its readings under."""

    peripheral: HealthPeripheral
    device_token: str


class SimulatedPatient:
    """Patient `index` of a seeded ward: tokens, events and BLE peripherals (not yet on a radio).

    Every device of the patient follows the same event schedule, so an injected fever shows on
    the thermometer and a desaturation on the oximeter, as they would on the ward. Every device
    is in the same `room`: the room sensor at bed 1 measures it, and the heart rate and pulse
    rate respond to its warmth (firmware_sims.physiology.heat_response_bpm).
    """

    def __init__(
        self,
        index: int,
        seed: int,
        *,
        interval_scale: float = 1.0,
        schedule: EventSchedule | None = None,
        room: RoomClimate | None = None,
    ) -> None:
        rng = np.random.default_rng([seed, index])
        self.index = index
        self.schedule = schedule or EventSchedule.none()
        self.patient_token = mint_token(rng)
        self.devices: list[BedsideDevice] = []
        for number, item in enumerate(kit_for(index), start=1):
            interval_s = item.interval_s * interval_scale
            if item.kind in DEVICE_CLOCK_KINDS:
                interval_s = max(_MIN_CLOCKED_INTERVAL_S, interval_s)
            peripheral = PERIPHERAL_KINDS[item.kind](
                simulated_address(index, number),
                seed=seed,
                interval_s=interval_s,
                schedule=self.schedule,
                room=room,
            )
            self.devices.append(BedsideDevice(peripheral, mint_token(rng)))

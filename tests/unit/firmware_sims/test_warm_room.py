"""The warm-room event and the heart rate's response to the room (the report's ground truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_sims.ble.peripherals import (
    ChestPatch,
    EnvironmentalSensor,
    HealthPeripheral,
    PulseOximeter,
    simulated_address,
)
from firmware_sims.events import EVENT_KINDS, ROOM_EVENT_KINDS, EventSchedule
from firmware_sims.physiology import (
    HEART_RATE_BPM_PER_C,
    ROOM_CIRCADIAN_AMPLITUDE_C,
    THERMONEUTRAL_C,
    RoomClimate,
    heat_response_bpm,
)
from firmware_sims.serial import BedsideMonitorSim
from firmware_sims.ward import (
    WARM_ROOM_ONSET_S,
    WARM_ROOM_PLATEAU_S,
    SimulatedWard,
    WardSettings,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NS = 1_000_000_000
WARM_LOW_C, WARM_HIGH_C = ROOM_EVENT_KINDS["warm_room"].targets[0][1:]


def _warm_rooms(seed: int) -> RoomClimate:
    rng = np.random.default_rng(seed)
    events = EventSchedule.draw(rng, T0, 12 * 3600.0, events_per_hour=1.0, kinds=("warm_room",))
    return RoomClimate(22.0, circadian_amplitude_c=0.0, events=events)


def test_the_warm_room_stays_out_of_the_clinical_mix() -> None:
    # The detection evaluation's cohorts draw EventSchedule.draw's default kinds.
    assert "warm_room" not in EVENT_KINDS
    assert set(ROOM_EVENT_KINDS).isdisjoint(EVENT_KINDS)
    schedule = EventSchedule.draw(np.random.default_rng(5), T0, 48 * 3600.0, events_per_hour=4.0)
    kinds = {truth.kind for truth in schedule.ground_truth("p")}
    assert kinds
    assert kinds <= set(EVENT_KINDS)
    assert all(schedule.apply("room_temp", T0 + t, 22.0) == 22.0 for t in range(0, 48 * 3600, 60))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_warm_room_rises_to_its_plateau_above_25_c_and_comes_back(seed: int) -> None:
    room = _warm_rooms(seed)
    truths = room.events.ground_truth("room")
    assert truths
    assert {truth.kind for truth in truths} == {"warm_room"}
    for truth in truths:
        start_s, end_s = truth.start_ns / NS, truth.end_ns / NS
        plateau_start_s, plateau_end_s = truth.plateau_start_ns / NS, truth.plateau_end_ns / NS
        plateau_c = room.temp_c((plateau_start_s + plateau_end_s) / 2)
        assert WARM_LOW_C <= plateau_c <= WARM_HIGH_C
        assert plateau_c > THERMONEUTRAL_C
        assert room.temp_c(plateau_start_s) == pytest.approx(plateau_c, abs=1e-6)
        assert room.temp_c(plateau_end_s) == pytest.approx(plateau_c, abs=1e-6)
        assert room.temp_c(start_s - 1.0) == room.temp_c(end_s + 1.0) == 22.0
        onset = [room.temp_c(t) for t in np.linspace(start_s, plateau_start_s, 50)]
        recovery = [room.temp_c(t) for t in np.linspace(plateau_end_s, end_s, 50)]
        assert onset == sorted(onset)
        assert recovery == sorted(recovery, reverse=True)
        kind = ROOM_EVENT_KINDS["warm_room"]
        assert kind.onset_s[0] <= plateau_start_s - start_s <= kind.onset_s[1]
        assert kind.recovery_s[0] <= end_s - plateau_end_s <= kind.recovery_s[1]


def test_a_room_without_events_follows_its_daily_cycle_and_is_one_function_of_time() -> None:
    room = RoomClimate.draw(np.random.default_rng(8))
    times = [T0 + 97.0 * k for k in range(900)]  # a day
    forwards = [room.temp_c(t) for t in times]
    backwards = [room.temp_c(t) for t in reversed(times)]
    assert forwards == backwards[::-1]
    assert max(forwards) - min(forwards) == pytest.approx(2 * ROOM_CIRCADIAN_AMPLITUDE_C, rel=1e-3)
    assert (max(forwards) + min(forwards)) / 2 == pytest.approx(room.mean_c, abs=1e-3)


def test_the_heart_rate_response_is_zero_up_to_thermoneutral_then_linear() -> None:
    assert heat_response_bpm(18.0) == heat_response_bpm(THERMONEUTRAL_C) == 0.0
    for room_c in (25.5, 28.0, 31.0):
        assert heat_response_bpm(room_c) == pytest.approx(
            HEART_RATE_BPM_PER_C * (room_c - THERMONEUTRAL_C)
        )


def _twins(
    kind: type[HealthPeripheral], warm: RoomClimate, cool: RoomClimate | None
) -> tuple[HealthPeripheral, HealthPeripheral]:
    """The same device (same seed and address, so the same random draws) in two rooms."""
    address = simulated_address(3, 1)
    return kind(address, seed=4, room=warm), kind(address, seed=4, room=cool)


@pytest.mark.parametrize("cool_room", [RoomClimate(22.0, circadian_amplitude_c=0.0), None])
def test_every_heart_rate_of_a_patient_follows_the_room(cool_room: RoomClimate | None) -> None:
    # 29 °C is 4 °C above thermoneutral: 12 /min faster, exactly, at every reading.
    warm_room = RoomClimate(29.0, circadian_amplitude_c=0.0)
    step_bpm = heat_response_bpm(29.0)
    assert step_bpm == 4 * HEART_RATE_BPM_PER_C
    warm, cool = _twins(ChestPatch, warm_room, cool_room)
    oxi_warm, oxi_cool = _twins(PulseOximeter, warm_room, cool_room)
    for k in range(120):
        ts_ns = int((T0 + k) * NS)
        assert warm.measured("heart_rate", ts_ns) - cool.measured("heart_rate", ts_ns) == step_bpm
        assert oxi_warm.measured("pulse_rate", ts_ns) - oxi_cool.measured(
            "pulse_rate", ts_ns
        ) == pytest.approx(step_bpm)
        assert oxi_warm.measured("spo2", ts_ns) == oxi_cool.measured("spo2", ts_ns)
        assert warm.measured("resp_rate", ts_ns) == cool.measured("resp_rate", ts_ns)


def test_the_bedside_monitor_heart_rate_follows_the_room_too() -> None:
    def record(room: RoomClimate) -> list[tuple[int | None, int | None, int | None]]:
        clock = iter(int((T0 + k) * NS) for k in range(60))
        sim = BedsideMonitorSim(9, clock_ns=lambda: next(clock), room=room)
        return [
            (r.heart_rate_bpm, r.resp_rate_per_min, r.spo2_pct)
            for r in (sim.next_record() for _ in range(60))
        ]

    warm = record(RoomClimate(29.0, circadian_amplitude_c=0.0))
    cool = record(RoomClimate(21.0, circadian_amplitude_c=0.0))
    assert [(w[0] or 0) - (c[0] or 0) for w, c in zip(warm, cool, strict=True)] == [12] * 60
    assert [w[1:] for w in warm] == [c[1:] for c in cool]


def test_the_room_sensor_measures_the_room() -> None:
    room = RoomClimate(28.0, circadian_amplitude_c=0.0)
    sensor = EnvironmentalSensor(simulated_address(1, 5), seed=2, room=room)
    readings = [sensor.measured("room_temp", int((T0 + k) * NS), exponent=-2) for k in range(50)]
    assert all(abs(c - 28.0) < 0.5 and c == round(c, 2) for c in readings)
    assert len(set(readings)) > 1  # the sensor's own noise
    # On its own (a bench device) it measures a room of its own, with no events.
    alone = EnvironmentalSensor(simulated_address(1, 5), seed=2)
    assert alone.room is None
    assert alone.climate.events.ground_truth("room") == []


def test_a_scripted_ward_warms_its_one_room_for_every_patient(tmp_path: Path) -> None:
    ward = SimulatedWard(
        WardSettings(patients=3, seed=6, scripted_event="fever", warm_room=True),
        ports_dir=tmp_path,
        ledger=None,
    )
    rooms = {id(d.peripheral.room) for p in ward.patients for d in p.devices}
    assert rooms == {id(ward.room)}
    (truth,) = ward.room.events.ground_truth("room")
    assert truth.kind == "warm_room"
    assert (truth.plateau_start_ns - truth.start_ns) / NS == pytest.approx(WARM_ROOM_ONSET_S)
    assert (truth.plateau_end_ns - truth.plateau_start_ns) / NS == pytest.approx(
        WARM_ROOM_PLATEAU_S
    )
    assert ward.room.temp_c(truth.plateau_start_ns / NS) == (WARM_LOW_C + WARM_HIGH_C) / 2
    for settings in (
        WardSettings(patients=1, seed=6),
        WardSettings(patients=1, seed=6, scripted_event="fever"),
    ):
        quiet = SimulatedWard(settings, ports_dir=tmp_path, ledger=None)
        assert quiet.room.events.ground_truth("room") == []
    forced_settings = WardSettings(patients=1, seed=6, warm_room=True)
    forced = SimulatedWard(forced_settings, ports_dir=tmp_path, ledger=None)
    assert [t.kind for t in forced.room.events.ground_truth("room")] == ["warm_room"]

"""SerialSource on a real pseudo-terminal: noise costs no intact frame; unplug/replug resumes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest

from edge_agent.devices.serial_frames import decode_frame
from edge_agent.protocol.metrics import CATALOGUE, Metric, by_name
from edge_agent.sources.base import Reading
from edge_agent.sources.serial import (
    SerialKind,
    SerialSettings,
    SerialSource,
    implant_observations,
)
from firmware_sims.serial import BedsideMonitorSim, ImplantReceiverSim, PtyPort, Sent, stream
from firmware_sims.serial.monitor import VitalsRecord

pytestmark = pytest.mark.integration

FAST: Final = SerialSettings(read_timeout_s=0.05, reopen_initial_s=0.02, reopen_max_s=0.2)
WAIT_S: Final = 20.0  # a hang guard, not a performance bound
DEVICE: Final = "d" * 32
PATIENT: Final = "p" * 32
CLOCK_S: Final = 1_795_373_100


def _any_metric(name: str) -> Metric:
    """A catalogue that knows every name, so implant metrics reach `emit` before they are added."""
    return Metric(1000 + sum(name.encode()), name, "1", None, float("-inf"), float("inf"), name)


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        # The source's counters have no event to wait on, so the test polls them.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@asynccontextmanager
async def _running(
    source: SerialSource, readings: list[Reading]
) -> AsyncIterator[asyncio.Task[None]]:
    async def emit(reading: Reading) -> None:
        readings.append(reading)

    task = asyncio.create_task(source.run(emit), name=f"test.{source.name}")
    try:
        await _until(lambda: source.is_open)
        yield task
    finally:
        source.stop()
        async with asyncio.timeout(WAIT_S):
            await task


def _implant_source(port: PtyPort, lookup: Callable[[str], Metric] = _any_metric) -> SerialSource:
    return SerialSource(
        "bed-01",
        port.path,
        SerialKind.IMPLANT,
        device_token=DEVICE,
        patient_token=PATIENT,
        settings=FAST,
        lookup=lookup,
    )


def _expected_readings(units: list[bytes]) -> list[tuple[int, int, float]]:
    return [
        (_any_metric(observation.metric).code, observation.ts_ns, observation.value)
        for unit in units
        for observation in implant_observations(decode_frame(unit[1:-1]).message)
    ]


@pytest.mark.asyncio
async def test_noise_and_corrupted_frames_cost_no_intact_frame(tmp_path: Path) -> None:
    sim = ImplantReceiverSim(seed=21, clock_s=lambda: CLOCK_S)
    readings: list[Reading] = []
    with PtyPort(tmp_path / "implant0") as port:
        source = _implant_source(port)
        async with _running(source, readings):
            intact: list[bytes] = []
            for n in range(90):
                unit = sim.next_unit(corrupt=n % 4 == 3)
                if unit.intact:
                    intact.append(unit.data)
                noise = sim.garbage() if n % 3 == 0 else b""
                await asyncio.to_thread(port.write, unit.data + noise)
            await _until(lambda: source.frames_ok >= len(intact))
            await _until(lambda: len(readings) >= len(_expected_readings(intact)))
    assert len(intact) == 68
    assert source.frames_ok == len(intact)
    assert source.crc_failures >= 90 - len(intact)
    assert source.seq_gaps == 90 - len(intact)  # each corrupted frame left a one-frame gap
    assert [(r.metric_code, r.ts_ns, r.value) for r in readings] == _expected_readings(intact)
    assert {(r.device_token, r.patient_token, r.device_kind) for r in readings} == {
        (DEVICE, PATIENT, "implant-receiver")
    }
    assert source.reopen_count == 0


@pytest.mark.asyncio
async def test_unplug_then_replug_resumes_without_restarting(tmp_path: Path) -> None:
    sim = ImplantReceiverSim(seed=22, clock_s=lambda: CLOCK_S)
    readings: list[Reading] = []
    with PtyPort(tmp_path / "implant0") as port:
        source = _implant_source(port)
        async with _running(source, readings) as task:
            for _ in range(10):
                await asyncio.to_thread(port.write, sim.next_unit().data)
            await _until(lambda: source.frames_ok == 10)

            port.unplug()
            await _until(lambda: source.port_errors == 1)
            for _ in range(5):  # sent while the cable is out: lost, as on a real link
                await asyncio.to_thread(port.write, sim.next_unit().data)
            port.replug()
            await _until(lambda: source.reopen_count == 1 and source.is_open)
            assert not task.done()

            for _ in range(10):
                await asyncio.to_thread(port.write, sim.next_unit().data)
            await _until(lambda: source.frames_ok == 20)
    assert source.open_count == 2
    assert source.seq_gaps == 1
    assert source.frame_decoder.counters.frames_missed == 5
    assert source.frame_decoder.counters.frames_rejected == 0


@pytest.mark.asyncio
async def test_monitor_stream_with_noise_keeps_every_intact_sentence(tmp_path: Path) -> None:
    sim = BedsideMonitorSim(seed=23, nibp_every=4)
    stop = asyncio.Event()
    intact: list[VitalsRecord] = []

    def on_sent(unit: Sent) -> None:
        if unit.intact:
            assert isinstance(unit.record, VitalsRecord)
            intact.append(unit.record)
        if sim.lines_sent >= 60:
            stop.set()

    readings: list[Reading] = []
    with PtyPort(tmp_path / "monitor0") as port:
        source = SerialSource(
            "bed-02",
            port.path,
            SerialKind.MONITOR,
            device_token=DEVICE,
            patient_token=PATIENT,
            settings=SerialSettings(baudrate=9600, read_timeout_s=0.05),
        )
        async with _running(source, readings):
            await stream(
                sim, port, stop, interval_s=0.0, corrupt_every=5, garbage_every=3, on_sent=on_sent
            )
            counters = source.line_decoder.counters
            # The last unit is a corrupted one, so wait for it as well as for the intact ones.
            await _until(lambda: counters.lines_ok + counters.bad_checksums >= sim.lines_sent)
    assert len(intact) == 48
    assert source.line_decoder.counters.lines_ok == 48
    assert source.line_decoder.counters.bad_checksums == 12
    assert source.lines_bad >= 12
    hr = by_name("heart_rate").code
    assert [(r.ts_ns, r.value) for r in readings if r.metric_code == hr] == [
        (record.ts_ns, float(record.heart_rate_bpm))
        for record in intact
        if record.heart_rate_bpm is not None
    ]
    nibp_cycles = sum(record.nibp_mmhg is not None for record in intact)
    assert sum(r.metric_code == by_name("bp_mean").code for r in readings) == nibp_cycles


@pytest.mark.asyncio
async def test_implant_metrics_missing_from_the_catalogue_are_counted_not_emitted(
    tmp_path: Path,
) -> None:
    sim = ImplantReceiverSim(seed=24, clock_s=lambda: CLOCK_S)
    readings: list[Reading] = []
    with PtyPort(tmp_path / "implant0") as port:
        source = _implant_source(port, lookup=by_name)
        async with _running(source, readings):
            unit = sim.next_unit()  # a status record: error code and link RSSI
            await asyncio.to_thread(port.write, unit.data)
            await _until(lambda: source.frames_ok == 1)
    names = [o.metric for o in implant_observations(decode_frame(unit.data[1:-1]).message)]
    known = {metric.name for metric in CATALOGUE}
    assert names
    assert source.uncatalogued_total == sum(name not in known for name in names)
    assert len(readings) == sum(name in known for name in names)


@pytest.mark.asyncio
async def test_stop_returns_promptly_from_a_long_read_and_from_backoff(tmp_path: Path) -> None:
    slow = SerialSettings(read_timeout_s=600.0, reopen_initial_s=600.0, reopen_max_s=600.0)
    with PtyPort(tmp_path / "implant0") as port:
        source = SerialSource(
            "bed-03",
            port.path,
            SerialKind.IMPLANT,
            device_token=DEVICE,
            patient_token=PATIENT,
            settings=slow,
        )
        async with _running(source, []):
            await asyncio.sleep(0.05)  # let the first 600 s read start in its thread
    absent = SerialSource(
        "bed-04",
        tmp_path / "no-such-port",
        SerialKind.MONITOR,
        device_token=DEVICE,
        patient_token=PATIENT,
        settings=slow,
    )

    async def emit(_: Reading) -> None:
        raise AssertionError

    task = asyncio.create_task(absent.run(emit))
    await asyncio.sleep(0.05)  # now waiting out a 600 s backoff
    absent.stop()
    async with asyncio.timeout(WAIT_S):
        await task
    assert absent.open_count == 0


@pytest.mark.asyncio
async def test_a_stalled_pipeline_never_stalls_the_port_and_drops_the_oldest(
    tmp_path: Path,
) -> None:
    sim = BedsideMonitorSim(seed=25, nibp_every=0)  # 4 values a sentence: HR, RR, SpO2, TEMP
    released = asyncio.Event()
    stalled = asyncio.Event()
    readings: list[Reading] = []

    async def stalled_emit(reading: Reading) -> None:
        stalled.set()
        await released.wait()
        readings.append(reading)

    with PtyPort(tmp_path / "monitor0") as port:
        source = SerialSource(
            "bed-05",
            port.path,
            SerialKind.MONITOR,
            device_token=DEVICE,
            patient_token=PATIENT,
            settings=SerialSettings(read_timeout_s=0.05, buffer_readings=10),
        )
        task = asyncio.create_task(source.run(stalled_emit))
        await _until(lambda: source.is_open)
        sent = [sim.next_unit() for _ in range(30)]
        await asyncio.to_thread(port.write, sent[0].data)
        async with asyncio.timeout(WAIT_S):
            await stalled.wait()  # the first value is now stuck in emit
        await asyncio.to_thread(port.write, b"".join(unit.data for unit in sent[1:]))
        # The reader keeps decoding while emit is stuck on the first value.
        await _until(lambda: source.line_decoder.counters.lines_ok == 30)
        released.set()
        await _until(lambda: len(readings) == 11)
        source.stop()
        async with asyncio.timeout(WAIT_S):
            await task
    assert source.dropped_total == 30 * 4 - 11
    last = sent[-1].record
    assert isinstance(last, VitalsRecord)
    # The one value already handed to emit, then the newest ten: the last sentences' values.
    assert readings[-1].ts_ns == last.ts_ns
    assert [r.ts_ns for r in readings[1:]] == sorted(r.ts_ns for r in readings[1:])

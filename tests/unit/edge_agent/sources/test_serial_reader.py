"""SerialSource's reader on the event loop: data as it lands, a hang-up reopens the port."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
import serial as pyserial

from edge_agent.sources.base import Reading
from edge_agent.sources.serial import SerialKind, SerialSettings, SerialSource
from firmware_sims.serial import BedsideMonitorSim

FAST = SerialSettings(reopen_initial_s=0.01, reopen_max_s=0.02)


class _PipePort:
    """A port whose descriptor is the read end of a pipe: closing the write end hangs it up."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)  # as pyserial opens a port

    def fileno(self) -> int:
        return self.read_fd

    def close(self) -> None:
        os.close(self.read_fd)


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(20.0):  # a hang guard, not a performance bound
        while not condition():  # noqa: ASYNC110 - the source's counters have no event
            await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_a_port_that_hangs_up_is_closed_and_opened_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ports: list[_PipePort] = []

    def open_port(**_settings: object) -> _PipePort:
        ports.append(_PipePort())
        return ports[-1]

    monkeypatch.setattr(pyserial, "Serial", open_port)
    readings: list[Reading] = []

    async def emit(reading: Reading) -> None:
        readings.append(reading)

    source = SerialSource(
        "bed-01",
        "monitor0",
        SerialKind.MONITOR,
        device_token="d" * 32,
        patient_token="p" * 32,
        settings=FAST,
    )
    task = asyncio.create_task(source.run(emit))
    try:
        await _until(lambda: source.is_open)
        sim = BedsideMonitorSim(seed=3, nibp_every=0)  # 4 values a sentence
        # Two sentences in pieces: each piece is decoded as it lands, none waits for more.
        data = sim.next_unit().data + sim.next_unit().data
        for start in range(0, len(data), 7):
            os.write(ports[0].write_fd, data[start : start + 7])
            await asyncio.sleep(0)
        await _until(lambda: len(readings) == 8)
        os.close(ports[0].write_fd)  # readable, and nothing to read: the device hung up
        await _until(lambda: len(ports) == 2 and source.is_open)
        assert (source.port_errors, source.reopen_count) == (1, 1)
        os.write(ports[1].write_fd, sim.next_unit().data)
        await _until(lambda: len(readings) == 12)
    finally:
        source.stop()
        async with asyncio.timeout(20.0):
            await task
        os.close(ports[-1].write_fd)
    assert not source.is_open
    assert source.line_decoder.counters.lines_ok == 3

"""The pseudo-terminal port: byte-exact, unpluggable and replugable at a stable path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from edge_agent.devices.monitor_lines import LineDecoder
from edge_agent.devices.serial_frames import FrameDecoder
from firmware_sims.serial import BedsideMonitorSim, ImplantReceiverSim, PtyPort, Sent, stream


@pytest.fixture
def port(tmp_path: Path) -> Iterator[PtyPort]:
    with PtyPort(tmp_path / "ttySIM0") as pty:
        yield pty


def _reader(path: Path) -> Any:
    return serial.Serial(str(path), 115_200, timeout=2.0)


def _read_exactly(reader: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = reader.read(size - len(data))
        if not chunk:
            break  # the read timed out: what arrived is all there is
        data += chunk
    return data


def test_every_byte_value_passes_unchanged(port: PtyPort) -> None:
    # A cooked tty would turn CR into LF and swallow control characters such as 0x03 and 0x7F.
    reader = _reader(port.path)
    try:
        payload = bytes(range(256)) * 4
        assert port.write(payload) == len(payload)
        assert _read_exactly(reader, len(payload)) == payload
    finally:
        reader.close()


def test_unplug_fails_the_reader_removes_the_link_and_drops_writes(port: PtyPort) -> None:
    reader = _reader(port.path)
    try:
        port.unplug()
        assert not port.path.exists()
        with pytest.raises(serial.SerialException):
            reader.read(1)
    finally:
        reader.close()
    assert port.write(b"lost") == 0
    assert port.bytes_dropped == 4
    assert not port.plugged


def test_replug_serves_a_fresh_pair_at_the_same_path(port: PtyPort) -> None:
    port.replug()
    assert port.plug_count == 2
    assert port.plugged
    assert port.path.is_symlink()
    reader = _reader(port.path)
    try:
        assert port.write(b"\x00back\x00") == 6
        assert _read_exactly(reader, 6) == b"\x00back\x00"
    finally:
        reader.close()


@pytest.mark.asyncio
async def test_stream_sends_every_unit_and_reports_which_were_intact(port: PtyPort) -> None:
    reader = _reader(port.path)
    sim = ImplantReceiverSim(seed=11, clock_s=lambda: 1_795_373_100)
    stop = asyncio.Event()
    sent: list[Sent] = []

    def on_sent(unit: Sent) -> None:
        sent.append(unit)
        if sim.frames_sent >= 12:
            stop.set()

    try:
        await stream(sim, port, stop, interval_s=0.0, corrupt_every=3, on_sent=on_sent)
        data = _read_exactly(reader, port.bytes_written)
    finally:
        reader.close()
    assert (sim.frames_sent, sim.frames_corrupted) == (12, 4)
    assert len(sent) == 12
    assert sum(unit.intact for unit in sent) == 8
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    assert [f.seq for f in frames] == [n for n in range(12) if (n + 1) % 3 != 0]
    assert decoder.counters.crc_failures == 4


@pytest.mark.asyncio
async def test_stream_adds_line_noise_that_costs_no_sentence(port: PtyPort) -> None:
    reader = _reader(port.path)
    sim = BedsideMonitorSim(seed=4)
    stop = asyncio.Event()

    def on_sent(_: Sent) -> None:
        if sim.lines_sent >= 10:
            stop.set()

    try:
        await stream(sim, port, stop, interval_s=0.0, garbage_every=2, on_sent=on_sent)
        data = _read_exactly(reader, port.bytes_written)
    finally:
        reader.close()
    decoder = LineDecoder()
    assert [s.seq for s in decoder.feed(data)] == list(range(10))

"""Serial device source: implant telemetry receiver or bedside monitor on a serial port (pyserial).

This is the only module that imports pyserial. pyserial opens the port non-blocking; the event
loop watches its descriptor and reads only what has arrived (`loop.add_reader`), so no read ever
blocks the loop or waits in a worker thread (opening and closing, which can block, still run in
one). A worker-thread read per chunk cost 3.4 times the CPU, mostly thread switches and GIL
hand-overs (scripts/bench-serial.py; docs/performance.md, "Agent footprint"). A serial device
cannot be paused (no flow control), so the reader never waits for the pipeline: decoded values
go into a bounded buffer that drops its oldest entry and counts it (`dropped_total`), and a
second task hands them to `emit`, which is where backpressure is felt. When the port goes away
(EIO, a hang-up, the device node vanishing) the source closes it, waits with capped, jittered
exponential backoff and opens the same path again, keeping its decoder's counters and sequence
tracking, so a gap across the outage is counted. Log lines name the source only: a port path
such as /dev/serial/by-id/usb-<vendor>_<serial> would leak a device serial number.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import serial

from edge_agent.devices.monitor_lines import LineDecoder, VitalsSentence
from edge_agent.devices.serial_frames import (
    ArrhythmiaEpisode,
    Battery,
    DeviceStatus,
    FrameDecoder,
    ImplantMessage,
    LeadImpedance,
    NightlyTrend,
)
from edge_agent.protocol.errors import CatalogueError
from edge_agent.protocol.metrics import Metric, by_name
from edge_agent.sources.base import Emit, Reading

_LOGGER = logging.getLogger(__name__)

_NS_PER_S: Final = 1_000_000_000
_MV_PER_V: Final = 1000.0


class SerialKind(enum.StrEnum):
    """Which device is on the port; the value is the Reading's `device_kind`."""

    IMPLANT = "implant-receiver"
    MONITOR = "bedside-monitor"


@dataclass(slots=True, frozen=True)
class SerialSettings:
    """Port, retry and buffer settings for one serial source."""

    baudrate: int = 115_200
    read_timeout_s: float = 0.2
    """pyserial's read timeout, and how long an open port must stay up without failing before
    its reopen backoff starts again from `reopen_initial_s`."""
    read_size: int = 512
    reopen_initial_s: float = 0.5
    reopen_max_s: float = 30.0
    buffer_readings: int = 4096  # decoded values waiting for emit; the oldest is dropped


@dataclass(slots=True, frozen=True)
class Observation:
    """A decoded value before catalogue lookup: metric name, device time (UTC ns), value."""

    metric: str
    ts_ns: int
    value: float


def implant_observations(message: ImplantMessage) -> tuple[Observation, ...]:
    """What one implant record contributes, at the implant's own time stamps."""
    out: list[Observation] = []

    def add(metric: str, time_s: int, value: float | None) -> None:
        if value is not None:
            out.append(Observation(metric, time_s * _NS_PER_S, float(value)))

    match message:
        case DeviceStatus():
            add("implant_error_code", message.device_time_s, message.error_code)
            add("implant_link_rssi", message.device_time_s, message.link_rssi_dbm)
        case NightlyTrend():
            start_s = message.period_start_s
            add("night_heart_rate", start_s, message.night_heart_rate_bpm)
            add("activity_time", start_s, message.activity_min)
            add("af_burden", start_s, message.af_burden_pct)
            add("fluid_index", start_s, message.fluid_index_ohm_d)
        case Battery():
            add("battery_voltage", message.device_time_s, message.voltage_mv / _MV_PER_V)
            add("battery_longevity", message.device_time_s, message.longevity_months)
            add("battery_phase", message.device_time_s, int(message.phase))
        case LeadImpedance():
            for lead in message.channels:
                name = f"lead_impedance_{lead.channel.name.lower()}"
                add(name, message.device_time_s, lead.impedance_ohm)
        case ArrhythmiaEpisode():
            add("episode_type", message.start_s, int(message.episode_type))
            add("episode_duration", message.start_s, message.duration_s)
            add("episode_max_rate", message.start_s, message.max_rate_bpm)
            add("episode_therapy", message.start_s, int(message.therapy))
    return tuple(out)


def monitor_observations(sentence: VitalsSentence) -> tuple[Observation, ...]:
    """What one monitor sentence contributes, at the monitor's time stamp."""
    pairs: list[tuple[str, float | None]] = [
        ("heart_rate", sentence.heart_rate_bpm),
        ("resp_rate", sentence.resp_rate_per_min),
        ("spo2", sentence.spo2_pct),
        ("body_temp", sentence.temp_c),
    ]
    if sentence.nibp is not None:
        pairs += [
            ("bp_systolic", sentence.nibp.systolic_mmhg),
            ("bp_diastolic", sentence.nibp.diastolic_mmhg),
            ("bp_mean", sentence.nibp.mean_mmhg),
        ]
    return tuple(
        Observation(metric, sentence.ts_ns, float(value))
        for metric, value in pairs
        if value is not None
    )


class _Port(Protocol):
    """The part of serial.Serial this module uses."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class _PortLostError(Exception):
    """Internal: the open port failed; the run loop closes it and reopens after a backoff."""


class _DeviceGoneError(OSError):
    """Internal: the port was readable but held nothing: end of file, the device hung up."""


def _describe(exc: BaseException) -> str:
    """A log-safe description: errno name or exception type, never the message (it has paths)."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


class SerialSource:
    """Implements the Source protocol for one serial device."""

    def __init__(
        self,
        label: str,
        port_path: str | Path,
        kind: SerialKind,
        *,
        device_token: str,
        patient_token: str,
        settings: SerialSettings | None = None,
        lookup: Callable[[str], Metric] = by_name,
    ) -> None:
        self._label = label
        self._port_path = str(port_path)
        self.kind = kind
        self._device_token = device_token
        self._patient_token = patient_token
        self.settings = settings if settings is not None else SerialSettings()
        self._lookup = lookup
        self._codes: dict[str, int | None] = {}
        self._frames = FrameDecoder()
        self._lines = LineDecoder()
        self._stopping = asyncio.Event()
        self._pending: deque[Observation] = deque()
        self._pending_ready = asyncio.Event()
        self._reading_done = False
        self._port: _Port | None = None
        self._port_done = asyncio.Event()  # the open port failed, or stop()
        self._failures = 0
        # Backoff jitter only; nothing secret depends on it.
        self._jitter = random.Random()  # noqa: S311
        self.open_count = 0
        self.reopen_count = 0
        self.port_errors = 0
        self.readings_emitted = 0
        self.uncatalogued_total = 0
        self.dropped_total = 0

    @property
    def name(self) -> str:
        return f"serial.{self.kind.value}[{self._label}]"

    @property
    def device_token(self) -> str:
        return self._device_token

    @property
    def patient_token(self) -> str:
        return self._patient_token

    @property
    def is_open(self) -> bool:
        return self._port is not None

    @property
    def frame_decoder(self) -> FrameDecoder:
        """The implant frame decoder, with its full counters (unused for a monitor)."""
        return self._frames

    @property
    def line_decoder(self) -> LineDecoder:
        """The monitor line decoder, with its full counters (unused for an implant)."""
        return self._lines

    @property
    def frames_ok(self) -> int:
        return self._frames.counters.frames_ok

    @property
    def crc_failures(self) -> int:
        return self._frames.counters.crc_failures

    @property
    def seq_gaps(self) -> int:
        if self.kind is SerialKind.IMPLANT:
            return self._frames.counters.seq_gaps
        return self._lines.counters.seq_gaps

    @property
    def lines_bad(self) -> int:
        return self._lines.counters.lines_bad

    def stop(self) -> None:
        self._stopping.set()
        self._port_done.set()

    async def run(self, emit: Emit) -> None:
        self._reading_done = False
        async with asyncio.TaskGroup() as group:
            group.create_task(self._deliver(emit), name=f"agent.source.{self.name}.emit")
            try:
                await self._read_until_stopped()
            finally:
                self._reading_done = True
                self._pending_ready.set()

    async def _read_until_stopped(self) -> None:
        while not self._stopping.is_set():
            port = await self._open()
            if port is None:
                await self._backoff()
                continue
            try:
                await self._pump(port)
            except _PortLostError:
                self.port_errors += 1
            finally:
                self._port = None
                await asyncio.to_thread(port.close)
            if not self._stopping.is_set():
                await self._backoff()

    async def _open(self) -> _Port | None:
        settings = self.settings
        try:
            port: _Port = await asyncio.to_thread(
                serial.Serial,
                port=self._port_path,
                baudrate=settings.baudrate,
                timeout=settings.read_timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            level = logging.WARNING if self._failures == 0 else logging.DEBUG
            _LOGGER.log(level, "%s: cannot open the port (%s)", self.name, _describe(exc))
            return None
        if self._stopping.is_set():
            await asyncio.to_thread(port.close)
            return None
        self._port = port
        self.open_count += 1
        if self.open_count > 1:
            self.reopen_count += 1
        # A partial frame or line from before the outage must not join the new stream.
        self._frames.reset()
        self._lines.reset()
        _LOGGER.info("%s: port open", self.name)
        return port

    async def _backoff(self) -> None:
        settings = self.settings
        ceiling_s = min(settings.reopen_max_s, settings.reopen_initial_s * 2.0**self._failures)
        self._failures = min(self._failures + 1, 32)
        # Full jitter in the upper half keeps many gateways from retrying in step.
        delay_s = ceiling_s * self._jitter.uniform(0.5, 1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay_s)

    async def _pump(self, port: _Port) -> None:
        """Decode what arrives until the port fails or stop(): the loop calls `on_readable`
        when bytes are waiting, and the read takes what is there (never blocks: pyserial opened
        the descriptor with O_NONBLOCK), so a frame is decoded and journaled as it lands."""
        loop = asyncio.get_running_loop()
        fd = port.fileno()
        size = self.settings.read_size
        done = self._port_done
        failed: list[BaseException] = []
        opened_s = time.monotonic()

        def give_up(exc: BaseException) -> None:
            # A loop callback must not raise: the task below raises it instead.
            failed.append(exc)
            loop.remove_reader(fd)
            done.set()

        def on_readable() -> None:
            try:
                chunk = os.read(fd, size)
            except BlockingIOError:
                return  # woken for nothing; the loop asks again when there is data
            except OSError as exc:
                give_up(exc)
                return
            if not chunk:
                give_up(_DeviceGoneError(errno.EIO, "readable with no data"))
                return
            self._failures = 0  # data read: the port is healthy
            try:
                observations = self._decode(chunk)
            except Exception as exc:  # a decoder bug: the task below raises it
                give_up(exc)
                return
            for observation in observations:
                self._enqueue(observation)

        if self._stopping.is_set():
            return
        done.clear()
        loop.add_reader(fd, on_readable)
        try:
            await done.wait()
        finally:
            loop.remove_reader(fd)
            # A port that stayed up for a read timeout was healthy, data or not.
            if time.monotonic() - opened_s >= self.settings.read_timeout_s:
                self._failures = 0
        if not failed or self._stopping.is_set():
            return
        exc = failed[0]
        if not isinstance(exc, OSError):
            raise exc  # a decoder bug: fail the source's task group, as an exception here did
        _LOGGER.warning("%s: port lost (%s); will reopen", self.name, _describe(exc))
        raise _PortLostError from exc

    def _decode(self, chunk: bytes) -> list[Observation]:
        out: list[Observation] = []
        if self.kind is SerialKind.IMPLANT:
            for frame in self._frames.feed(chunk):
                out += implant_observations(frame.message)
        else:
            for sentence in self._lines.feed(chunk):
                out += monitor_observations(sentence)
        return out

    def _enqueue(self, observation: Observation) -> None:
        if len(self._pending) >= self.settings.buffer_readings:
            self._pending.popleft()
            self.dropped_total += 1
        self._pending.append(observation)
        self._pending_ready.set()

    async def _deliver(self, emit: Emit) -> None:
        """Hand buffered values to the pipeline; after the reader stops, drain and return."""
        while True:
            while self._pending:
                await self._emit(self._pending.popleft(), emit)
            if self._reading_done:
                return
            self._pending_ready.clear()
            await self._pending_ready.wait()

    def _code(self, metric: str) -> int | None:
        if metric not in self._codes:
            try:
                self._codes[metric] = self._lookup(metric).code
            except CatalogueError:
                _LOGGER.warning("%s: metric %s is not in the catalogue; dropped", self.name, metric)
                self._codes[metric] = None
        return self._codes[metric]

    async def _emit(self, observation: Observation, emit: Emit) -> None:
        code = self._code(observation.metric)
        if code is None:
            self.uncatalogued_total += 1
            return
        await emit(
            Reading(
                device_token=self._device_token,
                patient_token=self._patient_token,
                device_kind=self.kind.value,
                metric_code=code,
                ts_ns=observation.ts_ns,
                value=observation.value,
            )
        )
        self.readings_emitted += 1

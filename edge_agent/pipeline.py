"""The agent's pipeline: sources → bounded queue → framer → sealer → spool → publisher window."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.binding_outbox import BindingOutbox, OutboxError
from edge_agent.config import PipelineSettings, SpoolSettings
from edge_agent.detect import DetectionStage
from edge_agent.framer import Framer
from edge_agent.journal import IntakeJournal, JournalError
from edge_agent.pairing_watch import POLL_INTERVAL_S, PairingWatcher, describe
from edge_agent.protocol import AlertEvent, Channel, Frame, GatewayHealth, encode_frame, topic
from edge_agent.publisher import Publisher
from edge_agent.sealer import Sealer
from edge_agent.sources import Reading, Source
from edge_agent.spool import Priority, Spool, SpooledFrame
from edge_agent.status import (
    HEALTH_INTERVAL_S,
    STATUS_INTERVAL_S,
    Footprint,
    LastReading,
    device_rows,
    devices,
    health_records,
    note_reading,
    write_status,
)

_LOGGER = logging.getLogger(__name__)
IDLE_POLL_S = 0.5
CHUNK_READINGS = 512
BASELINE_SAVE_INTERVAL_S = 60.0
# How often the outbox of `edge-agent pair` is looked at: a binding reaches the sink seconds
# after the nurse paired the device, whether the agent was running or not.
BINDING_POLL_S = 2.0


@dataclass(slots=True)
class PipelineStats:
    """Counters the agent reports; readings are counted once framed and once acknowledged."""

    readings_in: int = 0
    readings_framed: int = 0
    readings_acked: int = 0
    frames_sealed: int = 0
    frames_acked: int = 0
    frames_left_spooled: int = 0
    alerts_sent: int = 0
    readings_recovered: int = 0
    journal_errors: int = 0
    bindings_sent: int = 0


class AgentPipeline:
    """Runs the sources until `stop` is set, then drains the spool to the broker.

    Every sealed frame is written to the spool before it is published and deleted only after
    its PUBACK, so a broker outage or an agent restart loses nothing that was sealed. Frames
    sealed while connected ("live") are published first; frames left from an outage or an
    earlier run ("backlog") drain behind them at `backlog_frames_per_s`.
    """

    def __init__(
        self,
        *,
        settings: PipelineSettings,
        spool_settings: SpoolSettings,
        gateway_id: str,
        topic_prefix: str,
        sealer: Sealer,
        publisher: Publisher,
        spool: Spool,
        sources: Sequence[Source],
        detection: DetectionStage | None = None,
        baselines_file: Path | None = None,
        journal: IntakeJournal | None = None,
        recovered: Sequence[Reading] = (),
        status_file: Path | None = None,
        binding_outbox: BindingOutbox | None = None,
        pairings: PairingWatcher | None = None,
    ) -> None:
        self._settings = settings
        self._pairings = pairings
        self._source_tasks: dict[int, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._binding_outbox = binding_outbox
        self._outbox_errors_logged: set[Path] = set()
        self._spool_settings = spool_settings
        self._sealer = sealer
        self._publisher = publisher
        self._spool = spool
        self._sources = list(sources)
        self._framer = Framer(gateway_id)
        self._telemetry_topic = topic(gateway_id, Channel.TELEMETRY, topic_prefix)
        self._alerts_topic = topic(gateway_id, Channel.ALERTS, topic_prefix)
        self._gateway_id = gateway_id
        self._detection = detection
        self._baselines_file = baselines_file
        self._baselines_saved_at = time.monotonic()
        self._readings: asyncio.Queue[Reading] = asyncio.Queue(settings.queue_readings)
        self._live: collections.deque[SpooledFrame] = collections.deque(
            maxlen=settings.outbox_frames
        )
        self._inflight: set[int] = set()
        self._pick_lock = asyncio.Lock()
        self._new_frame = asyncio.Event()
        self._sealing_done = asyncio.Event()
        self._next_backlog_at = 0.0
        self._sources_stopped = False
        self.stats = PipelineStats()
        # Journal numbers run in queue order: the k-th reading taken is run_first_seq + k - 1
        # (recovered readings first), so a frame's newest reading is the last one taken.
        self._journal = journal
        self._recovered = list(recovered)
        self._taken_seq = journal.run_first_seq - 1 if journal is not None else 0
        self._status_file = status_file
        self._last_readings: dict[str, LastReading] = {}
        self._started_ns = time.time_ns()
        self._state = "running"
        self._publish_lag_s: float | None = None
        self._footprint = Footprint()

    async def _emit(self, reading: Reading) -> None:
        if self._journal is not None:
            try:
                self._journal.append(reading)
            except JournalError as exc:
                # The reading still goes on; only its protection against a crash is lost.
                self.stats.journal_errors += 1
                if self.stats.journal_errors == 1 or self.stats.journal_errors % 1000 == 0:
                    _LOGGER.error(  # noqa: TRY400 - the message says it all; no traceback
                        "%s (%d readings unjournaled)", exc, self.stats.journal_errors
                    )
        note_reading(self._last_readings, reading)
        # Backpressure: a full queue makes the source wait (sources at the edge of the world
        # drop-oldest in their own callbacks and count it).
        await self._readings.put(reading)
        self.stats.readings_in += 1

    async def seal_and_spool(
        self,
        frame: Frame,
        full_topic: str,
        priority: Priority,
        *,
        journal_seq: int | None = None,
    ) -> None:
        """Seal one frame and make it durable before anyone tries to publish it."""
        # The counter fsyncs once per reserve block (1024 frames): rare and short enough
        # to stay on the loop rather than hopping threads for every frame.
        _seq, envelope = self._sealer.seal(full_topic, encode_frame(frame))
        readings = frame.reading_count
        frame_id = await asyncio.to_thread(
            functools.partial(
                self._spool.append,
                full_topic,
                envelope,
                readings,
                priority,
                journal_seq=journal_seq,
            )
        )
        self.stats.frames_sealed += 1
        self.stats.readings_framed += readings
        spooled = SpooledFrame(frame_id, priority, time.time_ns(), full_topic, envelope, readings)
        if priority is Priority.CRITICAL:
            self._live.appendleft(spooled)  # alerts overtake routine frames waiting to go
        else:
            self._live.append(spooled)
        self._new_frame.set()

    async def _flush(self) -> None:
        frame = self._framer.take()
        if frame is not None:
            mark = self._taken_seq if self._journal is not None else None
            await self.seal_and_spool(
                frame, self._telemetry_topic, Priority.ROUTINE, journal_seq=mark
            )

    async def _send_alerts(self, alerts: list[AlertEvent]) -> None:
        """Alerts travel at once in a frame of their own on the alerts topic."""
        self.stats.alerts_sent += len(alerts)
        frame = Frame(self._gateway_id, time.time_ns(), alerts=tuple(alerts))
        await self.seal_and_spool(frame, self._alerts_topic, Priority.CRITICAL)

    async def _detect_and_frame(self, chunk: list[Reading]) -> None:
        # A chunk is at most CHUNK_READINGS readings: the kernels take well under a millisecond,
        # so they run on the loop rather than paying a thread hop per chunk.
        flags: list[int]
        alerts: list[AlertEvent]
        if self._detection is None:
            flags, alerts = [0] * len(chunk), []
        else:
            flags, alerts = self._detection.process(chunk)
        for reading, bits in zip(chunk, flags, strict=True):
            self._framer.add(reading, bits)
        if alerts:
            await self._send_alerts(alerts)

    async def _housekeeping(self) -> None:
        if self._detection is None:
            return
        silent = self._detection.tick(time.time_ns())
        if silent:
            await self._send_alerts(silent)
        due = time.monotonic() - self._baselines_saved_at >= BASELINE_SAVE_INTERVAL_S
        if self._baselines_file is not None and (due or self._sources_stopped):
            await asyncio.to_thread(self._detection.save_baselines, self._baselines_file)
            self._baselines_saved_at = time.monotonic()

    async def _frame_loop(self) -> None:
        interval_s = self._settings.batch_interval_s
        while True:
            deadline = time.monotonic() + interval_s
            while len(self._framer) < self._settings.max_batch_readings:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                if self._readings.empty():
                    # A timeout around the get alone, not wait_for: that wraps the get in a
                    # task of its own at every wake-up, and this loop wakes for every chunk.
                    try:
                        async with asyncio.timeout(remaining_s):
                            first = await self._readings.get()
                    except TimeoutError:
                        break
                else:
                    first = self._readings.get_nowait()
                chunk = [first]
                while len(chunk) < CHUNK_READINGS and not self._readings.empty():
                    chunk.append(self._readings.get_nowait())
                self._taken_seq += len(chunk)
                await self._detect_and_frame(chunk)
            stopping = self._sources_stopped and self._readings.empty()
            await self._housekeeping()
            await self._flush()
            if stopping:
                self._sealing_done.set()
                self._new_frame.set()
                return

    async def _send_bindings(self, outbox: BindingOutbox) -> None:
        """Seal the pending binding events into one frame; drop them from the outbox only once
        that frame is committed to the spool (a crash in between sends them again: the sink
        stores each binding once)."""
        pending, errors = await asyncio.to_thread(outbox.pending)
        for error in errors:
            if error.path not in self._outbox_errors_logged:
                self._outbox_errors_logged.add(error.path)
                _LOGGER.error("%s; left in place, not sent", error)
        if not pending:
            return
        frame = Frame(
            self._gateway_id, time.time_ns(), bindings=tuple(item.event for item in pending)
        )
        await self.seal_and_spool(frame, self._telemetry_topic, Priority.CRITICAL)
        await asyncio.to_thread(self._spool.flush)
        await asyncio.to_thread(outbox.done, pending)
        self.stats.bindings_sent += len(pending)
        _LOGGER.info("%d binding events sealed and spooled", len(pending))

    async def _binding_loop(self, outbox: BindingOutbox) -> None:
        while True:
            try:
                await self._send_bindings(outbox)
            except OutboxError as exc:
                _LOGGER.error("%s; tried again in %.0f s", exc, BINDING_POLL_S)  # noqa: TRY400
            await asyncio.sleep(BINDING_POLL_S)

    def _start_source(self, group: asyncio.TaskGroup, source: Source) -> None:
        task = group.create_task(source.run(self._emit), name=f"agent.source[{source.name}]")
        self._source_tasks[id(source)] = task

    async def _pairing_loop(self, watcher: PairingWatcher) -> None:
        """Devices paired or unpaired while the agent runs take effect within a poll."""
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            bindings = await asyncio.to_thread(watcher.read_if_changed)
            if bindings is None or self._group is None:
                continue
            changes = await watcher.reconcile(bindings)
            for source in changes.stop:
                source.stop()
                task = self._source_tasks.pop(id(source), None)
                if task is not None:
                    await asyncio.wait([task])
                self._sources.remove(source)
            for source in changes.start:
                self._sources.append(source)
                self._start_source(self._group, source)
            if self._detection is not None:
                now_ns = time.time_ns()
                cleared = [
                    event
                    for token in changes.released
                    for event in self._detection.release(token, now_ns)
                ]
                if cleared:
                    await self._send_alerts(cleared)
            if changes.added or changes.released:
                _LOGGER.info("pairing registry changed: %s", describe(changes))

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._spool_settings.commit_interval_s)
            await asyncio.to_thread(self._spool.tick)
            if self._journal is not None:
                self._journal.release(self._spool.committed_journal_seq)

    async def _status_loop(self) -> None:
        health_due = time.monotonic() + HEALTH_INTERVAL_S / 6
        while True:
            await self._write_status()
            if time.monotonic() >= health_due:
                await self._send_health()
                health_due = time.monotonic() + HEALTH_INTERVAL_S
            await asyncio.sleep(STATUS_INTERVAL_S)

    async def _send_health(self) -> None:
        """Each device's link, battery, signal, interval and error count, and the gateway's own
        spool, link and footprint, as a frame of its own."""
        now_ns = time.time_ns()
        records = health_records(devices(self._sources, self._last_readings), now_ns)
        frame = Frame(
            self._gateway_id, now_ns, statuses=records, gateway=await self._health(now_ns)
        )
        await self.seal_and_spool(frame, self._telemetry_topic, Priority.ROUTINE)

    async def _health(self, now_ns: int) -> GatewayHealth:
        spool = await asyncio.to_thread(self._spool.stats)
        return GatewayHealth(
            ts_ns=now_ns,
            uptime_s=round((now_ns - self._started_ns) / 1e9, 1),
            spool_frames=spool.frames,
            spool_bytes=spool.bytes,
            oldest_unsent_s=None
            if spool.oldest_created_ns is None
            else round(max(0, now_ns - spool.oldest_created_ns) / 1e9, 1),
            publish_lag_s=self._publish_lag_s,
            dropped_total=spool.evicted_readings,
            evicted_frames=spool.evicted_frames,
            cpu_pct=self._footprint.cpu_pct(),
            rss_mb=self._footprint.rss_mb(),
            connections_total=self._publisher.connections_total,
        )

    async def _write_status(self) -> None:
        if self._status_file is None:
            return
        spool = await asyncio.to_thread(self._spool.stats)
        now_ns = time.time_ns()
        engine = self._detection.engine if self._detection is not None else None
        document = {
            "written_ns": now_ns,
            "gateway": self._gateway_id,
            "pid": os.getpid(),
            "state": self._state,
            "uptime_s": round((now_ns - self._started_ns) / 1e9, 1),
            "devices": device_rows(devices(self._sources, self._last_readings)),
            "alerts_open": [
                {"patient": p, "device": d, "kind": k}
                for p, d, k in (engine.open_alert_keys() if engine is not None else [])
            ],
            "spool": {
                "frames": spool.frames,
                "bytes": spool.bytes,
                "oldest_unsent_age_s": None
                if spool.oldest_created_ns is None
                else round((now_ns - spool.oldest_created_ns) / 1e9, 1),
                "evicted_frames": spool.evicted_frames,
                "evicted_readings": spool.evicted_readings,
            },
            "broker": {
                "connected": self._publisher.connected,
                "last_puback_age_s": None
                if self._publisher.last_puback_ns is None
                else round((now_ns - self._publisher.last_puback_ns) / 1e9, 1),
                "publish_lag_s": None
                if self._publish_lag_s is None
                else round(self._publish_lag_s, 3),
                "connections": self._publisher.connections_total,
            },
            "counters": dataclasses.asdict(self.stats),
        }
        try:
            await asyncio.to_thread(write_status, self._status_file, document)
        except OSError as exc:
            _LOGGER.warning("cannot write the status file: %s", exc.strerror)

    async def _pick(self) -> SpooledFrame | None:
        """Next frame to publish: live first, then backlog at its rate; None when drained."""
        async with self._pick_lock:
            while True:
                self._new_frame.clear()  # before looking, so no wake-up is lost
                while self._live:
                    frame = self._live.popleft()
                    if frame.id not in self._inflight:
                        self._inflight.add(frame.id)
                        return frame
                now = time.monotonic()
                wait_s = min(IDLE_POLL_S, self._next_backlog_at - now)
                if wait_s <= 0:
                    wait_s = IDLE_POLL_S  # unless the backlog has something, idle until woken
                    backlog = await asyncio.to_thread(
                        self._spool.oldest, 1, frozenset(self._inflight)
                    )
                    if backlog:
                        rate = self._spool_settings.backlog_frames_per_s
                        self._next_backlog_at = now + 1.0 / rate
                        self._inflight.add(backlog[0].id)
                        return backlog[0]
                    if self._sealing_done.is_set() and not self._inflight:
                        return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_frame.wait(), wait_s)

    async def _publish_worker(self) -> None:
        while (frame := await self._pick()) is not None:
            try:
                await self._publisher.publish(frame.topic, frame.envelope)
                self._publish_lag_s = (time.time_ns() - frame.created_ns) / 1e9
                await asyncio.to_thread(self._spool.delete, frame.id)
            finally:
                self._inflight.discard(frame.id)
                self._new_frame.set()
            self.stats.frames_acked += 1
            self.stats.readings_acked += frame.readings

    async def run(self, stop: asyncio.Event) -> PipelineStats:
        async with asyncio.TaskGroup() as group:
            framer_task = group.create_task(self._frame_loop(), name="agent.framer")
            commit_task = group.create_task(self._commit_loop(), name="agent.spool-commit")
            status_task = group.create_task(self._status_loop(), name="agent.status")
            background = [commit_task, status_task]
            if self._binding_outbox is not None:
                background.append(
                    group.create_task(
                        self._binding_loop(self._binding_outbox), name="agent.bindings"
                    )
                )
            workers = [
                group.create_task(self._publish_worker(), name=f"agent.publisher[{n}]")
                for n in range(self._spool_settings.inflight_window)
            ]
            # Readings journaled but never spooled by the last run go first, before any source
            # adds to the queue (their journal numbers come first).
            for reading in self._recovered:
                await self._readings.put(reading)
            self.stats.readings_recovered = len(self._recovered)
            self._recovered = []
            for source in self._sources:
                self._start_source(group, source)
            self._group = group
            pairing_task = None
            if self._pairings is not None:
                pairing_task = group.create_task(
                    self._pairing_loop(self._pairings), name="agent.pairings"
                )
            await stop.wait()
            # No source starts or stops from here on: the drain owns them.
            self._group = None
            if pairing_task is not None:
                pairing_task.cancel()
                await asyncio.wait([pairing_task])
            # The devices' last health goes out with the drain, while their links are still up.
            await self._send_health()
            self._state = "draining"
            _LOGGER.info("stopping %d sources, then draining", len(self._sources))
            for source in self._sources:
                source.stop()
            await asyncio.gather(*self._source_tasks.values())
            self._sources_stopped = True
            _done, pending = await asyncio.wait(
                [framer_task, *workers], timeout=self._settings.drain_timeout_s
            )
            for task in (*pending, *background):
                task.cancel()
        await asyncio.to_thread(self._spool.flush)
        if self._journal is not None:
            self._journal.close(self._spool.committed_journal_seq)
        self.stats.frames_left_spooled = (await asyncio.to_thread(self._spool.stats)).frames
        self._state = "stopped"
        await self._write_status()
        if self.stats.frames_left_spooled:
            _LOGGER.error(
                "drain stopped after %.0f s: %d frames stay spooled for the next start",
                self._settings.drain_timeout_s,
                self.stats.frames_left_spooled,
            )
        _LOGGER.info(
            "pipeline stopped: %d readings in, %d acknowledged in %d frames",
            self.stats.readings_in,
            self.stats.readings_acked,
            self.stats.frames_acked,
        )
        return self.stats

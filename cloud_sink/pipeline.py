"""The sink's pipeline: receive → open → validate → line protocol → batch write → ack."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from cloud_sink.consumer import Inbound, MqttConsumer
from cloud_sink.errors import DatabaseRejected, DatabaseUnavailable
from cloud_sink.influx import InfluxV1
from cloud_sink.keyring import Keyring
from cloud_sink.replay import ReplayGuard
from cloud_sink.validate import frame_points
from edge_agent.protocol import (
    AuthenticationError,
    Channel,
    FrameError,
    TopicError,
    UnknownKeyError,
    WireError,
    decode_frame,
    open_envelope,
    parse,
)

_LOGGER = logging.getLogger(__name__)
# How long one take waits for a first message, which bounds how late a stop is noticed.
TAKE_POLL_S = 0.1


@dataclass(slots=True, frozen=True)
class WriterSettings:
    batch_lines: int
    max_age_s: float
    retry_max_s: float


@dataclass(slots=True)
class SinkStats:
    messages_in: int = 0
    messages_acked: int = 0
    points_written: int = 0
    vitals_written: int = 0
    batches_written: int = 0
    write_retries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    refused_readings: Counter[str] = field(default_factory=Counter)
    dead_lettered_batches: int = 0
    replays_dropped: int = 0


def rejection_reason(exc: WireError) -> str:
    """A short counter name for each way an envelope can be refused."""
    match exc:
        case AuthenticationError():
            return "tag_invalid"
        case UnknownKeyError():
            return "unknown_key"
        case FrameError():
            return "frame_malformed"
        case TopicError():
            return "topic_invalid"
        case _:
            return "envelope_malformed"


@dataclass(slots=True)
class _Batch:
    lines: list[str] = field(default_factory=list)
    messages: list[Inbound] = field(default_factory=list)
    vitals: int = 0
    started: float = 0.0


class SinkPipeline:
    """One writer task: messages are acknowledged only after their points are in InfluxDB."""

    def __init__(
        self,
        *,
        consumer: MqttConsumer,
        keyring: Keyring,
        influx: InfluxV1,
        writer: WriterSettings,
        topic_prefix: str,
        replay: ReplayGuard,
    ) -> None:
        self._consumer = consumer
        self._keyring = keyring
        self._influx = influx
        self._writer = writer
        self._prefix = topic_prefix
        self._replay = replay
        self.stats = SinkStats()

    def _points(self, message: Inbound) -> tuple[list[str], int] | None:
        """Open, check routing, decode, validate; None for a replay (already accepted once).

        Raises WireError when the envelope is refused.
        """
        route = parse(message.topic, self._prefix)
        if route.channel not in (Channel.TELEMETRY, Channel.ALERTS):
            msg = f"channel {route.channel.value} is not an uplink data channel"
            raise TopicError(msg)
        opened = open_envelope(message.topic, message.payload, self._keyring.lookup)
        header = opened.header
        if self._replay.seen(header.gateway_id, header.epoch, header.seq):
            return None
        self._replay.accept(header.gateway_id, header.epoch, header.seq)
        frame = decode_frame(opened.plaintext)
        if not route.gateway_id == opened.header.gateway_id == frame.gateway_id:
            # The tag already binds the topic; this catches a gateway sealing for another's name.
            msg = "topic, header and frame name different gateways"
            raise TopicError(msg)
        points = frame_points(frame)
        self.stats.refused_readings.update(points.refused)
        for reason, count in points.refused.items():
            _LOGGER.warning("gateway %s: %d readings refused (%s)", route.gateway_id, count, reason)
        return points.lines, points.vitals

    async def _write(self, batch: _Batch) -> None:
        """Write until InfluxDB accepts or refuses as malformed; then ack every message in order."""
        failures = 0
        while True:
            try:
                await asyncio.to_thread(self._influx.write, batch.lines)
            except DatabaseUnavailable as exc:
                failures += 1
                self.stats.write_retries += 1
                cap_s = min(self._writer.retry_max_s, exc.retry_after_s * 2 ** min(failures, 8))
                delay_s = random.uniform(cap_s / 2, cap_s)  # noqa: S311 - jitter
                _LOGGER.warning(
                    "write failed (%s); retry %d in %.1f s", exc.reason, failures, delay_s
                )
                await asyncio.sleep(delay_s)
                continue
            except DatabaseRejected as exc:
                # InfluxDB keeps the good lines of a partial write; the rest are dead-lettered.
                self.stats.dead_lettered_batches += 1
                _LOGGER.exception(
                    "batch of %d lines partly refused: %s", len(batch.lines), exc.reason
                )
            else:
                self.stats.points_written += len(batch.lines)
                self.stats.vitals_written += batch.vitals
            break
        self.stats.batches_written += 1
        await asyncio.to_thread(self._replay.commit)
        for message in batch.messages:
            self._consumer.ack(message)
            self.stats.messages_acked += 1

    async def _write_loop(self, batches: asyncio.Queue[_Batch | None]) -> None:
        while (batch := await batches.get()) is not None:
            await self._write(batch)

    async def run(self, stop: asyncio.Event) -> SinkStats:
        """Take and open messages while the previous batch is being written (two in flight at
        most); batches are written and acknowledged strictly in order."""
        batches: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_loop(batches), name="sink.writer")
            batch = _Batch()
            while True:
                wait_s = TAKE_POLL_S
                if batch.messages:
                    wait_s = max(0.0, batch.started + self._writer.max_age_s - time.monotonic())
                room = max(1, self._writer.batch_lines // 2)
                for message in await asyncio.to_thread(self._consumer.take, room, wait_s):
                    self._take(batch, message)
                full = len(batch.lines) >= self._writer.batch_lines
                aged = batch.messages and time.monotonic() - batch.started >= self._writer.max_age_s
                if batch.messages and (full or aged or stop.is_set()):
                    await batches.put(batch)
                    batch = _Batch()
                if stop.is_set():
                    # Whatever is still in the inbox was never acknowledged: the broker keeps
                    # it in our persistent session and redelivers it to the next run.
                    await batches.put(None)
                    break
        return self.stats

    def _take(self, batch: _Batch, message: Inbound) -> None:
        self.stats.messages_in += 1
        if not batch.messages:
            batch.started = time.monotonic()
        try:
            points = self._points(message)
        except WireError as exc:
            reason = rejection_reason(exc)
            self.stats.rejected[reason] += 1
            _LOGGER.warning("envelope on %s rejected (%s): %s", message.topic, reason, exc.reason)
            points = ([], 0)
        if points is None:
            # A redelivery (or a replay) of an envelope already accepted: drop it quietly.
            self.stats.replays_dropped += 1
            points = ([], 0)
        lines, vitals = points
        batch.lines.extend(lines)
        batch.vitals += vitals
        # A rejected message still joins the batch so its ack keeps receive order (MQTT §4.6).
        batch.messages.append(message)

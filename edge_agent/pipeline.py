"""The agent's pipeline: sources → bounded queue → framer → sealer → outbox → publisher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.config import PipelineSettings
from edge_agent.framer import Framer
from edge_agent.protocol import Channel, encode_frame, topic
from edge_agent.publisher import Publisher
from edge_agent.sealer import Sealer
from edge_agent.sources import Reading, Source

_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class PipelineStats:
    """Counters the agent reports; readings are counted once framed and once acknowledged."""

    readings_in: int = 0
    readings_framed: int = 0
    readings_acked: int = 0
    frames_sealed: int = 0
    frames_acked: int = 0
    frames_abandoned: int = 0


@dataclass(slots=True, frozen=True)
class _Sealed:
    envelope: bytes
    readings: int


class AgentPipeline:
    """Runs the sources until `stop` is set, then drains: nothing emitted is left unpublished
    unless the broker stays away longer than the drain timeout (then the loss is logged)."""

    def __init__(
        self,
        *,
        settings: PipelineSettings,
        gateway_id: str,
        topic_prefix: str,
        sealer: Sealer,
        publisher: Publisher,
        sources: Sequence[Source],
    ) -> None:
        self._settings = settings
        self._sealer = sealer
        self._publisher = publisher
        self._sources = list(sources)
        self._framer = Framer(gateway_id)
        self._topic = topic(gateway_id, Channel.TELEMETRY, topic_prefix)
        self._readings: asyncio.Queue[Reading] = asyncio.Queue(settings.queue_readings)
        self._outbox: asyncio.Queue[_Sealed | None] = asyncio.Queue(settings.outbox_frames)
        self._sources_done = asyncio.Event()
        self.stats = PipelineStats()

    async def _emit(self, reading: Reading) -> None:
        # Backpressure: a full queue makes the source wait (sources at the edge of the world
        # drop-oldest in their own callbacks and count it; see edge_agent.sources).
        await self._readings.put(reading)
        self.stats.readings_in += 1

    async def _flush(self) -> None:
        frame = self._framer.take()
        if frame is None:
            return
        # The counter fsyncs once per reserve block (1024 frames): rare and short enough
        # to stay on the loop rather than hopping threads for every frame.
        _seq, envelope = self._sealer.seal(self._topic, encode_frame(frame))
        self.stats.readings_framed += frame.reading_count
        self.stats.frames_sealed += 1
        await self._outbox.put(_Sealed(envelope, frame.reading_count))

    async def _frame_loop(self) -> None:
        interval_s = self._settings.batch_interval_s
        while True:
            deadline = time.monotonic() + interval_s
            while len(self._framer) < self._settings.max_batch_readings:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                try:
                    reading = await asyncio.wait_for(self._readings.get(), remaining_s)
                except TimeoutError:
                    break
                self._framer.add(reading)
            if self._sources_done.is_set() and self._readings.empty():
                await self._flush()
                await self._outbox.put(None)
                return
            await self._flush()

    async def _publish_loop(self) -> None:
        while (item := await self._outbox.get()) is not None:
            await self._publisher.publish(self._topic, item.envelope)
            self.stats.frames_acked += 1
            self.stats.readings_acked += item.readings

    async def run(self, stop: asyncio.Event) -> PipelineStats:
        async with asyncio.TaskGroup() as group:
            source_tasks = [
                group.create_task(source.run(self._emit), name=f"agent.source[{source.name}]")
                for source in self._sources
            ]
            framer_task = group.create_task(self._frame_loop(), name="agent.framer")
            publisher_task = group.create_task(self._publish_loop(), name="agent.publisher")
            await stop.wait()
            _LOGGER.info("stopping %d sources, then draining", len(self._sources))
            for source in self._sources:
                source.stop()
            await asyncio.gather(*source_tasks)
            self._sources_done.set()
            done, _ = await asyncio.wait({publisher_task}, timeout=self._settings.drain_timeout_s)
            if not done:
                self.stats.frames_abandoned = self._outbox.qsize() + 1
                _LOGGER.error(
                    "drain timed out after %.0f s: %d frames unpublished",
                    self._settings.drain_timeout_s,
                    self.stats.frames_abandoned,
                )
                publisher_task.cancel()
                framer_task.cancel()
        _LOGGER.info(
            "pipeline stopped: %d readings in, %d acknowledged in %d frames",
            self.stats.readings_in,
            self.stats.readings_acked,
            self.stats.frames_acked,
        )
        return self.stats

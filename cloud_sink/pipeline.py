"""The sink's pipeline: receive → open → validate → line protocol → batch write → ack."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cloud_sink.consumer import Inbound, MqttConsumer
from cloud_sink.epochs import RetiredEpochError
from cloud_sink.errors import CloudSinkError, DatabaseRejected, DatabaseUnavailable
from cloud_sink.identity import IdentityRegistry
from cloud_sink.influx import InfluxV1
from cloud_sink.keyring import Keyring
from cloud_sink.lineproto import encode_line
from cloud_sink.replay import Mark, ReplayGuard
from cloud_sink.validate import MAX_FUTURE_SKEW_NS, MIN_TS_NS, frame_points
from edge_agent.protocol import (
    CONTENT_FRAME_V1,
    AuthenticationError,
    BindingEvent,
    Channel,
    EnvelopeError,
    Frame,
    FrameError,
    ParsedTopic,
    TopicError,
    UnknownKeyError,
    WireError,
    decode_frame,
    open_envelope,
    parse,
)

_LOGGER = logging.getLogger(__name__)
# How long one take waits for a first message, which bounds how late a stop is noticed.
TAKE_POLL_S: Final = 0.1
# Messages per take: enough to amortise the call, few enough to keep batches close to size.
TAKE_LIMIT: Final = 256
# Topics repeat (two per gateway): parse each once. Only valid topics are kept, and the cache
# is emptied at this size so garbage topics cannot grow it.
ROUTE_CACHE_LIMIT: Final = 65_536

UNKNOWN_GATEWAY: Final = "unknown"
"""The gateway tag of a refusal whose topic names no valid gateway."""
BINDING_RETRY_MAX_S: Final = 5.0
ACCEPTED_REASON: Final = "accepted"
"""The reason tag of the `sink_security` points that count accepted envelopes."""


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
    bindings_stored: int = 0
    binding_conflicts: int = 0


def rejection_reason(exc: WireError) -> str:
    """A short counter name for each way an envelope can be refused."""
    match exc:
        case AuthenticationError():
            return "tag_invalid"
        case RetiredEpochError():
            return "epoch_retired"
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
    marks: list[Mark] = field(default_factory=list)
    vitals: int = 0
    started: float = 0.0
    accepted: dict[str, _Accepted] = field(default_factory=dict)
    bindings: list[tuple[str, BindingEvent]] = field(default_factory=list)

    def count_accepted(self, frame: Frame, readings: int) -> None:
        counts = self.accepted.get(frame.gateway_id)
        if counts is None:
            counts = self.accepted[frame.gateway_id] = _Accepted()
        counts.envelopes += 1
        counts.readings += readings
        counts.newest_sent_ns = max(counts.newest_sent_ns, frame.sent_ns)

    def close(self) -> None:
        """Add the accepted-envelope counts; called once, before the first write attempt."""
        now_ns = time.time_ns()
        self.lines += [accepted_line(g, a, now_ns) for g, a in self.accepted.items()]
        self.accepted.clear()


@dataclass(slots=True)
class _Accepted:
    """One gateway's accepted envelopes in a batch: how many, the readings they stored, and the
    newest send time among them (the stamp of their count)."""

    envelopes: int = 0
    readings: int = 0
    newest_sent_ns: int = 0


def accepted_line(gateway_id: str, accepted: _Accepted, now_ns: int) -> str:
    """The `sink_security` point counting a batch's accepted envelopes of one gateway (reason
    `accepted`): what the security and population reports compute encryption compliance from.

    One point per gateway and batch, not per envelope: an extra line per message cost the sink
    about a sixth of its throughput (docs/performance.md). Stamped with the newest send time
    among the envelopes, so two batches never share a stamp; a send time InfluxDB could refuse
    (a gateway clock far off) falls back to now.
    """
    ts_ns = accepted.newest_sent_ns
    if not MIN_TS_NS <= ts_ns <= now_ns + MAX_FUTURE_SKEW_NS:
        ts_ns = now_ns
    return (
        f"{_accepted_key(gateway_id)} accepted={accepted.envelopes}i,"
        f"readings={accepted.readings}i {ts_ns}"
    )


@functools.lru_cache(maxsize=4096)
def _accepted_key(gateway_id: str) -> str:
    # The series key, built once per gateway by the general encoder (a test holds the two equal).
    line = encode_line(
        "sink_security", {"gateway": gateway_id, "reason": ACCEPTED_REASON}, {"accepted": 1}, 0
    )
    return line.rsplit(" ", 2)[0]


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
        dead_letter_file: Path | None = None,
        identity: IdentityRegistry | None = None,
    ) -> None:
        self._consumer = consumer
        self._identity = identity
        self._dead_letter_file = dead_letter_file
        self._keyring = keyring
        self._influx = influx
        self._writer = writer
        self._prefix = topic_prefix
        self._replay = replay
        self._routes: dict[str, ParsedTopic] = {}
        self._security_ns = 0
        self.stats = SinkStats()

    def _dead_letter(self, batch: _Batch, exc: DatabaseRejected) -> None:
        if self._dead_letter_file is None:
            return
        record = {
            "at_ns": time.time_ns(),
            "status": exc.status,
            "reason": exc.reason,
            "lines": batch.lines,
        }
        try:
            self._dead_letter_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._dead_letter_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with open(fd, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc_io:
            _LOGGER.error("cannot write the dead-letter file: %s", exc_io.strerror)  # noqa: TRY400

    def _route(self, topic: str) -> ParsedTopic:
        route = self._routes.get(topic)
        if route is None:
            route = parse(topic, self._prefix)
            if len(self._routes) >= ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[topic] = route
        return route

    def _points(self, batch: _Batch, message: Inbound) -> None:
        """Open, check routing, decode, validate, add the points to the batch.

        A replay (already accepted once) adds nothing; raises WireError when the envelope is
        refused.
        """
        route = self._route(message.topic)
        if route.channel not in (Channel.TELEMETRY, Channel.ALERTS):
            msg = f"channel {route.channel.value} is not an uplink data channel"
            raise TopicError(msg)
        opened = open_envelope(message.topic, message.payload, self._keyring.lookup)
        header = opened.header
        if header.content_type != CONTENT_FRAME_V1:
            msg = f"content type {header.content_type!r} is not uplink data (expected frame/v1)"
            raise EnvelopeError(msg)
        if self._replay.seen(header.gateway_id, header.epoch, header.seq):
            # A redelivery (or a replay) of an envelope already accepted: drop it quietly.
            self.stats.replays_dropped += 1
            return
        # Marked once the tag verified, so a frame refused below is not re-examined either;
        # the mark becomes durable with this batch, after its write.
        batch.marks.append(self._replay.accept(header.gateway_id, header.epoch, header.seq))
        frame = decode_frame(opened.plaintext)
        if not route.gateway_id == header.gateway_id == frame.gateway_id:
            # The tag already binds the topic; this catches a gateway sealing for another's name.
            msg = "topic, header and frame name different gateways"
            raise TopicError(msg)
        points = frame_points(frame)
        if frame.bindings:
            if self._identity is None:
                # A pipeline built without a registry (tests) refuses them by name.
                points.refused["binding_unsupported"] += len(frame.bindings)
            else:
                batch.bindings += [(frame.gateway_id, event) for event in frame.bindings]
        batch.lines += points.lines
        batch.count_accepted(frame, points.vitals)
        batch.vitals += points.vitals
        if points.refused:
            self.stats.refused_readings.update(points.refused)
            for reason, count in points.refused.items():
                _LOGGER.warning(
                    "gateway %s: %d readings refused (%s)", route.gateway_id, count, reason
                )

    def _security_line(self, full_topic: str, reason: str) -> str:
        """One `sink_security` point per refused envelope (DESIGN §4): the gateway the topic
        names when it is a valid id (never a raw topic string in a tag), and the reason."""
        try:
            gateway = self._route(full_topic).gateway_id
        except WireError:
            gateway = UNKNOWN_GATEWAY
        # Its own nanosecond, so two refusals never overwrite one another.
        self._security_ns = max(time.time_ns(), self._security_ns + 1)
        return encode_line(
            "sink_security",
            {"gateway": gateway, "reason": reason},
            {"rejected": 1},
            self._security_ns,
        )

    def _take(self, batch: _Batch, message: Inbound) -> None:
        self.stats.messages_in += 1
        if not batch.messages:
            batch.started = time.monotonic()
        # Every message joins the batch, rejected ones too, so acks keep receive order (§4.6).
        batch.messages.append(message)
        try:
            self._points(batch, message)
        except WireError as exc:
            reason = rejection_reason(exc)
            self.stats.rejected[reason] += 1
            _LOGGER.warning("envelope on %s rejected (%s): %s", message.topic, reason, exc.reason)
            batch.lines.append(self._security_line(message.topic, reason))

    async def _write(self, batch: _Batch, stop: asyncio.Event) -> bool:
        """Write until InfluxDB accepts, or refuses as malformed (the batch is dead-lettered).

        False when told to stop while InfluxDB is unavailable: the batch stays unwritten and
        unacknowledged, and the broker redelivers it to the next run.
        """
        batch.close()
        failures = 0
        while True:
            try:
                await asyncio.to_thread(self._influx.write, batch.lines)
            except DatabaseUnavailable as exc:
                if stop.is_set():
                    return False
                failures += 1
                self.stats.write_retries += 1
                cap_s = min(self._writer.retry_max_s, exc.retry_after_s * 2 ** min(failures, 8))
                delay_s = random.uniform(cap_s / 2, cap_s)  # noqa: S311 - jitter
                _LOGGER.warning(
                    "write failed (%s); retry %d in %.1f s", exc.reason, failures, delay_s
                )
                # A stop cuts the wait short; the write is tried once more before giving up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay_s)
                continue
            except DatabaseRejected as exc:
                # InfluxDB keeps the good lines of a partial write; the batch goes to the
                # dead-letter file with InfluxDB's reason (which names the refused lines), and
                # its messages are acknowledged: a redelivery would be refused the same way.
                self.stats.dead_lettered_batches += 1
                _LOGGER.error(  # noqa: TRY400 - InfluxDB's reason says it all
                    "batch of %d lines partly refused (dead-lettered): %s",
                    len(batch.lines),
                    exc.reason,
                )
                await asyncio.to_thread(self._dead_letter, batch, exc)
            else:
                self.stats.points_written += len(batch.lines)
                self.stats.vitals_written += batch.vitals
            break
        self.stats.batches_written += 1
        return True

    async def _write_loop(
        self,
        batches: asyncio.Queue[_Batch | None],
        written: asyncio.Queue[_Batch | None],
        stop: asyncio.Event,
    ) -> None:
        unwritten = 0
        while (batch := await batches.get()) is not None:
            if unwritten or not await self._write(batch, stop):
                # Neither written nor acknowledged, and nothing after it either: their marks
                # are never made durable, so the redelivery is accepted by the next run.
                unwritten += len(batch.messages)
                continue
            await written.put(batch)
        if unwritten:
            _LOGGER.warning(
                "stopping with %d messages unwritten (InfluxDB unavailable); "
                "the broker redelivers them to the next run",
                unwritten,
            )
        await written.put(None)

    async def _ack_loop(self, written: asyncio.Queue[_Batch | None]) -> None:
        """Make each written batch's replay marks durable, then acknowledge its messages.

        A separate stage so the next batch's write starts while this one's state file is
        being synced; batches still finish strictly in order.
        """
        while (batch := await written.get()) is not None:
            if batch.bindings:
                await self._store_bindings(batch.bindings)
            if self._replay.fold(batch.marks) and self._replay.path is not None:
                await asyncio.to_thread(self._replay.persist, self._replay.snapshot())
            # One write for the whole batch's PUBACKs, in receive order (MQTT 5.0 §4.6).
            self._consumer.ack_all(batch.messages)
            self.stats.messages_acked += len(batch.messages)

    async def _store_bindings(self, bindings: list[tuple[str, BindingEvent]]) -> None:
        """Into the identity registry before the batch is acknowledged, like its points: a
        registry that cannot be written holds the acknowledgements back (and the broker keeps
        the messages) rather than lose a binding."""
        assert self._identity is not None  # noqa: S101 - bindings are kept only with one
        by_gateway: dict[str, list[BindingEvent]] = {}
        for gateway_id, event in bindings:
            by_gateway.setdefault(gateway_id, []).append(event)
        for gateway_id, events in by_gateway.items():
            failures = 0
            while True:
                try:
                    done = await asyncio.to_thread(self._identity.record, gateway_id, events)
                    break
                except CloudSinkError as exc:
                    failures += 1
                    delay_s = min(BINDING_RETRY_MAX_S, 0.5 * 2**failures)
                    _LOGGER.error(  # noqa: TRY400 - the message names the file and why
                        "bindings of gateway %s not stored (%s); retry in %.1f s",
                        gateway_id,
                        exc,
                        delay_s,
                    )
                    await asyncio.sleep(delay_s)
            self.stats.bindings_stored += done.stored
            self.stats.binding_conflicts += done.conflicts
            if done.conflicts:
                _LOGGER.error(
                    "gateway %s: %d binding events contradict the identity registry (refused)",
                    gateway_id,
                    done.conflicts,
                )

    async def run(self, stop: asyncio.Event) -> SinkStats:
        """Take and open messages while earlier batches are written and acknowledged; batches
        are written and acknowledged strictly in order."""
        batches: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        written: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        batch_lines, max_age_s = self._writer.batch_lines, self._writer.max_age_s
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_loop(batches, written, stop), name="sink.writer")
            group.create_task(self._ack_loop(written), name="sink.acker")
            batch = _Batch()
            while True:
                wait_s = TAKE_POLL_S
                if batch.messages:
                    wait_s = max(0.0, batch.started + max_age_s - time.monotonic())
                for message in await self._consumer.take(TAKE_LIMIT, wait_s):
                    self._take(batch, message)
                    if len(batch.lines) >= batch_lines:
                        await batches.put(batch)
                        batch = _Batch()
                aged = batch.messages and time.monotonic() - batch.started >= max_age_s
                if batch.messages and (aged or stop.is_set()):
                    await batches.put(batch)
                    batch = _Batch()
                if stop.is_set():
                    # Whatever is still in the inbox was never acknowledged: the broker keeps
                    # it in our persistent session and redelivers it to the next run.
                    await batches.put(None)
                    break
        return self.stats

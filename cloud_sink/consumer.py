"""MQTT v5 consumer on asyncio: persistent session, flow control, PUBACKs late and in bulk.

The sink's only MQTT job is to receive QoS 1 messages and acknowledge each one after its points
are written. paho-mqtt did that on its own thread at about 35 µs of Python per message (MQTT v5
property objects, topic matching, a lock and a thread hand-off per message), more than opening,
validating and encoding the message together; this client parses PUBLISH packets straight off
the socket in the event loop (docs/performance.md has the profile) and writes a whole batch of
PUBACKs in one call. Packet layouts live in cloud_sink.mqtt_packets.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar, cast

from cloud_sink.errors import ConfigError
from cloud_sink.mqtt_packets import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    FAILURE_THRESHOLD,
    PINGREQ_PACKET,
    PINGRESP,
    PROTOCOL_ERROR,
    PUBLISH,
    SUBACK,
    ConnAck,
    MqttProtocolError,
    PacketReader,
    SubAck,
    connect_packet,
    decode_connack,
    decode_disconnect,
    decode_publish,
    decode_suback,
    pubacks,
    subscribe_packet,
)
from edge_agent.protocol import uplink_filter
from edge_agent.protocol.envelope import MAX_ENVELOPE_BYTES

_LOGGER = logging.getLogger(__name__)
RECONNECT_MIN_S: Final = 1.0
# One sink (or a handful) reconnecting every few seconds is no load for a broker, and the wait
# after an outage is added to every ward's data delay: keep it short (the chaos run measured
# 17-20 s from the broker's return to fresh data with a 30 s cap).
RECONNECT_MAX_S: Final = 4.0
REPLY_TIMEOUT_S: Final = 10.0
SUBSCRIBE_PACKET_ID: Final = 1
SUBSCRIBE_QOS: Final = 1
# The broker drops (and counts as delivered) anything bigger than this instead of sending it
# (MQTT 5.0 §3.1.2.11.4): such a message cannot be an envelope, and it would cost the memory.
# Up to this size a too-large envelope still arrives and is refused and counted by reason.
MAX_PACKET_BYTES: Final = 4 * MAX_ENVELOPE_BYTES

_T = TypeVar("_T")


@dataclass(slots=True, frozen=True)
class ConsumerSettings:
    host: str
    port: int
    client_id: str
    topic_prefix: str
    keepalive_s: int
    session_expiry_s: int
    receive_maximum: int
    share_group: str | None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """The sink identity's broker password, read from `password_file` (never logged)."""
    tls_ca_file: Path | None = None
    """CA bundle that signed the broker's certificate: TLS with a hostname check when set."""
    password_file: Path | None = None


def tls_context(settings: ConsumerSettings) -> ssl.SSLContext | None:
    """The client TLS context for the broker (None for a plain loopback broker).

    It verifies the broker's chain against `tls_ca_file` only (not the system store: a broker
    certificate from any public CA must not be enough) and checks that the certificate names
    `host` (RFC 6125; an IP address is matched against the iPAddress SAN). TLS 1.2 at least.
    """
    if settings.tls_ca_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(settings.tls_ca_file))
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise ConfigError(
            str(settings.tls_ca_file), "mqtt.tls_ca_file", f"cannot load the CA bundle: {exc}"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(slots=True, frozen=True)
class Inbound:
    """One received PUBLISH; `generation` says which connection it came on (ids are per link)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class _Link(asyncio.Protocol):
    """One TCP connection to the broker; hands each packet to the consumer as it completes."""

    def __init__(self, consumer: MqttConsumer, loop: asyncio.AbstractEventLoop) -> None:
        self._consumer = consumer
        self.reader = PacketReader(MAX_PACKET_BYTES)
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[ConnAck] = loop.create_future()
        self.suback: asyncio.Future[SubAck] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.generation = 0  # set when the CONNACK accepts us
        self.last_sent_s = time.monotonic()
        self.ping_sent_s: float | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._consumer._on_packets(self, self.reader.feed(data))
        except MqttProtocolError as exc:
            _LOGGER.error("closing the broker connection: %s", exc)  # noqa: TRY400 - no trace
            self.send(bytes((DISCONNECT << 4, 1, exc.reason_code)))  # §3.14 with a reason code
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_sent_s = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def pause(self, paused: bool) -> None:
        if self.transport is None or self.transport.is_closing() or paused == self.paused:
            return
        self.paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class MqttConsumer:
    """Receives uplink messages into a bounded inbox; `ack_all` sends their PUBACKs later.

    The broker never has more than `receive_maximum` unacknowledged QoS 1 messages in flight to
    us (MQTT v5 flow control, §4.9), and reading pauses when the inbox holds twice that, so
    memory stays bounded while InfluxDB is slow. PUBACKs are only sent on the connection the
    message arrived on: after a reconnect the broker redelivers whatever we had not acknowledged.
    """

    def __init__(self, settings: ConsumerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self._settings = settings
        self._loop = loop
        self._inbox: deque[Inbound] = deque()
        self._arrived = asyncio.Event()
        self._high_water = 2 * settings.receive_maximum
        self._generation = 0
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.subscribed = asyncio.Event()
        self._tls = tls_context(settings)  # loaded once, not on the event loop per reconnect
        self.filter = uplink_filter(settings.topic_prefix)
        if settings.share_group:
            self.filter = f"$share/{settings.share_group}/{self.filter}"

    # --- packets, called by the link in the event loop ------------------------------------------

    def _on_packets(self, link: _Link, packets: list[tuple[int, bytes]]) -> None:
        inbox = self._inbox
        before = len(inbox)
        try:
            for first_byte, body in packets:
                kind = first_byte >> 4
                if kind == PUBLISH and link.generation:
                    topic, mid, qos, payload = decode_publish(first_byte, body)
                    inbox.append(Inbound(topic, payload, mid, qos, link.generation))
                elif kind == CONNACK and not link.connack.done():
                    self._on_connack(link, decode_connack(body))
                elif kind == SUBACK and not link.suback.done():
                    link.suback.set_result(decode_suback(body))
                elif kind == PINGRESP:
                    link.ping_sent_s = None
                elif kind == DISCONNECT:
                    disconnect = decode_disconnect(body)
                    _LOGGER.warning(
                        "the broker closed the connection: reason 0x%02X %s",
                        disconnect.reason_code,
                        disconnect.reason_string or "",
                    )
                    link.close()
                    return
                else:
                    msg = f"unexpected packet type {kind} for a subscribing client"
                    raise MqttProtocolError(PROTOCOL_ERROR, msg)
        finally:
            # Whatever arrived before a bad packet is still handed over (its acks will find
            # the link gone, so the broker redelivers it: nothing is lost either way).
            if len(inbox) > before:
                self._arrived.set()
                if len(inbox) >= self._high_water:
                    link.pause(True)

    def _on_connack(self, link: _Link, connack: ConnAck) -> None:
        if connack.reason_code < FAILURE_THRESHOLD:
            # Before any PUBLISH of this link is read: its messages carry the new number.
            self._generation += 1
            link.generation = self._generation
        link.connack.set_result(connack)

    # --- connection management -----------------------------------------------------------------

    def start(self) -> None:
        """Connect (and keep reconnecting) in a task of the running loop until `stop`."""
        self._task = self._loop.create_task(self._run(), name="sink.mqtt")

    async def _run(self) -> None:
        delay_s = RECONNECT_MIN_S
        while True:
            try:
                established = await self._session()
            except (OSError, TimeoutError, MqttProtocolError) as exc:
                established = False
                if not self._closing:
                    _LOGGER.warning("broker unreachable (%s); retrying in %.0f s", exc, delay_s)
            if self._closing:
                return
            if established:
                delay_s = RECONNECT_MIN_S
                _LOGGER.warning("lost the broker; reconnecting in %.0f s", delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, RECONNECT_MAX_S)

    async def _reply(self, link: _Link, future: asyncio.Future[_T], what: str) -> _T:
        """The broker's answer, or an OSError/TimeoutError when the link ends or stays silent."""
        await asyncio.wait(
            (future, link.closed), timeout=REPLY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if future.done():
            return future.result()
        if link.closed.done():
            msg = f"connection closed before the {what}"
            raise ConnectionResetError(msg)
        msg = f"no {what} within {REPLY_TIMEOUT_S:.0f} s"
        raise TimeoutError(msg)

    async def _session(self) -> bool:
        """One connection: CONNECT, SUBSCRIBE, then keep it alive; True if it got that far."""
        settings = self._settings
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            _, link = await self._loop.create_connection(
                lambda: _Link(self, self._loop),
                settings.host,
                settings.port,
                ssl=self._tls,
                server_hostname=settings.host if self._tls is not None else None,
                ssl_handshake_timeout=REPLY_TIMEOUT_S if self._tls is not None else None,
            )
        self._link = link
        try:
            link.send(
                connect_packet(
                    client_id=settings.client_id,
                    keepalive_s=settings.keepalive_s,
                    session_expiry_s=settings.session_expiry_s,
                    receive_maximum=settings.receive_maximum,
                    maximum_packet_bytes=MAX_PACKET_BYTES,
                    username=settings.username,
                    password=settings.password,
                )
            )
            connack = await self._reply(link, link.connack, "CONNACK")
            if connack.reason_code >= FAILURE_THRESHOLD:
                _LOGGER.error(
                    "broker refused the connection: reason 0x%02X %s",
                    connack.reason_code,
                    connack.reason_string or "",
                )
                return False
            _LOGGER.info(
                "connected to broker (session present: %s); subscribing to %s",
                connack.session_present,
                self.filter,
            )
            link.send(subscribe_packet(SUBSCRIBE_PACKET_ID, self.filter, SUBSCRIBE_QOS))
            suback = await self._reply(link, link.suback, "SUBACK")
            if not suback.reason_codes or suback.reason_codes[0] >= FAILURE_THRESHOLD:
                _LOGGER.error(
                    "subscription refused: %s %s", suback.reason_codes, suback.reason_string or ""
                )
                return False
            self.subscribed.set()
            keepalive_s = connack.server_keep_alive_s  # §3.2.2.3.14: the server's value wins
            if keepalive_s is None:
                keepalive_s = settings.keepalive_s
            await self._keep_alive(link, keepalive_s)
            return True
        finally:
            link.close()
            if self._link is link:
                self._link = None

    async def _keep_alive(self, link: _Link, keepalive_s: int) -> None:
        """PINGREQ when we have sent nothing for half the keep-alive (§3.1.2.10); a PINGREQ
        unanswered for a whole keep-alive means the link is dead (§4.13)."""
        if keepalive_s <= 0:
            await asyncio.wait((link.closed,))
            return
        interval_s = keepalive_s / 2
        while not link.closed.done():
            await asyncio.wait((link.closed,), timeout=interval_s)
            now = time.monotonic()
            if link.ping_sent_s is not None and now - link.ping_sent_s > keepalive_s:
                _LOGGER.warning("no PINGRESP from the broker for %d s", keepalive_s)
                link.close()
                await asyncio.wait((link.closed,))
                return
            if link.ping_sent_s is None and now - link.last_sent_s >= interval_s:
                link.ping_sent_s = now
                link.send(PINGREQ_PACKET)

    def stop(self) -> None:
        """Disconnect normally (the session stays for the next run) and end the task."""
        self._closing = True
        link = self._link
        if link is not None:
            link.send(DISCONNECT_PACKET)
            link.close()
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """`stop`, then wait for the connection task to finish."""
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # --- the pipeline's side ---------------------------------------------------------------------

    async def take(self, limit: int, timeout_s: float) -> list[Inbound]:
        """Up to `limit` messages in arrival order, waiting up to `timeout_s` for the first."""
        inbox = self._inbox
        if not inbox:
            if timeout_s <= 0:
                return []
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._arrived.wait()
            except TimeoutError:
                return []
        taken = [inbox.popleft() for _ in range(min(limit, len(inbox)))]
        link = self._link
        if link is not None and link.paused and len(inbox) <= self._high_water // 2:
            link.pause(False)
        return taken

    def ack_all(self, messages: Sequence[Inbound]) -> int:
        """PUBACK every QoS 1 message that came on the current connection, in one write.

        Returns how many were acknowledged; the others' connection is gone and the broker will
        redeliver them (the replay guard then drops them, already written).
        """
        link = self._link
        if link is None or not link.is_open:
            return 0
        generation = link.generation
        mids = [m.mid for m in messages if m.qos and m.generation == generation]
        if mids:
            link.send(pubacks(mids))
        return len(mids)

    def ack(self, message: Inbound) -> bool:
        """PUBACK one message; False when its connection is gone (the broker will redeliver)."""
        return self.ack_all((message,)) == 1

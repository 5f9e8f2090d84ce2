"""MQTT v5 publisher (the agent's sole MQTT importer): QoS 1, returns only after PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.errors import ConfigError
from edge_agent.protocol import Channel, topic

_LOGGER = logging.getLogger(__name__)
BACKOFF_BASE_S: Final = 0.5


@dataclass(slots=True, frozen=True)
class BrokerSettings:
    """Where and how the agent reaches its broker."""

    host: str
    port: int
    client_id: str
    topic_prefix: str
    keepalive_s: int
    connect_timeout_s: float
    publish_timeout_s: float
    reconnect_max_s: float
    tls_ca_file: str | None = None
    session_expiry_s: int = 86_400
    """How long the broker keeps this client's session (and queued downlink) while it is away."""
    username: str | None = None
    """The gateway's broker identity; the broker's ACL gives it only topics named by it."""
    password: str | None = field(default=None, repr=False)
    """Read from `password_file` (never logged); None for a broker that needs none."""
    password_file: Path | None = None
    """Where `edge-agent enroll` stores the broker password (mode 0600)."""


def tls_context(settings: BrokerSettings) -> ssl.SSLContext | None:
    """Verify the broker against `tls_ca_file` only, with a hostname check (RFC 6125: an IP
    address host is matched against the certificate's iPAddress names), TLS 1.2 at least."""
    if settings.tls_ca_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        why = f"cannot load the CA bundle: {exc}"
        raise ConfigError(settings.tls_ca_file, "mqtt.tls_ca_file", why) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Publisher:
    """Owns one broker connection; `publish` retries through outages until the PUBACK arrives.

    Reconnects use capped, jittered exponential backoff. The retained status topic says
    `online` after each connect; the broker publishes the last will (`offline`) if the link dies.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        gateway_id: str,
        on_command: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._settings = settings
        self._gateway_id = gateway_id
        self._status_topic = topic(gateway_id, Channel.STATUS, settings.topic_prefix)
        self._keys_topic = topic(gateway_id, Channel.KEYS, settings.topic_prefix)
        self._on_command = on_command
        self._tls = tls_context(settings)  # read the CA file once, not per reconnect
        self._reader: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._failures = 0
        self._connect_lock = asyncio.Lock()
        self.published_total = 0
        self.connections_total = 0
        self.last_puback_ns: int | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _status_payload(self, state: str) -> bytes:
        return json.dumps({"state": state, "gateway": self._gateway_id}).encode()

    def _new_client(self) -> aiomqtt.Client:
        s = self._settings
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=s.keepalive_s,
            timeout=s.connect_timeout_s,
            clean_start=MQTT_CLEAN_START_FIRST_ONLY,
            properties=self._connect_properties(),
            will=aiomqtt.Will(
                self._status_topic, self._status_payload("offline"), qos=1, retain=True
            ),
            tls_context=self._tls,
        )

    def _connect_properties(self) -> Properties:
        # MQTT v5 §3.1.2.11.2 Session Expiry Interval: 0 would end the session with the link.
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._settings.session_expiry_s
        return properties

    def _backoff_s(self) -> float:
        cap_s = min(self._settings.reconnect_max_s, BACKOFF_BASE_S * 2 ** min(self._failures, 16))
        return random.uniform(cap_s / 2, cap_s)  # noqa: S311 - jitter, not cryptography

    async def _connected(self) -> aiomqtt.Client:
        """The live client; one caller (re)connects while the others wait for it."""
        async with self._connect_lock:
            while self._client is None:
                if self._failures:
                    await asyncio.sleep(self._backoff_s())
                client = self._new_client()
                try:
                    await client.__aenter__()
                    await client.publish(
                        self._status_topic, self._status_payload("online"), qos=1, retain=True
                    )
                    if self._on_command is not None:
                        # The retained rotation command (if any) arrives right after this.
                        await client.subscribe(self._keys_topic, qos=1)
                except aiomqtt.MqttError as exc:
                    self._failures += 1
                    self._log_unavailable(exc)
                    with contextlib.suppress(aiomqtt.MqttError):
                        await client.__aexit__(None, None, None)
                    continue
                if self._failures:
                    _LOGGER.info("broker reachable again after %d failed attempts", self._failures)
                self._failures = 0
                self.connections_total += 1
                self._client = client
                if self._on_command is not None:
                    self._stop_reader()
                    self._reader = asyncio.create_task(
                        self._read_commands(client, self._on_command), name="publisher.commands"
                    )
            return self._client

    async def _read_commands(
        self, client: aiomqtt.Client, on_command: Callable[[str, bytes], None]
    ) -> None:
        """Hand each downlink message to `on_command` until the connection ends."""
        try:
            async for message in client.messages:
                if isinstance(message.payload, bytes):
                    on_command(str(message.topic), message.payload)
        except aiomqtt.MqttError:
            return  # the publishing side notices the broken link and reconnects

    def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()

    def _log_unavailable(self, exc: BaseException) -> None:
        _LOGGER.warning(
            "broker %s:%d unavailable (%s); attempt %d failed",
            self._settings.host,
            self._settings.port,
            exc,
            self._failures,
        )

    async def _discard(self, client: aiomqtt.Client, exc: BaseException) -> None:
        """Forget a broken client once, however many publishers saw it fail."""
        if self._client is not client:
            return
        self._client = None
        self._stop_reader()
        self._failures += 1
        self._log_unavailable(exc)
        with contextlib.suppress(aiomqtt.MqttError):  # already gone: nothing left to close
            await client.__aexit__(None, None, None)

    async def publish(self, full_topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and return after PUBACK; retries across reconnects until cancelled.

        Several callers may publish at once (the in-flight window); they share one connection.
        """
        while True:
            client = await self._connected()
            try:
                await client.publish(
                    full_topic, payload, qos=1, timeout=self._settings.publish_timeout_s
                )
            except aiomqtt.MqttError as exc:
                await self._discard(client, exc)
                continue
            self.published_total += 1
            self.last_puback_ns = time.time_ns()
            return

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        self._stop_reader()
        if client is None:
            return
        try:
            # A clean shutdown says so; the last will is only for deaths.
            await client.publish(
                self._status_topic, self._status_payload("offline"), qos=1, retain=True
            )
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError as error:
            _LOGGER.warning("broker disconnect was not clean: %s", error)

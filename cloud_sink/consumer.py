"""MQTT v5 consumer on paho (aiomqtt 2.x cannot ack manually): persistent session, late acks."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.protocol import uplink_filter

_LOGGER = logging.getLogger(__name__)
HANDOFF_POLL_S: Final = 0.5


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
    password: str | None = None


@dataclass(slots=True, frozen=True)
class Inbound:
    """One received PUBLISH; `generation` says which connection it came on (mids are per link)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class MqttConsumer:
    """Receives uplink messages into a bounded inbox; `ack` sends PUBACK later.

    The broker never has more than `receive_maximum` unacknowledged messages in flight to us
    (MQTT v5 flow control), and the hand-off blocks paho's thread when the inbox is full, so
    memory stays bounded while InfluxDB is slow. PUBACKs are only sent on the connection the
    message arrived on: after a reconnect the broker redelivers whatever we had not acknowledged.
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._settings = settings
        self._loop = loop
        # A thread-safe inbox: paho's thread puts one message at a time, the sink takes whole
        # batches in one thread hop (a hop per message would cost more than opening it).
        self._inbox: queue.Queue[Inbound] = queue.Queue(settings.receive_maximum)
        self._generation = 0
        self._closing = threading.Event()
        self.subscribed = asyncio.Event()
        self.filter = uplink_filter(settings.topic_prefix)
        if settings.share_group:
            self.filter = f"$share/{settings.share_group}/{self.filter}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
        )
        client.manual_ack_set(True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client

    # --- paho thread -------------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            _LOGGER.error("broker refused the connection: %s", reason)
            return
        self._generation += 1
        _LOGGER.info(
            "connected to broker (session present: %s); subscribing to %s",
            flags.session_present,
            self.filter,
        )
        client.subscribe(self.filter, options=SubscribeOptions(qos=1))

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            _LOGGER.error("subscription refused: %s", reasons)
            return
        self._loop.call_soon_threadsafe(self.subscribed.set)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if not self._closing.is_set():
            _LOGGER.warning("lost the broker (%s); paho reconnects", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        inbound = Inbound(
            message.topic, bytes(message.payload), message.mid, message.qos, self._generation
        )
        while not self._closing.is_set():
            try:
                self._inbox.put(inbound, timeout=HANDOFF_POLL_S)
            except queue.Full:
                continue  # inbox full: hold paho here, which is our backpressure
            return

    def take(self, limit: int, timeout_s: float) -> list[Inbound]:
        """Up to `limit` messages in arrival order, waiting up to `timeout_s` for the first.

        Blocking: call it through `asyncio.to_thread`.
        """
        try:
            taken = [self._inbox.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while len(taken) < limit:
            try:
                taken.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return taken

    # --- event-loop side ---------------------------------------------------------------------

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._settings.session_expiry_s
        properties.ReceiveMaximum = self._settings.receive_maximum
        self._client.connect_async(
            self._settings.host,
            self._settings.port,
            keepalive=self._settings.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def ack(self, message: Inbound) -> bool:
        """PUBACK one message; False when its connection is gone (the broker will redeliver)."""
        if message.qos == 0 or message.generation != self._generation:
            return False
        return self._client.ack(message.mid, message.qos) == mqtt.MQTT_ERR_SUCCESS

    def stop(self) -> None:
        self._closing.set()
        self._client.disconnect()
        self._client.loop_stop()

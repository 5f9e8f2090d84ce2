"""The secured broker, real Mosquitto: TLS only, logins only, each gateway on its own topics.

A broker of its own (`MosquittoServer(secure=True)`) with the ACL and credentials that
cloud_sink.broker_auth writes. paho, an independent MQTT implementation, plays the gateways
and a watching sink identity; the sink's own client (cloud_sink.consumer) reads over TLS. The
last test runs the whole path: `cloud-sink gateways add` + `edge-agent enroll`, telemetry over
TLS into InfluxDB, then `gateways revoke` disconnects the gateway and shuts it out.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sink.broker_auth import (
    acl_text,
    mint_password,
    read_password_entries,
    set_password,
    verify_password,
    write_acl_file,
)
from cloud_sink.consumer import ConsumerSettings, MqttConsumer
from cloud_sink.influx import InfluxV1
from cloud_sink.mqtt_packets import CONNACK, connect_packet
from cloud_sink.twin import count_vitals, stored_vitals, wait_for_vitals
from edge_agent.protocol import Channel, topic
from firmware_sims.ledger import read_ledger, reconcile
from firmware_sims.pki import generate_demo_pki
from firmware_sims.services import LOOPBACK, InfluxServer, MosquittoServer
from firmware_sims.stack import SINK_USERNAME, LocalStack

pytestmark = pytest.mark.integration

WAIT_S = 20.0
NOT_AUTHORIZED = 0x87  # MQTT 5.0 §2.4 reason code
BAD_LOGIN = 0x86


@dataclass(frozen=True)
class SecureBroker:
    server: MosquittoServer
    passwords: dict[str, str]

    def settings(self, client_id: str) -> ConsumerSettings:
        return ConsumerSettings(
            host=LOOPBACK,
            port=self.server.port,
            client_id=client_id,
            topic_prefix="",
            keepalive_s=5,
            session_expiry_s=0,
            receive_maximum=100,
            share_group=None,
            username=SINK_USERNAME,
            password=self.passwords[SINK_USERNAME],
            tls_ca_file=self.server.ca_file,
        )


def _wait(predicate: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll `predicate()` until it holds; the cap only turns a hang into a failure."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.01)


class Client:
    """A paho MQTT v5 client over TLS that records its CONNACK, PUBACKs and messages."""

    def __init__(
        self,
        server: MosquittoServer,
        client_id: str,
        username: str | None,
        password: str | None,
    ) -> None:
        self.connack: ReasonCode | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.tls_set_context(ssl.create_default_context(cafile=str(server.ca_file)))
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = lambda *_: self.closed.set()
        self._answered = threading.Event()
        self._client.connect(LOOPBACK, server.port, keepalive=10)
        self._client.loop_start()
        _wait(self._answered.is_set, f"a CONNACK for {client_id}")

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self.connack = reason
        self._answered.set()
        if reason.is_failure:
            self._client.disconnect()  # no automatic retries with a refused login

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def subscribe(self, *filters: str) -> None:
        done = threading.Event()
        self._client.on_subscribe = lambda *_: done.set()
        for topic_filter in filters:
            done.clear()
            self._client.subscribe(topic_filter, qos=1)
            _wait(done.is_set, f"SUBACK for {topic_filter}")

    def publish(self, full_topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        codes: dict[int, int] = {}
        self._client.on_publish = lambda _c, _u, mid, reason, _p: codes.__setitem__(
            mid, reason.value
        )
        info = self._client.publish(full_topic, payload, qos=1, retain=retain)
        _wait(lambda: info.mid in codes, f"PUBACK for {full_topic}")
        return codes[info.mid]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoServer
) -> Iterator[SecureBroker]:
    """A secured broker with the sink identity and gateways gw-a and gw-b.

    (`mosquitto`, the shared anonymous broker, is only asked for so a missing Mosquitto skips
    or fails this module the way it does every other integration test.)
    """
    del mosquitto
    with MosquittoServer(tmp_path_factory.mktemp("secure-mosquitto"), secure=True) as server:
        write_acl_file(server.acl_file, acl_text(SINK_USERNAME))
        passwords = {name: mint_password() for name in (SINK_USERNAME, "gw-a", "gw-b")}
        for name, password in passwords.items():
            set_password(server.password_file, name, password)
        server.reload()
        broker = SecureBroker(server, passwords)
        _wait(lambda: _accepts(broker, SINK_USERNAME), "the broker re-reads its password file")
        yield broker


def _accepts(broker: SecureBroker, username: str) -> bool:
    password = broker.passwords[username]
    client = Client(broker.server, f"probe-{mint_password()[:8]}", username, password)
    client.close()
    return client.accepted


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def _connect(
    broker: SecureBroker, clients: list[Client], username: str, password: str | None = None
) -> Client:
    client = Client(
        broker.server,
        f"{username}-{mint_password()[:8]}",
        username,
        broker.passwords[username] if password is None else password,
    )
    clients.append(client)
    return client


def test_anonymous_clients_and_wrong_passwords_are_refused(
    secure: SecureBroker, clients: list[Client]
) -> None:
    anonymous = Client(secure.server, "anonymous", None, None)
    clients.append(anonymous)
    assert anonymous.connack is not None
    assert anonymous.connack.value in {NOT_AUTHORIZED, BAD_LOGIN}
    wrong = _connect(secure, clients, "gw-a", password=secure.passwords["gw-b"])
    unknown = Client(secure.server, "gw-c", "gw-c", mint_password())
    clients.append(unknown)
    for refused in (wrong, unknown):
        assert refused.connack is not None
        assert refused.connack.value in {NOT_AUTHORIZED, BAD_LOGIN}
    assert _connect(secure, clients, "gw-a").accepted  # the right password is taken


def test_plain_tcp_to_the_tls_port_never_reaches_mqtt(secure: SecureBroker) -> None:
    """A valid login sent in clear gets no CONNACK: the listener speaks TLS only."""
    packet = connect_packet(
        client_id="plain",
        keepalive_s=10,
        session_expiry_s=0,
        receive_maximum=10,
        maximum_packet_bytes=65_536,
        username=SINK_USERNAME,
        password=secure.passwords[SINK_USERNAME],
        clean_start=True,
    )
    answer = b""
    with socket.create_connection((LOOPBACK, secure.server.port), timeout=WAIT_S) as sock:
        sock.sendall(packet)
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass  # the broker dropped the connection
    assert not answer.startswith(bytes((CONNACK << 4,)))
    assert answer[:1] in {b"", b"\x15"}  # nothing, or a TLS alert record (RFC 8446 §5.1)


def test_clients_check_the_broker_certificate(secure: SecureBroker, tmp_path: Path) -> None:
    """Another CA's trust, or another host name, and the handshake fails on the client."""
    other = generate_demo_pki(tmp_path / "other-ca")
    for cafile, name in ((other.ca_file, LOOPBACK), (secure.server.ca_file, "broker.example")):
        context = ssl.create_default_context(cafile=str(cafile))
        with (
            socket.create_connection((LOOPBACK, secure.server.port), timeout=WAIT_S) as sock,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            context.wrap_socket(sock, server_hostname=name)
    context = ssl.create_default_context(cafile=str(secure.server.ca_file))
    with (
        socket.create_connection((LOOPBACK, secure.server.port), timeout=WAIT_S) as sock,
        context.wrap_socket(sock, server_hostname=LOOPBACK) as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def test_a_gateway_cannot_publish_as_another_or_forge_commands(
    secure: SecureBroker, clients: list[Client]
) -> None:
    sink = _connect(secure, clients, SINK_USERNAME)
    sink.subscribe("bt/v1/gw/+/up/#", "bt/v1/gw/+/status")
    gateway_a = _connect(secure, clients, "gw-a")
    forged = [
        topic("gw-b", Channel.TELEMETRY),
        topic("gw-b", Channel.ALERTS),
        topic("gw-b", Channel.STATUS),
        topic("gw-a", Channel.KEYS),  # its own downlink is the sink's to write
        topic("gw-b", Channel.ENROL_REQUEST),
    ]
    for full_topic in forged:
        assert gateway_a.publish(full_topic, b"forged") == NOT_AUTHORIZED, full_topic
    own = topic("gw-a", Channel.TELEMETRY)
    assert gateway_a.publish(own, b"marker") == 0
    # The broker delivers one publisher's messages in order: once the marker is in, anything
    # forged that got through would be in too.
    _wait(lambda: (own, b"marker") in sink.received(), "the sink receives gw-a's own frame")
    assert sink.received() == [(own, b"marker")]


def test_a_gateway_cannot_read_another_gateways_commands_or_uplink(
    secure: SecureBroker, clients: list[Client]
) -> None:
    sink = _connect(secure, clients, SINK_USERNAME)
    gateway_a = _connect(secure, clients, "gw-a")
    gateway_b = _connect(secure, clients, "gw-b")
    # Subscriptions are granted, but Mosquitto checks read access per delivered message.
    gateway_a.subscribe("bt/v1/gw/gw-b/down/#", "bt/v1/gw/+/up/#", "#")
    gateway_b.subscribe("bt/v1/gw/gw-b/down/#")
    command = topic("gw-b", Channel.KEYS)
    assert sink.publish(command, b"rotate gw-b") == 0
    assert gateway_b.publish(topic("gw-b", Channel.TELEMETRY), b"b frame") == 0
    marker = topic("gw-a", Channel.KEYS)
    assert sink.publish(marker, b"for gw-a") == 0
    _wait(lambda: (command, b"rotate gw-b") in gateway_b.received(), "gw-b gets its command")
    _wait(lambda: (marker, b"for gw-a") in gateway_a.received(), "gw-a gets its own command")
    assert gateway_a.received() == [(marker, b"for gw-a")]


@pytest.mark.asyncio
async def test_the_sink_identity_reads_every_gateways_uplink_over_tls(
    secure: SecureBroker, clients: list[Client]
) -> None:
    consumer = MqttConsumer(secure.settings("acl-sink"), asyncio.get_running_loop())
    consumer.start()
    try:
        await asyncio.wait_for(consumer.subscribed.wait(), WAIT_S)
        sent: set[str] = set()
        for gateway in ("gw-a", "gw-b"):
            client = await asyncio.to_thread(_connect, secure, clients, gateway)
            for channel in (Channel.TELEMETRY, Channel.ALERTS):
                full_topic = topic(gateway, channel)
                assert await asyncio.to_thread(client.publish, full_topic, b"x") == 0
                sent.add(full_topic)
        received: set[str] = set()
        async with asyncio.timeout(WAIT_S):
            while received != sent:
                batch = await consumer.take(10, 0.5)
                consumer.ack_all(batch)
                received |= {message.topic for message in batch}
    finally:
        await consumer.close()


@pytest.fixture
def own_secure_broker(tmp_path: Path, mosquitto: MosquittoServer) -> Iterator[MosquittoServer]:
    del mosquitto  # only for the skip-or-fail check of the shared fixture
    with MosquittoServer(tmp_path / "mosquitto", secure=True) as server:
        yield server


@pytest.mark.slow
def test_enrolment_telemetry_and_revocation_over_tls(
    tmp_path: Path, own_secure_broker: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(tmp_path, own_secure_broker, influxdb, database=isolation)
    stack.write_sink_config(batch_max_age_ms=100)  # and `gateways broker-setup`
    gateway = stack.add_gateway(
        "tls-ward", patients=1, seed=4, interval_scale=0.5, drain_timeout_s=10.0
    )  # `gateways add` + `edge-agent enroll`, real commands
    folder = gateway.config_file.parent
    assert (folder / "gateway.key").read_text() == (stack.keyring_dir / "tls-ward.key").read_text()
    stored = folder / "state" / "broker-password"
    assert stored.stat().st_mode & 0o777 == 0o600
    password = stored.read_text().strip()
    entries = read_password_entries(own_secure_broker.password_file)
    assert set(entries) == {SINK_USERNAME, "tls-ward"}
    assert verify_password(entries["tls-ward"], password)
    assert own_secure_broker.password_file.stat().st_mode & 0o777 == 0o600

    influx = InfluxV1(influxdb.url, isolation)
    try:
        stack.start_sink()
        stack.start_agent(gateway)
        assert wait_for_vitals(influx, 5, 30.0) >= 5
        assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-2000:]
        entries_seen = read_ledger(gateway.ledger_file)
        wait_for_vitals(influx, reconcile(entries_seen, {}).generated, 30.0)
        assert reconcile(entries_seen, stored_vitals(influx)).exact
        assert "rejected" not in stack.sink_log.read_text()

        # Revocation: the broker drops the gateway's connections and refuses it from then on.
        before = count_vitals(influx)
        stack.start_agent(gateway)
        assert wait_for_vitals(influx, before + 1, 30.0) > before  # connected and publishing
        held = Client(own_secure_broker, "tls-ward-held", "tls-ward", password)
        assert held.accepted
        stack.gateways_command("revoke", "tls-ward")
        assert "tls-ward" not in read_password_entries(own_secure_broker.password_file)
        _wait(held.closed.is_set, "the broker disconnects a connected client of the gateway")
        held.close()
        # The agent was dropped too: it reconnects and is refused (MQTT 5.0 reason 0x87).
        _wait(
            lambda: "Not authorized" in gateway.log_file.read_text(),
            "the agent is refused when it reconnects",
        )
        again = Client(own_secure_broker, "tls-ward-again", "tls-ward", password)
        again.close()
        assert again.connack is not None
        assert again.connack.value in {NOT_AUTHORIZED, BAD_LOGIN}
        if gateway.process is not None:
            gateway.process.kill()  # it cannot drain to a broker that refuses it: do not wait
            gateway.process.wait()
    finally:
        stack.stop_all()
        influx.close()

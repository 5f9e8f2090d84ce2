"""SIGTERM while InfluxDB is down: the sink exits promptly and the next run writes everything."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sink.influx import InfluxV1
from cloud_sink.twin import count_vitals, wait_for_vitals
from edge_agent.protocol import (
    CATALOGUE,
    CONTENT_FRAME_V1,
    Channel,
    DeviceBlock,
    Direction,
    Frame,
    derive_session_key,
    encode_frame,
    seal,
    topic,
)
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GATEWAY = "stop-ward"


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[InfluxServer]:
    """A database of this test's own: it is stopped and started again."""
    with InfluxServer(tmp_path / "influxdb") as server:
        yield server


def _sealed(secret: bytes, full_topic: str, count: int) -> list[bytes]:
    key = derive_session_key(secret, GATEWAY, 1, Direction.UP)
    now_ns = time.time_ns()
    codes = np.array([m.code for m in CATALOGUE[:3]], np.uint16)
    return [
        seal(
            key, full_topic, seq,
            encode_frame(Frame(GATEWAY, now_ns, (DeviceBlock(
                "d" * 32, "e" * 32, "monitor", codes, np.full(3, now_ns + seq, np.int64),
                np.array([60.0, 97.0, 14.0]), np.zeros(3, np.uint32), np.zeros(3, np.uint32),
            ),))),
            CONTENT_FRAME_V1,
        )
        for seq in range(count)
    ]  # fmt: skip


def _publish(port: int, full_topic: str, payloads: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(full_topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_sigterm_during_an_influxdb_outage_exits_and_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoServer, own_influx: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(tmp_path, mosquitto, own_influx, database=isolation,
                       topic_prefix=f"{isolation}/")  # fmt: skip
    stack.write_sink_config(batch_max_age_ms=100)
    secret = os.urandom(32)
    write_secret_file(stack.keyring_dir / f"{GATEWAY}.key", secret)
    full_topic = topic(GATEWAY, Channel.TELEMETRY, f"{isolation}/")
    payloads = _sealed(secret, full_topic, 5)
    influx = InfluxV1(own_influx.url, isolation)
    try:
        stack.start_sink()
        own_influx.stop()
        _publish(mosquitto.port, full_topic, payloads)
        deadline = time.monotonic() + 20.0
        while "write failed" not in stack.sink_log.read_text():
            assert time.monotonic() < deadline, stack.sink_log.read_text()[-2000:]
            time.sleep(0.1)
        started = time.monotonic()
        assert stack.stop_sink(timeout_s=30.0) == 0
        assert time.monotonic() - started < 15.0  # not held by the write retry loop
        assert "messages unwritten" in stack.sink_log.read_text()

        own_influx.start()
        stack.start_sink()
        assert wait_for_vitals(influx, 15, 30.0) == 15
        time.sleep(0.5)  # nothing more, nothing twice (each reading is its own point)
        assert count_vitals(influx) == 15
    finally:
        stack.stop_sink()
        influx.close()

"""Two sinks in one MQTT shared-subscription group: none lost, none doubled, no twin regression.

DESIGN §5 guarantees 1 and 4, counted: several gateways' sealed frames go to `$share/<group>/...`
(MQTT 5.0 §4.8.2), each sink process has its own client id and replay state, both share the keyring
and the database. Every published reading identity must be stored once with its value, and every
patient's twin must show the reading with the newest timestamp, although each gateway's backlog of
older readings is published after its newer ones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sink.influx import InfluxV1
from cloud_sink.twin import (
    Identity,
    UnknownPatient,
    count_vitals,
    read_twin,
    stored_vitals,
    wait_for_vitals,
)
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
from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import InfluxServer, MosquittoServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GATEWAYS: Final = ("scale-gw-a", "scale-gw-b", "scale-gw-c")
PATIENTS_PER_GATEWAY: Final = 8
LIVE_MESSAGES: Final = 160
BACKLOG_MESSAGES: Final = 40
READINGS_PER_MESSAGE: Final = 4
T0_NS: Final = 1_767_225_600_000_000_000
STEP_NS: Final = 1_000_000
# The cap only turns a hang into a failure; nothing is asserted about how fast anything is.
DELIVERY_TIMEOUT_S: Final = 120.0
READY_TIMEOUT_S: Final = 30.0
_STOPPED_RE: Final = re.compile(r"sink stopped: (\d+) messages, (\d+) vitals written")


@dataclass(slots=True, frozen=True)
class Published:
    """What was sent: sealed payloads per topic, in publish order, and every reading."""

    messages: tuple[tuple[str, bytes], ...]
    readings: dict[Identity, float]

    def newest(self) -> dict[tuple[str, str], tuple[int, float]]:
        """Newest (ts_ns, value) per (patient, metric): what each twin must show."""
        out: dict[tuple[str, str], tuple[int, float]] = {}
        for (patient, metric, _device, ts_ns), value in self.readings.items():
            if (patient, metric) not in out or ts_ns > out[patient, metric][0]:
                out[patient, metric] = (ts_ns, value)
        return out


def _gateway_frames(gateway: str, index: int, rng: np.random.Generator) -> list[Frame]:
    """Live frames moving forward in time, then a backlog of older ones (as a spool drains after
    an outage) with other values: a sink that kept the last-written value would regress."""
    patients = [f"{index:02x}{p:030x}" for p in range(PATIENTS_PER_GATEWAY)]
    codes = np.array([m.code for m in CATALOGUE[:READINGS_PER_MESSAGE]], np.uint16)
    frames = []
    for n in range(LIVE_MESSAGES + BACKLOG_MESSAGES):
        patient = patients[n % PATIENTS_PER_GATEWAY]
        # Backlog message k sits between live messages: older than the newest, never equal.
        step = n if n < LIVE_MESSAGES else (n - LIVE_MESSAGES) * 3
        ts_ns = T0_NS + step * STEP_NS + (0 if n < LIVE_MESSAGES else STEP_NS // 2)
        block = DeviceBlock(
            patient[::-1],
            patient,
            "monitor",
            codes,
            np.full(READINGS_PER_MESSAGE, ts_ns, np.int64),
            np.round(rng.normal(80.0, 10.0, READINGS_PER_MESSAGE), 1),
            np.zeros(READINGS_PER_MESSAGE, np.uint32),
            np.zeros(READINGS_PER_MESSAGE, np.uint32),
        )
        frames.append(Frame(gateway, T0_NS, (block,)))
    return frames


def _publication(prefix: str, keyring_dir: Path) -> Published:
    """Every gateway's frames sealed under its own key, interleaved gateway by gateway."""
    rng = np.random.default_rng(9)
    names = {m.code: m.name for m in CATALOGUE}
    per_gateway: list[list[tuple[str, bytes]]] = []
    readings: dict[Identity, float] = {}
    for index, gateway in enumerate(GATEWAYS):
        secret = os.urandom(MASTER_SECRET_BYTES)
        write_secret_file(keyring_dir / f"{gateway}.key", secret)
        key = derive_session_key(secret, gateway, 1, Direction.UP)
        full_topic = topic(gateway, Channel.TELEMETRY, prefix=prefix)
        sealed = []
        for seq, frame in enumerate(_gateway_frames(gateway, index, rng)):
            sealed.append((full_topic, seal(key, full_topic, seq, encode_frame(frame),
                                            CONTENT_FRAME_V1)))  # fmt: skip
            for b in frame.blocks:
                for code, ts_ns, value in zip(b.metric_codes, b.ts_ns, b.values, strict=True):
                    identity = (b.patient_token, names[int(code)], b.device_token, int(ts_ns))
                    assert identity not in readings, f"the test built {identity} twice"
                    readings[identity] = float(value)
        per_gateway.append(sealed)
    interleaved = tuple(m for group in zip(*per_gateway, strict=True) for m in group)
    return Published(interleaved, readings)


class Publisher:
    """paho-mqtt QoS 1: `send` returns once the broker has acknowledged every message."""

    def __init__(self, port: int) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.max_inflight_messages_set(100)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def send(self, messages: tuple[tuple[str, bytes], ...]) -> None:
        infos = [self._client.publish(t, payload, qos=1) for t, payload in messages]
        for info in infos:
            info.wait_for_publish(DELIVERY_TIMEOUT_S)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Sink:
    """One `cloud-sink run` process of the share group, with its own client id and state."""

    name: str
    config: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ready = self.config.parent / "ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "cloud_sink", "run", "--config", str(self.config),
                "--ready-file", str(ready)]  # fmt: skip
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.config.parent
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not subscribe:\n{self.log_file.read_text()[-2000:]}")
            time.sleep(0.05)

    def wait_for_first_write(self) -> None:
        state = self.config.parent / "state" / "replay.json"
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while not state.exists():
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name} never wrote a batch:\n{self.log_file.read_text()[-2000:]}"
                )
            time.sleep(0.005)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def vitals_written(self) -> list[int]:
        """Vitals written per clean stop, from the sink's own closing log line."""
        return [int(m[2]) for m in _STOPPED_RE.finditer(self.log_file.read_text())]


@pytest.fixture
def group(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> Iterator[tuple[Sink, Sink]]:
    """Two sink configs: same keyring, database and share group; own client id and state."""
    keyring = tmp_path / "keyring"
    keyring.mkdir()
    sinks = []
    for name in ("sink-a", "sink-b"):
        folder = tmp_path / name
        folder.mkdir()
        config = folder / "sink.toml"
        config.write_text(
            f"""[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
client_id = "{isolation}-{name}"
topic_prefix = "{isolation}/"
share_group = "{isolation}"

[keyring]
dir = "{keyring}"

[state]
dir = "state"

[influxdb]
url = "{influxdb.url}"
database = "{isolation}"

[writer]
batch_lines = 200
max_age_ms = 50
""",
            encoding="utf-8",
        )
        sinks.append(Sink(name, config, folder / "sink.log"))
    try:
        yield sinks[0], sinks[1]
    finally:
        for sink in sinks:
            sink.stop()


def _twin_regressions(
    influx: InfluxV1, seen: dict[tuple[str, str], int], patients: list[str]
) -> int:
    """Read each patient's twin once; count metrics whose newest timestamp went backwards."""
    regressions = 0
    for patient in patients:
        try:
            vitals = read_twin(influx, patient).vitals
        except UnknownPatient:  # nothing stored for this patient yet
            continue
        for vital in vitals:
            previous = seen.get((patient, vital.metric), -1)
            regressions += vital.ts_ns < previous
            seen[patient, vital.metric] = max(previous, vital.ts_ns)
    return regressions


def _deliver_watching_twins(influx: InfluxV1, published: Published) -> int:
    """Wait for every reading, sampling the twins meanwhile; returns the regressions seen."""
    patients = sorted({identity[0] for identity in published.readings})
    seen: dict[tuple[str, str], int] = {}
    regressions = 0
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while count_vitals(influx) < len(published.readings) and time.monotonic() < deadline:
        regressions += _twin_regressions(influx, seen, patients)
        time.sleep(0.05)
    return regressions + _twin_regressions(influx, seen, patients)


def _assert_exactly_once_and_newest(influx: InfluxV1, published: Published) -> None:
    stored_count = wait_for_vitals(influx, len(published.readings), DELIVERY_TIMEOUT_S)
    stored = stored_vitals(influx)
    lost = published.readings.keys() - stored.keys()
    unexpected = stored.keys() - published.readings.keys()
    assert not lost, f"{len(lost)} readings lost, e.g. {sorted(lost)[:3]}"
    assert not unexpected, (
        f"{len(unexpected)} readings never published, e.g. {sorted(unexpected)[:3]}"
    )
    # One point per identity: a second copy of a reading could only show as a higher count.
    assert stored_count == len(stored) == len(published.readings)
    assert stored == published.readings
    twins = {}
    for patient in {identity[0] for identity in published.readings}:
        for vital in read_twin(influx, patient).vitals:
            twins[patient, vital.metric] = (vital.ts_ns, vital.value)
    assert twins == published.newest()


def test_two_sinks_in_a_share_group_store_every_reading_once_and_twins_only_move_forward(
    group: tuple[Sink, Sink], mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    sink_a, sink_b = group
    published = _publication(f"{isolation}/", sink_a.config.parent.parent / "keyring")
    sink_a.start()
    sink_b.start()
    publisher = Publisher(mosquitto.port)
    influx = InfluxV1(influxdb.url, isolation)
    try:
        publisher.send(published.messages)
        regressions = _deliver_watching_twins(influx, published)
        _assert_exactly_once_and_newest(influx, published)
    finally:
        publisher.close()
        influx.close()
    assert regressions == 0
    assert sink_a.stop() == 0
    assert sink_b.stop() == 0
    written = (sum(sink_a.vitals_written()), sum(sink_b.vitals_written()))
    # The broker gave each message to one member only: the two sinks' writes add up exactly,
    # and both took a share of the load.
    assert sum(written) == len(published.readings), written
    assert min(written) > 0, written


def test_a_sink_killed_halfway_loses_nothing_with_the_other_and_a_restart(
    group: tuple[Sink, Sink], mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    sink_a, sink_b = group
    published = _publication(f"{isolation}/", sink_a.config.parent.parent / "keyring")
    half = len(published.messages) // 2
    sink_a.start()
    sink_b.start()
    publisher = Publisher(mosquitto.port)
    influx = InfluxV1(influxdb.url, isolation)
    try:
        publisher.send(published.messages[:half])
        # Killed once it has written a batch (its replay state is saved after the first write),
        # wherever it is then: possibly between a write and its PUBACKs, or mid-batch.
        sink_a.wait_for_first_write()
        sink_a.kill()
        assert sink_a.process is not None
        assert sink_a.process.returncode == -signal.SIGKILL
        publisher.send(published.messages[half:])
        # Messages the broker had handed to A stay in A's persistent session until it returns.
        sink_a.start()
        regressions = _deliver_watching_twins(influx, published)
        _assert_exactly_once_and_newest(influx, published)
    finally:
        publisher.close()
        influx.close()
    assert regressions == 0
    assert sink_a.stop() == 0
    assert sink_b.stop() == 0

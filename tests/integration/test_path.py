"""The whole path with real processes: simulator → agent → Mosquitto → sink → InfluxDB → twin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sink.influx import InfluxV1
from cloud_sink.twin import list_patients, read_twin, stored_vitals, wait_for_vitals
from edge_agent.framer import Framer
from edge_agent.protocol import (
    Channel,
    Direction,
    by_name,
    derive_session_key,
    encode_frame,
    seal,
    topic,
)
from edge_agent.protocol.envelope import CONTENT_FRAME_V1
from edge_agent.protocol.settings import read_secret_file
from edge_agent.sources import Reading
from firmware_sims.ledger import read_ledger, reconcile
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import LocalStack, SerialDevice

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAC_ADDRESS = re.compile(r"\b[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}\b")


@pytest.fixture
def influx(influxdb: InfluxServer, isolation: str) -> Iterator[InfluxV1]:
    client = InfluxV1(influxdb.url, isolation)
    yield client
    client.close()


@pytest.fixture
def stack(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> Iterator[LocalStack]:
    stack = LocalStack(
        tmp_path, mosquitto, influxdb, database=isolation, topic_prefix=f"{isolation}/"
    )
    stack.write_sink_config(batch_max_age_ms=100)
    yield stack
    stack.stop_all()


@pytest.mark.parametrize("ward_apart", [False, True], ids=["ward-inside", "ward-apart"])
def test_every_generated_reading_is_stored_exactly_once(
    stack: LocalStack, influx: InfluxV1, ward_apart: bool
) -> None:
    """Apart: the ward is `firmware-sims ward`, read across its socket (the benchmark's setup)."""
    gateway = stack.add_gateway(
        "it-ward-1",
        patients=3,
        seed=11,
        interval_scale=0.25,
        implant_receivers=1,
        bedside_monitors=1,
        ward_apart=ward_apart,
    )
    stack.start_sink()
    stack.start_agent(gateway)
    time.sleep(5.0)
    assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-2000:]
    logs = [gateway.log_file, *([gateway.ward_log] if ward_apart else [])]
    for log in logs:  # the simulated devices' addresses never reach a log, either process's
        assert not MAC_ADDRESS.search(log.read_text(errors="replace")), log
    entries = read_ledger(gateway.ledger_file)
    wait_for_vitals(influx, reconcile(entries, {}).generated, 30.0)
    assert stack.stop_sink() == 0
    stored = stored_vitals(influx)
    result = reconcile(entries, stored)
    assert result.generated > 100
    assert (result.missing, result.extra, result.value_mismatches, result.duplicate_identities) == (
        0,
        0,
        0,
        0,
    )
    assert result.stored == result.generated
    # Every device path took part: BLE wearables (clockless ones stamped on receipt), the implant
    # receiver and the bedside monitor on pseudo-terminals.
    assert result.receipt_stamped > 0
    metrics = {entry.metric for entry in entries}
    assert {"rr_interval", "spo2", "resp_rate", "body_temp", "bp_systolic", "pulse_rate"} <= metrics
    assert {"battery", "lead_impedance_rv", "battery_voltage", "night_heart_rate"} <= metrics
    heart_rate_devices = {(e.patient, e.device) for e in entries if e.metric == "heart_rate"}
    assert len(heart_rate_devices) == 4  # three chest patches and the monitor
    # Every device's health reached `device_health` (sent at least once, at the agent's stop).
    health = influx.query('SELECT last("link_up") FROM "device_health" GROUP BY "device"')
    assert {s.tags["device"] for s in health} == {entry.device for entry in entries}
    # The gateway's own health reached `gateway_health`: its spool drained at the stop, it
    # dropped nothing, and it knows its footprint.
    gateway_health = influx.query(
        'SELECT last("spool_frames"), last("dropped_total"), last("rss_mb"), last("cpu_pct"), '
        'last("connections_total") FROM "gateway_health" GROUP BY "gateway"'
    )
    assert [s.tags["gateway"] for s in gateway_health] == ["it-ward-1"]
    _, spool_frames, dropped, rss_mb, cpu_pct, connections = gateway_health[0].values[0]
    assert dropped == 0
    assert connections >= 1
    assert rss_mb > 10
    assert cpu_pct >= 0
    assert isinstance(spool_frames, int)
    # The twin shows every patient, and its newest value is the store's newest for that metric.
    patients = {entry.patient for entry in entries}
    assert set(list_patients(influx)) == patients
    for patient in patients:
        twin = read_twin(influx, patient)
        newest: dict[str, tuple[int, float]] = {}
        for (who, metric, _device, ts_ns), value in stored.items():
            if who == patient and ts_ns >= newest.get(metric, (0, 0.0))[0]:
                newest[metric] = (ts_ns, value)
        assert {v.metric: (v.ts_ns, v.value) for v in twin.vitals} == newest


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for full_topic, payload in messages:
            client.publish(full_topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_tampered_misrouted_and_garbage_envelopes_are_never_written(
    stack: LocalStack, influx: InfluxV1
) -> None:
    gateway = stack.add_gateway("it-ward-2", patients=1, seed=3, interval_scale=0.25)
    stack.start_sink()
    secret = read_secret_file(gateway.config_file.parent / "gateway.key", 32)
    key = derive_session_key(secret, "it-ward-2", 1, Direction.UP)
    own = topic("it-ward-2", Channel.TELEMETRY, stack.topic_prefix)
    other = topic("it-ward-9", Channel.TELEMETRY, stack.topic_prefix)

    # A genuine frame built by the agent's own framer, sealed three ways plus garbage.
    def frame_bytes(value: float) -> bytes:
        framer = Framer("it-ward-2")
        framer.add(
            Reading(
                "d" * 32, "e" * 32, "hr-strap", by_name("heart_rate").code, time.time_ns(), value
            )
        )
        frame = framer.take()
        assert frame is not None
        return encode_frame(frame)

    good = seal(key, own, 10, frame_bytes(61.0), CONTENT_FRAME_V1)
    tampered = bytearray(seal(key, own, 11, frame_bytes(62.0), CONTENT_FRAME_V1))
    tampered[-1] ^= 0x01
    misrouted = seal(key, own, 12, frame_bytes(63.0), CONTENT_FRAME_V1)
    _publish(
        stack.broker.port,
        [(own, bytes(tampered)), (other, misrouted), (own, b"\x93garbage"), (own, good)],
    )
    wait_for_vitals(influx, 1, 15.0)
    # The same genuine envelope again, before and after a sink restart: replays are dropped
    # quietly, also by a sink that has just started (the windows are persisted).
    _publish(stack.broker.port, [(own, good)])
    time.sleep(1.5)  # the sink batches for 100 ms; let anything wrongly accepted arrive too
    assert stack.stop_sink() == 0
    stack.start_sink()
    _publish(stack.broker.port, [(own, good)])
    time.sleep(1.5)
    assert stack.stop_sink() == 0
    values = sorted(stored_vitals(influx).values())
    assert values == [61.0]
    log = stack.sink_log.read_text()
    assert "rejected (tag_invalid)" in log
    assert "rejected (envelope_malformed)" in log
    assert log.count("1 replays dropped") == 2
    # Every refusal is also a sink_security point, tagged with the gateway and the reason.
    security = influx.query(
        'SELECT sum("rejected"), sum("accepted"), sum("readings") FROM "sink_security" '
        'GROUP BY "gateway", "reason"'
    )
    counts = {(s.tags["gateway"], s.tags["reason"]): s.values[0][1:] for s in security}
    accepted = counts.pop(("it-ward-2", "accepted"))
    assert accepted == [None, 1, 1]  # the one good envelope, with its one stored reading
    assert counts[("it-ward-2", "tag_invalid")] == [1, None, None]
    assert counts[("it-ward-2", "envelope_malformed")] == [1, None, None]
    # and the misrouted one, under the gateway its topic names
    assert sum(c[0] for c in counts.values()) == 3


def test_cli_help_lists_the_commands() -> None:
    for module, commands in (
        ("edge_agent", ["run"]),
        ("cloud_sink", ["run", "twin"]),
        ("firmware_sims", ["list"]),
    ):
        out = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert all(command in out for command in commands), out


def test_twin_show_json_reads_back_from_influxdb(stack: LocalStack, influx: InfluxV1) -> None:
    gateway = stack.add_gateway(
        "it-ward-3", patients=1, seed=5, interval_scale=0.25, scripted_event="fever"
    )
    stack.start_sink()
    stack.start_agent(gateway)
    time.sleep(7.0)  # the thermometer measures every 2.5 s; the fever runs from 1 s to 11 s
    assert stack.stop_agent(gateway) == 0
    entries = read_ledger(gateway.ledger_file)
    wait_for_vitals(influx, reconcile(entries, {}).generated, 30.0)
    patient = entries[0].patient
    config = ["--config", str(stack.sink_config), "--token-file", str(stack.admin_token_file)]

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "cloud_sink", "twin", *args, *config],
            capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"},
        ).stdout  # fmt: skip

    cli("observe", patient, "--acvpu", "A", "--oxygen", "air", "--scale", "1")
    twin = json.loads(cli("show", patient, "--json"))
    assert twin["patient"] == patient
    assert twin["readings"] == reconcile(entries, {}).generated
    assert set(twin["vitals"]) == {entry.metric for entry in entries}
    assert all(v["stale"] is False for v in twin["vitals"].values())
    assert twin["observations"] == {"acvpu": "A", "oxygen": "air", "spo2_scale": "1"}
    news2 = twin["news2"]
    assert news2["complete"] is True
    assert news2["subscores"]["temp"] >= 1  # the scripted fever: 39.4 °C scores 2
    assert news2["total"] == sum(news2["subscores"].values())
    assert [(a["kind"], a["state"]) for a in twin["alerts"]][:1] == [("fever", "raised")]
    ward = json.loads(cli("list", "--json"))
    assert [row["patient"] for row in ward] == [patient]
    assert ward[0]["news2_total"] == news2["total"]
    assert ward[0]["open_alerts"] >= 1


def test_serial_monitor_and_implant_readings_reach_the_twin(
    stack: LocalStack, influx: InfluxV1, tmp_path: Path
) -> None:
    devices = (
        SerialDevice("monitor-1", tmp_path / "monitor", "bedside-monitor", "1" * 32, "2" * 32),
        SerialDevice("implant-1", tmp_path / "implant", "implant-receiver", "3" * 32, "4" * 32),
    )
    sims = [
        subprocess.Popen(
            [sys.executable, "-m", "firmware_sims", "serial", "--device", device,
             "--link", str(d.link), "--interval", "0.2"],
            stdout=subprocess.PIPE,
        )
        for device, d in zip(("monitor", "implant"), devices, strict=True)
    ]  # fmt: skip
    try:
        for sim in sims:
            assert sim.stdout is not None
            assert sim.stdout.readline().strip()  # the simulator prints its port once it is up
        gateway = stack.add_gateway("it-ward-4", patients=1, seed=2, serial=devices)
        stack.start_sink()
        stack.start_agent(gateway)
        time.sleep(4.0)
        assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-2000:]
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait(10)
            assert sim.stdout is not None
            sim.stdout.close()
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        stored = stored_vitals(influx)
        if {"4" * 32, "2" * 32} <= {identity[0] for identity in stored}:
            break
        time.sleep(0.3)
    monitor = {m for (p, m, d, _t) in stored if p == "2" * 32 and d == "1" * 32}
    implant = {m for (p, m, d, _t) in stored if p == "4" * 32 and d == "3" * 32}
    assert {"heart_rate", "resp_rate", "spo2", "body_temp"} <= monitor
    assert implant  # trends, battery, leads or episodes: whatever the receiver sent in 4 s

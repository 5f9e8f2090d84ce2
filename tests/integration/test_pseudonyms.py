"""No patient reference, device address or serial number leaves the gateway in clear.

The whole path runs (devices paired by reference, agent, Mosquitto, sink, InfluxDB); then every
MQTT topic seen on the broker, every log line of both programs and every InfluxDB tag value is
scanned for the identifiers: the hospital reference, each device's Bluetooth address (in every
spelling), the serial numbers the devices report in Device Information, and the serial port path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sink.audit import AuditLog, AuditPaths
from cloud_sink.config import load_sink_config
from cloud_sink.identity import IDENTITY_FILE, IdentityRegistry
from cloud_sink.influx import InfluxV1
from cloud_sink.twin import wait_for_vitals
from edge_agent.binding_outbox import OUTBOX_DIR
from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.ble.peripherals import (
    PERIPHERAL_KINDS,
    SERIAL_NUMBER,
    address_spellings,
    simulated_address,
)
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import PRESETS_FILE, LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REF = "MRN-555-0199"
SEED = 3
GATEWAY = "scan-ward"
BOUND = ("pulse-oximeter", "thermometer", "chest-patch")


def _agent(config: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args, "--config", str(config)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout + ""  # fmt: skip


def _identifiers(monitor_port: str) -> dict[str, str]:
    """Every spelling of every identifier that must never appear in clear."""
    found = {"patient reference": REF, "serial port path": monitor_port}
    kinds = sorted(PERIPHERAL_KINDS)
    for kind in BOUND:
        address = simulated_address(0, kinds.index(kind) + 1)
        peripheral = PERIPHERAL_KINDS[kind](address, seed=SEED)
        serial = peripheral.read_value(SERIAL_NUMBER).decode()
        found |= {f"{kind} address {n}": s for n, s in enumerate(address_spellings(address))}
        found[f"{kind} serial number"] = serial
    return found


def _bindings_reached_the_sink(stack: LocalStack, bindings: list[dict[str, str]]) -> str:
    """The reference did travel, sealed: the binding events reached the sink's identity
    registry (0600), each one audited by token. Returns the audit log's text, to be scanned."""
    sink_state = load_sink_config(stack.sink_config).state_dir
    (patient,) = {b["patient_token"] for b in bindings}
    identity = IdentityRegistry(sink_state / IDENTITY_FILE, None)
    assert identity.resolve(patient, actor="test", role="admin") == REF
    assert {identity.device_patient(b["device_token"]) for b in bindings} == {patient}
    assert (sink_state / IDENTITY_FILE).stat().st_mode & 0o777 == 0o600
    audit = AuditLog(AuditPaths.in_dir(sink_state))
    stored = [e for e in audit.read()[0] if e.action == "binding"]
    assert len(stored) == len(bindings)
    assert {e.subject for e in stored} == {patient}
    return audit.paths.log.read_text()


def test_identifiers_never_reach_topics_logs_or_tags(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(
        tmp_path, mosquitto, influxdb, database=isolation, topic_prefix=f"{isolation}/"
    )
    stack.write_sink_config(batch_max_age_ms=100)
    secret = os.urandom(MASTER_SECRET_BYTES)
    write_secret_file(tmp_path / "gateway.key", secret)
    write_secret_file(stack.keyring_dir / f"{GATEWAY}.key", secret)
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""[gateway]
id = "{GATEWAY}"
secret_file = "gateway.key"
state_dir = "state"
[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
topic_prefix = "{isolation}/"
[pipeline]
batch_interval_s = 0.5
[filters]
presets_file = "{PRESETS_FILE}"
[simulation]
patients = 0
seed = {SEED}
interval_scale = 0.5
ledger_file = "ledger.jsonl"
""",
        encoding="utf-8",
    )
    scanned = json.loads(_agent(config, "pair", "scan", "--timeout", "2", "--json"))
    monitor = next(row["address"] for row in scanned if row["address"].endswith("monitor-00"))
    by_kind = {row["name"].rsplit("-", 1)[0]: row["address"] for row in scanned}
    for kind in BOUND:
        _agent(config, "pair", "add", by_kind[kind], "--kind", kind, "--patient", REF)
    _agent(config, "pair", "add", monitor, "--kind", "bedside-monitor", "--patient", REF)

    topics: set[str] = set()
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda _c, _u, message: topics.add(message.topic)
    spy.connect("127.0.0.1", mosquitto.port)
    spy.subscribe(f"{isolation}/#", qos=1)
    spy.loop_start()
    agent_log = tmp_path / "agent.log"
    influx = InfluxV1(influxdb.url, isolation)
    try:
        stack.start_sink()
        with agent_log.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(config),
                 "--log-format", "json", "--log-level", "debug"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            time.sleep(8.0)
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0, agent_log.read_text()[-2000:]
        assert wait_for_vitals(influx, 50, 30.0) >= 50
        assert stack.stop_sink() == 0
        tag_values = {
            str(row[1])
            for series in influx.query("SHOW TAG VALUES WITH KEY =~ /.*/")
            for row in series.values
        }
    finally:
        spy.loop_stop()
        spy.disconnect()
        stack.stop_all()
        influx.close()
    registry = json.loads((tmp_path / "state" / "registry.json").read_text())
    audit_log = _bindings_reached_the_sink(stack, registry["bindings"])
    assert not list((tmp_path / "state" / OUTBOX_DIR).iterdir())  # every event sent
    logs = agent_log.read_text() + stack.sink_log.read_text() + audit_log
    # Positive controls: the scan looks at real traffic that names the devices by pseudonym.
    device_tokens = {b["device_token"] for b in registry["bindings"]}
    assert device_tokens <= tag_values
    assert any("/up/telemetry" in topic for topic in topics)
    assert "connected" in logs
    haystacks = {
        "MQTT topic": "\n".join(topics),
        "log line": logs,
        "InfluxDB tag": "\n".join(tag_values),
    }
    leaks = [
        f"{what} in a {where}"
        for what, identifier in _identifiers(monitor).items()
        for where, text in haystacks.items()
        if identifier in text
    ]
    assert leaks == []

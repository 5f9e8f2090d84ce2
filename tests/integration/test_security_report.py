"""`cloud-sink security report` against a real sink, Mosquitto and InfluxDB: every figure is a
count of something that happened in the test, and each one moves when that thing changes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sink.audit import AuditLog, AuditPaths
from cloud_sink.config import load_sink_config
from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import encode_line
from cloud_sink.twin import wait_for_vitals
from edge_agent.framer import Framer
from edge_agent.protocol import Channel, Direction, by_name, derive_session_key, encode_frame
from edge_agent.protocol import seal as seal_envelope
from edge_agent.protocol import topic as make_topic
from edge_agent.protocol.envelope import CONTENT_FRAME_V1
from edge_agent.protocol.settings import read_secret_file
from edge_agent.sources import Reading
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GATEWAY = "it-sec-1"
PATIENT = "a" * 32
DEVICE = "b" * 32


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


def _frame(values: list[float]) -> bytes:
    framer = Framer(GATEWAY)
    start_ns = time.time_ns() - 10_000_000_000
    for i, value in enumerate(values):
        code = by_name("heart_rate").code
        framer.add(Reading(DEVICE, PATIENT, "hr-strap", code, start_ns + i * 1_000_000_000, value))
    frame = framer.take()
    assert frame is not None
    return encode_frame(frame)


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


def _security_report(stack: LocalStack, token_file: Path | None = None) -> dict[str, object]:
    command = [sys.executable, "-m", "cloud_sink", "security", "report", "--json"]
    token = stack.admin_token_file if token_file is None else token_file
    done = subprocess.run(
        [*command, "-c", str(stack.sink_config), "--token-file", str(token)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(document, dict)
    return document


def _assert_refused(stack: LocalStack) -> None:
    wrong = stack.root / "wrong.token"
    wrong.write_text("btt_not-a-known-token\n")
    wrong.chmod(0o600)
    command = [sys.executable, "-m", "cloud_sink", "security", "report", "--json"]
    refused = subprocess.run(
        [*command, "-c", str(stack.sink_config), "--token-file", str(wrong)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stdout == ""


def test_security_report_counts_what_the_sink_did(stack: LocalStack, influx: InfluxV1) -> None:
    gateway = stack.add_gateway(GATEWAY, patients=1, seed=5, interval_scale=0.25)
    secret = read_secret_file(gateway.config_file.parent / "gateway.key", 32)
    key = derive_session_key(secret, GATEWAY, 1, Direction.UP)
    own = make_topic(GATEWAY, Channel.TELEMETRY, stack.topic_prefix)
    tampered = bytearray(seal_envelope(key, own, 3, _frame([70.0]), CONTENT_FRAME_V1))
    tampered[-1] ^= 0x80
    stack.start_sink()
    _publish(
        stack.broker.port,
        [
            (own, seal_envelope(key, own, 1, _frame([60.0]), CONTENT_FRAME_V1)),
            (own, seal_envelope(key, own, 2, _frame([61.0, 62.0, 63.0]), CONTENT_FRAME_V1)),
            (own, bytes(tampered)),
            (own, b"\x00 not an envelope"),
        ],
    )
    wait_for_vitals(influx, 4, 15.0)
    time.sleep(0.5)  # the refusals' batch lands with or just after the vitals
    assert stack.stop_sink() == 0

    before = _security_report(stack)
    assert before["rejections_by_reason"] == {"envelope_malformed": 1, "tag_invalid": 1}
    assert before["rejections_total"] == 2
    assert before["envelopes_accepted"] == 2
    assert before["envelope_acceptance_pct"] == 50.0
    assert (before["readings_stored"], before["readings_sealed"]) == (4, 4)
    assert before["encryption_compliance_pct"] == 100.0
    # The report itself is audited: its own entry is the only one so far.
    first = before["audit_log"]
    assert isinstance(first, dict)
    assert (first["chain_ok"], first["entries_in_window"]) == (True, 1)
    assert (before["exports_total"], before["auth_failures"]) == (0, 0)

    # A reading written around the sink (straight into InfluxDB) is not accounted for.
    influx.write(
        [
            encode_line(
                "vital",
                {"patient": PATIENT, "metric": "heart_rate", "device": DEVICE},
                {"value": 99.0, "quality": 0, "flags": 0},
                time.time_ns() - 1_000_000_000,
            )
        ]
    )
    around = _security_report(stack)
    assert around["readings_unaccounted"] == 1
    assert around["encryption_compliance_pct"] == 80.0

    # The audit log's part: two exports (one anonymised) and a failed login.
    state_dir = load_sink_config(stack.sink_config).state_dir
    log = AuditLog(AuditPaths.in_dir(state_dir))
    log.append(
        action="export",
        outcome="ok",
        actor="dr-a",
        role="clinician",
        subject=PATIENT,
        detail={"anonymised": False},
    )
    log.append(
        action="export",
        outcome="ok",
        actor="res-b",
        role="researcher",
        subject=None,
        detail={"anonymised": True},
    )
    log.append(action="auth_failure", outcome="denied", actor="unknown", role="none")
    audited = _security_report(stack)
    assert audited["exports_total"] == 2
    assert audited["anonymised_export_pct"] == 50.0
    assert audited["auth_failures"] == 1
    audit_log = audited["audit_log"]
    assert isinstance(audit_log, dict)
    assert audit_log["chain_ok"] is True
    assert audit_log["entries_in_window"] == 6  # three reports (each audited first) and ours

    # A token that matches no identity is refused, and counted as a failed authentication.
    _assert_refused(stack)
    assert _security_report(stack)["auth_failures"] == 2

    # An edited entry breaks the chain, and the report says so.
    lines = log.paths.log.read_text().splitlines()
    edited = next(i for i, line in enumerate(lines) if '"res-b"' in line)
    lines[edited] = lines[edited].replace('"res-b"', '"res-c"')
    log.paths.log.write_text("\n".join(lines) + "\n")
    broken = _security_report(stack)["audit_log"]
    assert isinstance(broken, dict)
    assert broken["chain_ok"] is False
    assert broken["problem"]

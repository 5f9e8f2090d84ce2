"""Enrolment over a real broker: `cloud-sink gateways add` and `edge-agent enroll` agree a secret.

The agreed secret then carries real traffic: the agent's frames open in the sink and reach
InfluxDB. A wrong token gets no answer and leaves no key behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud_sink.audit import AuditEntry, read_entries
from cloud_sink.influx import InfluxV1
from cloud_sink.twin import count_vitals, stored_vitals, wait_for_vitals
from firmware_sims.ledger import read_ledger, reconcile
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GATEWAYS = [sys.executable, "-m", "cloud_sink", "gateways"]


def _waiting_sink(
    stack: LocalStack, gateway: str, timeout_s: float
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*GATEWAYS, "add", gateway, "--json", "--timeout", str(timeout_s),
         "--config", str(stack.sink_config), "--token-file", str(stack.admin_token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    assert first["gateway"] == gateway
    return process, str(first["token"])


def _audit(stack: LocalStack) -> list[AuditEntry]:
    entries, unreadable = read_entries(stack.sink_config.parent / "state" / "audit.jsonl")
    assert unreadable == 0
    return entries


def _enroll(config: Path, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # The shared test broker is anonymous: no broker password to ask for (the secured
    # broker's enrolment is in test_broker_acl.py).
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "enroll", token, "--config", str(config),
         "--no-broker-password", *extra],
        capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_an_enrolled_gateway_is_read_by_the_sink(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(
        tmp_path, mosquitto, influxdb, database=isolation, topic_prefix=f"{isolation}/"
    )
    stack.write_sink_config(batch_max_age_ms=100)
    gateway = stack.add_gateway("enrol-ward", patients=1, seed=4, interval_scale=0.5)
    secret = gateway.config_file.parent / "gateway.key"
    secret.unlink()  # add_gateway shares a secret by hand; this test enrols instead
    (stack.keyring_dir / "enrol-ward.key").unlink()

    sink, token = _waiting_sink(stack, "enrol-ward", 60.0)
    spaced = " ".join(token[i : i + 4] for i in range(0, len(token), 4)).lower()
    enrolled = _enroll(gateway.config_file, spaced)
    out, err = sink.communicate(timeout=60)
    assert enrolled.returncode == 0, enrolled.stderr
    assert sink.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["enrolled"] is True
    assert secret.read_text() == (stack.keyring_dir / "enrol-ward.key").read_text()
    assert secret.stat().st_mode & 0o777 == 0o600
    assert token not in enrolled.stdout + enrolled.stderr + out + err.replace(token, "")
    listed = subprocess.run(
        [*GATEWAYS, "list", "--json", "--config", str(stack.sink_config),
         "--token-file", str(stack.admin_token_file)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert [row["gateway"] for row in json.loads(listed.stdout)] == ["enrol-ward"]
    # Audited: the admin's request, the sink's completed enrolment, the listing.
    audited = [(e.actor, e.action, e.outcome, e.subject) for e in _audit(stack)]
    assert audited == [
        ("stack-admin", "gateway_add", "ok", "enrol-ward"),
        ("system", "enrol", "ok", "enrol-ward"),
        ("stack-admin", "gateway_list", "ok", None),
    ]
    # Enrolling twice needs --force on the gateway and --replace on the sink.
    again = _enroll(gateway.config_file, spaced)
    assert again.returncode == 2
    assert "enrolled already" in " ".join(again.stderr.split())

    influx = InfluxV1(influxdb.url, isolation)
    try:
        stack.start_sink()
        stack.start_agent(gateway)
        time.sleep(4.0)
        assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-2000:]
        entries = read_ledger(gateway.ledger_file)
        expected = reconcile(entries, {}).generated
        assert expected > 0
        wait_for_vitals(influx, expected, 30.0)
        # Every reading the gateway sealed under the enrolled secret opened in the sink.
        assert reconcile(entries, stored_vitals(influx)).exact
        assert "rejected" not in stack.sink_log.read_text()
    finally:
        stack.stop_all()
        influx.close()


def test_a_wrong_token_gets_no_answer_and_no_key(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(
        tmp_path, mosquitto, influxdb, database=isolation, topic_prefix=f"{isolation}/"
    )
    stack.write_sink_config()
    gateway = stack.add_gateway("enrol-ward-2", patients=1, seed=4)
    (gateway.config_file.parent / "gateway.key").unlink()
    (stack.keyring_dir / "enrol-ward-2.key").unlink()
    sink, token = _waiting_sink(stack, "enrol-ward-2", 8.0)
    # Change the first character: every bit of it is token (the last base32 character of a
    # 128-bit token carries 2 padding bits, so changing it can leave the bytes as they were).
    wrong = ("A" if token[0] != "A" else "B") + token[1:]
    refused = _enroll(gateway.config_file, wrong, "--timeout", "5")
    _out, err = sink.communicate(timeout=60)
    assert refused.returncode == 1
    assert "no valid answer from the sink" in " ".join(refused.stderr.split())
    assert sink.returncode == 1
    assert "request refused" in err or "no valid enrolment request" in " ".join(err.split())
    assert not (stack.keyring_dir / "enrol-ward-2.key").exists()
    assert not (gateway.config_file.parent / "gateway.key").exists()
    # Audited: each refused request (the gateway asks again while it waits), then the run
    # that ended without an enrolment.
    *refusals, failure = [e for e in _audit(stack) if e.action == "enrol"]
    assert refusals
    for refusal in refusals:
        assert (refusal.actor, refusal.outcome, refusal.subject) == (
            "system",
            "denied",
            "enrol-ward-2",
        )
        assert refusal.detail == {"reason": "request_refused"}
    assert (failure.outcome, failure.detail) == (
        "failed",
        {"reason": "timeout", "rejected_requests": len(refusals)},
    )


def test_a_revoked_gateway_is_refused_by_the_running_sink(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(
        tmp_path, mosquitto, influxdb, database=isolation, topic_prefix=f"{isolation}/"
    )
    stack.write_sink_config(batch_max_age_ms=100)
    gateway = stack.add_gateway("revoke-ward", patients=1, seed=4, interval_scale=0.5)
    influx = InfluxV1(influxdb.url, isolation)
    try:
        stack.start_sink()
        stack.start_agent(gateway)
        assert wait_for_vitals(influx, 10, 30.0) >= 10  # accepted while enrolled
        subprocess.run(
            [*GATEWAYS, "revoke", "revoke-ward", "--config", str(stack.sink_config),
             "--token-file", str(stack.admin_token_file)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        assert not (stack.keyring_dir / "revoke-ward.key").exists()
        assert len(list((stack.keyring_dir / "revoked").glob("revoke-ward-*.key"))) == 1
        time.sleep(2.0)  # the running sink re-checks key files every second
        before = count_vitals(influx)
        time.sleep(3.0)  # the agent keeps sealing and publishing meanwhile
        assert count_vitals(influx) == before
        assert "rejected (unknown_key)" in stack.sink_log.read_text()
    finally:
        stack.stop_all()
        influx.close()

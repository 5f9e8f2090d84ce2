"""Key rotation over a real broker and InfluxDB: the gateway moves epoch, nothing is lost.

`cloud-sink gateways rotate` publishes a retained, sealed command on the gateway's down/keys
topic: a running agent moves at once, a stopped one when it next connects. Frames sealed under
the old epoch (its spool) still open during the grace, so the ledger equals the store exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud_sink.influx import InfluxV1
from cloud_sink.twin import stored_vitals, wait_for_vitals
from firmware_sims.ledger import read_ledger, reconcile
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rotate(stack: LocalStack, gateway: str) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "cloud_sink", "gateways", "rotate", gateway, "--json",
         "--config", str(stack.sink_config), "--token-file", str(stack.admin_token_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["epoch"])


def _agent_epoch(counter_file: Path) -> int:
    return int(json.loads(counter_file.read_text())["epoch"])


def _wait_for_epoch(counter_file: Path, epoch: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _agent_epoch(counter_file) != epoch:
        if time.monotonic() > deadline:
            pytest.fail(f"the agent never moved to epoch {epoch} (at {_agent_epoch(counter_file)})")
        time.sleep(0.1)


def test_rotation_moves_a_running_and_a_returning_gateway_without_losing_a_reading(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(
        tmp_path, mosquitto, influxdb, database=isolation, topic_prefix=f"{isolation}/"
    )
    stack.write_sink_config(batch_max_age_ms=100)
    gateway = stack.add_gateway("rotate-ward", patients=1, seed=5, interval_scale=0.5)
    counter_file = gateway.config_file.parent / "state" / "seq-rotate-ward.json"
    influx = InfluxV1(influxdb.url, isolation)
    try:
        stack.start_sink()
        stack.start_agent(gateway)
        assert wait_for_vitals(influx, 10, 30.0) >= 10
        first_epoch = _agent_epoch(counter_file)
        live = _rotate(stack, "rotate-ward")
        assert live > first_epoch
        _wait_for_epoch(counter_file, live, 15.0)
        time.sleep(1.0)
        assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-2000:]
        # Rotated while the gateway is away: the retained command waits for it.
        returning = _rotate(stack, "rotate-ward")
        assert returning > live
        stack.start_agent(gateway)
        _wait_for_epoch(counter_file, returning, 30.0)
        time.sleep(1.0)
        assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-2000:]
        entries = read_ledger(gateway.ledger_file)
        expected = reconcile(entries, {}).generated
        wait_for_vitals(influx, expected, 30.0)
        assert reconcile(entries, stored_vitals(influx)).exact
        log = gateway.log_file.read_text()
        assert f"sealing under epoch {live}" in log
        assert f"sealing under epoch {returning}" in log
        assert "rejected" not in stack.sink_log.read_text()
    finally:
        stack.stop_all()
        influx.close()

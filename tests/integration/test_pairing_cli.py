"""`edge-agent pair` and `edge-agent status` as real processes, on the simulated hardware switch.

A `[simulation]` section with `patients = 0` gives the agent unbound simulated devices (every
BLE model through the simulators' bleak backend, an implant receiver and a bedside monitor on
pseudo-terminals); pairing, the agent and its status then run exactly as on a ward.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import MosquittoServer
from firmware_sims.stack import PRESETS_FILE

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # a hang guard, not a performance bound
OXIMETER = "C6:B7:00:00:06:01"  # the bench kit's pulse oximeter (sixth model, sorted by kind)


@pytest.fixture
def config(tmp_path: Path, mosquitto: MosquittoServer, isolation: str) -> Path:
    write_secret_file(tmp_path / "gateway.key", os.urandom(MASTER_SECRET_BYTES))
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""[gateway]
id = "pair-ward"
secret_file = "gateway.key"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
topic_prefix = "{isolation}/"

[filters]
presets_file = "{PRESETS_FILE}"

[simulation]
patients = 0
seed = 3
ledger_file = "ledger.jsonl"
""",
        encoding="utf-8",
    )
    return path


def agent(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    # A failure says why: the command's own message, not only its exit status.
    assert not check or done.returncode == 0, f"{args[:2]}: {done.stderr[-2000:]}"
    return done


def test_scan_add_list_run_status_remove(config: Path) -> None:
    found = json.loads(agent(config, "pair", "scan", "--timeout", "2", "--json").stdout)
    kinds = {row["kind"] for row in found if row["transport"] == "ble"}
    assert {"pulse-oximeter", "thermometer", "bp-cuff", "hr-strap", "env-sensor"} <= kinds
    ports = [row["address"] for row in found if row["transport"] == "serial"]
    monitor = next(port for port in ports if port.endswith("monitor-00"))
    assert all(row["bound_to"] is None for row in found)

    added = json.loads(
        agent(config, "pair", "add", OXIMETER, "--patient", "MRN-7", "--json").stdout
    )
    assert added["kind"] == "pulse-oximeter"  # guessed from the advertised service
    assert added["first_reading"]["metric"] in {"spo2", "pulse_rate"}
    agent(config, "pair", "add", monitor, "--kind", "bedside-monitor", "--patient", "MRN-7")
    bound = json.loads(agent(config, "pair", "list", "--json").stdout)
    assert [row["kind"] for row in bound] == ["pulse-oximeter", "bedside-monitor"]
    assert len({row["patient"] for row in bound}) == 1  # one patient, one pseudonym
    assert "MRN-7" not in (config.parent / "state" / "registry.json").read_text()
    live = json.loads(agent(config, "pair", "test", bound[0]["device"][:8], "--seconds", "2",
                            "--json").stdout)  # fmt: skip
    assert {"spo2", "pulse_rate"} <= {row["metric"] for row in live}
    assert "pulse-oximeter" in agent(config, "pair", "list").stdout  # the table, for people

    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        status = _until_streaming(config, {row["device"] for row in bound})
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()[-2000:]
    assert status["broker"]["connected"] is True
    assert status["spool"]["frames"] >= 0
    assert status["counters"]["readings_in"] > 0
    # No address or port ever reaches the status file (it may be shown to anyone).
    text = json.dumps(status)
    assert OXIMETER not in text
    assert monitor not in text
    after = json.loads(agent(config, "status", "--json").stdout)
    assert after["state"] == "stopped"
    table = agent(config, "status").stdout
    assert "stopped" in table
    assert "pulse-oximeter" in table

    agent(config, "pair", "remove", bound[0]["device"][:8])
    assert [row["kind"] for row in json.loads(agent(config, "pair", "list", "--json").stdout)] == [
        "bedside-monitor"
    ]


def _until_running(config: Path) -> None:
    """Until the agent's status file says it runs (its simulated hardware is powered)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = agent(config, "status", "--json", check=False)
        if result.returncode == 0 and json.loads(result.stdout)["state"] == "running":
            return
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.5)


def _until_streaming(config: Path, devices: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        result = agent(config, "status", "--json", check=False)
        if result.returncode == 0:
            status: dict[str, Any] = json.loads(result.stdout)
            links = {row["device"]: row["link"] for row in status["devices"]}
            if all(links.get(device) == "streaming" for device in devices):
                return status
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.5)


def test_pairing_mistakes_are_refused_and_leave_nothing_bound(config: Path) -> None:
    wrong = agent(config, "pair", "add", "bed-12", "--patient", "MRN-7", check=False)
    assert wrong.returncode == 2
    assert "neither a Bluetooth address" in wrong.stderr
    silent = agent(
        config, "pair", "add", "C6:B7:00:00:07:01", "--patient", "MRN-7", "--timeout", "1",
        check=False,
    )  # fmt: skip
    assert silent.returncode == 1  # a thermometer measures every 10 s: no reading in 1 s
    assert "Nothing was bound" in " ".join(silent.stderr.split())
    assert json.loads(agent(config, "pair", "list", "--json").stdout) == []
    not_running = agent(config, "status", check=False)
    assert not_running.returncode == 1
    assert "no status file" in " ".join(not_running.stderr.split())


def test_a_running_agent_takes_devices_as_they_are_paired_and_lets_them_go(config: Path) -> None:
    # A new gateway: nothing paired yet, and the agent runs anyway.
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _until_running(config)
        added = json.loads(
            agent(config, "pair", "add", OXIMETER, "--patient", "MRN-8", "--json").stdout
        )
        status = _until_streaming(config, {added["device"]})
        assert status["state"] == "running"
        agent(config, "pair", "remove", added["device"][:8])
        deadline = time.monotonic() + WAIT_S
        while added["device"] in {row["device"] for row in status["devices"]}:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
            status = json.loads(agent(config, "status", "--json").stdout)
        assert process.poll() is None  # still running, with no device left
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    log = err.decode()
    assert process.returncode == 0, log[-2000:]
    assert "no devices yet" in log
    assert "1 device(s) paired" in log
    assert "1 released" in log
    assert OXIMETER not in log

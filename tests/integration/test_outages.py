"""Outages: readings sealed while the broker is down wait in the agent's spool and all arrive."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sink.influx import InfluxV1
from cloud_sink.twin import stored_vitals, wait_for_vitals
from firmware_sims.ledger import read_ledger, reconcile
from firmware_sims.services import InfluxServer, MosquittoServer, free_port
from firmware_sims.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A broker of this test's own: it is stopped and restarted, unlike the shared one."""
    with MosquittoServer(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def stack(
    tmp_path: Path, own_broker: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path, own_broker, influxdb, database=isolation)
    stack.write_sink_config(batch_max_age_ms=100)
    yield stack
    stack.stop_all()


@pytest.fixture
def influx(influxdb: InfluxServer, isolation: str) -> Iterator[InfluxV1]:
    client = InfluxV1(influxdb.url, isolation)
    yield client
    client.close()


def _reconciled(stack: LocalStack, influx: InfluxV1, ledger: Path) -> tuple[int, int, int, int]:
    """(missing, extra, value mismatches, stored - generated) once the sink has caught up."""
    entries = read_ledger(ledger)
    # Distinct readings: a record a device sent again (implant trends) is stored once.
    wait_for_vitals(influx, reconcile(entries, {}).generated, 30.0)
    result = reconcile(entries, stored_vitals(influx))
    return result.missing, result.extra, result.value_mismatches, result.stored - result.generated


def test_broker_outage_loses_nothing(
    stack: LocalStack, influx: InfluxV1, own_broker: MosquittoServer
) -> None:
    gateway = stack.add_gateway("outage-ward", patients=2, seed=21, interval_scale=0.25)
    stack.start_sink()
    stack.start_agent(gateway)
    time.sleep(2.0)
    own_broker.stop()
    time.sleep(4.0)  # the agent keeps sealing into its spool meanwhile
    during = len(read_ledger(gateway.ledger_file))
    own_broker.start()
    time.sleep(3.0)
    assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-3000:]
    assert during > 20
    assert _reconciled(stack, influx, gateway.ledger_file) == (0, 0, 0, 0)
    assert "unavailable" in gateway.log_file.read_text()


def test_frames_left_in_the_spool_are_sent_by_the_next_run(
    stack: LocalStack, influx: InfluxV1, own_broker: MosquittoServer
) -> None:
    gateway = stack.add_gateway(
        "restart-ward", patients=2, seed=8, interval_scale=0.25, drain_timeout_s=1.0
    )
    stack.start_sink()
    own_broker.stop()
    stack.start_agent(gateway)
    time.sleep(3.0)
    # No broker: the drain gives up, the frames stay spooled, and the agent says so.
    assert stack.stop_agent(gateway) == 1
    first_run = len(read_ledger(gateway.ledger_file))
    assert "stay spooled for the next start" in gateway.log_file.read_text()
    own_broker.start()
    stack.start_agent(gateway)
    time.sleep(2.0)
    assert stack.stop_agent(gateway) == 0
    assert first_run > 20
    assert _reconciled(stack, influx, gateway.ledger_file) == (0, 0, 0, 0)


def test_agent_sigkill_loses_nothing_it_had_received(stack: LocalStack, influx: InfluxV1) -> None:
    """kill -9 while readings sit in the queue, the open batch and the uncommitted spool group:
    the intake journal hands them to the next run, and nothing is stored twice."""
    gateway = stack.add_gateway(
        "sigkill-ward",
        patients=2,
        seed=17,
        interval_scale=0.25,
        implant_receivers=1,
        bedside_monitors=1,
    )
    stack.start_sink()
    for _ in range(3):
        stack.start_agent(gateway)
        time.sleep(3.0)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGKILL)
        assert gateway.process.wait(10) == -signal.SIGKILL
    stack.start_agent(gateway)
    time.sleep(2.0)
    assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-3000:]
    assert _reconciled(stack, influx, gateway.ledger_file) == (0, 0, 0, 0)
    # The journal, not luck, saved them: every restart replayed what the killed run held.
    log = gateway.log_file.read_text()
    assert log.count("were not spooled before the last stop") == 3


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[InfluxServer]:
    """A database of this test's own: it goes down for maintenance mid-run."""
    with InfluxServer(tmp_path / "influxdb") as server:
        yield server


def test_influxdb_down_nothing_acknowledged_nothing_lost(
    tmp_path: Path, mosquitto: MosquittoServer, own_influx: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(tmp_path, mosquitto, own_influx, topic_prefix=f"{isolation}/")
    stack.write_sink_config(batch_max_age_ms=100)
    influx = InfluxV1(own_influx.url, stack.database)
    try:
        gateway = stack.add_gateway("dbdown-ward", patients=2, seed=13, interval_scale=0.25)
        stack.start_sink()
        stack.start_agent(gateway)
        time.sleep(2.0)
        own_influx.stop()
        time.sleep(4.0)  # the sink cannot write: it retries and acknowledges nothing
        own_influx.start()
        time.sleep(2.0)
        assert stack.stop_agent(gateway) == 0
        assert _reconciled(stack, influx, gateway.ledger_file) == (0, 0, 0, 0)
        assert "write failed" in stack.sink_log.read_text()
    finally:
        stack.stop_all()
        influx.close()


def test_sink_waiting_for_a_missing_database_still_stops_on_sigterm(tmp_path: Path) -> None:
    closed_port = free_port()
    config = tmp_path / "sink.toml"
    config.write_text(
        f"""[mqtt]
host = "127.0.0.1"
port = {closed_port}
[keyring]
dir = "keys"
[state]
dir = "state"
[influxdb]
url = "http://127.0.0.1:{closed_port}"
database = "nothing"
""",
        encoding="utf-8",
    )
    sink = subprocess.Popen(
        [sys.executable, "-m", "cloud_sink", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    sink.send_signal(signal.SIGTERM)
    _out, err = sink.communicate(timeout=15)
    assert sink.returncode == 0, err
    assert "InfluxDB not reachable yet" in err

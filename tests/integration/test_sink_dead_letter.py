"""Lines InfluxDB refuses are dead-lettered with its reason; the messages are still acknowledged.

A point written beforehand makes `vital.value` a string field in the shard, so every float value
the sink writes conflicts (InfluxDB answers 400 "partial write: field type conflict"). Retrying
would never succeed: the sink records the batch in its dead-letter file and acknowledges, and the
agent's spool drains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cloud_sink.influx import InfluxV1
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_refused_lines_are_dead_lettered_with_the_reason(
    tmp_path: Path, mosquitto: MosquittoServer, influxdb: InfluxServer, isolation: str
) -> None:
    stack = LocalStack(
        tmp_path, mosquitto, influxdb, database=isolation, topic_prefix=f"{isolation}/"
    )
    stack.write_sink_config(batch_max_age_ms=100)
    gateway = stack.add_gateway("dead-ward", patients=1, seed=6, interval_scale=0.5)
    influx = InfluxV1(influxdb.url, isolation)
    dead_letter = tmp_path / "sink" / "state" / "dead-letter.jsonl"
    try:
        influx.query(f'CREATE DATABASE "{isolation}"', write=True)
        # Now, so it lands in the shard the live readings go to (field types are per shard).
        influx.write([f'vital,patient=0,metric=x,device=0 value="not a number" {time.time_ns()}'])
        stack.start_sink()
        stack.start_agent(gateway)
        time.sleep(3.0)
        # The agent's spool empties: the sink acknowledged what it could not store.
        assert stack.stop_agent(gateway) == 0, gateway.log_file.read_text()[-2000:]
        assert "stay spooled" not in gateway.log_file.read_text()
        deadline = time.monotonic() + 20.0
        while not dead_letter.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        records = [json.loads(line) for line in dead_letter.read_text().splitlines()]
    finally:
        stack.stop_all()
        influx.close()
    assert records
    assert all(r["status"] == 400 and "field type conflict" in r["reason"] for r in records)
    lines = [line for r in records for line in r["lines"]]
    vitals = [line for line in lines if line.startswith("vital,")]
    assert len(vitals) > 10
    # A batch is dead-lettered whole, so every dead-lettered batch holds refused vitals.
    assert all(any(line.startswith("vital,") for line in r["lines"]) for r in records)
    # The rest of each batch is this gateway's other points: the count of the envelopes the
    # batch accepted, and the device and gateway health frame the agent sends at start and stop
    # when it lands in the same batch as refused vitals (timing decides, so it may or may not).
    others = {line.split(" ")[0].split(",")[0] for line in lines if not line.startswith("vital,")}
    assert others <= {"sink_security", "device_health", "gateway_health"}, others
    assert all(
        "gateway=dead-ward" in line.split(" ")[0] for line in lines if not line.startswith("vital,")
    )
    assert all(
        line.startswith("sink_security,gateway=dead-ward,reason=accepted ")
        for line in lines
        if line.startswith("sink_security,")
    )
    assert dead_letter.stat().st_mode & 0o777 == 0o600
    assert "dead-lettered" in stack.sink_log.read_text()

"""Sink ingest against raw InfluxDB /write, same points, same database server, same run.

B0: one Python process writes the points with /write in 5000-line batches. Sink: the same
points arrive as sealed MQTT messages of 10 readings (1000 patients) and go through the whole
sink (receive, open, validate, line protocol, write, ack); the rate is measured from the first
publish to the moment InfluxDB holds every point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import vital_line
from cloud_sink.twin import wait_for_vitals
from edge_agent.protocol import (
    CATALOGUE,
    Channel,
    DeviceBlock,
    Direction,
    Frame,
    derive_session_key,
    encode_frame,
    seal,
    topic,
)
from edge_agent.protocol.envelope import CONTENT_FRAME_V1
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import InfluxServer, MosquittoServer
from firmware_sims.stack import LocalStack

GATEWAY: Final = "bench-gw"
PATIENTS: Final = 1000
PER_MESSAGE: Final = 10
T0_NS: Final = 1_767_225_600_000_000_000


def _frames(messages: int) -> list[Frame]:
    rng = np.random.default_rng(3)
    patients = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex() for _ in range(PATIENTS)]
    codes = np.array([m.code for m in CATALOGUE[:PER_MESSAGE]], np.uint16)
    frames = []
    for n in range(messages):
        patient = patients[n % PATIENTS]
        block = DeviceBlock(
            patient[::-1],
            patient,
            "bench",
            codes,
            np.full(PER_MESSAGE, T0_NS + n * 1_000_000, np.int64),
            np.round(rng.normal(80.0, 10.0, PER_MESSAGE), 1),
            np.zeros(PER_MESSAGE, np.uint32),
            np.zeros(PER_MESSAGE, np.uint32),
        )
        frames.append(Frame(GATEWAY, T0_NS, (block,)))
    return frames


def _lines(frames: list[Frame]) -> list[str]:
    names = {m.code: m.name for m in CATALOGUE}
    return [
        vital_line(b.patient_token, names[int(c)], b.device_token, value=float(v), quality=0,
                   flags=0, ts_ns=int(t))
        for f in frames
        for b in f.blocks
        for c, t, v in zip(b.metric_codes, b.ts_ns, b.values, strict=True)
    ]  # fmt: skip


def _b0(url: str, lines: list[str]) -> float:
    influx = InfluxV1(url, "b0")
    influx.create_database()
    start = time.perf_counter()
    for i in range(0, len(lines), 5000):
        influx.write(lines[i : i + 5000])
    elapsed = time.perf_counter() - start
    influx.close()
    return len(lines) / elapsed


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(t, payload, qos=1) for t, payload in messages]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def run(root: Path, messages: int) -> dict[str, object]:
    frames = _frames(messages)
    lines = _lines(frames)
    secret = os.urandom(32)
    key = derive_session_key(secret, GATEWAY, 1, Direction.UP)
    full_topic = topic(GATEWAY, Channel.TELEMETRY)
    sealed = [
        (full_topic, seal(key, full_topic, n, encode_frame(f), CONTENT_FRAME_V1))
        for n, f in enumerate(frames)
    ]
    with MosquittoServer(root / "mosquitto") as broker, InfluxServer(root / "influxdb") as db:
        b0 = _b0(db.url, lines)
        stack = LocalStack(root, broker, db, database="sink")
        stack.write_sink_config()
        write_secret_file(stack.keyring_dir / f"{GATEWAY}.key", secret)
        influx = InfluxV1(db.url, "sink")
        try:
            stack.start_sink()
            start = time.perf_counter()
            _publish(broker.port, sealed)
            stored = wait_for_vitals(influx, len(lines), 300.0)
            elapsed = time.perf_counter() - start
        finally:
            stack.stop_all()
            influx.close()
    sink = stored / elapsed
    return {
        "points": len(lines),
        "messages": messages,
        "stored": stored,
        "b0_points_per_s": round(b0),
        "sink_points_per_s": round(sink),
        "ratio": round(sink / b0, 3),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench sink", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        result = run(Path(tmp), args.messages)
    if not args.json:
        print(
            f"raw /write {result['b0_points_per_s']:,} points/s; "
            f"sink {result['sink_points_per_s']:,} points/s"
        )
    print(json.dumps(result))
    return 0 if result["stored"] == result["points"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

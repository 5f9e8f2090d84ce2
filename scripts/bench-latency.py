"""Latency from a gateway's publish to the point answering an InfluxQL query, at half the sink's
maximum rate measured in the same run.

1. The sink's maximum: `scripts/bench sink`'s drain measurement (a backlog of 20 000 messages).
2. A fresh broker and sink (the shipped writer settings: 5000-line batches, 250 ms max age);
   this process publishes sealed 10-reading messages (1000 patients) at half that rate, in
   10 ms ticks, as QoS 1 PUBLISHes with a window of unacknowledged ones, for `--seconds`.
3. Every 100 ms one message is a probe: its readings belong to a probe patient and carry a
   unique timestamp. Its publish time is taken just before the call that writes it to the
   socket (which may first wait for PUBACKs: that wait counts as latency too).
   Another thread queries InfluxDB every 10 ms for the probe points from the oldest one still
   missing on (`SELECT ... WHERE patient = probe AND time >= oldest`); a probe has arrived when
   a query returns it, so each latency includes the query and up to 10 ms of polling (never
   less than the truth). The first 2 s are warm-up and not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Final

import numpy as np

from cloud_sink.errors import QueryError
from cloud_sink.influx import InfluxV1
from edge_agent.protocol import CATALOGUE, Channel, Frame, topic
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import InfluxServer, MosquittoServer

TICK_S: Final = 0.01
PROBE_EVERY_S: Final = 0.1
POLL_S: Final = 0.01
WARMUP_S: Final = 2.0
SETTLE_S: Final = 10.0
MAX_RATE_MESSAGES: Final = 20_000
PROBE_PATIENT: Final = "f" * 32


def _bench_sink() -> ModuleType:
    """scripts/bench-sink.py: the same frames, sealing, publisher and sink process."""
    spec = importlib.util.spec_from_file_location(
        "bench_sink", Path(__file__).with_name("bench-sink.py")
    )
    if spec is None or spec.loader is None:
        msg = "scripts/bench-sink.py is missing"
        raise RuntimeError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class ProbePoller(threading.Thread):
    """Polls InfluxDB for probe points and records when each first answers a query."""

    def __init__(self, influx: InfluxV1, metric: str, probes_ns: set[int]) -> None:
        super().__init__(name="bench.probe-poller", daemon=True)
        self._influx = influx
        self._metric = metric
        self._waiting_ns = set(probes_ns)
        self.arrived_s: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while self._waiting_ns and not self.stop.is_set():
            # From the oldest probe still missing, so one that lands late is found all the same.
            # Our own constants only: a hex token, a catalogue name and an integer.
            oldest_ns = min(self._waiting_ns)
            where = f"\"patient\" = '{PROBE_PATIENT}' AND \"metric\" = '{self._metric}'"
            query = f'SELECT "value" FROM "vital" WHERE {where} AND time >= {oldest_ns}'  # noqa: S608
            try:
                series = self._influx.query(query)
            except QueryError:
                series = []  # the database may not exist yet
            now_s = time.time()
            for row in series[0].values if series else []:
                ts_ns = int(row[0])
                if ts_ns in self._waiting_ns:
                    self._waiting_ns.discard(ts_ns)
                    self.arrived_s[ts_ns] = now_s
            time.sleep(POLL_S)


def _messages(
    bench_sink: ModuleType, count: int, per_s: float, secret: bytes
) -> tuple[list[bytes], dict[int, int]]:
    """Sealed messages, every `PROBE_EVERY_S`-th one a probe; returns them and {index: ts_ns}."""
    frames: list[Frame] = bench_sink.frames(count, seed=5)
    probe_every = max(1, round(per_s * PROBE_EVERY_S))
    probes: dict[int, int] = {}
    for index in range(0, count, probe_every):
        block = frames[index].blocks[0]
        probe = dataclasses.replace(block, patient_token=PROBE_PATIENT)
        frames[index] = dataclasses.replace(frames[index], blocks=(probe,))
        probes[index] = int(block.ts_ns[0])
    return bench_sink.sealed_messages(frames, secret), probes


def measure(root: Path, seconds: float, points_per_s: float | None) -> dict[str, object]:
    bench_sink = _bench_sink()
    secret = os.urandom(32)
    with MosquittoServer(root / "mosquitto-max") as broker, InfluxServer(root / "influx") as db:
        if points_per_s is None:
            batch = bench_sink.frames(MAX_RATE_MESSAGES)
            points_per_s, _, _ = bench_sink.drain_rate(root / "max", broker, db, batch, secret)
        target_points_per_s = points_per_s / 2
        per_s = target_points_per_s / bench_sink.PER_MESSAGE
        count = int(per_s * seconds)
        payloads, probes = _messages(bench_sink, count, per_s, secret)

    with MosquittoServer(root / "mosquitto") as broker, InfluxServer(root / "influxdb") as db:
        stack = bench_sink.sink_stack(root, broker, db, "latency")
        write_secret_file(stack.keyring_dir / f"{bench_sink.GATEWAY}.key", secret)
        influx = InfluxV1(db.url, "latency")
        poller = ProbePoller(influx, CATALOGUE[0].name, set(probes.values()))
        published_s: dict[int, float] = {}
        with bench_sink.sink_process(stack, "latency.log"):
            publisher = bench_sink.BenchPublisher(broker.port, "bench-latency")
            full_topic = topic(bench_sink.GATEWAY, Channel.TELEMETRY)
            packets = [publisher.packet(full_topic, payload) for payload in payloads]
            poller.start()
            start_s = time.monotonic()
            sent = 0
            while sent < count:
                due = min(count, int((time.monotonic() - start_s) * per_s) + 1)
                if due > sent:
                    now_s = time.time()
                    published_s.update((i, now_s) for i in range(sent, due) if i in probes)
                    publisher.send(packets[sent:due])
                    sent = due
                time.sleep(TICK_S)
            elapsed_s = time.monotonic() - start_s
            publisher.finish()
            deadline = time.monotonic() + SETTLE_S
            while len(poller.arrived_s) < len(probes) and time.monotonic() < deadline:
                time.sleep(0.05)
            poller.stop.set()
            poller.join()
        influx.close()

    warm_index = int(per_s * WARMUP_S)
    latencies_ms = [
        (poller.arrived_s[probes[i]] - published_s[i]) * 1000
        for i in sorted(probes)
        if i >= warm_index and probes[i] in poller.arrived_s
    ]
    counted = sum(1 for i in probes if i >= warm_index)
    return {
        "max_points_per_s": round(points_per_s),
        "points_per_s": round(count * bench_sink.PER_MESSAGE / elapsed_s),
        "messages_per_s": round(count / elapsed_s),
        "seconds": round(elapsed_s, 1),
        "probes": len(latencies_ms),
        "lost_probes": counted - len(latencies_ms),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 1),
        "max_ms": round(max(latencies_ms), 1),
        "poll_ms": round(POLL_S * 1000),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench latency", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing time")
    parser.add_argument(
        "--max-points-per-s",
        type=float,
        default=None,
        help="skip measuring the sink's maximum and use this one",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        result = measure(Path(tmp), args.seconds, args.max_points_per_s)
    if not args.json:
        print(
            f"at {result['points_per_s']:,} points/s (half of {result['max_points_per_s']:,}): "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms over {result['probes']} probes"
        )
    print(json.dumps(result))
    return 0 if result["lost_probes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

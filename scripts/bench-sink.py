"""Sink ingest against raw InfluxDB /write: same points, same database server, same run.

B0: one Python process writes the points with /write in 5000-line batches, the database's
speed from one writer. The sink: the same points as sealed MQTT messages of 10 readings (1000
patients) go through the whole sink process (receive, open, validate, line protocol, write,
acknowledge after the write), in two ways:

- drain (`sink_points_per_s`, `ratio`): the messages wait in the sink's persistent session at
  the broker, as after an outage; the clock runs from the sink's CONNACK (its log) to the moment
  the last message's points answer a query. Nothing else runs meanwhile, as for B0.
- live (`live_points_per_s`, `live_ratio`): the sink is subscribed, and the clock runs from the
  first publish to the last point while this process publishes as fast as the broker takes the
  messages, so the publisher shares the machine's 2 cores with the sink and the database.

The publisher writes pre-built MQTT v5 QoS 1 PUBLISH packets with a window of unacknowledged
ones (the agent's bytes on the wire, without a client library's cost per message).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np

from cloud_sink.errors import QueryError
from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import vital_line
from cloud_sink.mqtt_packets import (
    CONNACK,
    DISCONNECT_PACKET,
    FAILURE_THRESHOLD,
    PUBACK,
    PacketReader,
    connect_packet,
    decode_connack,
    publish_packet,
)
from cloud_sink.twin import count_vitals
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
B0_BATCH_LINES: Final = 5000
LOOPBACK: Final = "127.0.0.1"
PUBLISH_WINDOW: Final = 1000
POLL_S: Final = 0.02
READY_TIMEOUT_S: Final = 60.0
DRAIN_TIMEOUT_S: Final = 300.0


def frames(messages: int, seed: int = 3) -> list[Frame]:
    """One 10-reading block per message, patients in turn, a millisecond apart."""
    rng = np.random.default_rng(seed)
    patients = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex() for _ in range(PATIENTS)]
    codes = np.array([m.code for m in CATALOGUE[:PER_MESSAGE]], np.uint16)
    out = []
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
        out.append(Frame(GATEWAY, T0_NS, (block,)))
    return out


def lines_of(batch: list[Frame]) -> list[str]:
    names = {m.code: m.name for m in CATALOGUE}
    return [
        vital_line(b.patient_token, names[int(c)], b.device_token, value=float(v), quality=0,
                   flags=0, ts_ns=int(t))
        for f in batch
        for b in f.blocks
        for c, t, v in zip(b.metric_codes, b.ts_ns, b.values, strict=True)
    ]  # fmt: skip


class BenchPublisher:
    """MQTT v5 QoS 1 publisher of pre-sealed envelopes over a plain blocking socket.

    At most `window` PUBLISHes are unacknowledged (never more than the broker's Receive
    Maximum, MQTT 5.0 §4.9); packet identifiers cycle through 1..65535.
    """

    def __init__(self, port: int, client_id: str) -> None:
        self._sock = socket.create_connection((LOOPBACK, port), timeout=30.0)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = PacketReader(1 << 20)
        self._sock.sendall(
            connect_packet(
                client_id=client_id,
                keepalive_s=60,
                session_expiry_s=0,
                receive_maximum=65_535,
                maximum_packet_bytes=1 << 20,
                clean_start=True,
            )
        )
        connack = None
        while connack is None:
            for first_byte, body in self._read():
                if first_byte >> 4 == CONNACK:
                    connack = decode_connack(body)
        if connack.reason_code:
            msg = f"broker refused the bench publisher: 0x{connack.reason_code:02X}"
            raise ConnectionError(msg)
        self.window = min(PUBLISH_WINDOW, connack.receive_maximum)
        self.unacked = 0
        self._packet_id = 0

    def _read(self) -> list[tuple[int, bytes]]:
        data = self._sock.recv(1 << 16)
        if not data:
            msg = "the broker closed the bench publisher's connection"
            raise ConnectionError(msg)
        return self._reader.feed(data)

    def _collect_acks(self, wait_until: int) -> None:
        """Read PUBACKs, blocking until at most `wait_until` are outstanding, then whatever else
        has already arrived."""
        while self.unacked:
            if self.unacked <= wait_until and not select.select([self._sock], [], [], 0)[0]:
                return
            for first_byte, body in self._read():
                if first_byte >> 4 != PUBACK:
                    continue
                if len(body) > 2 and body[2] >= FAILURE_THRESHOLD:  # §3.4.2.1 reason code
                    msg = f"the broker refused a PUBLISH: reason 0x{body[2]:02X}"
                    raise ConnectionError(msg)
                self.unacked -= 1

    def packet(self, full_topic: str, payload: bytes) -> bytes:
        self._packet_id = self._packet_id % 65_535 + 1
        return publish_packet(full_topic, self._packet_id, payload)

    def send(self, packets: Sequence[bytes]) -> None:
        """Send pre-built PUBLISH packets, as many per system call as the window allows."""
        pos = 0
        while pos < len(packets):
            self._collect_acks(wait_until=self.window - 1)
            room = self.window - self.unacked
            chunk = packets[pos : pos + room]
            self._sock.sendall(b"".join(chunk))
            self.unacked += len(chunk)
            pos += len(chunk)

    def finish(self) -> None:
        """Wait for every PUBACK, then disconnect."""
        self._collect_acks(wait_until=0)
        self._sock.sendall(DISCONNECT_PACKET)
        self._sock.close()


def sealed_messages(batch: list[Frame], secret: bytes, first_seq: int = 0) -> list[bytes]:
    """Each frame sealed as the agent seals it, sequence numbers counting up from `first_seq`."""
    key = derive_session_key(secret, GATEWAY, 1, Direction.UP)
    full_topic = topic(GATEWAY, Channel.TELEMETRY)
    return [
        seal(key, full_topic, first_seq + n, encode_frame(f), CONTENT_FRAME_V1)
        for n, f in enumerate(batch)
    ]


@dataclass(slots=True, frozen=True)
class SinkRun:
    """A running sink process: its log, and the CPU time it has used so far."""

    log_file: Path
    pid: int

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process (Linux /proc/<pid>/stat, fields 14-15)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def sink_process(stack: LocalStack, log_name: str) -> Iterator[SinkRun]:
    """The real sink (`python -m cloud_sink run`, JSON logs) for the duration of the block."""
    ready = stack.root / "sink" / "ready"
    ready.unlink(missing_ok=True)
    log_file = stack.root / "sink" / log_name
    argv = [sys.executable, "-m", "cloud_sink", "run", "--config", str(stack.sink_config),
            "--ready-file", str(ready), "--log-format", "json"]  # fmt: skip
    with log_file.open("ab") as log:
        # In its own folder, as LocalStack starts it: `-m` puts the working directory first on
        # sys.path, which must not pick up whatever checkout the benchmark was started from.
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=log_file.parent)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                msg = f"the sink did not subscribe; log:\n{log_file.read_text()[-2000:]}"
                raise RuntimeError(msg)
            time.sleep(0.01)
        yield SinkRun(log_file, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def connected_at(log_file: Path) -> float:
    """UNIX time of the sink's last CONNACK, from its JSON log."""
    stamps = []
    for line in log_file.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if str(record.get("msg", "")).startswith("connected to broker"):
                stamps.append(datetime.fromisoformat(record["ts"]).timestamp())
    if not stamps:
        msg = f"no 'connected to broker' record in {log_file}"
        raise RuntimeError(msg)
    return stamps[-1]


def wait_for_point(influx: InfluxV1, frame: Frame, timeout_s: float) -> float:
    """UNIX time at which every reading of `frame` first answers a query (polled every 20 ms)."""
    block = frame.blocks[0]
    # Both values come from our own frame: a hex token and an integer.
    where = f"\"patient\" = '{block.patient_token}' AND time = {int(block.ts_ns[0])}"
    query = f'SELECT count("value") FROM "vital" WHERE {where}'  # noqa: S608
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(QueryError):  # the database may not exist yet
            series = influx.query(query)
            if series and series[0].values[0][1] == len(block):
                return time.time()
        time.sleep(POLL_S)
    msg = f"the last message's points never arrived within {timeout_s:.0f} s"
    raise TimeoutError(msg)


def stored_count(influx: InfluxV1, expected: int) -> int:
    """Vitals stored; asked again for up to 10 s while short, because one count taken right after
    the last write was seen 2 points low and complete when repeated. Still short: the run fails."""
    deadline = time.monotonic() + 10.0
    while (count := count_vitals(influx)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def b0_rate(url: str, lines: list[str]) -> float:
    influx = InfluxV1(url, "b0")
    influx.create_database()
    start = time.perf_counter()
    for i in range(0, len(lines), B0_BATCH_LINES):
        influx.write(lines[i : i + B0_BATCH_LINES])
    elapsed = time.perf_counter() - start
    influx.close()
    return len(lines) / elapsed


def sink_stack(root: Path, broker: MosquittoServer, db: InfluxServer, name: str) -> LocalStack:
    stack = LocalStack(root / name, broker, db, database=name)
    stack.write_sink_config()
    return stack


def drain_rate(
    root: Path, broker: MosquittoServer, db: InfluxServer, batch: list[Frame], secret: bytes
) -> tuple[float, int, float]:
    """Messages queued in the sink's session first, then the sink started.

    Returns points/s, points stored, and the sink's CPU µs per message: the CPU time of the
    draining process less that of an identical run that had nothing to drain.
    """
    stack = sink_stack(root, broker, db, "drain")
    write_secret_file(stack.keyring_dir / f"{GATEWAY}.key", secret)
    with sink_process(stack, "first.log") as idle:
        idle_cpu_s = idle.cpu_s()  # the broker now holds the sink's session and queues for it
    publisher = BenchPublisher(broker.port, "bench-drain")
    publisher.send([publisher.packet(topic(GATEWAY, Channel.TELEMETRY), p)
                    for p in sealed_messages(batch, secret)])  # fmt: skip
    publisher.finish()
    influx = InfluxV1(db.url, "drain")
    try:
        with sink_process(stack, "drain.log") as sink:
            end = wait_for_point(influx, batch[-1], DRAIN_TIMEOUT_S)
            start = connected_at(sink.log_file)
            cpu_us = (sink.cpu_s() - idle_cpu_s) / len(batch) * 1e6
        stored = stored_count(influx, len(batch) * PER_MESSAGE)
    finally:
        influx.close()
    return stored / (end - start), stored, cpu_us


def live_rate(
    root: Path, broker: MosquittoServer, db: InfluxServer, batch: list[Frame], secret: bytes
) -> tuple[float, int]:
    """The sink subscribed, the messages published as fast as the broker takes them."""
    stack = sink_stack(root, broker, db, "live")
    write_secret_file(stack.keyring_dir / f"{GATEWAY}.key", secret)
    # Sealed under a later sequence range than the drain phase: never replays of it.
    payloads = sealed_messages(batch, secret, first_seq=len(batch))
    influx = InfluxV1(db.url, "live")
    try:
        with sink_process(stack, "live.log"):
            publisher = BenchPublisher(broker.port, "bench-live")
            packets = [publisher.packet(topic(GATEWAY, Channel.TELEMETRY), p) for p in payloads]
            start = time.time()
            publisher.send(packets)
            publisher.finish()
            end = wait_for_point(influx, batch[-1], DRAIN_TIMEOUT_S)
        stored = stored_count(influx, len(batch) * PER_MESSAGE)
    finally:
        influx.close()
    return stored / (end - start), stored


def run(root: Path, messages: int, live: bool) -> dict[str, object]:
    batch = frames(messages)
    lines = lines_of(batch)
    secret = os.urandom(32)
    with MosquittoServer(root / "mosquitto") as broker, InfluxServer(root / "influxdb") as db:
        b0 = b0_rate(db.url, lines)
        sink, stored, cpu_us = drain_rate(root, broker, db, batch, secret)
        result: dict[str, object] = {
            "points": len(lines),
            "messages": messages,
            "stored": stored,
            "b0_points_per_s": round(b0),
            "sink_points_per_s": round(sink),
            "ratio": round(sink / b0, 3),
            "sink_cpu_us_per_message": round(cpu_us, 1),
        }
        if live:
            live_sink, live_stored = live_rate(root, broker, db, batch, secret)
            result |= {
                "live_stored": live_stored,
                "live_points_per_s": round(live_sink),
                "live_ratio": round(live_sink / b0, 3),
            }
    return result | {"python": platform.python_version(), "cpus": os.cpu_count()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench sink", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--no-live", action="store_true", help="skip the live measurement")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        result = run(Path(tmp), args.messages, live=not args.no_live)
    if not args.json:
        print(
            f"raw /write {result['b0_points_per_s']:,} points/s; "
            f"sink draining a backlog {result['sink_points_per_s']:,} points/s"
            + (f"; sink live {result['live_points_per_s']:,} points/s" if "live_ratio" in result
               else "")
        )  # fmt: skip
    print(json.dumps(result))
    complete = result["stored"] == result["points"]
    if "live_stored" in result:
        complete = complete and result["live_stored"] == result["points"]
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

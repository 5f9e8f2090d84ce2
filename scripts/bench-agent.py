#!/usr/bin/env python3
"""The agent on a budget: 32 simulated devices (BLE and serial, 1-25 Hz) for a minute.

A local Mosquitto takes the agent's frames (no sink: the broker's PUBACK is what the agent waits
for). The simulated ward: 6 beds of BLE wearables (chest patch and oximeter at 25 Hz, thermometer,
cuff, room sensor and glucose meter at about 1 Hz) through the simulators' bleak backend, plus 3
implant receivers and 3 bedside monitors on pseudo-terminals at 5 Hz: 32 devices. The BLE
simulators run inside the agent's process (bleak's backend seam is in-process), so the figures
include their cost: an upper bound for the agent alone.

Figures: `cold_start_s` (process start to the first PUBACK, numba's cache warm: a first run warms
it), `cpu_pct` (of one core, over the measured window), `rss_mb` (peak resident memory), and the
same interpreter with the agent's modules imported and idle as the baseline (`baseline_rss_mb`,
`rss_ratio`). With --json the last line is one JSON object. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import MosquittoServer

REPO: Final = Path(__file__).resolve().parent.parent
PATIENTS: Final = 6
SERIAL_PER_KIND: Final = 3
INTERVAL_SCALE: Final = 0.04  # 1 s devices at 25 Hz; clock-stamped ones clamp at 1 Hz
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
BASELINE: Final = "import edge_agent.cli, firmware_sims.ward, time; time.sleep(3)"


def _devices() -> int:
    # Four wearables per bed, the room sensor at bed 1 and a glucose meter at bed 2, plus serial.
    return PATIENTS * 4 + 2 + 2 * SERIAL_PER_KIND


def _config(root: Path, port: int) -> Path:
    write_secret_file(root / "gateway.key", os.urandom(MASTER_SECRET_BYTES))
    path = root / "agent.toml"
    path.write_text(
        f"""[gateway]
id = "bench-ward"
secret_file = "gateway.key"
state_dir = "state"
[mqtt]
host = "127.0.0.1"
port = {port}
[filters]
presets_file = "{REPO / "configs" / "filters.toml"}"
[simulation]
patients = {PATIENTS}
seed = 1
interval_scale = {INTERVAL_SCALE}
implant_receivers = {SERIAL_PER_KIND}
bedside_monitors = {SERIAL_PER_KIND}
ledger_file = "ledger.jsonl"
""",
        encoding="utf-8",
    )
    return path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _run_agent(config: Path, port: int, seconds: float) -> dict[str, float]:
    state = config.parent / "state"
    first = threading.Event()
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda _c, _u, _m: first.set()
    spy.connect("127.0.0.1", port)
    spy.subscribe("bt/v1/gw/bench-ward/up/#", qos=0)
    spy.loop_start()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=config.parent,
    )
    try:
        # The first frame the broker forwards: the agent's first publish (then its PUBACK).
        while not first.wait(0.01):
            if process.poll() is not None:
                msg = "the agent exited during the benchmark"
                raise RuntimeError(msg)
        cold_start_s = time.monotonic() - started
        spy.loop_stop()
        spy.disconnect()
        time.sleep(5.0)  # links up, queues settled
        cpu_before, wall_before = _cpu_s(process.pid), time.monotonic()
        time.sleep(seconds)
        cpu_pct = 100.0 * (_cpu_s(process.pid) - cpu_before) / (time.monotonic() - wall_before)
        rss_mb = _peak_rss_mb(process.pid)
        readings = json.loads((state / "status.json").read_text())["counters"]["readings_in"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return {
        "cold_start_s": round(cold_start_s, 2),
        "cpu_pct": round(cpu_pct, 1),
        "rss_mb": round(rss_mb, 1),
        "readings_per_s": round(readings / (time.monotonic() - started), 1),
    }


def _baseline_rss_mb() -> float:
    process = subprocess.Popen([sys.executable, "-c", BASELINE])
    time.sleep(2.5)
    rss = _peak_rss_mb(process.pid)
    process.wait()
    return rss


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench agent", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (60)")
    parser.add_argument("--json", action="store_true", help="end with one JSON summary line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        root = Path(tmp)
        with MosquittoServer(root / "mosquitto") as broker:
            config = _config(root, broker.port)
            _run_agent(config, broker.port, 1.0)  # warms numba's cache (a gateway's 1st start)
            figures = _run_agent(config, broker.port, args.seconds)
    baseline = _baseline_rss_mb()
    summary = {
        "devices": _devices(),
        **figures,
        "baseline_rss_mb": round(baseline, 1),
        "rss_ratio": round(figures["rss_mb"] / baseline, 2) if baseline else None,
        "seconds": args.seconds,
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
    print(
        f"{summary['devices']} devices for {args.seconds:g} s: CPU {figures['cpu_pct']} % of a "
        f"core, peak RSS {figures['rss_mb']} MB (idle interpreter with the same modules: "
        f"{summary['baseline_rss_mb']} MB), cold start {figures['cold_start_s']} s, "
        f"{figures['readings_per_s']} readings/s"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""The agent on a budget: 32 simulated devices (BLE and serial, 1-25 Hz) for a minute.

A local Mosquitto takes the agent's frames (no sink: the broker's PUBACK is what the agent waits
for). The simulated ward: 6 beds of BLE wearables (chest patch and oximeter at 25 Hz, thermometer,
cuff, room sensor and glucose meter at about 1 Hz), plus 3 implant receivers and 3 bedside
monitors on pseudo-terminals at 5 Hz: 32 devices.

The ward runs in a process of its own (`firmware-sims ward`, `[simulation] ward_socket`): the
agent reads it through its own BLE code on a bleak backend over a unix socket, where a gateway's
bleak talks to BlueZ over D-Bus, and its own serial code on the pseudo-terminals. So `cpu_pct`
and `rss_mb` are the agent's alone; the ward's are `ward_cpu_pct` and `ward_rss_mb`, measured
over the same window. For comparison with earlier figures the same ward is then run inside the
agent's process (the plain `[simulation]` switch): `in_process_cpu_pct`, `in_process_rss_mb`.

Figures: `cold_start_s` (agent process start to its first frame on the broker, with the filter
kernels' compiled build cached: a first run builds it, as a gateway's first start does),
`cpu_pct` (of one core, over the measured window), `rss_mb` (peak resident memory),
`filter_kernels` (what the agent logged it runs: "ahead-of-time" or "jit"), and the same
interpreter with the agent's modules imported and idle as the baseline (`baseline_rss_mb`,
`rss_ratio`). With --json the last line is one JSON object. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import MosquittoServer
from firmware_sims.stack import start_ward_process

REPO: Final = Path(__file__).resolve().parent.parent
PATIENTS: Final = 6
SERIAL_PER_KIND: Final = 3
INTERVAL_SCALE: Final = 0.04  # 1 s devices at 25 Hz; clock-stamped ones clamp at 1 Hz
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
BASELINE: Final = "import edge_agent.cli, firmware_sims.remote.ward, time; time.sleep(3)"


def _devices(serial_per_kind: int) -> int:
    # Four wearables per bed, the room sensor at bed 1 and a glucose meter at bed 2, plus serial.
    return PATIENTS * 4 + 2 + 2 * serial_per_kind


def _config(root: Path, port: int, serial_per_kind: int, *, own_process: bool) -> Path:
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
implant_receivers = {serial_per_kind}
bedside_monitors = {serial_per_kind}
ledger_file = "ledger.jsonl"
{'ward_socket = "state/ward.sock"' if own_process else ""}
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


@dataclass(slots=True, frozen=True)
class AgentRun:
    """One measured run of the agent (rounded as printed); ward figures when it ran apart."""

    cold_start_s: float
    cpu_pct: float
    rss_mb: float
    readings_per_s: float
    filter_kernels: str
    ward_cpu_pct: float | None
    ward_rss_mb: float | None


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def _run_agent(config: Path, port: int, seconds: float, *, own_process: bool) -> AgentRun:
    state = config.parent / "state"
    # A ward serves one agent run: the agent's stop switches its devices off (quiesce).
    ward = (
        start_ward_process(config, config.parent / "ward.log", timeout_s=60.0, log_level="warning")
        if own_process
        else None
    )
    first = threading.Event()
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda _c, _u, _m: first.set()
    spy.connect("127.0.0.1", port)
    spy.subscribe("bt/v1/gw/bench-ward/up/#", qos=0)
    spy.loop_start()
    log = config.parent / "agent.log"
    try:
        started = time.monotonic()
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                cwd=config.parent,
            )
        try:
            # The first frame the broker forwards: the agent's first publish (then its PUBACK).
            while not first.wait(0.01):
                if process.poll() is not None:
                    msg = f"the agent exited during the benchmark: {log.read_text()[-2000:]}"
                    raise RuntimeError(msg)
            cold_start_s = time.monotonic() - started
            spy.loop_stop()
            spy.disconnect()
            time.sleep(5.0)  # links up, queues settled
            wall_before = time.monotonic()
            cpu_before = _cpu_s(process.pid)
            ward_before = _cpu_s(ward.pid) if ward is not None else 0.0
            time.sleep(seconds)
            wall = time.monotonic() - wall_before
            cpu_pct = 100.0 * (_cpu_s(process.pid) - cpu_before) / wall
            ward_pct = 100.0 * (_cpu_s(ward.pid) - ward_before) / wall if ward else None
            rss_mb = _peak_rss_mb(process.pid)
            ward_rss_mb = _peak_rss_mb(ward.pid) if ward is not None else None
            status = json.loads((state / "status.json").read_text())
            readings = status["counters"]["readings_in"]
        finally:
            _stop(process)
    finally:
        _stop(ward)
    text = log.read_text(encoding="utf-8", errors="replace")
    kernels = "ahead-of-time" if "filter kernels: ahead-of-time" in text else "jit"
    return AgentRun(
        cold_start_s=round(cold_start_s, 2),
        cpu_pct=round(cpu_pct, 1),
        rss_mb=round(rss_mb, 1),
        readings_per_s=round(readings / (time.monotonic() - started), 1),
        filter_kernels=kernels,
        ward_cpu_pct=None if ward_pct is None else round(ward_pct, 1),
        ward_rss_mb=None if ward_rss_mb is None else round(ward_rss_mb, 1),
    )


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
    parser.add_argument(
        "--serial-per-kind",
        type=int,
        default=SERIAL_PER_KIND,
        help="implant receivers and bedside monitors each (3: the issue's 32 devices; other "
        "counts are for experiments)",
    )
    parser.add_argument(
        "--no-in-process",
        action="store_true",
        help="skip the comparison run with the ward inside the agent's process",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        root = Path(tmp)
        with MosquittoServer(root / "mosquitto") as broker:
            apart = root / "ward-apart"
            apart.mkdir()
            config = _config(apart, broker.port, args.serial_per_kind, own_process=True)
            # A gateway's first start: builds the compiled kernels once (or numba's cache).
            _run_agent(config, broker.port, 1.0, own_process=True)
            run = _run_agent(config, broker.port, args.seconds, own_process=True)
            together: AgentRun | None = None
            if not args.no_in_process:
                inside = root / "ward-inside"
                inside.mkdir()
                config = _config(inside, broker.port, args.serial_per_kind, own_process=False)
                together = _run_agent(config, broker.port, args.seconds, own_process=False)
    baseline = _baseline_rss_mb()
    summary = {
        "devices": _devices(args.serial_per_kind),
        **dataclasses.asdict(run),
        "in_process_cpu_pct": together.cpu_pct if together else None,
        "in_process_rss_mb": together.rss_mb if together else None,
        "baseline_rss_mb": round(baseline, 1),
        "rss_ratio": round(run.rss_mb / baseline, 2) if baseline else None,
        "seconds": args.seconds,
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
    print(
        f"{summary['devices']} devices for {args.seconds:g} s: the agent's CPU {run.cpu_pct} % "
        f"of a core, peak RSS {run.rss_mb} MB (idle interpreter with the same modules: "
        f"{summary['baseline_rss_mb']} MB), cold start {run.cold_start_s} s, "
        f"{run.readings_per_s} readings/s; the ward in its own process: CPU "
        f"{run.ward_cpu_pct} %; ward and agent in one process: CPU "
        f"{summary['in_process_cpu_pct']} %"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

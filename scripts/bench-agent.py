#!/usr/bin/env python3
"""The agent on a budget: 32 simulated devices (BLE and serial, 1-25 Hz) for a minute.

A local Mosquitto takes the agent's frames (no sink: the broker's PUBACK is what the agent waits
for). The simulated ward: 6 beds of BLE wearables (chest patch and oximeter at 25 Hz, thermometer,
cuff, room sensor and glucose meter at about 1 Hz) through the simulators' bleak backend, plus 3
implant receivers and 3 bedside monitors on pseudo-terminals at 5 Hz: 32 devices. The simulators
run inside the agent's process (bleak's backend seam is in-process, and the `[simulation]`
switch powers the serial devices there too), so `cpu_pct` and `rss_mb` include their cost.

Figures: `cold_start_s` (process start to the first frame on the broker, with the filter
kernels' compiled build cached: a first run builds it, as a gateway's first start does),
`cpu_pct` (of one core, over the measured window), `rss_mb` (peak resident memory),
`filter_kernels` (what the agent logged it runs: "ahead-of-time" or "jit"), and the same
interpreter with the agent's modules imported and idle as the baseline (`baseline_rss_mb`,
`rss_ratio`). In the same run, the very same simulated ward is
run alone in a process of its own, its devices connected to centrals that drop every value and
its ports drained unread (`simulators_cpu_pct`, `simulators_rss_mb`); `agent_cpu_pct` is
`cpu_pct` less that: an estimate of the agent's own share. With --json the last line is one JSON
object. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
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

REPO: Final = Path(__file__).resolve().parent.parent
PATIENTS: Final = 6
SERIAL_PER_KIND: Final = 3
INTERVAL_SCALE: Final = 0.04  # 1 s devices at 25 Hz; clock-stamped ones clamp at 1 Hz
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
BASELINE: Final = "import edge_agent.cli, firmware_sims.ward, time; time.sleep(3)"


def _devices(serial_per_kind: int) -> int:
    # Four wearables per bed, the room sensor at bed 1 and a glucose meter at bed 2, plus serial.
    return PATIENTS * 4 + 2 + 2 * serial_per_kind


def _config(root: Path, port: int, serial_per_kind: int) -> Path:
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
    """One measured run of the agent (rounded as printed)."""

    cold_start_s: float
    cpu_pct: float
    rss_mb: float
    readings_per_s: float
    filter_kernels: str


def _run_agent(config: Path, port: int, seconds: float) -> AgentRun:
    state = config.parent / "state"
    first = threading.Event()
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda _c, _u, _m: first.set()
    spy.connect("127.0.0.1", port)
    spy.subscribe("bt/v1/gw/bench-ward/up/#", qos=0)
    spy.loop_start()
    started = time.monotonic()
    log = config.parent / "agent.log"
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
    text = log.read_text(encoding="utf-8", errors="replace")
    kernels = "ahead-of-time" if "filter kernels: ahead-of-time" in text else "jit"
    return AgentRun(
        cold_start_s=round(cold_start_s, 2),
        cpu_pct=round(cpu_pct, 1),
        rss_mb=round(rss_mb, 1),
        readings_per_s=round(readings / (time.monotonic() - started), 1),
        filter_kernels=kernels,
    )


def _discard(_data: bytearray) -> None:
    """A central that drops every notification: the simulators' side of the radio only."""


async def _simulators_alone(config_path: Path, ready_file: Path) -> None:
    """The agent's simulated ward (same code path: open_hardware) with null centrals, until
    SIGTERM. BLE devices only notify to a subscribed central, and a serial port must be read or
    its buffer fills, so each peripheral gets a connection and each port a reader that discards.
    """
    from edge_agent.config import load_agent_config  # noqa: PLC0415 - the child process only
    from edge_agent.hardware import open_hardware  # noqa: PLC0415

    config = load_agent_config(config_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with open_hardware(config) as (_hardware, ward):
        if ward is None:
            msg = "the benchmark config has no [simulation] section"
            raise RuntimeError(msg)
        for peripheral in ward.radio.peripherals:
            client = ward.radio.client_backend(
                peripheral.address, disconnected_callback=None, timeout=10.0
            )
            await client.connect(pair=False)
            for service in client.services or ():
                for char in service.characteristics:
                    if "notify" in char.properties or "indicate" in char.properties:
                        await client.start_notify(char, _discard)
        ports = []
        for sim in ward.serial:
            fd = os.open(sim.port.path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
            loop.add_reader(fd, os.read, fd, 65536)
            ports.append(fd)
        await asyncio.to_thread(ready_file.write_text, "ready", encoding="utf-8")
        await stop.wait()
        for fd in ports:
            loop.remove_reader(fd)
            os.close(fd)
        await ward.quiesce()


def _run_simulators(config: Path, seconds: float) -> dict[str, float]:
    """The simulated ward alone, measured like the agent: CPU over `seconds`, peak RSS."""
    ready = config.parent / "simulators.ready"
    process = subprocess.Popen(
        [sys.executable, __file__, "--simulators-alone", str(config), str(ready)],
        stdout=subprocess.DEVNULL,
        cwd=config.parent,
    )
    try:
        deadline = time.monotonic() + 60.0
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                msg = "the simulators did not start"
                raise RuntimeError(msg)
            time.sleep(0.05)
        time.sleep(5.0)  # the same settling as the agent's run
        cpu_before, wall_before = _cpu_s(process.pid), time.monotonic()
        time.sleep(seconds)
        cpu_pct = 100.0 * (_cpu_s(process.pid) - cpu_before) / (time.monotonic() - wall_before)
        rss_mb = _peak_rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return {"simulators_cpu_pct": round(cpu_pct, 1), "simulators_rss_mb": round(rss_mb, 1)}


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
        "--simulators-alone", nargs=2, metavar=("CONFIG", "READY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.simulators_alone:
        asyncio.run(
            _simulators_alone(Path(args.simulators_alone[0]), Path(args.simulators_alone[1]))
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        root = Path(tmp)
        with MosquittoServer(root / "mosquitto") as broker:
            config = _config(root, broker.port, args.serial_per_kind)
            # A gateway's first start: builds the compiled kernels once (or numba's cache).
            _run_agent(config, broker.port, 1.0)
            run = _run_agent(config, broker.port, args.seconds)
        alone = root / "simulators-alone"
        alone.mkdir()
        simulators = _run_simulators(
            _config(alone, broker.port, args.serial_per_kind), args.seconds
        )
    baseline = _baseline_rss_mb()
    summary = {
        "devices": _devices(args.serial_per_kind),
        **dataclasses.asdict(run),
        "agent_cpu_pct": round(run.cpu_pct - simulators["simulators_cpu_pct"], 1),
        **simulators,
        "baseline_rss_mb": round(baseline, 1),
        "rss_ratio": round(run.rss_mb / baseline, 2) if baseline else None,
        "seconds": args.seconds,
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
    print(
        f"{summary['devices']} devices for {args.seconds:g} s: CPU {run.cpu_pct} % of a "
        f"core, peak RSS {run.rss_mb} MB (idle interpreter with the same modules: "
        f"{summary['baseline_rss_mb']} MB), cold start {run.cold_start_s} s, "
        f"{run.readings_per_s} readings/s; the simulators alone: CPU "
        f"{simulators['simulators_cpu_pct']} %, so the agent's own about "
        f"{summary['agent_cpu_pct']} %"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

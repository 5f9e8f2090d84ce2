#!/usr/bin/env python3
"""The serial source's own cost: six ports at 5 Hz, read on the event loop or by worker threads.

A child process writes a bedside monitor's sentences to six pseudo-terminals every 0.2 s (the
benchmark ward's pace: 30 sentences, about 125 readings a second). This process reads them with
the agent's `SerialSource` as shipped (the loop watches each descriptor and reads what has
arrived), and, as the baseline in the same run, with the design it replaced: a blocking pyserial
read of the first byte, then of what is waiting, in `asyncio.to_thread`, per chunk (reproduced
here). Each variant runs `--seconds` after 3 s of settling; the figure is this process's CPU
(utime + stime, all threads) over that window, of one core. With --json the last line is one
JSON object. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import serial

from edge_agent.sources.base import Reading
from edge_agent.sources.serial import SerialKind, SerialSource

PORTS: Final = 6
INTERVAL_S: Final = 0.2
SETTLE_S: Final = 3.0
WRITER: Final = """
import os, sys, time
from firmware_sims.serial import BedsideMonitorSim
fds = [int(fd) for fd in sys.argv[1:]]
sims = [BedsideMonitorSim(seed) for seed in range(len(fds))]
while True:
    for fd, sim in zip(fds, sims):
        os.write(fd, sim.next_unit().data)
    time.sleep(float(os.environ["BENCH_SERIAL_INTERVAL_S"]))
"""


def _read_first_then_waiting(port: Any, size: int) -> bytes:
    """The replaced design's read (run in a worker thread): block for one byte up to the port's
    timeout, then take what has arrived."""
    first: bytes = port.read(1)
    if not first:
        return first
    more = min(port.in_waiting, size - 1)
    return first + port.read(more) if more > 0 else first


async def _threaded_reader(path: str, decode: Callable[[bytes], int], stop: asyncio.Event) -> None:
    port = await asyncio.to_thread(serial.Serial, port=path, timeout=0.2, exclusive=True)
    try:
        while not stop.is_set():
            chunk = await asyncio.to_thread(_read_first_then_waiting, port, 512)
            if chunk:
                decode(chunk)
    finally:
        await asyncio.to_thread(port.close)


async def _measure(paths: list[str], seconds: float, *, threaded: bool) -> tuple[float, float]:
    """CPU % of a core and readings per second for one variant."""
    readings = 0

    async def emit(_reading: Reading) -> None:
        nonlocal readings
        readings += 1

    sources = [
        SerialSource(
            f"bench-{n}",
            path,
            SerialKind.MONITOR,
            device_token="d" * 32,
            patient_token="p" * 32,
        )
        for n, path in enumerate(paths)
    ]
    stop = asyncio.Event()
    if threaded:

        def counter(source: SerialSource) -> Callable[[bytes], int]:
            def decode(chunk: bytes) -> int:
                nonlocal readings
                found = len(source._decode(chunk))
                readings += found
                return found

            return decode

        tasks = [
            asyncio.create_task(_threaded_reader(path, counter(source), stop))
            for path, source in zip(paths, sources, strict=True)
        ]
    else:
        tasks = [asyncio.create_task(source.run(emit)) for source in sources]
    await asyncio.sleep(SETTLE_S)
    before_readings, before_cpu, before_wall = readings, time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - before_wall
    cpu_pct = 100.0 * (time.process_time() - before_cpu) / wall
    rate = (readings - before_readings) / wall
    stop.set()
    for source in sources:
        source.stop()
    await asyncio.gather(*tasks)
    return cpu_pct, rate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-serial.py", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    masters: list[int] = []
    paths: list[str] = []
    for _ in range(PORTS):
        master, slave = os.openpty()
        tty.setraw(slave)  # as PtyPort sets its ports
        paths.append(os.ttyname(slave))
        masters.append(master)
    env = {**os.environ, "BENCH_SERIAL_INTERVAL_S": str(INTERVAL_S)}
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, *map(str, masters)], pass_fds=masters, env=env
    )
    try:
        loop_pct, loop_rate = asyncio.run(_measure(paths, args.seconds, threaded=False))
        thread_pct, thread_rate = asyncio.run(_measure(paths, args.seconds, threaded=True))
    finally:
        writer.kill()
        writer.wait()
    result = {
        "ports": PORTS,
        "interval_s": INTERVAL_S,
        "seconds": args.seconds,
        "loop_reader_cpu_pct": round(loop_pct, 2),
        "loop_reader_readings_per_s": round(loop_rate, 1),
        "thread_reader_cpu_pct": round(thread_pct, 2),
        "thread_reader_readings_per_s": round(thread_rate, 1),
        "ratio": round(thread_pct / loop_pct, 2) if loop_pct else None,
        "python": platform.python_version(),
    }
    print(
        f"{PORTS} ports at {1 / INTERVAL_S:g} Hz: read on the loop {loop_pct:.2f} % of a core, "
        f"by a worker thread per read {thread_pct:.2f} % ({result['ratio']} x)"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

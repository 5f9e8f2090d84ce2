#!/usr/bin/env python3
"""The agent's per-reading path alone: CPU per reading, without the event loop's own costs.

Records what the benchmark's simulated ward (scripts/bench-agent.py: 6 beds, 3 implant receivers,
3 bedside monitors, 25x pace) delivers for `--capture-seconds`, in this process, to centrals that
only keep the bytes; then replays those deliveries, in order, through the agent's own code: BLE
decoding (`BleLink._readings`), serial decoding (`SerialSource._decode`), the intake journal,
detection (filter kernels as the agent loads them) and framing, sealing and spooling once per
second of captured time, as the pipeline does. `us_per_reading` is the replay's process CPU time
per reading, best of `--passes`; `pct_at_capture_rate` scales it to the readings per second the
ward produced. What the replay leaves out, and `scripts/bench agent` includes: waking tasks,
timers, the MQTT link, status files and the simulators themselves. With --profile the top
functions of one more, profiled pass are printed. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.config import PipelineSettings, SpoolSettings
from edge_agent.detect import DetectionStage
from edge_agent.filters import load_presets, warm_up
from edge_agent.journal import IntakeJournal
from edge_agent.pipeline import AgentPipeline
from edge_agent.publisher import Publisher
from edge_agent.sealer import Sealer, SequenceCounter
from edge_agent.sources import Source
from edge_agent.sources.ble import BleLink, BleManager, _Notified
from edge_agent.sources.serial import SerialSource
from edge_agent.spool import Spool
from firmware_sims.ward import SimulatedWard, WardSettings

REPO: Final = Path(__file__).resolve().parent.parent
WARD: Final = WardSettings(
    patients=6, seed=1, interval_scale=0.04, implant_receivers=3, bedside_monitors=3
)
GATEWAY: Final = "bench-ward"
NS_PER_S: Final = 1_000_000_000
CHUNK: Final = 8  # readings per detection pass, about what the running agent's loop takes


@dataclass(slots=True, frozen=True)
class Delivery:
    """One BLE notification or one serial read, as the agent's source received it."""

    ble: bool
    who: str  # BLE address or serial label
    uuid: str
    data: bytes
    rx_ns: int


def _keeper(out: list[Delivery], who: str, uuid: str) -> Callable[[bytearray], None]:
    def keep(data: bytearray) -> None:
        out.append(Delivery(True, who, uuid, bytes(data), time.time_ns()))

    return keep


async def capture(seconds: float, ports_dir: Path) -> list[Delivery]:
    """The ward's deliveries for `seconds`, to centrals and port readers that keep the bytes."""
    ward = SimulatedWard(WARD, ports_dir=ports_dir, ledger=None)
    out: list[Delivery] = []
    loop = asyncio.get_running_loop()
    fds: list[int] = []
    async with ward.powered():
        for peripheral in ward.radio.peripherals:
            client = ward.radio.client_backend(
                peripheral.address, disconnected_callback=None, timeout=10.0
            )
            await client.connect(pair=False)
            for service in client.services or ():
                for char in service.characteristics:
                    if "notify" in char.properties or "indicate" in char.properties:
                        keep = _keeper(out, peripheral.address, char.uuid)
                        await client.start_notify(char, keep)
        for sim in ward.serial:
            fd = os.open(sim.port.path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)

            def read(fd: int = fd, label: str = sim.label) -> None:
                out.append(Delivery(False, label, "", os.read(fd, 65536), time.time_ns()))

            loop.add_reader(fd, read)
            fds.append(fd)
        await asyncio.sleep(seconds)
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
        await ward.quiesce()
    return out


class _NoBroker:
    """The publisher's face the pipeline reads for its status; nothing is published here."""

    connected = True
    last_puback_ns = None
    connections_total = 1


async def replay(deliveries: list[Delivery], state: Path) -> tuple[int, float]:
    """Readings replayed and the CPU seconds they took."""
    ward = SimulatedWard(WARD, ports_dir=state / "ports", ledger=None)
    sources: list[Source] = ward.sources()
    links: dict[str, BleLink] = {}
    serial: dict[str, SerialSource] = {}
    for source in sources:
        if isinstance(source, BleManager):
            links.update({link.device.address.upper(): link for link in source.links.values()})
        elif isinstance(source, SerialSource):
            serial[source.name] = source
    by_label = {sim.label: serial[f"serial.{sim.kind.value}[{sim.label}]"] for sim in ward.serial}
    secret = os.urandom(32)
    detection = DetectionStage(load_presets(REPO / "configs" / "filters.toml"))
    spool = Spool(state / "spool.db", 256 << 20, 0.2)
    journal, _ = IntakeJournal.open(state / "journal", secret, GATEWAY, spool.committed_journal_seq)
    publisher: Publisher = _NoBroker()  # type: ignore[assignment]
    pipeline = AgentPipeline(
        settings=PipelineSettings(1.0, 2000, 100_000, 1000, 10.0),
        spool_settings=SpoolSettings(256 << 20, 0.2, 50.0, 16),
        gateway_id=GATEWAY,
        topic_prefix="",
        sealer=Sealer(secret, GATEWAY, SequenceCounter(state / "seq.json")),
        publisher=publisher,
        spool=spool,
        sources=sources,
        detection=detection,
        journal=journal,
    )
    queue = pipeline._readings
    readings = 0
    last_flush_ns = deliveries[0].rx_ns
    started = time.process_time()
    for item in deliveries:
        if item.ble:
            for reading in links[item.who]._readings(_Notified(item.uuid, item.data, item.rx_ns)):
                await pipeline._emit(reading)
        else:
            source = by_label[item.who]
            for observation in source._decode(item.data):
                await source._emit(observation, pipeline._emit)
        if queue.qsize() >= CHUNK or item is deliveries[-1]:
            chunk = [queue.get_nowait() for _ in range(queue.qsize())]
            readings += len(chunk)
            pipeline._taken_seq += len(chunk)
            await pipeline._detect_and_frame(chunk)
        if item.rx_ns - last_flush_ns >= NS_PER_S or item is deliveries[-1]:
            last_flush_ns = item.rx_ns
            await pipeline._flush()
    cpu_s = time.process_time() - started
    spool.close()
    return readings, cpu_s


def _warm_up() -> str:
    """The kernels as the agent loads them; an agent from before the ahead-of-time build (to
    measure "before" with this script) has only the JIT."""
    try:
        build = warm_up(ahead_of_time=True)  # type: ignore[func-returns-value,unused-ignore]
    except TypeError:
        warm_up()  # type: ignore[call-arg,unused-ignore]
        return "jit"
    return "ahead-of-time" if build.ahead_of_time else "jit"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-agent-path.py", description=__doc__)
    parser.add_argument("--capture-seconds", type=float, default=20.0)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top functions too")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    kernels = _warm_up()
    with tempfile.TemporaryDirectory(prefix="bench-agent-path-") as tmp:
        root = Path(tmp)
        deliveries = asyncio.run(capture(args.capture_seconds, root / "capture"))
        span_s = (deliveries[-1].rx_ns - deliveries[0].rx_ns) / NS_PER_S
        best_s = float("inf")
        readings = 0
        for n in range(args.passes):
            readings, cpu_s = asyncio.run(replay(deliveries, root / f"replay{n}"))
            best_s = min(best_s, cpu_s)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(replay(deliveries, root / "profiled"))
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            print(text.getvalue())
    us_per_reading = best_s / readings * 1e6
    result = {
        "deliveries": len(deliveries),
        "readings": readings,
        "capture_s": round(span_s, 1),
        "readings_per_s": round(readings / span_s, 1),
        "us_per_reading": round(us_per_reading, 1),
        "pct_at_capture_rate": round(100 * best_s / span_s, 2),
        "filter_kernels": kernels,
        "python": platform.python_version(),
    }
    print(
        f"{readings} readings from {len(deliveries)} deliveries ({span_s:.1f} s of the ward): "
        f"{us_per_reading:.1f} us of CPU per reading, {result['pct_at_capture_rate']} % of a "
        "core at the ward's rate"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

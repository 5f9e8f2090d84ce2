"""Chaos run: the local stack under seeded faults, then a count of every reading.

Mosquitto, InfluxDB, the sink and the agent (simulated ward: BLE wearables through the simulated
radio, an implant receiver and a bedside monitor on pseudo-terminals) run for M minutes while
faults are injected at seeded random times: one broker outage of at least 60 s, sink SIGKILL
and restart, agent SIGKILL and restart, InfluxDB stop and start. Then the agent is stopped (it
drains its spool), the sink catches up, and every reading the simulated devices delivered (their
ledger) is compared with InfluxDB: by identity for device-stamped readings, in order for the
receipt-stamped ones (firmware_sims.ledger).

Figures: `lost` (delivered, never stored), `duplicated` (stored beyond what was delivered, or one
identity with two values), the backlog drain after the broker outage (readings per second and as a
multiple of real time) and the freshness of live data while that backlog drains. With --json the
last line is one JSON object. Exit status 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from rich.console import Console

from cloud_sink.errors import DatabaseUnavailable, QueryError
from cloud_sink.influx import InfluxV1
from cloud_sink.twin import count_vitals, stored_vitals, wait_for_vitals
from firmware_sims.ledger import read_ledger, reconcile
from firmware_sims.services import InfluxServer, MosquittoServer, ServiceError
from firmware_sims.stack import GatewayRun, LocalStack

GATEWAY_ID: Final = "chaos-ward-1"
BROKER_OUTAGE_MIN_S: Final = 60.0
SETTLE_S: Final = 10.0
"""Quiet time at the start (devices pair) and at the end (the last restart settles)."""
DRAIN_TIMEOUT_S: Final = 180.0
SAMPLE_S: Final = 1.0
FAULT_KINDS: Final = ("broker_outage", "sink_kill", "agent_kill", "influx_restart")


@dataclass(slots=True)
class Fault:
    """One injected fault: when it started (seconds into the run) and how long it lasted."""

    kind: str
    at_s: float
    down_s: float


@dataclass(slots=True)
class Sample:
    """One poll of the store while the run goes on."""

    t_s: float
    stored: int
    newest_lag_s: float | None


@dataclass(slots=True)
class Monitor:
    """Polls InfluxDB once a second (errors while it is down are expected and skipped)."""

    influx: InfluxV1
    start: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                stored = count_vitals(self.influx)
                series = self.influx.query('SELECT last("value") FROM "vital"')
            except (DatabaseUnavailable, QueryError):
                continue  # the database is down on purpose at times; the next poll will do
            newest = int(series[0].values[0][0]) if series and series[0].values else None
            lag = None if newest is None else time.time() - newest / 1e9
            self.samples.append(Sample(time.monotonic() - self.start, stored, lag))

    def stop(self) -> None:
        self._stop.set()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the run (>= 2)")
    parser.add_argument("--seed", type=int, default=1, help="fault schedule and physiology seed")
    parser.add_argument("--patients", type=int, default=3, help="simulated patients (default 3)")
    parser.add_argument("--json", action="store_true", help="end with one JSON summary line")
    parser.add_argument("--keep", type=Path, help="leave logs, configs and data in this folder")
    args = parser.parse_args(argv)
    if args.minutes < 2:
        parser.error("--minutes must be at least 2 (the broker outage alone takes 60 s)")
    if not 1 <= args.patients <= 16:
        parser.error("--patients must be between 1 and 16")
    return args


def schedule(rng: random.Random, run_s: float) -> list[Fault]:
    """Every kind at least once, never overlapping, within the run's quiet margins.

    The broker outage takes one slot of at least 60 s; the remaining time is cut into slots for
    the other faults (each kind once, then random kinds while time is left), in seeded order.
    """
    outage_s = max(BROKER_OUTAGE_MIN_S, min(120.0, run_s * 0.25))
    others = ["sink_kill", "agent_kill", "influx_restart"]
    free_s = run_s - 2 * SETTLE_S - outage_s
    slot_s = 20.0
    extra = max(0, int(free_s // slot_s) - len(others) - 1)
    others += [rng.choice(others[:3]) for _ in range(extra)]
    rng.shuffle(others)
    kinds = others[:]
    kinds.insert(rng.randrange(len(kinds) + 1), "broker_outage")
    gap_s = (run_s - 2 * SETTLE_S - outage_s) / len(kinds)
    faults: list[Fault] = []
    t_s = SETTLE_S
    for kind in kinds:
        if kind == "broker_outage":
            faults.append(Fault(kind, t_s, outage_s))
            t_s += outage_s + gap_s * 0.5
            continue
        down_s = {"sink_kill": 3.0, "agent_kill": 2.0, "influx_restart": 8.0}[kind]
        faults.append(Fault(kind, t_s + rng.uniform(0.0, gap_s * 0.3), down_s))
        t_s += gap_s
    return faults


def _kill(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()


@dataclass(slots=True, frozen=True)
class Harness:
    """What the faults act on."""

    stack: LocalStack
    gateway: GatewayRun
    broker: MosquittoServer
    db: InfluxServer

    def inject(self, kind: str) -> Callable[[], object]:
        """Start a fault of `kind` now; return what ends it."""
        if kind == "broker_outage":
            self.broker.stop()
            return self.broker.start
        if kind == "sink_kill":
            _kill(self.stack.sink_process)
            return self.stack.start_sink
        if kind == "agent_kill":
            _kill(self.gateway.process)
            return lambda: self.stack.start_agent(self.gateway)
        self.db.stop()
        return self.db.start


def _drain_figures(samples: list[Sample], outage: Fault) -> dict[str, float | None]:
    """The backlog of the broker outage: how long until data flowed again, how fast the backlog
    drained (readings per second, and outage seconds per drain second), and how old the newest
    stored reading was while it drained (live data goes first, so this stays small)."""
    none: dict[str, float | None] = {
        "reconnect_s": None,
        "drain_readings_per_s": None,
        "drain_x_real_time": None,
        "live_lag_p50_s": None,
        "live_lag_max_s": None,
    }
    before = [s for s in samples if s.t_s <= outage.at_s]
    end_s = outage.at_s + outage.down_s
    after = [s for s in samples if s.t_s >= end_s]
    if not before or not after:
        return none
    base = after[0].stored
    flowing = next((s for s in after if s.stored > base), None)
    if flowing is None:
        return none
    # Drained when the store has caught up with the rate it grew at before the outage.
    rate = before[-1].stored / max(before[-1].t_s, SAMPLE_S)
    target = base + rate * outage.down_s
    drained = next((s for s in after if s.stored >= target), after[-1])
    drain_s = max(drained.t_s - flowing.t_s, SAMPLE_S)
    lags = sorted(
        s.newest_lag_s
        for s in after
        if flowing.t_s <= s.t_s <= drained.t_s and s.newest_lag_s is not None
    )
    return {
        "reconnect_s": round(flowing.t_s - end_s, 1),
        "drain_readings_per_s": round((drained.stored - base) / drain_s, 1),
        "drain_x_real_time": round(outage.down_s / drain_s, 1),
        "live_lag_p50_s": round(lags[len(lags) // 2], 2) if lags else None,
        "live_lag_max_s": round(lags[-1], 2) if lags else None,
    }


def run(args: argparse.Namespace, root: Path) -> int:
    console = Console(stderr=args.json)
    rng = random.Random(args.seed)  # noqa: S311 - a fault schedule, not a secret
    run_s = args.minutes * 60.0
    faults = schedule(rng, run_s)
    with MosquittoServer(root / "mosquitto") as broker, InfluxServer(root / "influxdb") as db:
        stack = LocalStack(root, broker, db)
        stack.write_sink_config(batch_max_age_ms=100)
        gateway = stack.add_gateway(
            GATEWAY_ID,
            args.patients,
            args.seed,
            interval_scale=0.5,
            drain_timeout_s=DRAIN_TIMEOUT_S,
            implant_receivers=1,
            bedside_monitors=1,
        )
        influx = InfluxV1(db.url, stack.database)
        harness = Harness(stack, gateway, broker, db)
        start = time.monotonic()
        monitor = Monitor(influx, start)
        poller = threading.Thread(target=monitor.run, name="chaos.monitor", daemon=True)
        try:
            stack.start_sink()
            stack.start_agent(gateway)
            poller.start()
            for fault in faults:
                time.sleep(max(0.0, start + fault.at_s - time.monotonic()))
                console.print(f"{fault.at_s:6.1f} s  {fault.kind} for {fault.down_s:g} s")
                recover = harness.inject(fault.kind)
                time.sleep(fault.down_s)
                recover()
            time.sleep(max(0.0, start + run_s - time.monotonic()))
            console.print("stopping the agent: it drains its spool")
            agent_rc = stack.stop_agent(gateway, timeout_s=DRAIN_TIMEOUT_S + 30.0)
            entries = read_ledger(gateway.ledger_file)
            expected = reconcile(entries, {}).generated
            wait_for_vitals(influx, expected, DRAIN_TIMEOUT_S)
            monitor.stop()
            sink_rc = stack.stop_sink()
            result = reconcile(entries, stored_vitals(influx))
        finally:
            monitor.stop()
            stack.stop_all()
            influx.close()
    outage = next(f for f in faults if f.kind == "broker_outage")
    lost = result.missing
    duplicated = result.extra + result.duplicate_identities
    ok = lost == 0 and duplicated == 0 and result.value_mismatches == 0 and agent_rc == 0
    summary = {
        "minutes": args.minutes,
        "seed": args.seed,
        "generated": result.generated,
        "stored": result.stored,
        "lost": lost,
        "duplicated": duplicated,
        "value_mismatches": result.value_mismatches,
        "faults_injected": [asdict(f) for f in faults],
        "fault_kinds": sorted({f.kind for f in faults}),
        **_drain_figures(monitor.samples, outage),
        "agent_exit": agent_rc,
        "sink_exit": sink_rc,
        "ok": ok,
    }
    verdict = "[green]nothing lost, nothing doubled[/]" if ok else "[bold red]MISMATCH[/]"
    console.print(
        f"{len(faults)} faults; generated {result.generated}, stored {result.stored}: {verdict} "
        f"(lost {lost}, duplicated {duplicated}, value mismatches {result.value_mismatches})"
    )
    if args.json:
        print(json.dumps(summary))
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            return run(args, args.keep.resolve())
        with tempfile.TemporaryDirectory(prefix="bedside-chaos-") as tmp:
            return run(args, Path(tmp))
    except ServiceError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Local demo: Mosquitto, InfluxDB, sink and agent with N simulated patients, then a count.

By default the broker is secured as a deployment is (docs/broker-security.md): TLS with a
throw-away demo CA, no anonymous clients, per-gateway logins and ACLs, and the gateway enrolled
with `cloud-sink gateways add` + `edge-agent enroll`. `--plain` runs an anonymous TCP broker.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cloud_sink.cli_report import REPORT_FILE
from cloud_sink.clinical import ward, ward_table
from cloud_sink.influx import InfluxV1
from cloud_sink.twin import (
    iso_utc,
    list_patients,
    read_devices,
    read_environment,
    read_twin,
    stored_vitals,
    wait_for_vitals,
)
from edge_agent.config import MAX_SIMULATED_PATIENTS
from firmware_sims.ble.peripherals import SERIAL_NUMBER, address_spellings
from firmware_sims.ledger import LedgerEntry, read_ledger, reconcile
from firmware_sims.patient import SimulatedPatient
from firmware_sims.physiology import HEART_RATE_BPM_PER_C
from firmware_sims.services import InfluxServer, MosquittoServer, ServiceError
from firmware_sims.stack import LocalStack

GATEWAY_ID = "demo-ward-1"
SETTLE_TIMEOUT_S = 30.0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    parser.add_argument("--patients", type=int, default=4, help="simulated patients (default 4)")
    parser.add_argument("--json", action="store_true", help="end with one JSON summary line")
    parser.add_argument("--keep", type=Path, help="leave logs, configs and data in this folder")
    parser.add_argument("--seed", type=int, default=7, help="physiology seed (default 7)")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="anonymous plain-TCP broker instead of TLS, logins, ACLs and enrolment",
    )
    args = parser.parse_args(argv)
    if not args.duration > 0:
        parser.error("--duration must be positive")
    if not 1 <= args.patients <= MAX_SIMULATED_PATIENTS:
        parser.error(f"--patients must be between 1 and {MAX_SIMULATED_PATIENTS}")
    return args


def _twin_tables(console: Console, influx: InfluxV1) -> None:
    now_ns = time.time_ns()
    for patient in list_patients(influx):
        twin = read_twin(influx, patient)
        table = Table(title=f"twin of patient {patient[:12]}… ({twin.readings} readings)")
        for column in ("vital", "latest", "unit", "at (UTC)", "readings"):
            table.add_column(column)
        for vital in twin.vitals:
            table.add_row(
                vital.title,
                f"{vital.value:g}",
                vital.unit,
                iso_utc(vital.ts_ns)[11:23],
                str(vital.readings),
            )
        console.print(table)
        devices = read_devices(influx, patient, now_ns)
        health = Table(title=f"devices of patient {patient[:12]}…")
        for column in ("device", "kind", "last reading", "per hour", "interval", "battery"):
            health.add_column(column)
        for device in devices:
            health.add_row(
                device.device[:8],
                device.kind or "?",
                iso_utc(device.last_ts_ns)[11:19],
                str(device.readings_last_hour),
                "-" if device.interval_s is None else f"{device.interval_s:.3g} s",
                "-" if device.battery_pct is None else f"{device.battery_pct:g} %",
            )
        console.print(health)
        for reading in read_environment(influx, patient, devices).values():
            console.print(
                f"room: {reading.metric} {reading.value:g} {reading.unit} "
                f"({reading.source} sensor, {iso_utc(reading.ts_ns)[11:19]})"
            )


def _alerts(console: Console, influx: InfluxV1) -> dict[str, int]:
    """Print the edge alerts InfluxDB holds; count them by state."""
    counts: dict[str, int] = {}
    for series in influx.query('SELECT "state", "kind", "severity", "patient" FROM "alert"'):
        column = {name: i for i, name in enumerate(series.columns)}
        for row in series.values:
            state = str(row[column["state"]])
            counts[state] = counts.get(state, 0) + 1
            console.print(
                f"alert {state:7} {row[column['kind']]} ({row[column['severity']]}) "
                f"patient {str(row[column['patient']])[:12]}… at {iso_utc(int(row[0]))[11:23]}"
            )
    return counts


def _sink_command(stack: LocalStack, *args: str) -> str:
    """A `cloud-sink` command as the stack's admin (token file), its stdout; checked and audited
    like any other caller's."""
    done = subprocess.run(
        [sys.executable, "-m", "cloud_sink", *args, "-c", str(stack.sink_config),
         "--token-file", str(stack.admin_token_file)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        msg = f"cloud-sink {' '.join(args[:2])} failed: {done.stderr.strip()[-500:]}"
        raise ServiceError(msg)
    return done.stdout


def _fhir_exports(stack: LocalStack, patient: str, root: Path) -> dict[str, dict[str, int]]:
    """`cloud-sink export fhir`, pseudonymous and --anonymised: resources per type of each."""
    counts = {}
    for name, extra in (("fhir-bundle.json", ()), ("fhir-anonymised.json", ("--anonymised",))):
        _sink_command(stack, "export", "fhir", patient, "--out", str(root / name), *extra)
        bundle = json.loads((root / name).read_text(encoding="utf-8"))
        types = Counter(entry["resource"]["resourceType"] for entry in bundle["entry"])
        counts[name] = dict(sorted(types.items()))
    return counts


# Made-up admissions for the simulated beds (docs/twin.md §profile): the population report's
# demographics need some, and a ward without diagnoses is not what a demo should show.
_DEMO_CONDITIONS = (
    ("hypertension",),
    ("COPD", "hypertension"),
    ("type 2 diabetes",),
    (),
    ("heart failure", "atrial fibrillation"),
    (),
)
_DEMO_DIAGNOSES = (
    ("community-acquired pneumonia", "amoxicillin, oxygen as needed"),
    ("post-operative monitoring", "analgesia, early mobilisation"),
    ("exacerbation of COPD", "prednisolone, nebulised salbutamol"),
    ("syncope under investigation", "telemetry, fluids"),
)


def _admit_patients(stack: LocalStack, patients: list[str], seed: int) -> int:
    """Admit every simulated patient with a seeded, made-up profile (`patients admit`)."""
    rng = random.Random(seed)  # noqa: S311 - made-up demo data, not a secret
    for i, patient in enumerate(patients):
        diagnosis, treatment = _DEMO_DIAGNOSES[i % len(_DEMO_DIAGNOSES)]
        conditions = [
            arg for c in _DEMO_CONDITIONS[i % len(_DEMO_CONDITIONS)] for arg in ("--condition", c)
        ]
        _sink_command(
            stack, "patients", "admit", patient, "--age", str(rng.randint(38, 91)),
            "--sex", ("female", "male")[i % 2], *conditions,
            "--diagnosis", diagnosis, "--treatment", treatment,
        )  # fmt: skip
    return len(patients)


def _population_report(stack: LocalStack, out: Path) -> dict[str, object]:
    """The population report with its plots (`cloud-sink report --out DIR --json`), and its
    room figures next to the simulation's ground truth (the scripted warm room)."""
    document = json.loads(_sink_command(stack, "report", "--out", str(out), "--json"))
    figures = document["figures"]
    slope = figures["heart_rate_per_room_temp"]
    return {
        "file": str(out / REPORT_FILE),
        "plots": len(document["plots"]),
        "patients": figures["average_age"]["patients"],
        "room_temperature_mean": figures["room_temperature_mean"]["value"],
        "room_temperature_variance": figures["room_temperature_variance"]["value"],
        "room_readings": figures["room_temperature_variance"].get("readings"),
        "heart_rate_per_room_temp": slope["value"],
        "heart_rate_per_room_temp_ci95": slope.get("ci95"),
        "heart_rate_per_room_temp_pairs": slope.get("n"),
        "simulated_heart_rate_per_room_temp": HEART_RATE_BPM_PER_C,
    }


def _room_summary(report: dict[str, object]) -> str:
    """One line: the room's figures and the regression against the simulation's truth."""
    variance, slope = report["room_temperature_variance"], report["heart_rate_per_room_temp"]
    ci95 = report["heart_rate_per_room_temp_ci95"]
    room = (
        "room temperature: too few readings"
        if not isinstance(variance, float)
        else f"room temperature mean {report['room_temperature_mean']:.2f} °C, variance "
        f"{variance:.2f} K² over {report['room_readings']} readings"
    )
    if not isinstance(slope, float) or not isinstance(ci95, list):
        return f"{room}; heart rate per °C above 25 °C: insufficient data"
    return (
        f"{room}; heart rate {slope:+.2f} /min per °C above 25 °C "
        f"(95 % CI {ci95[0]:.2f} to {ci95[1]:.2f}, {report['heart_rate_per_room_temp_pairs']} "
        f"pairs; the simulation's truth: {HEART_RATE_BPM_PER_C:.1f})"
    )


def _identifier_hits(root: Path, patients: int, seed: int) -> dict[str, int]:
    """Every log the demo leaves in `root`, scanned for the simulated devices' Bluetooth
    addresses (every spelling) and serial numbers: how often each kind of identifier appears."""
    spellings: dict[str, str] = {}
    for index in range(patients):
        for device in SimulatedPatient(index, seed).devices:
            for spelling in address_spellings(device.peripheral.address):
                spellings[spelling] = "device address"
            serial = device.peripheral.read_value(SERIAL_NUMBER).decode("ascii")
            spellings[serial] = "device serial number"
    hits: Counter[str] = Counter()
    for log in sorted(root.rglob("*.log")):
        text = log.read_text(encoding="utf-8", errors="replace")
        for spelling, kind in spellings.items():
            hits[kind] += text.count(spelling)
    return {kind: hits[kind] for kind in sorted(set(spellings.values()))}


def _readings_by_path(entries: list[LedgerEntry]) -> dict[str, int]:
    """How many readings each device path delivered: BLE, implant receiver, bedside monitor."""
    paths = {"ble": 0, "implant": 0, "monitor": 0}
    for entry in entries:
        if entry.device_kind == "implant-receiver":
            paths["implant"] += 1
        elif entry.device_kind == "bedside-monitor":
            paths["monitor"] += 1
        else:
            paths["ble"] += 1
    return paths


def run(args: argparse.Namespace, root: Path) -> int:
    console = Console(stderr=args.json)
    with (
        MosquittoServer(root / "mosquitto", secure=not args.plain) as broker,
        InfluxServer(root / "influxdb") as db,
    ):
        stack = LocalStack(root, broker, db)
        security = "plain TCP, anonymous" if args.plain else "TLS, per-gateway logins and ACLs"
        console.print(f"mosquitto on :{broker.port} ({security}), influxdb on :{db.port}")
        stack.write_sink_config()
        # Patient 1 has a fever episode from 1 s to 11 s after start and the devices run at
        # half their ward intervals, so the bedside alert is raised and cleared even in a short
        # run. The scripted event also warms the room from 1 s to 16 s after start (to 29.5 °C;
        # firmware_sims.ward.WARM_ROOM_*), with the room sensor reading every 2.5 s, and every
        # patient's heart rate follows: the report's heart rate per °C above 25 °C has its
        # pairs, to compare with the simulation's HEART_RATE_BPM_PER_C. Every patient wears BLE
        # devices (a simulated radio behind bleak); bed 1 also has an implant receiver and the
        # last bed a bedside monitor, both on pseudo-terminals.
        # On the secure broker this enrols the gateway (its key and its broker login).
        gateway = stack.add_gateway(
            GATEWAY_ID,
            args.patients,
            args.seed,
            interval_scale=0.5,
            scripted_event="fever",
            warm_room=True,
            implant_receivers=1,
            bedside_monitors=1,
        )
        influx = InfluxV1(db.url, stack.database)
        try:
            if not args.plain:
                console.print(f"gateway {GATEWAY_ID} enrolled; starting sink")
            stack.start_sink()
            stack.start_agent(gateway)
            console.print(
                f"agent running {args.patients} simulated patients for {args.duration:g} s"
            )
            time.sleep(args.duration)
            agent_rc = stack.stop_agent(gateway)
            entries = read_ledger(gateway.ledger_file)
            wait_for_vitals(influx, reconcile(entries, {}).generated, SETTLE_TIMEOUT_S)
            sink_rc = stack.stop_sink()
            # The nurse's part of NEWS2 (consciousness, oxygen) and the admissions, through the
            # same checked and audited commands a nurse and a ward clerk use.
            patients = list_patients(influx)
            for patient in patients:
                _sink_command(
                    stack, "twin", "observe", patient, "--acvpu", "A", "--oxygen", "air",
                    "--scale", "1",
                )  # fmt: skip
            admitted = _admit_patients(stack, patients, args.seed)
            _twin_tables(console, influx)
            alerts = _alerts(console, influx)
            result = reconcile(entries, stored_vitals(influx))
            fhir = _fhir_exports(stack, entries[0].patient, root)
            console.print(f"FHIR R4 bundles of patient {entries[0].patient[:12]}… in {root}:")
            console.print(fhir)
            report = _population_report(stack, root / "report")
            console.print(
                f"population report of {report['patients']} patients with "
                f"{report['plots']} plots in {report['file']}"
            )
            console.print(_room_summary(report))
            figures = json.loads(_sink_command(stack, "security", "report", "--json"))
            console.print(
                f"security: {figures['envelopes_accepted']} envelopes accepted, "
                f"{figures['rejections_total']} refused, encryption compliance "
                f"{figures['encryption_compliance_pct']} %, audit chain "
                f"{'intact' if (figures['audit_log'] or {}).get('chain_ok') else 'BROKEN'}"
            )
            # The ward view last: what a nurse would look at after all of the above.
            console.print(ward_table(ward(influx, time.time_ns())))
        finally:
            stack.stop_all()
            influx.close()
    paths = _readings_by_path(entries)
    # After every process stopped, so every log is complete (kept with --keep).
    identifier_hits = _identifier_hits(root, args.patients, args.seed)
    # Everything stored arrived sealed, and the audit chain of the demo's commands holds.
    secure = figures["encryption_compliance_pct"] == 100.0 and figures["audit_log"]["chain_ok"]
    secure = secure and not any(identifier_hits.values())
    ok = result.exact and all(paths.values()) and agent_rc == 0 and sink_rc == 0 and secure
    summary = {
        "patients": args.patients,
        "duration_s": args.duration,
        "readings_generated": result.generated,
        "readings_stored": result.stored,
        "readings_by_path": paths,
        "fhir_bundles": fhir,
        "security": figures,
        "identifier_hits": identifier_hits,
        "patients_admitted": admitted,
        "report": report,
        "stored_equals_generated": result.exact and result.stored == result.generated,
        "missing": result.missing,
        "extra": result.extra,
        "value_mismatches": result.value_mismatches,
        "alerts_raised": alerts.get("raised", 0),
        "alerts_cleared": alerts.get("cleared", 0),
        "agent_exit": agent_rc,
        "sink_exit": sink_rc,
        "ok": ok,
    }
    verdict = "[green]nothing lost, nothing doubled[/]" if ok else "[bold red]MISMATCH[/]"
    console.print(
        f"readings by path: BLE {paths['ble']}, implant receiver {paths['implant']}, "
        f"bedside monitor {paths['monitor']}"
    )
    console.print(
        f"generated {result.generated} readings, stored {result.stored}: {verdict}"
        f" (missing {result.missing}, extra {result.extra}, "
        f"value mismatches {result.value_mismatches})"
    )
    if args.json:
        print(json.dumps(summary))
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            code = run(args, args.keep.resolve())
            Console(stderr=True).print(f"logs, configs and data kept in {args.keep}")
            return code
        with tempfile.TemporaryDirectory(prefix="bedside-demo-") as tmp:
            return run(args, Path(tmp))
    except ServiceError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

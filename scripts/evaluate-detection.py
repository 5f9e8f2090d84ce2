"""Scores the agent's filters and alerts on a seeded cohort against the injected ground truth.

Latency is reported twice. `median_latency_s` / `p95_latency_s` (the figures the targets apply
to) run from the start of the event's onset ramp, when the vital starts to move, to the first
matching alert. `median_latency_from_crossing_s` runs from the first usable reading of the
event past the matching rule's threshold (no artifact flag, the rule's condition true) to that
alert: the alarm condition delay the rules add, without the time the physiology takes to reach
the limit (a fever's onset alone lasts 10 to 20 minutes) or the device takes to measure it (a
blood-pressure cuff cycles every 15 minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Final

from edge_agent.alerts import ADVISORY_KINDS, DEFAULT_RULES, AlertRule
from edge_agent.detect import DetectionStage
from edge_agent.filters import flags as fl
from edge_agent.filters import load_presets
from edge_agent.protocol import AlertEvent, by_code
from firmware_sims.cohort import CohortPatient, simulate_patient
from firmware_sims.events import EVENT_KINDS, GroundTruth

START_S: Final = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CHUNK: Final = 2048
GRACE_NS: Final = 120 * 1_000_000_000
# Which physiological alert detects which injected event.
DETECTS: Final[dict[str, tuple[str, ...]]] = {
    "spo2_low": ("desaturation",),
    "heart_rate_high": ("tachycardia", "af"),
    "heart_rate_low": ("bradycardia",),
    "fever": ("fever",),
    "hypotension": ("hypotension",),
}
TECHNICAL: Final = frozenset({"probe_off", "flatline", "device_silent", "battery_low"})


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/evaluate-detection", description=__doc__)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events-per-hour", type=float, default=0.25)
    parser.add_argument("--presets", type=Path, default=Path("configs/filters.toml"))
    parser.add_argument("--json", action="store_true", help="end with one JSON summary line")
    args = parser.parse_args(argv)
    if args.patients < 1 or args.hours <= 0:
        parser.error("--patients must be >= 1 and --hours > 0")
    return args


RULES: Final[dict[str, AlertRule]] = {rule.kind: rule for rule in DEFAULT_RULES}


def _run(stage: DetectionStage, patient: CohortPatient) -> tuple[list[AlertEvent], list[int]]:
    """The alerts raised for this patient, and the filter flags of every reading."""
    raised: list[AlertEvent] = []
    flags: list[int] = []
    for start in range(0, len(patient.readings), CHUNK):
        chunk = patient.readings[start : start + CHUNK]
        chunk_flags, alerts = stage.process(chunk)
        flags.extend(chunk_flags)
        raised.extend(alerts)
        raised.extend(stage.tick(chunk[-1].ts_ns))
    return [alert for alert in raised if alert.state == "raised"], flags


def _crossing_ns(
    truth: GroundTruth, alert_kind: str, patient: CohortPatient, flags: list[int]
) -> int | None:
    """When the event's first usable reading met the condition of the rule that alerted."""
    rule = RULES[alert_kind]
    for reading, bits in zip(patient.readings, flags, strict=True):
        if reading.ts_ns < truth.start_ns or bits & fl.ARTIFACT:
            continue
        if reading.ts_ns > truth.end_ns + GRACE_NS:
            break
        if by_code(reading.metric_code).name == rule.metric and rule.condition(reading.value, bits):
            return reading.ts_ns
    return None


def _match(alert: AlertEvent, truths: list[GroundTruth]) -> GroundTruth | None:
    kinds = DETECTS.get(alert.kind, ())
    for truth in truths:
        if truth.kind in kinds and truth.start_ns <= alert.ts_ns <= truth.end_ns + GRACE_NS:
            return truth
    return None


def _pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in seconds to the millisecond."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def main(argv: list[str]) -> int:
    args = _parse(argv)
    # The alert engine logs every alert for the gateway's journal; here only the scores matter.
    logging.basicConfig(level=logging.ERROR)
    presets = load_presets(args.presets)
    started = time.perf_counter()
    detected: dict[GroundTruth, float] = {}
    from_crossing: dict[GroundTruth, float] = {}
    truths_all: list[GroundTruth] = []
    true_alerts = false_alerts = technical = readings = 0
    advisories = advisories_in_events = 0
    false_by_kind: dict[str, int] = defaultdict(int)
    for index in range(1, args.patients + 1):
        patient = simulate_patient(
            index, args.seed, START_S, args.hours, events_per_hour=args.events_per_hour
        )
        readings += len(patient.readings)
        truths_all.extend(patient.truths)
        alerts, flags = _run(DetectionStage(presets), patient)
        for alert in alerts:
            if alert.kind in TECHNICAL:
                technical += 1
                continue
            if alert.kind in ADVISORY_KINDS:
                # Deviation advisories are information, not alarms: counted apart, with how many
                # fell during an injected event (they are not scored as detections).
                advisories += 1
                advisories_in_events += any(
                    t.start_ns <= alert.ts_ns <= t.end_ns + GRACE_NS for t in patient.truths
                )
                continue
            truth = _match(alert, patient.truths)
            if truth is None:
                false_alerts += 1
                false_by_kind[alert.kind] += 1
                continue
            true_alerts += 1
            latency_s = (alert.ts_ns - truth.start_ns) / 1e9
            if truth in detected and detected[truth] <= latency_s:
                continue
            detected[truth] = latency_s
            crossed_ns = _crossing_ns(truth, alert.kind, patient, flags)
            if crossed_ns is not None:
                from_crossing[truth] = (alert.ts_ns - crossed_ns) / 1e9
    per_kind: dict[str, dict[str, object]] = {}
    for kind in EVENT_KINDS:
        of_kind = [t for t in truths_all if t.kind == kind]
        latencies = [detected[t] for t in of_kind if t in detected]
        crossings = [from_crossing[t] for t in of_kind if t in from_crossing]
        per_kind[kind] = {
            "events": len(of_kind),
            "detected": len(latencies),
            "sensitivity": round(len(latencies) / len(of_kind), 3) if of_kind else None,
            "median_latency_s": _pct(latencies, 0.5),
            "p95_latency_s": _pct(latencies, 0.95),
            "median_latency_from_crossing_s": _pct(crossings, 0.5),
        }
    latencies = list(detected.values())
    crossings = list(from_crossing.values())
    patient_hours = args.patients * args.hours
    summary = {
        "patients": args.patients,
        "hours": args.hours,
        "seed": args.seed,
        "readings": readings,
        "events": len(truths_all),
        "detected": len(detected),
        "sensitivity": round(len(detected) / len(truths_all), 3) if truths_all else None,
        "ppv": round(true_alerts / (true_alerts + false_alerts), 3)
        if true_alerts + false_alerts
        else None,
        "median_latency_s": _median(latencies),
        "p95_latency_s": _pct(latencies, 0.95),
        "median_latency_from_crossing_s": _median(crossings),
        "p95_latency_from_crossing_s": _pct(crossings, 0.95),
        "false_alerts_per_patient_hour": round(false_alerts / patient_hours, 4),
        "false_alerts_by_kind": dict(false_by_kind),
        "technical_alerts": technical,
        "advisories": advisories,
        "advisories_per_patient_hour": round(advisories / patient_hours, 4),
        "advisories_during_events": advisories_in_events,
        "per_event_type": per_kind,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    if not args.json:
        for kind, row in per_kind.items():
            print(f"{kind:13} {row}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

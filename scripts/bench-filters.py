#!/usr/bin/env python3
"""Time the numba filter bank against its pure-Python reference on the same mixed ward signals.

Both run in this process, pinned to one core, on the same seeded readings: 1 Hz heart rate, pulse
rate and SpO2, 4 s respiration, 10 s temperature, 15 min blood pressure, 5 min glucose and 1 min
room climate, with NaNs, spikes, stuck runs, gaps, bad-quality readings and a few desaturations
and tachycardias. The bank gets the readings interleaved in time order in pipeline-sized chunks;
the reference gets each series whole. Figures are per reading; the whole bank first, then each
detector alone. With --json the last line is one JSON object (bank_samples_per_s,
reference_samples_per_s, ratio, ...). This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from edge_agent.filters import ALL_DETECTORS, DETECTOR_BITS, FilterBank, load_presets, warm_up
from edge_agent.filters.presets import Presets
from edge_agent.filters.reference import run_series

REPO: Final = Path(__file__).resolve().parent.parent
NS_PER_S: Final = 1_000_000_000


@dataclass(slots=True, frozen=True)
class SignalModel:
    """How one simulated metric behaves: mean, slow drift, noise, device resolution, interval."""

    metric: str
    interval_s: float
    mean: float
    drift_sd: float
    noise_sd: float
    resolution: float


# Typical adult ward values (means and spreads as in firmware_sims.physiology), device intervals of
# the presets in configs/filters.toml.
MODELS: Final = (
    SignalModel("heart_rate", 1.0, 75.0, 4.0, 1.0, 1.0),
    SignalModel("pulse_rate", 1.0, 75.0, 4.0, 1.5, 1.0),
    SignalModel("spo2", 1.0, 97.0, 0.8, 0.5, 1.0),
    SignalModel("resp_rate", 4.0, 15.0, 1.5, 0.8, 1.0),
    SignalModel("body_temp", 10.0, 36.8, 0.15, 0.05, 0.1),
    SignalModel("bp_systolic", 900.0, 122.0, 5.0, 3.0, 1.0),
    SignalModel("bp_diastolic", 900.0, 78.0, 3.0, 2.0, 1.0),
    SignalModel("bp_mean", 900.0, 93.0, 3.0, 2.0, 1.0),
    SignalModel("glucose", 300.0, 110.0, 15.0, 5.0, 1.0),
    SignalModel("room_temp", 60.0, 22.0, 0.5, 0.1, 0.1),
    SignalModel("humidity", 60.0, 45.0, 3.0, 0.5, 1.0),
)


@dataclass(slots=True)
class Dataset:
    series: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint32]
    keys: list[tuple[str, str]]


def _one_series(
    model: SignalModel, hours: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint32]]:
    n = int(hours * 3600 / model.interval_s)
    t_s = np.arange(n) * model.interval_s + rng.uniform(0, model.interval_s)
    # Ornstein-Uhlenbeck drift with a 10 min time constant, sampled at the device interval.
    decay = np.exp(-model.interval_s / 600.0)
    shocks = rng.normal(0.0, model.drift_sd * np.sqrt(1.0 - decay * decay), n)
    drift = np.empty(n)
    level = 0.0
    for i in range(n):
        level = decay * level + shocks[i]
        drift[i] = level
    values = model.mean + drift + rng.normal(0.0, model.noise_sd, n)
    # Clinical events: a desaturation or a tachycardia of a few minutes, ramped in and out.
    if model.metric in ("spo2", "heart_rate", "pulse_rate") and n > 1200:
        start = int(rng.integers(0, n - 600))
        depth = -8.0 if model.metric == "spo2" else 45.0
        ramp = np.interp(np.arange(600), [0, 60, 480, 600], [0.0, 1.0, 1.0, 0.0])
        values[start : start + 600] += depth * ramp
    values = np.round(values / model.resolution) * model.resolution
    quality = np.zeros(n, np.uint32)
    # Artifacts, in the devices' own signalling: NaN readings, spikes, stuck runs, bad quality.
    values[rng.random(n) < 0.01] = np.nan
    spikes = rng.random(n) < 0.005
    values[spikes] += rng.choice([-1.0, 1.0], int(spikes.sum())) * 10 * (model.drift_sd + 1.0)
    quality[rng.random(n) < 0.005] = 1
    for stuck in np.flatnonzero(rng.random(n) < 0.001):
        values[stuck : stuck + 120] = values[stuck]
    keep = np.ones(n, bool)
    for gap in np.flatnonzero(rng.random(n) < 0.0005):
        keep[gap : gap + int(rng.integers(30, 120))] = False
    ts_ns = np.round(t_s * NS_PER_S).astype(np.int64) + 1_700_000_000 * NS_PER_S
    return ts_ns[keep], values[keep], quality[keep]


def make_dataset(target_samples: int, seed: int) -> Dataset:
    """Enough patients of two hours each to reach about `target_samples` readings."""
    rng = np.random.default_rng(seed)
    hours = 2.0
    per_patient = sum(int(hours * 3600 / m.interval_s) for m in MODELS)
    patients = max(1, round(target_samples / per_patient))
    parts: list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint32]]]
    parts = []
    keys: list[tuple[str, str]] = []
    for patient in range(patients):
        for model in MODELS:
            ts_ns, values, quality = _one_series(model, hours, rng)
            parts.append((len(keys), ts_ns, values, quality))
            keys.append((f"patient-{patient:03d}", model.metric))
    series = np.concatenate([np.full(p[1].shape[0], p[0], np.int64) for p in parts])
    ts_all = np.concatenate([p[1] for p in parts])
    order = np.argsort(ts_all, kind="stable")
    return Dataset(
        series=series[order],
        ts_ns=ts_all[order],
        values=np.concatenate([p[2] for p in parts])[order],
        quality=np.concatenate([p[3] for p in parts])[order],
        keys=keys,
    )


def time_bank(
    data: Dataset, presets: Presets, detectors: int, chunk: int, repeats: int
) -> tuple[float, npt.NDArray[np.uint32]]:
    """Best wall time of `repeats` passes, each on a fresh bank, and the flags of the last one."""
    best = float("inf")
    flags = np.zeros(0, np.uint32)
    for _ in range(repeats):
        bank = FilterBank(presets, detectors=detectors, initial_capacity=len(data.keys))
        for device, metric in data.keys:
            bank.series_id(device, metric)
        parts = []
        start = time.perf_counter()
        for offset in range(0, data.series.shape[0], chunk):
            end = offset + chunk
            parts.append(
                bank.process(
                    data.series[offset:end],
                    data.ts_ns[offset:end],
                    data.values[offset:end],
                    data.quality[offset:end],
                )
            )
        best = min(best, time.perf_counter() - start)
        flags = np.concatenate(parts)
    return best, flags


def time_reference(
    data: Dataset, presets: Presets, detectors: int
) -> tuple[float, npt.NDArray[np.uint32]]:
    """Wall time of the reference over every series, and its flags in the bank's reading order."""
    by_series = [np.flatnonzero(data.series == s) for s in range(len(data.keys))]
    inputs = [
        (
            presets.get(data.keys[s][1]),
            data.ts_ns[idx].tolist(),
            data.values[idx].tolist(),
            data.quality[idx].tolist(),
        )
        for s, idx in enumerate(by_series)
    ]
    start = time.perf_counter()
    results = [
        run_series(preset, ts, values, quality, detectors=detectors)[0]
        for preset, ts, values, quality in inputs
    ]
    elapsed = time.perf_counter() - start
    flags = np.zeros(data.series.shape[0], np.uint32)
    for idx, result in zip(by_series, results, strict=True):
        flags[idx] = result
    return elapsed, flags


def pin_to_one_core() -> str:
    """Run on a single CPU so the figures are per core; returns which one."""
    if not hasattr(os, "sched_setaffinity"):
        return "unpinned"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"cpu{cpu}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--samples", type=int, default=400_000, help="readings (approximate)")
    parser.add_argument("--chunk", type=int, default=4096, help="readings per bank call")
    parser.add_argument("--repeats", type=int, default=3, help="bank passes; the best counts")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "filters.toml")
    parser.add_argument("--no-detectors", action="store_true", help="skip the per-detector figures")
    args = parser.parse_args()

    core = pin_to_one_core()
    presets = load_presets(args.config)
    started = time.perf_counter()
    warm_up()
    warm_up_s = time.perf_counter() - started
    data = make_dataset(args.samples, args.seed)
    n = int(data.series.shape[0])
    print(f"{n} readings, {len(data.keys)} series, chunks of {args.chunk}, {core}")
    print(f"warm_up: {warm_up_s:.3f} s (numba compile or cache load)")

    bank_s, bank_flags = time_bank(data, presets, ALL_DETECTORS, args.chunk, args.repeats)
    reference_s, reference_flags = time_reference(data, presets, ALL_DETECTORS)
    flags_equal = bool(np.array_equal(bank_flags, reference_flags))
    bank_rate = n / bank_s
    reference_rate = n / reference_s
    print(
        f"whole bank: bank {bank_rate / 1e6:.2f} M/s, reference {reference_rate / 1e3:.1f} k/s, "
        f"ratio {bank_rate / reference_rate:.0f}, flags equal: {flags_equal}"
    )

    per_detector: dict[str, dict[str, float]] = {}
    if not args.no_detectors:
        # Plausibility, quality and ordering always run; "checks" is them alone.
        for name, bit in [("checks", 0), *DETECTOR_BITS.items()]:
            one_bank_s, _ = time_bank(data, presets, bit, args.chunk, args.repeats)
            one_reference_s, _ = time_reference(data, presets, bit)
            per_detector[name] = {
                "bank_samples_per_s": round(n / one_bank_s),
                "reference_samples_per_s": round(n / one_reference_s),
                "ratio": round(one_reference_s / one_bank_s, 1),
            }
            print(
                f"{name:>10}: bank {n / one_bank_s / 1e6:.2f} M/s, "
                f"reference {n / one_reference_s / 1e3:.1f} k/s, "
                f"ratio {one_reference_s / one_bank_s:.0f}"
            )

    if args.json:
        summary = {
            "bank_samples_per_s": round(bank_rate),
            "reference_samples_per_s": round(reference_rate),
            "ratio": round(bank_rate / reference_rate, 1),
            "samples": n,
            "series": len(data.keys),
            "chunk": args.chunk,
            "flags_equal": flags_equal,
            "warm_up_s": round(warm_up_s, 3),
            "core": core,
            "python": platform.python_version(),
            "detectors": per_detector,
        }
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

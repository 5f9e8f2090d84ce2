"""Line-protocol encoding: influxdb-client's Point against ours, same points, same run."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Final

import numpy as np
from influxdb_client.client.write.point import Point

from cloud_sink.lineproto import vital_line

POINTS: Final = 50_000
METRICS: Final = ("heart_rate", "spo2", "resp_rate", "body_temp", "bp_systolic")
Row = tuple[str, str, str, float, int, int, int]
"""patient, metric, device, value, quality, flags, ts_ns"""


def _points(count: int) -> list[Row]:
    """The sink's point shape: 1000 patients, catalogue metrics, device-resolution values."""
    rng = np.random.default_rng(1)
    patients = [bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex() for _ in range(1000)]
    return [
        (
            patients[i % 1000],
            METRICS[i % len(METRICS)],
            patients[(i * 7) % 1000],
            float(round(rng.normal(80, 10), 1)),
            0,
            int(rng.integers(0, 8)),
            1_767_225_600_000_000_000 + i * 1_000_000,
        )
        for i in range(count)
    ]


def _with_point(rows: list[Row]) -> list[str]:
    out = []
    for patient, metric, device, value, quality, flags, ts_ns in rows:
        point = Point("vital").tag("patient", patient).tag("metric", metric).tag("device", device)  # type: ignore[no-untyped-call]
        point.field("value", value).field("quality", quality).field("flags", flags).time(ts_ns)
        out.append(point.to_line_protocol())
    return out


def _ours(rows: list[Row]) -> list[str]:
    return [
        vital_line(p, m, d, value=v, quality=q, flags=f, ts_ns=t) for p, m, d, v, q, f, t in rows
    ]


def _rate(
    encode: Callable[[list[Row]], list[str]],
    rows: list[Row],
    repeats: int,
) -> tuple[float, list[str]]:
    best = float("inf")
    lines: list[str] = []
    for _ in range(repeats):
        start = time.perf_counter()
        lines = encode(rows)
        best = min(best, time.perf_counter() - start)
    return len(rows) / best, lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench lp", description=__doc__)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--points", type=int, default=POINTS)
    args = parser.parse_args(argv)
    rows = _points(args.points)
    point_rate, point_lines = _rate(_with_point, rows, 3)
    ours_rate, our_lines = _rate(_ours, rows, 5)
    result = {
        "points": len(rows),
        "point_lines_per_s": round(point_rate),
        "ours_lines_per_s": round(ours_rate),
        "ratio": round(ours_rate / point_rate, 2),
        "identical": our_lines == point_lines,
        "python": platform.python_version(),
    }
    if not args.json:
        print(f"influxdb-client Point: {point_rate:,.0f} lines/s; ours: {ours_rate:,.0f} lines/s")
    print(json.dumps(result))
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

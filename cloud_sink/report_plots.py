"""PNG plots of the population report's distributions and trends (matplotlib, Agg, no display)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cloud_sink.report import (
    BP_DIASTOLIC_MMHG,
    BP_SYSTOLIC_MMHG,
    ROOM_WARM_C,
    SPO2_LOW_PCT,
    Insufficient,
    PlotData,
    PlotFile,
    Report,
    ReportError,
)

FIGURE_SIZE_IN: Final = (7.0, 4.5)
DPI: Final = 100
NO_DATA: Final = "no data in the window"
NO_GATEWAY: Final = "(no gateway)"
_PLOTS: Final = "plots"


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=axes.transAxes)


def _age_histogram(axes: Axes, data: PlotData) -> None:
    axes.set_title("Age of patients (newest profile)")
    axes.set_xlabel("age (years)")
    axes.set_ylabel("patients")
    if not data.ages_years:
        _no_data(axes)
        return
    # Ten-year bins (0-9, 10-19, ...), as demographic tables group ages.
    top = (max(data.ages_years) // 10 + 1) * 10
    axes.hist(data.ages_years, bins=list(range(0, top + 10, 10)), edgecolor="black")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))


def _heart_rate_histogram(axes: Axes, data: PlotData) -> None:
    axes.set_title("Heart-rate readings (usable, every patient)")
    axes.set_xlabel("heart rate (/min)")
    axes.set_ylabel("readings")
    if len(data.heart_rates) == 0:
        _no_data(axes)
        return
    axes.hist(data.heart_rates, bins=40, edgecolor="black")


def _spo2_histogram(axes: Axes, data: PlotData) -> None:
    axes.set_title("SpO2 readings (usable, every patient)")
    axes.set_xlabel("SpO2 (%)")
    axes.set_ylabel("readings")
    if len(data.spo2_pct) == 0:
        _no_data(axes)
        return
    # One bin per whole percent (oximeters report whole percent), from 90 % or the lowest reading.
    lowest = math.floor(min(float(data.spo2_pct.min()), 90.0))
    bins = [lowest - 0.5 + k for k in range(int(101 - lowest) + 1)]
    axes.hist(data.spo2_pct, bins=bins, edgecolor="black")
    axes.axvline(SPO2_LOW_PCT, color="red", linestyle="--", label=f"{SPO2_LOW_PCT:g} %")
    axes.legend()


def _bp_scatter(axes: Axes, data: PlotData) -> None:
    axes.set_title("Blood pressure: each patient's medians")
    axes.set_xlabel("median systolic (mmHg)")
    axes.set_ylabel("median diastolic (mmHg)")
    axes.axvline(BP_SYSTOLIC_MMHG, color="red", linestyle="--", label="130 mmHg systolic")
    axes.axhline(BP_DIASTOLIC_MMHG, color="orange", linestyle="--", label="80 mmHg diastolic")
    if not data.bp_medians:
        _no_data(axes)
    else:
        systolic, diastolic = zip(*data.bp_medians, strict=True)
        axes.scatter(systolic, diastolic, zorder=3)
    axes.legend()


def _heart_rate_vs_room(axes: Axes, data: PlotData) -> None:
    axes.set_xlabel("room temperature (°C)")
    axes.set_ylabel("heart rate (/min)")
    fit = data.fit
    if isinstance(fit, Insufficient):
        axes.set_title(f"Heart rate vs room temperature above {ROOM_WARM_C:g} °C: insufficient")
    else:
        axes.set_title(
            f"Heart rate vs room temperature above {ROOM_WARM_C:g} °C: "
            f"{fit.slope:+.2f} /min per °C (95 % CI {fit.ci_low:+.2f} to {fit.ci_high:+.2f})",
            fontsize="medium",
        )
    if len(data.pair_temps_c) == 0:
        _no_data(axes)
        return
    axes.scatter(
        data.pair_temps_c, data.pair_heart_rates, s=10, alpha=0.5, rasterized=True, label="pairs"
    )
    if not isinstance(fit, Insufficient):
        xs = np.array([data.pair_temps_c.min(), data.pair_temps_c.max()])
        axes.plot(xs, fit.intercept + fit.slope * xs, color="red", label=f"OLS, n = {fit.n}")
    axes.legend()


def _error_rate_by_kind(axes: Axes, data: PlotData) -> None:
    axes.set_title("Device errors per 100 hours, by kind")
    axes.set_ylabel("errors per 100 h")
    if not data.error_rate_by_kind:
        _no_data(axes)
        return
    kinds = list(data.error_rate_by_kind)
    axes.bar(kinds, [data.error_rate_by_kind[k] for k in kinds], edgecolor="black")
    axes.tick_params(axis="x", labelrotation=30)


def _room_over_time(axes: Axes, data: PlotData) -> None:
    axes.set_title("Room temperature over time, per gateway")
    axes.set_xlabel("time (UTC)")
    axes.set_ylabel("room temperature (°C)")
    by_gateway: dict[str, list[tuple[int, float]]] = {}
    for room in data.rooms:
        rows = by_gateway.setdefault(room.gateway or NO_GATEWAY, [])
        rows += zip(room.ts_ns.tolist(), room.temps_c.tolist(), strict=True)
    if not by_gateway:
        _no_data(axes)
        return
    for gateway, rows in sorted(by_gateway.items()):
        rows.sort()
        stamps = np.array([ts for ts, _ in rows], dtype=np.int64).astype("datetime64[ns]")
        axes.plot(stamps, [temp for _, temp in rows], marker=".", label=gateway)
    axes.axhline(ROOM_WARM_C, color="red", linestyle="--", label=f"{ROOM_WARM_C:g} °C")
    axes.legend()
    axes.tick_params(axis="x", labelrotation=30)


Drawer = Callable[[Axes, PlotData], None]
PLOTS: Final[tuple[tuple[str, str, Drawer], ...]] = (
    ("age_histogram.png", "histogram of patient ages", _age_histogram),
    ("heart_rate_distribution.png", "histogram of heart-rate readings", _heart_rate_histogram),
    ("spo2_distribution.png", "histogram of SpO2 readings with the 94 % line", _spo2_histogram),
    (
        "blood_pressure_scatter.png",
        "each patient's median systolic against median diastolic with the 130/80 lines",
        _bp_scatter,
    ),
    (
        "heart_rate_vs_room_temperature.png",
        "heart rate against room temperature above 25 °C with the fitted line",
        _heart_rate_vs_room,
    ),
    (
        "device_error_rate_by_kind.png",
        "device errors per 100 hours for each device kind",
        _error_rate_by_kind,
    ),
    (
        "room_temperature_by_gateway.png",
        "room temperature over time for each gateway",
        _room_over_time,
    ),
)


def write_plots(report: Report, out_dir: Path) -> tuple[PlotFile, ...]:
    """Draw every plot into `out_dir` (which must exist) and name what each one shows."""
    written = []
    for file_name, shows, draw in PLOTS:
        # A Figure with its own Agg canvas: no pyplot, no global state, no display needed.
        figure = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure.add_subplot(), report.plots)
        try:
            figure.savefig(out_dir / file_name, format="png")
        except OSError as exc:
            raise ReportError(_PLOTS, f"cannot write {out_dir / file_name}: {exc}") from exc
        written.append(PlotFile(file_name, shows))
    return tuple(written)

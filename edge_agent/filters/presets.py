"""Per-metric filter presets: validated values, and loading them from configs/filters.toml."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from edge_agent.errors import ConfigError
from edge_agent.filters.errors import PresetError, UnknownMetricError
from edge_agent.protocol.errors import CatalogueError
from edge_agent.protocol.metrics import by_name
from edge_agent.protocol.settings import SettingsError, Table, load

# Detector bits: a preset's `detectors` list and the bank's own mask both select from these.
# Plausibility, quality and ordering checks always run: every other detector depends on them.
DETECT_HAMPEL: Final = 1 << 0
DETECT_EWMA: Final = 1 << 1
DETECT_CUSUM: Final = 1 << 2
DETECT_RATE: Final = 1 << 3
DETECT_FLATLINE: Final = 1 << 4
DETECT_DROPOUT: Final = 1 << 5
ALL_DETECTORS: Final = (
    DETECT_HAMPEL | DETECT_EWMA | DETECT_CUSUM | DETECT_RATE | DETECT_FLATLINE | DETECT_DROPOUT
)
DETECTOR_BITS: Final[dict[str, int]] = {
    "hampel": DETECT_HAMPEL,
    "ewma": DETECT_EWMA,
    "cusum": DETECT_CUSUM,
    "rate": DETECT_RATE,
    "flatline": DETECT_FLATLINE,
    "dropout": DETECT_DROPOUT,
}

# Sizes of the preallocated per-series buffers; a preset must fit inside them.
HAMPEL_MAX_WINDOW: Final = 31
BASELINE_MAX_SAMPLES: Final = 1024
RATE_CAPACITY: Final = 128
MAX_SENTINELS: Final = 8

# Larger magnitudes buy nothing clinically and could overflow squared deviations.
_VALUE_LIMIT: Final = 1e9
_QUALITY_MASK_MAX: Final = 0xFFFF_FFFF
_NS_PER_S: Final = 1_000_000_000
_MAX_SECONDS: Final = 30 * 86_400.0


def _seconds_to_ns(seconds: float) -> int:
    return round(seconds * _NS_PER_S)


@dataclass(slots=True, frozen=True)
class MetricPreset:
    """Every tunable of the filter bank for one metric; values are in the metric's catalogue unit.

    Construction validates each value and raises PresetError naming the key.
    """

    metric: str
    detectors: int
    plausible_min: float
    plausible_max: float
    sentinels: tuple[float, ...]
    bad_quality_mask: int
    expected_interval_s: float
    dropout_factor: float
    hampel_window: int
    hampel_threshold: float
    hampel_floor: float
    ewma_alpha: float
    ewma_warmup: int
    ewma_z_high: float
    ewma_z_low: float
    ewma_sd_floor: float
    ewma_winsor_z: float
    baseline_samples: int
    baseline_sd_floor: float
    cusum_k: float
    cusum_h: float
    cusum_clamp: float
    rate_window_s: float
    rate_max_delta: float
    flatline_s: float

    def __post_init__(self) -> None:
        for key, ok, rule in self._rules():
            if not ok:
                raise PresetError(self.metric, key, f"{getattr(self, key)!r} must be {rule}")

    def _rules(self) -> Iterable[tuple[str, bool, str]]:
        # Written as `low <= v <= high` so that NaN fails every rule.
        limit = _VALUE_LIMIT
        yield "detectors", 0 <= self.detectors <= ALL_DETECTORS, "a set of known detectors"
        yield "plausible_min", -limit <= self.plausible_min <= limit, f"within ±{limit:g}"
        yield (
            "plausible_max",
            self.plausible_min < self.plausible_max <= limit,
            f"above plausible_min and at most {limit:g}",
        )
        yield (
            "sentinels",
            len(self.sentinels) <= MAX_SENTINELS
            and all(-limit <= value <= limit for value in self.sentinels),
            f"at most {MAX_SENTINELS} finite values",
        )
        yield (
            "bad_quality_mask",
            0 <= self.bad_quality_mask <= _QUALITY_MASK_MAX,
            "a 32-bit unsigned mask",
        )
        yield (
            "expected_interval_s",
            0.0 < self.expected_interval_s <= 86_400.0,
            "above 0 and at most one day",
        )
        yield "dropout_factor", 1.0 <= self.dropout_factor <= 1000.0, "within 1..1000"
        yield (
            "hampel_window",
            3 <= self.hampel_window <= HAMPEL_MAX_WINDOW,
            f"within 3..{HAMPEL_MAX_WINDOW} samples",
        )
        yield "hampel_threshold", 0.0 < self.hampel_threshold <= 100.0, "within (0, 100]"
        yield "hampel_floor", 0.0 < self.hampel_floor <= limit, "above 0"
        yield "ewma_alpha", 0.0 < self.ewma_alpha <= 1.0, "within (0, 1]"
        yield "ewma_warmup", 1 <= self.ewma_warmup <= 1_000_000, "within 1..1000000 samples"
        yield "ewma_z_high", 0.0 < self.ewma_z_high <= 1000.0, "within (0, 1000]"
        yield "ewma_z_low", 0.0 < self.ewma_z_low <= 1000.0, "within (0, 1000]"
        yield "ewma_sd_floor", 0.0 < self.ewma_sd_floor <= limit, "above 0"
        yield "ewma_winsor_z", 0.0 < self.ewma_winsor_z <= 1000.0, "within (0, 1000]"
        yield (
            "baseline_samples",
            1 <= self.baseline_samples <= BASELINE_MAX_SAMPLES,
            f"within 1..{BASELINE_MAX_SAMPLES} samples",
        )
        yield "baseline_sd_floor", 0.0 < self.baseline_sd_floor <= limit, "above 0"
        yield "cusum_k", 0.0 <= self.cusum_k <= 1000.0, "within [0, 1000]"
        yield "cusum_h", 0.0 < self.cusum_h <= 1e6, "within (0, 1e6]"
        yield "cusum_clamp", self.cusum_h <= self.cusum_clamp <= 1e6, "within [cusum_h, 1e6]"
        yield (
            "rate_window_s",
            0.0 < self.rate_window_s <= min(_MAX_SECONDS, RATE_CAPACITY * self.expected_interval_s),
            f"above 0 and at most {RATE_CAPACITY} * expected_interval_s (the window's capacity)",
        )
        yield "rate_max_delta", 0.0 < self.rate_max_delta <= limit, "above 0"
        yield "flatline_s", 0.0 < self.flatline_s <= _MAX_SECONDS, "above 0 and at most 30 days"

    @property
    def dropout_ns(self) -> int:
        """A gap longer than this (ns) between two readings raises DROPOUT."""
        return _seconds_to_ns(self.expected_interval_s * self.dropout_factor)

    @property
    def rate_window_ns(self) -> int:
        return _seconds_to_ns(self.rate_window_s)

    @property
    def flatline_ns(self) -> int:
        return _seconds_to_ns(self.flatline_s)


@dataclass(slots=True, frozen=True)
class Presets:
    """The presets of every configured metric, and where they were read from."""

    source: str
    by_metric: Mapping[str, MetricPreset]

    @classmethod
    def of(cls, *presets: MetricPreset, source: str = "<code>") -> Presets:
        """Presets built in code (tests, tools) rather than read from a file."""
        return cls(source, {preset.metric: preset for preset in presets})

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(sorted(self.by_metric))

    def get(self, metric: str) -> MetricPreset:
        try:
            return self.by_metric[metric]
        except KeyError:
            raise UnknownMetricError(metric, self.metrics) from None


# TOML keys of a metric table (or of [defaults]) and how each is read; `metric` is the table name.
_LIST_KEYS: Final = frozenset({"detectors", "sentinels"})
_INT_KEYS: Final = frozenset(
    {"bad_quality_mask", "hampel_window", "ewma_warmup", "baseline_samples"}
)
KNOWN_KEYS: Final = frozenset(f.name for f in fields(MetricPreset)) - {"metric"}


def _read_scalar(table: Table, key: str) -> Any:
    if key in _INT_KEYS:
        return table.integer(key, low=-(2**63), high=2**63 - 1)
    return table.number(key, low=-math.inf, high=math.inf)


def _read_list(table: Table, key: str) -> Any:
    dotted = f"{table.name}.{key}"
    items = table.data[key]
    if not isinstance(items, list):
        raise table.doc.error(dotted, f"must be a list, got {items!r}")
    if key == "detectors":
        mask = 0
        for item in items:
            if not isinstance(item, str) or item not in DETECTOR_BITS:
                known = ", ".join(DETECTOR_BITS)
                raise table.doc.error(dotted, f"{item!r} is not a detector (known: {known})")
            mask |= DETECTOR_BITS[item]
        return mask
    values: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise table.doc.error(dotted, f"{item!r} is not a number")
        values.append(float(item))
    return tuple(values)


def _check_keys(table: Table) -> None:
    for key in table.data:
        if key not in KNOWN_KEYS:
            dotted = f"{table.name}.{key}"
            raise table.doc.error(dotted, "unknown key")


def _metric_preset(name: str, table: Table, defaults: Table | None) -> MetricPreset:
    try:
        metric = by_name(name)
    except CatalogueError as exc:
        raise table.doc.error(name, str(exc)) from exc
    _check_keys(table)
    origin: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key in sorted(KNOWN_KEYS):
        source = next((t for t in (table, defaults) if t is not None and t.has(key)), None)
        if source is None:
            # The catalogue's plausible range applies unless a preset narrows it.
            fallback = {
                "plausible_min": metric.plausible_min,
                "plausible_max": metric.plausible_max,
            }
            if key in fallback:
                values[key] = fallback[key]
                continue
            dotted = f"{name}.{key}"
            raise table.doc.error(dotted, "missing: set it here or in [defaults]")
        reader: Callable[[Table, str], Any] = _read_list if key in _LIST_KEYS else _read_scalar
        values[key] = reader(source, key)
        origin[key] = f"{source.name}.{key}"
    try:
        return MetricPreset(metric=name, **values)
    except PresetError as exc:
        raise table.doc.error(origin.get(exc.key, f"{name}.{exc.key}"), exc.reason) from exc


def load_presets(path: Path) -> Presets:
    """Read and validate a presets file; ConfigError names the file, line and key at fault."""
    try:
        root = load(path)
        defaults = root.optional_table("defaults")
        if defaults is not None:
            _check_keys(defaults)
        presets: dict[str, MetricPreset] = {}
        for name in root.data:
            if name == "defaults":
                continue
            table = root.optional_table(name)
            if table is None:
                raise root.doc.error(name, "must be a [metric] table")
            presets[name] = _metric_preset(name, table, defaults)
        if not presets:
            where = "(file)"
            raise root.doc.error(where, "defines no metric table")
    except SettingsError as exc:
        raise ConfigError(exc.location, exc.key, exc.why) from exc
    return Presets(str(path), presets)

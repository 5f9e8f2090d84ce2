"""The filter bank: typed wrapper around the numba kernels, per-series state and saved baselines.

The kernels run either as built ahead of time (aot.py: no numba in the process) once
`warm_up(ahead_of_time=True)` has loaded that build, or through numba's JIT (kernels.py),
imported on first use, so a process that never filters never loads numba.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from edge_agent.filters import aot, layout
from edge_agent.filters.aot import KernelBuild, ProcessKernel
from edge_agent.filters.errors import BaselineFileError, FilterInputError
from edge_agent.filters.presets import (
    ALL_DETECTORS,
    MAX_SENTINELS,
    RATE_CAPACITY,
    MetricPreset,
    Presets,
)
from edge_agent.filters.state import SeriesSnapshot

_LOGGER = logging.getLogger(__name__)

_QUALITY_MAX: Final = 0xFFFF_FFFF
_INT64_MAX: Final = 2**63 - 1


@dataclass(slots=True, frozen=True)
class SeriesKey:
    """One filtered series: a device token and a catalogue metric name."""

    device: str
    metric: str


@dataclass(slots=True, frozen=True)
class Baseline:
    """A learned personal baseline: robust centre and spread of the first usable readings."""

    value: float
    sd: float
    samples: int
    learned_at_ns: int


class BaselineStore:
    """Personal baselines by series, saved as JSON so they survive an agent restart."""

    FORMAT: Final = "bedside-twin/filter-baselines"
    VERSION: Final = 1

    def __init__(self, entries: Mapping[SeriesKey, Baseline] | None = None) -> None:
        self._entries: dict[SeriesKey, Baseline] = dict(entries or {})

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[SeriesKey, Baseline]]:
        return iter(
            sorted(self._entries.items(), key=lambda item: (item[0].device, item[0].metric))
        )

    def get(self, key: SeriesKey) -> Baseline | None:
        return self._entries.get(key)

    def put(self, key: SeriesKey, baseline: Baseline) -> None:
        self._entries[key] = baseline

    def to_json(self) -> str:
        document = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "baselines": [
                {
                    "device": key.device,
                    "metric": key.metric,
                    "value": baseline.value,
                    "sd": baseline.sd,
                    "samples": baseline.samples,
                    "learned_at_ns": baseline.learned_at_ns,
                }
                for key, baseline in self
            ],
        }
        # Python writes floats in their shortest round-trip form: a reload is bit-exact.
        return json.dumps(document, indent=1, allow_nan=False) + "\n"

    def save(self, path: Path) -> None:
        """Write atomically: temp file in the same folder, fsync, rename, fsync the folder.

        A crash leaves either the old file or the new one, never a torn mix.
        """
        data = self.to_json().encode("utf-8")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
            )
        except OSError as exc:
            raise BaselineFileError(str(path), f"cannot create a temporary file: {exc}") from exc
        try:
            # mkstemp creates the file 0600: baselines are patient data.
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, path)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise BaselineFileError(str(path), f"cannot write: {exc}") from exc

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = False) -> BaselineStore:
        """Read a saved store; a missing file gives an empty store only when `missing_ok`."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            if missing_ok:
                return cls()
            raise BaselineFileError(str(path), "does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise BaselineFileError(str(path), f"cannot read: {exc}") from exc
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_json(cls, text: str, *, source: str = "<text>") -> BaselineStore:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BaselineFileError(source, f"not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise BaselineFileError(source, "top level must be a JSON object")
        if document.get("format") != cls.FORMAT or document.get("version") != cls.VERSION:
            raise BaselineFileError(
                source,
                f"format/version {document.get('format')!r}/{document.get('version')!r} is not "
                f"{cls.FORMAT!r}/{cls.VERSION}",
            )
        rows = document.get("baselines")
        if not isinstance(rows, list):
            raise BaselineFileError(source, "'baselines' must be a list")
        store = cls()
        for index, row in enumerate(rows):
            key, baseline = _baseline_row(source, index, row)
            if store.get(key) is not None:
                raise BaselineFileError(source, f"baselines[{index}]: duplicate {key}")
            store.put(key, baseline)
        return store


def _baseline_row(source: str, index: int, row: object) -> tuple[SeriesKey, Baseline]:
    where = f"baselines[{index}]"
    if not isinstance(row, dict):
        raise BaselineFileError(source, f"{where} must be an object")
    expected = {"device", "metric", "value", "sd", "samples", "learned_at_ns"}
    if set(row) != expected:
        raise BaselineFileError(source, f"{where} must have exactly the keys {sorted(expected)}")
    device, metric = row["device"], row["metric"]
    if not isinstance(device, str) or not isinstance(metric, str) or not device or not metric:
        raise BaselineFileError(source, f"{where}: device and metric must be non-empty strings")
    value, sd = row["value"], row["sd"]
    for name, number in (("value", value), ("sd", sd)):
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise BaselineFileError(source, f"{where}.{name} must be a number")
        if not math.isfinite(number):
            raise BaselineFileError(source, f"{where}.{name} must be finite")
    if not sd > 0:
        raise BaselineFileError(source, f"{where}.sd must be above 0, is {sd}")
    samples, learned_at_ns = row["samples"], row["learned_at_ns"]
    for name, number in (("samples", samples), ("learned_at_ns", learned_at_ns)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise BaselineFileError(source, f"{where}.{name} must be an integer")
        if not 0 <= number <= _INT64_MAX:
            raise BaselineFileError(source, f"{where}.{name} must be within 0..2^63-1")
    return SeriesKey(device, metric), Baseline(float(value), float(sd), samples, learned_at_ns)


def _float_row(preset: MetricPreset) -> list[float]:
    row = [0.0] * layout.FLOAT_PARAMS
    row[layout.FP_MIN] = preset.plausible_min
    row[layout.FP_MAX] = preset.plausible_max
    row[layout.FP_HAMPEL_K] = preset.hampel_threshold
    row[layout.FP_HAMPEL_FLOOR] = preset.hampel_floor
    row[layout.FP_EWMA_ALPHA] = preset.ewma_alpha
    row[layout.FP_EWMA_Z_HIGH] = preset.ewma_z_high
    row[layout.FP_EWMA_Z_LOW] = preset.ewma_z_low
    row[layout.FP_EWMA_SD_FLOOR] = preset.ewma_sd_floor
    row[layout.FP_EWMA_WINSOR_Z] = preset.ewma_winsor_z
    row[layout.FP_CUSUM_K] = preset.cusum_k
    row[layout.FP_CUSUM_H] = preset.cusum_h
    row[layout.FP_CUSUM_CLAMP] = preset.cusum_clamp
    row[layout.FP_BASELINE_SD_FLOOR] = preset.baseline_sd_floor
    row[layout.FP_RATE_DELTA] = preset.rate_max_delta
    return row


def _int_row(preset: MetricPreset, detectors: int) -> list[int]:
    row = [0] * layout.INT_PARAMS
    row[layout.IP_DETECTORS] = preset.detectors & detectors
    row[layout.IP_BAD_QUALITY_MASK] = preset.bad_quality_mask
    row[layout.IP_DROPOUT_NS] = preset.dropout_ns
    row[layout.IP_HAMPEL_WINDOW] = preset.hampel_window
    row[layout.IP_EWMA_WARMUP] = preset.ewma_warmup
    row[layout.IP_BASELINE_SAMPLES] = preset.baseline_samples
    row[layout.IP_RATE_WINDOW_NS] = preset.rate_window_ns
    row[layout.IP_FLATLINE_NS] = preset.flatline_ns
    row[layout.IP_SENTINELS] = len(preset.sentinels)
    return row


def _column(argument: str, data: object, kinds: str) -> npt.NDArray[Any]:
    array = np.asarray(data)
    if array.ndim != 1:
        raise FilterInputError(argument, f"must be one-dimensional, has shape {array.shape}")
    if array.dtype.kind not in kinds and array.size:
        raise FilterInputError(argument, f"dtype {array.dtype} is not accepted")
    return array


def _kernel_ready(array: npt.NDArray[Any], dtype: type) -> npt.NDArray[Any]:
    """The array as the kernel's one cached signature wants it: exact dtype, C order, writeable.

    A read-only or strided array would make numba compile (and cache) another specialisation.
    """
    flags = array.flags
    if array.dtype == dtype and flags.c_contiguous and flags.writeable and flags.aligned:
        return array
    return np.require(array, dtype=dtype, requirements=["C", "A", "W"])


def _checked_int(
    argument: str, data: object, low: int, high: int, dtype: type, *, exact_ok: bool = False
) -> npt.NDArray[Any]:
    """The column as the kernel wants it, after checking each value lies within low..high.

    With `exact_ok` an array already of `dtype` is taken without a scan of its values: its bounds
    are then the dtype's own (quality as uint32) or checked by the kernel (`kernels.first_invalid`).
    """
    array = _column(argument, data, "iu")
    if exact_ok and array.dtype == dtype:
        return _kernel_ready(array, dtype)
    if array.size and array.dtype.kind in "iu":
        # Only bounds the source dtype can exceed are checked: a uint32 quality column needs none.
        info = np.iinfo(array.dtype)
        index: int | None = None
        if low > info.min and array.min() < low:
            index = int(np.argmax(array < low))
        elif high < info.max and array.max() > high:
            index = int(np.argmax(array > high))
        if index is not None:
            raise FilterInputError(argument, f"{array[index]} is outside {low}..{high}", index)
    return _kernel_ready(array, dtype)


class FilterBank:
    """Streaming anomaly filters for many series at once; see flags.py for what each bit means.

    Each series is one (device, metric) pair with its own preset and state rows. `process` may be
    called with any chunking of a series: the flags are those of the whole series in one call.
    Not thread-safe: call it from one thread at a time (the JIT kernel releases the GIL, the
    ahead-of-time one holds it).
    """

    def __init__(
        self, presets: Presets, *, detectors: int = ALL_DETECTORS, initial_capacity: int = 16
    ) -> None:
        self._presets = presets
        self._detectors = detectors & ALL_DETECTORS
        self._keys: list[SeriesKey] = []
        self._ids: dict[SeriesKey, int] = {}
        known = list(presets.by_metric.values())
        self._hampel_width = max((p.hampel_window for p in known), default=3)
        self._baseline_width = max((p.baseline_samples for p in known), default=1)
        capacity = max(1, initial_capacity)
        self._fparams = np.zeros((capacity, layout.FLOAT_PARAMS), np.float64)
        self._iparams = np.zeros((capacity, layout.INT_PARAMS), np.int64)
        self._sentinels = np.zeros((capacity, MAX_SENTINELS), np.float64)
        self._fstate = np.zeros((capacity, layout.FLOAT_STATE), np.float64)
        self._istate = np.zeros((capacity, layout.INT_STATE), np.int64)
        self._hampel_ring = np.zeros((capacity, self._hampel_width), np.float64)
        self._hampel_sorted = np.zeros((capacity, self._hampel_width), np.float64)
        self._baseline_buf = np.zeros((capacity, self._baseline_width), np.float64)
        self._rate_ts = np.zeros((capacity, RATE_CAPACITY), np.int64)
        self._rate_values = np.zeros((capacity, RATE_CAPACITY), np.float64)

    @property
    def presets(self) -> Presets:
        return self._presets

    @property
    def series_count(self) -> int:
        return len(self._keys)

    def _grow(self, capacity: int) -> None:
        for name in (
            "_fparams",
            "_iparams",
            "_sentinels",
            "_fstate",
            "_istate",
            "_hampel_ring",
            "_hampel_sorted",
            "_baseline_buf",
            "_rate_ts",
            "_rate_values",
        ):
            old: npt.NDArray[Any] = getattr(self, name)
            new = np.zeros((capacity, old.shape[1]), old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def _params(self) -> layout.Params:
        return (self._fparams, self._iparams, self._sentinels)

    def _state(self) -> layout.State:
        return (
            self._fstate,
            self._istate,
            self._hampel_ring,
            self._hampel_sorted,
            self._baseline_buf,
            self._rate_ts,
            self._rate_values,
        )

    def series_id(self, device: str, metric: str) -> int:
        """The row of (device, metric), registering it on first use (UnknownMetricError if the
        metric has no preset)."""
        key = SeriesKey(device, metric)
        found = self._ids.get(key)
        if found is not None:
            return found
        preset = self._presets.get(metric)
        index = len(self._keys)
        if index == self._fparams.shape[0]:
            self._grow(2 * index)
        self._fparams[index] = _float_row(preset)
        self._iparams[index] = _int_row(preset, self._detectors)
        self._sentinels[index, : len(preset.sentinels)] = preset.sentinels
        self._keys.append(key)
        self._ids[key] = index
        return index

    def key_of(self, series_id: int) -> SeriesKey:
        self._check_id(series_id)
        return self._keys[series_id]

    def _check_id(self, series_id: int) -> None:
        if not 0 <= series_id < len(self._keys):
            reason = f"id {series_id} is not registered (0..{len(self._keys) - 1})"
            raise FilterInputError(argument="series", reason=reason)

    def process(
        self,
        series: int | npt.ArrayLike,
        ts_ns: npt.ArrayLike,
        values: npt.ArrayLike,
        quality: npt.ArrayLike,
    ) -> npt.NDArray[np.uint32]:
        """Flags (flags.py bits) for each reading; `series` is one id or one id per reading.

        `ts_ns` are UTC ns (≥ 0), `values` in the metric's catalogue unit (NaN = no reading),
        `quality` the device's quality bits. Readings of one series must come in time order:
        a reading not after its predecessor is flagged OUT_OF_ORDER and changes no state.
        """
        # Negative timestamps and unknown series ids in int64 arrays are found by the kernel, in
        # one vectorised pass: numpy scans here cost about 5 µs a call, as much as 150 readings.
        ts = _checked_int("ts_ns", ts_ns, 0, _INT64_MAX, np.int64, exact_ok=True)
        count = ts.shape[0]
        raw_values = _column("values", values, "fiu")
        value_array = _kernel_ready(raw_values, np.float64)
        quality_array = _checked_int("quality", quality, 0, _QUALITY_MAX, np.uint32, exact_ok=True)
        for name, array in (("values", value_array), ("quality", quality_array)):
            if array.shape[0] != count:
                raise FilterInputError(name, f"has {array.shape[0]} items, ts_ns has {count}")
        last = len(self._keys) - 1
        if isinstance(series, int | np.integer):
            self._check_id(int(series))
            ids = np.full(count, int(series), np.int64)
        else:
            ids = _checked_int("series", series, 0, last, np.int64, exact_ok=True)
            if ids.shape[0] != count:
                reason = f"has {ids.shape[0]} items, ts_ns has {count}"
                raise FilterInputError(argument="series", reason=reason)
        out = np.empty(count, np.uint32)
        if count:
            readings = (ids, ts, value_array, quality_array)
            invalid = _kernel()(readings, len(self._keys), self._params(), self._state(), out)
            if invalid >= 0:
                # Nothing was processed. A bad timestamp anywhere is reported first, as before.
                _checked_int("ts_ns", ts, 0, _INT64_MAX, np.int64)
                reason = f"{ids[invalid]} is outside 0..{last}"
                raise FilterInputError(argument="series", reason=reason, index=invalid)
        return out

    def snapshot(self, series_id: int) -> SeriesSnapshot:
        """A copy of every state value of one series."""
        self._check_id(series_id)
        s = series_id
        ist = self._istate[s]
        fst = self._fstate[s]
        seen = int(ist[layout.IS_SEEN])
        window = int(self._iparams[s, layout.IP_HAMPEL_WINDOW])
        h_count = int(ist[layout.IS_HAMPEL_COUNT])
        h_pos = int(ist[layout.IS_HAMPEL_POS])
        ring = self._hampel_ring[s]
        if h_count < window:
            hampel = [float(v) for v in ring[:h_count]]
        else:
            hampel = [float(ring[(h_pos + j) % window]) for j in range(window)]
        head = int(ist[layout.IS_RATE_HEAD])
        rate_window = tuple(
            (
                int(self._rate_ts[s, (head + j) % RATE_CAPACITY]),
                float(self._rate_values[s, (head + j) % RATE_CAPACITY]),
            )
            for j in range(int(ist[layout.IS_RATE_COUNT]))
        )
        ready = ist[layout.IS_BASELINE_READY] == 1
        flat = ist[layout.IS_FLAT_SET] == 1
        return SeriesSnapshot(
            samples_seen=seen,
            last_ts_ns=int(ist[layout.IS_LAST_TS]) if seen else None,
            hampel_window=tuple(hampel),
            ewma_count=int(ist[layout.IS_EWMA_COUNT]),
            ewma_mean=float(fst[layout.FS_EWMA_MEAN]),
            ewma_var=float(fst[layout.FS_EWMA_VAR]),
            baseline_progress=int(ist[layout.IS_BASELINE_COUNT]),
            baseline=float(fst[layout.FS_BASELINE]) if ready else None,
            baseline_sd=float(fst[layout.FS_BASELINE_SD]) if ready else None,
            baseline_at_ns=int(ist[layout.IS_BASELINE_AT_NS]) if ready else None,
            cusum_high=float(fst[layout.FS_CUSUM_HIGH]),
            cusum_low=float(fst[layout.FS_CUSUM_LOW]),
            rate_window=rate_window,
            flat_value=float(fst[layout.FS_FLAT_VALUE]) if flat else None,
            flat_start_ns=int(ist[layout.IS_FLAT_START_NS]) if flat else None,
        )

    def baselines(self) -> BaselineStore:
        """The baselines learned (or restored) so far, ready to `save`."""
        store = BaselineStore()
        for s, key in enumerate(self._keys):
            if self._istate[s, layout.IS_BASELINE_READY] == 1:
                store.put(
                    key,
                    Baseline(
                        value=float(self._fstate[s, layout.FS_BASELINE]),
                        sd=float(self._fstate[s, layout.FS_BASELINE_SD]),
                        samples=int(self._istate[s, layout.IS_BASELINE_COUNT]),
                        learned_at_ns=int(self._istate[s, layout.IS_BASELINE_AT_NS]),
                    ),
                )
        return store

    def restore_baselines(self, store: BaselineStore) -> int:
        """Adopt saved baselines (CUSUM starts at once); returns how many were applied.

        Entries for metrics without a preset are skipped and logged, never applied half-way.
        """
        applied = 0
        for key, baseline in store:
            if key.metric not in self._presets.by_metric:
                _LOGGER.warning("baseline for metric %s skipped: no filter preset", key.metric)
                continue
            s = self.series_id(key.device, key.metric)
            self._fstate[s, layout.FS_BASELINE] = baseline.value
            self._fstate[s, layout.FS_BASELINE_SD] = baseline.sd
            self._fstate[s, layout.FS_CUSUM_HIGH] = 0.0
            self._fstate[s, layout.FS_CUSUM_LOW] = 0.0
            self._istate[s, layout.IS_BASELINE_COUNT] = baseline.samples
            self._istate[s, layout.IS_BASELINE_AT_NS] = baseline.learned_at_ns
            self._istate[s, layout.IS_BASELINE_READY] = 1
            applied += 1
        return applied

    def reset_baseline(self, series_id: int) -> None:
        """Forget the series' baseline (e.g. after a clinical change) so it is learned again."""
        self._check_id(series_id)
        self._fstate[series_id, layout.FS_BASELINE] = 0.0
        self._fstate[series_id, layout.FS_BASELINE_SD] = 0.0
        self._fstate[series_id, layout.FS_CUSUM_HIGH] = 0.0
        self._fstate[series_id, layout.FS_CUSUM_LOW] = 0.0
        self._istate[series_id, layout.IS_BASELINE_COUNT] = 0
        self._istate[series_id, layout.IS_BASELINE_AT_NS] = 0
        self._istate[series_id, layout.IS_BASELINE_READY] = 0


@dataclass(slots=True, frozen=True)
class KernelCacheInfo:
    """What numba did for one entry kernel in this process: compiled, or loaded from its cache.

    `cache_path` is the folder of its cache files, None when the JIT is off or nothing could be
    cached.
    """

    name: str
    jit_enabled: bool
    signatures: tuple[str, ...]
    cache_hits: int
    cache_misses: int
    cache_path: str | None


# A small, valid preset: warm_up only needs the exact argument types of a real call.
_WARM_UP_PRESET: Final = MetricPreset(
    metric="heart_rate",
    detectors=ALL_DETECTORS,
    plausible_min=20.0,
    plausible_max=300.0,
    sentinels=(255.0,),
    bad_quality_mask=1,
    expected_interval_s=1.0,
    dropout_factor=5.0,
    hampel_window=3,
    hampel_threshold=4.0,
    hampel_floor=2.0,
    ewma_alpha=0.1,
    ewma_warmup=2,
    ewma_z_high=4.0,
    ewma_z_low=4.0,
    ewma_sd_floor=2.0,
    ewma_winsor_z=3.0,
    baseline_samples=2,
    baseline_sd_floor=3.0,
    cusum_k=1.0,
    cusum_h=5.0,
    cusum_clamp=10.0,
    rate_window_s=10.0,
    rate_max_delta=20.0,
    flatline_s=3.0,
)


@dataclass(slots=True)
class _Selection:
    kernel: ProcessKernel | None = None
    build: KernelBuild | None = None


_SELECTED: Final = _Selection()
"""The kernel every bank of this process runs; chosen once, by warm_up or by the first call."""


def _kernel() -> ProcessKernel:
    kernel = _SELECTED.kernel
    if kernel is None:
        from edge_agent.filters import kernels  # noqa: PLC0415 - numba only when the JIT runs

        kernel = _SELECTED.kernel = kernels.process
    return kernel


def warm_up(*, ahead_of_time: bool = False) -> KernelBuild:
    """Make the kernels ready before readings arrive; returns which ones run.

    With `ahead_of_time` (what the agent does) the ahead-of-time build is loaded, built first in
    a child process when this version has none yet (3-5 s, once); numba is then never imported.
    When that build cannot be had (`KernelBuild.reason`, logged as a warning) or without the
    flag, numba's JIT compiles the kernels or loads them from its on-disk cache. Nothing here
    changes numba's configuration. On a gateway numba's cache lives where numba puts it:
    `NUMBA_CACHE_DIR` when set (a systemd unit can point it at the agent's cache folder), else
    `__pycache__` beside kernels.py when writable, else the user cache (`~/.cache/numba`); with
    none writable the kernels compile at every start (kernels.njit). An index entry is keyed by
    the source file's content hash, numba's version, the Python version, the argument types and
    the CPU model and features, so an upgrade of the agent or of numba, or a copied image on
    another CPU, recompiles once (1.8 s on the 2-core test machine) and rewrites the entry; stale
    files are never loaded. A cached start takes 0.13 s. See docs/filters.md.
    """
    if ahead_of_time:
        kernel, build = aot.load_or_build()
        _SELECTED.build = build
        if kernel is not None:
            _SELECTED.kernel = kernel
            built = "" if build.built_s is None else f" (built now in {build.built_s:.1f} s)"
            _LOGGER.info("filter kernels: ahead-of-time build %s%s", build.path, built)
        else:
            _LOGGER.warning("filter kernels run on numba's JIT: %s", build.reason)
    bank = FilterBank(Presets.of(_WARM_UP_PRESET), initial_capacity=1)
    series = bank.series_id("warm-up", "heart_rate")
    ts_ns = np.arange(8, dtype=np.int64) * 1_000_000_000
    values = np.array([70.0, 71.0, 70.0, 150.0, math.nan, 70.0, 70.0, 70.0])
    bank.process(series, ts_ns, values, np.zeros(8, np.uint32))
    return kernels_in_use()


def kernels_in_use() -> KernelBuild:
    """Which kernels the banks of this process run (the JIT until warm_up chose otherwise)."""
    build = _SELECTED.build
    if build is not None and (build.ahead_of_time or _SELECTED.kernel is not None):
        return build
    return KernelBuild(
        ahead_of_time=False,
        path=None,
        built_s=None,
        reason="numba's JIT: no ahead-of-time build was asked for",
    )


def kernel_cache_info() -> tuple[KernelCacheInfo, ...]:
    """Per entry kernel: compiled signatures and numba's cache hits and misses in this process.

    After `warm_up()` in a fresh process, hits > 0 and misses == 0 mean nothing was compiled.
    A diagnostic of the JIT: it imports numba, also when the ahead-of-time build runs.
    """
    import numba  # noqa: PLC0415 - a diagnostic of the JIT; the agent itself may run without it

    from edge_agent.filters import kernels  # noqa: PLC0415

    jit = not getattr(numba.config, "DISABLE_JIT", 0)
    infos: list[KernelCacheInfo] = []
    for name, kernel in kernels.ENTRY_KERNELS.items():
        stats: Any = getattr(kernel, "stats", None)
        signatures: Any = getattr(kernel, "signatures", ())
        infos.append(
            KernelCacheInfo(
                name=name,
                jit_enabled=jit and stats is not None,
                signatures=tuple(str(sig) for sig in signatures),
                cache_hits=sum(stats.cache_hits.values()) if stats is not None else 0,
                cache_misses=sum(stats.cache_misses.values()) if stats is not None else 0,
                cache_path=None
                if stats is None or stats.cache_path is None
                else str(stats.cache_path),
            )
        )
    return tuple(infos)

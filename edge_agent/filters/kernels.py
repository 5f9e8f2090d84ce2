"""Numba kernels of the streaming filter bank: one pass over readings, all state in arrays.

Every detector keeps its state per series (one row per device and metric) in preallocated arrays
owned by `bank.FilterBank`, so a series processed in any chunking yields the same flags as in one
piece. The kernels are reached only through `bank.py`; `reference.py` states the same algorithms
in plain Python and the tests hold both to identical flags.

Floating-point operations are written in exactly the order of the reference (no fastmath), so the
two agree bit for bit rather than merely within a tolerance.

`process` takes its arrays in three tuples, `readings = (series, ts_ns, values, quality)`,
`params = (fparams, iparams, sentinels)` and `state = (fstate, istate, hampel_ring, hampel_sorted,
baseline_buf, rate_ts, rate_values)`, unpacks them once and hands each detector the rows it needs.
Numba has no keyword-only arguments, hence the `noqa: PLR0917` on detectors taking many arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from edge_agent.filters.flags import (
    CUSUM_HIGH,
    CUSUM_LOW,
    DROPOUT,
    EWMA_HIGH,
    EWMA_LOW,
    FLATLINE,
    IMPLAUSIBLE,
    MISSING,
    OUT_OF_ORDER,
    QUALITY_BAD,
    RATE_HIGH,
    SPIKE,
    UNUSABLE,
    WARMUP,
)
from edge_agent.filters.presets import (
    DETECT_CUSUM,
    DETECT_DROPOUT,
    DETECT_EWMA,
    DETECT_FLATLINE,
    DETECT_HAMPEL,
    DETECT_RATE,
    RATE_CAPACITY,
)

_F = TypeVar("_F", bound=Callable[..., Any])

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
Readings = tuple[I64, I64, F64, U32]
Params = tuple[F64, I64, F64]
State = tuple[F64, I64, F64, F64, F64, I64, F64]


def njit(*, cache: bool, nogil: bool) -> Callable[[_F], _F]:
    """`numba.njit` with a typed face (mypy keeps each kernel's signature) and without NRT.

    The kernels never allocate: every buffer is preallocated by bank.py. Numba's memory manager
    (NRT) would still increment and decrement an atomic reference count for every array passed to
    every detector on every reading, which measured at over half the run time. `_nrt=False` is
    numba's own switch for that (an underscore option, so a numba upgrade must rerun the tests,
    which CI does). With NUMBA_DISABLE_JIT=1 numba returns the plain Python function.
    """
    options: dict[str, Any] = {"cache": cache, "nogil": nogil, "_nrt": False}
    return cast("Callable[[_F], _F]", numba.njit(**options))


# 1.4826 * MAD estimates the standard deviation of normal data: 1 / (inverse normal CDF of 3/4)
# (Rousseeuw & Croux 1993, "Alternatives to the median absolute deviation", JASA 88:1273).
MAD_TO_SIGMA: Final = 1.4826

# Columns of the per-series parameter rows, filled by bank.py from a MetricPreset.
FP_MIN: Final = 0
FP_MAX: Final = 1
FP_HAMPEL_K: Final = 2
FP_HAMPEL_FLOOR: Final = 3
FP_EWMA_ALPHA: Final = 4
FP_EWMA_Z_HIGH: Final = 5
FP_EWMA_Z_LOW: Final = 6
FP_EWMA_SD_FLOOR: Final = 7
FP_EWMA_WINSOR_Z: Final = 8
FP_CUSUM_K: Final = 9
FP_CUSUM_H: Final = 10
FP_CUSUM_CLAMP: Final = 11
FP_BASELINE_SD_FLOOR: Final = 12
FP_RATE_DELTA: Final = 13
FLOAT_PARAMS: Final = 14

IP_DETECTORS: Final = 0
IP_BAD_QUALITY_MASK: Final = 1
IP_DROPOUT_NS: Final = 2
IP_HAMPEL_WINDOW: Final = 3
IP_EWMA_WARMUP: Final = 4
IP_BASELINE_SAMPLES: Final = 5
IP_RATE_WINDOW_NS: Final = 6
IP_FLATLINE_NS: Final = 7
IP_SENTINELS: Final = 8
INT_PARAMS: Final = 9

# Columns of the per-series state rows.
FS_EWMA_MEAN: Final = 0
FS_EWMA_VAR: Final = 1
FS_CUSUM_HIGH: Final = 2
FS_CUSUM_LOW: Final = 3
FS_BASELINE: Final = 4
FS_BASELINE_SD: Final = 5
FS_FLAT_VALUE: Final = 6
FLOAT_STATE: Final = 7

IS_SEEN: Final = 0
IS_LAST_TS: Final = 1
IS_HAMPEL_POS: Final = 2
IS_HAMPEL_COUNT: Final = 3
IS_EWMA_COUNT: Final = 4
IS_BASELINE_COUNT: Final = 5
IS_BASELINE_READY: Final = 6
IS_BASELINE_AT_NS: Final = 7
IS_RATE_HEAD: Final = 8
IS_RATE_COUNT: Final = 9
IS_FLAT_START_NS: Final = 10
IS_FLAT_SET: Final = 11
INT_STATE: Final = 12


@njit(cache=True, nogil=True)
def plausibility(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, quality: int, s: int, fparams: F64, iparams: I64, sentinels: F64
) -> int:
    """IMPLAUSIBLE (and MISSING for NaN) for NaN, inf, out of range or a sentinel; QUALITY_BAD."""
    found = 0
    # The range is finite, so one test inside it also rules out NaN and both infinities.
    if fparams[s, FP_MIN] <= x <= fparams[s, FP_MAX]:
        for j in range(iparams[s, IP_SENTINELS]):
            if x == sentinels[s, j]:
                found = IMPLAUSIBLE
                break
    elif math.isnan(x):
        found = IMPLAUSIBLE | MISSING
    else:
        found = IMPLAUSIBLE
    if quality & iparams[s, IP_BAD_QUALITY_MASK]:
        found |= QUALITY_BAD
    return found


@njit(cache=True, nogil=True)
def median_of_sorted(ordered: F64, s: int, n: int) -> float:
    """Median of the first n (at least 1) values of the ascending row s."""
    half = n // 2
    if n % 2 == 1:
        return float(ordered[s, half])
    return float((ordered[s, half - 1] + ordered[s, half]) / 2.0)


@njit(cache=True, nogil=True)
def shell_sort(rows: F64, s: int, n: int) -> None:
    """Sort the first n values of row s in place (Shell 1959, halving gaps).

    Written out because numba's own sort needs its memory manager, which the kernels go without.
    """
    gap = n // 2
    while gap > 0:
        for j in range(gap, n):
            value = rows[s, j]
            k = j
            while k >= gap and rows[s, k - gap] > value:
                rows[s, k] = rows[s, k - gap]
                k -= gap
            rows[s, k] = value
        gap //= 2


@njit(cache=True, nogil=True)
def mad_of_sorted(ordered: F64, s: int, n: int, centre: float) -> float:
    """Median absolute deviation from `centre` of the first n ascending values, in O(n).

    Deviations below the centre grow leftwards and those above grow rightwards, so merging the two
    runs outwards from the centre visits deviations in ascending order.
    """
    right = 0
    while right < n and ordered[s, right] < centre:
        right += 1
    left = right - 1
    low_rank = (n - 1) // 2
    high_rank = n // 2
    low_dev = 0.0
    high_dev = 0.0
    for rank in range(high_rank + 1):
        if left >= 0 and (right >= n or centre - ordered[s, left] <= ordered[s, right] - centre):
            dev = centre - ordered[s, left]
            left -= 1
        else:
            dev = ordered[s, right] - centre
            right += 1
        if rank == low_rank:
            low_dev = dev
        if rank == high_rank:
            high_dev = dev
    if n % 2 == 1:
        return float(low_dev)
    return float((low_dev + high_dev) / 2.0)


@njit(cache=True, nogil=True)
def sorted_replace(ordered: F64, s: int, n: int, old: float, new: float) -> None:
    """Replace one element equal to `old` by `new` in the first n ascending values of row s.

    Positions come from counts and the shift is a fixed-length pass of selects: at W <= 31 this
    beats searching, whose data-dependent loop exits the CPU mispredicts.
    """
    at_old = 0
    below_new = 0
    for j in range(n):
        at_old += ordered[s, j] < old
        below_new += ordered[s, j] < new
    if new > old:
        # `old` was counted below `new`: close its gap by shifting [at_old, target) leftwards.
        target = below_new - 1
        for j in range(n - 1):
            inside = (j >= at_old) & (j < target)
            ordered[s, j] = ordered[s, j + 1] if inside else ordered[s, j]
    else:
        target = below_new
        for j in range(n - 1, 0, -1):
            inside = (j > target) & (j <= at_old)
            ordered[s, j] = ordered[s, j - 1] if inside else ordered[s, j]
    ordered[s, target] = new


@njit(cache=True, nogil=True)
def sorted_insert(ordered: F64, s: int, n: int, value: float) -> None:
    """Insert `value` into the first n ascending values (the array has room for n + 1)."""
    j = n
    while j > 0 and ordered[s, j - 1] > value:
        ordered[s, j] = ordered[s, j - 1]
        j -= 1
    ordered[s, j] = value


@njit(cache=True, nogil=True)
def hampel(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, s: int, fparams: F64, iparams: I64, istate: I64, ring: F64, ordered: F64
) -> bool:
    """Causal Hampel: spike when |x - median| > k * max(1.4826 * MAD, floor) of the last W values.

    Every usable value enters the window, spikes included, so a genuine level shift stops being a
    spike once it fills half the window (Pearson et al. 2016, "Generalized Hampel filters",
    EURASIP J. Adv. Signal Process. 2016:87). The window is kept sorted alongside its ring, so
    median and MAD cost O(W) per reading instead of two sorts.
    """
    window = iparams[s, IP_HAMPEL_WINDOW]
    count = istate[s, IS_HAMPEL_COUNT]
    pos = istate[s, IS_HAMPEL_POS]
    spike = False
    if count == window:
        centre = median_of_sorted(ordered, s, count)
        deviation = abs(x - centre)
        k = fparams[s, FP_HAMPEL_K]
        # A flat integer signal has MAD 0: the floor keeps its single-unit steps from being spikes.
        floor = fparams[s, FP_HAMPEL_FLOOR]
        # The scale is never below the floor, so within k * floor no MAD is needed (the usual case;
        # rounding is monotonic, so the shortcut cannot change a flag).
        if deviation > k * floor:
            scale = max(MAD_TO_SIGMA * mad_of_sorted(ordered, s, count, centre), floor)
            spike = deviation > k * scale
        sorted_replace(ordered, s, count, ring[s, pos], x)
    else:
        sorted_insert(ordered, s, count, x)
        istate[s, IS_HAMPEL_COUNT] = count + 1
    ring[s, pos] = x
    # A compare instead of `% window`: an integer division per reading costs more than the rest.
    pos += 1
    istate[s, IS_HAMPEL_POS] = 0 if pos == window else pos
    return spike


@njit(cache=True, nogil=True)
def ewma(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, s: int, fparams: F64, iparams: I64, fstate: F64, istate: I64
) -> int:
    """EWMA z-score against the recent level, with warm-up and winsorised updates.

    The recursion is the exponentially weighted mean and variance of Finch (2009, "Incremental
    calculation of weighted mean and variance", section on exponentially weighted variance);
    during warm-up the weight is 1/(n + 1), a plain running mean, until it falls to `ewma_alpha`.
    """
    count = istate[s, IS_EWMA_COUNT]
    mean = fstate[s, FS_EWMA_MEAN]
    var = fstate[s, FS_EWMA_VAR]
    found = 0
    if count >= iparams[s, IP_EWMA_WARMUP]:
        sd = max(math.sqrt(var), fparams[s, FP_EWMA_SD_FLOOR])
        z = (x - mean) / sd
        if z > fparams[s, FP_EWMA_Z_HIGH]:
            found = EWMA_HIGH
        elif z < -fparams[s, FP_EWMA_Z_LOW]:
            found = EWMA_LOW
        # Winsorising bounds the pull of one outlier on both the level and the variance.
        low = mean - fparams[s, FP_EWMA_WINSOR_Z] * sd
        high = mean + fparams[s, FP_EWMA_WINSOR_Z] * sd
        update = min(max(x, low), high)
        weight = fparams[s, FP_EWMA_ALPHA]
    else:
        update = x
        weight = max(1.0 / (count + 1), fparams[s, FP_EWMA_ALPHA])
    delta = update - mean
    fstate[s, FS_EWMA_MEAN] = mean + weight * delta
    fstate[s, FS_EWMA_VAR] = (1.0 - weight) * (var + weight * delta * delta)
    istate[s, IS_EWMA_COUNT] = count + 1
    return found


@njit(cache=True, nogil=True)
def learn_baseline(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, ts: int, s: int, fparams: F64, iparams: I64, fstate: F64, istate: I64, buf: F64
) -> None:
    """Collect the first N usable values; then baseline = median, sd = max(1.4826 * MAD, floor)."""
    n = istate[s, IS_BASELINE_COUNT]
    buf[s, n] = x
    n += 1
    istate[s, IS_BASELINE_COUNT] = n
    if n < iparams[s, IP_BASELINE_SAMPLES]:
        return
    # The buffer is scratch from here on: sort it in place, then overwrite it with deviations.
    shell_sort(buf, s, n)
    centre = median_of_sorted(buf, s, n)
    for j in range(n):
        buf[s, j] = abs(buf[s, j] - centre)
    shell_sort(buf, s, n)
    sd = MAD_TO_SIGMA * median_of_sorted(buf, s, n)
    fstate[s, FS_BASELINE] = centre
    fstate[s, FS_BASELINE_SD] = max(sd, fparams[s, FP_BASELINE_SD_FLOOR])
    istate[s, IS_BASELINE_READY] = 1
    istate[s, IS_BASELINE_AT_NS] = ts


@njit(cache=True, nogil=True)
def cusum(x: float, s: int, fparams: F64, fstate: F64) -> int:
    """Two-sided tabular CUSUM (Page 1954, Biometrika 41:100) of z = (x - baseline) / sd.

    Both sums are clamped to `cusum_clamp`, which bounds how long a flag outlives its excursion.
    """
    z = (x - fstate[s, FS_BASELINE]) / fstate[s, FS_BASELINE_SD]
    k = fparams[s, FP_CUSUM_K]
    clamp = fparams[s, FP_CUSUM_CLAMP]
    high = min(max(fstate[s, FS_CUSUM_HIGH] + z - k, 0.0), clamp)
    low = min(max(fstate[s, FS_CUSUM_LOW] - z - k, 0.0), clamp)
    fstate[s, FS_CUSUM_HIGH] = high
    fstate[s, FS_CUSUM_LOW] = low
    found = 0
    if high > fparams[s, FP_CUSUM_H]:
        found |= CUSUM_HIGH
    if low > fparams[s, FP_CUSUM_H]:
        found |= CUSUM_LOW
    return found


@njit(cache=True, nogil=True)
def rate(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, ts: int, s: int, fparams: F64, iparams: I64, istate: I64, ring_ts: I64, ring: F64
) -> bool:
    """Change against the oldest value kept within the last `rate_window_ns` (by timestamps).

    The window holds at most RATE_CAPACITY values; beyond that the oldest is dropped.
    """
    head = istate[s, IS_RATE_HEAD]
    count = istate[s, IS_RATE_COUNT]
    window_ns = iparams[s, IP_RATE_WINDOW_NS]
    while count > 0 and ts - ring_ts[s, head] > window_ns:
        head = (head + 1) % RATE_CAPACITY
        count -= 1
    too_fast = False
    if count > 0:
        too_fast = abs(x - ring[s, head]) > fparams[s, FP_RATE_DELTA]
    if count == RATE_CAPACITY:
        head = (head + 1) % RATE_CAPACITY
        count -= 1
    tail = (head + count) % RATE_CAPACITY
    ring_ts[s, tail] = ts
    ring[s, tail] = x
    istate[s, IS_RATE_HEAD] = head
    istate[s, IS_RATE_COUNT] = count + 1
    return too_fast


@njit(cache=True, nogil=True)
def flatline(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, ts: int, s: int, iparams: I64, fstate: F64, istate: I64
) -> bool:
    """True once the value has stayed identical for longer than `flatline_ns`."""
    if istate[s, IS_FLAT_SET] == 1 and x == fstate[s, FS_FLAT_VALUE]:
        return bool(ts - istate[s, IS_FLAT_START_NS] > iparams[s, IP_FLATLINE_NS])
    fstate[s, FS_FLAT_VALUE] = x
    istate[s, IS_FLAT_START_NS] = ts
    istate[s, IS_FLAT_SET] = 1
    return False


@njit(cache=True, nogil=True)
def ordering(ts: int, s: int, iparams: I64, istate: I64) -> int:
    """OUT_OF_ORDER for a timestamp not after the last one; DROPOUT after a long gap."""
    seen = istate[s, IS_SEEN]
    if seen > 0 and ts <= istate[s, IS_LAST_TS]:
        return OUT_OF_ORDER
    found = 0
    if (
        (iparams[s, IP_DETECTORS] & DETECT_DROPOUT) != 0
        and seen > 0
        and ts - istate[s, IS_LAST_TS] > iparams[s, IP_DROPOUT_NS]
    ):
        found = DROPOUT
    istate[s, IS_LAST_TS] = ts
    istate[s, IS_SEEN] = seen + 1
    return found


@njit(cache=True, nogil=True)
def process(readings: Readings, params: Params, state: State, out: U32) -> None:
    """Run every enabled detector over the readings in order and write their flags to `out`.

    Unusable readings (flags.UNUSABLE) feed no statistical detector, so a NaN never reaches any
    state; a SPIKE is an artifact that feeds only the Hampel window.
    """
    series, ts_ns, values, quality = readings
    fparams, iparams, sentinels = params
    fstate, istate, hampel_ring, hampel_sorted, baseline_buf, rate_ts, rate_values = state
    for i in range(series.shape[0]):
        s = series[i]
        ts = ts_ns[i]
        x = values[i]
        found = ordering(ts, s, iparams, istate)
        found |= plausibility(x, quality[i], s, fparams, iparams, sentinels)
        if found & UNUSABLE:
            out[i] = found
            continue
        detectors = iparams[s, IP_DETECTORS]
        use_hampel = (detectors & DETECT_HAMPEL) != 0
        use_ewma = (detectors & DETECT_EWMA) != 0
        use_cusum = (detectors & DETECT_CUSUM) != 0
        if (
            (use_hampel and istate[s, IS_HAMPEL_COUNT] < iparams[s, IP_HAMPEL_WINDOW])
            or (use_ewma and istate[s, IS_EWMA_COUNT] < iparams[s, IP_EWMA_WARMUP])
            or (use_cusum and istate[s, IS_BASELINE_READY] == 0)
        ):
            found |= WARMUP
        if use_hampel and hampel(x, s, fparams, iparams, istate, hampel_ring, hampel_sorted):
            out[i] = found | SPIKE
            continue
        if use_ewma:
            found |= ewma(x, s, fparams, iparams, fstate, istate)
        if use_cusum:
            if istate[s, IS_BASELINE_READY] == 1:
                found |= cusum(x, s, fparams, fstate)
            else:
                learn_baseline(x, ts, s, fparams, iparams, fstate, istate, baseline_buf)
        if (detectors & DETECT_RATE) != 0 and rate(
            x, ts, s, fparams, iparams, istate, rate_ts, rate_values
        ):
            found |= RATE_HIGH
        if (detectors & DETECT_FLATLINE) != 0 and flatline(x, ts, s, iparams, fstate, istate):
            found |= FLATLINE
        out[i] = found


ENTRY_KERNELS: Final = {"process": process}
"""The kernels bank.py calls directly; `bank.warm_up()` compiles each of them."""

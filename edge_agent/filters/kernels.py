"""Numba kernels of the streaming filter bank: one pass over readings, all state in arrays.

Every detector keeps its state per series (one row per device and metric) in preallocated arrays
owned by `bank.FilterBank`, so a series processed in any chunking yields the same flags as in one
piece. The kernels are reached only through `bank.py`; `reference.py` states the same algorithms
in plain Python and the tests hold both to identical flags.

Floating-point operations are written in exactly the order of the reference (no fastmath), so the
two agree bit for bit rather than merely within a tolerance.

`process` takes its arrays in three tuples, `readings = (series, ts_ns, values, quality)`,
`params = (fparams, iparams, sentinels)` and `state = (fstate, istate, hampel_ring, hampel_sorted,
baseline_buf, rate_ts, rate_values)`, unpacks them once and hands each detector row views of its
series (`fp = fparams[s]`, ...), which it reads at fixed column offsets. Numba has no keyword-only
arguments, hence the `noqa: PLR0917` on detectors taking many arrays.

Where the time goes (scripts/bench-filters.py, 2 shared cores): the per-reading detectors are
inlined into `process` (`forceinline`), because a call passes every 2-D array as nine machine
words and the Hampel call alone cost a sixth of the run; `sorted_replace` is one branch-free pass;
and the checks on the readings' ids and timestamps run here, in one vectorised pass, instead of as
numpy scans per call in bank.py.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import numba

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
from edge_agent.filters.layout import (
    F64,
    FP_BASELINE_SD_FLOOR,
    FP_CUSUM_CLAMP,
    FP_CUSUM_H,
    FP_CUSUM_K,
    FP_EWMA_ALPHA,
    FP_EWMA_SD_FLOOR,
    FP_EWMA_WINSOR_Z,
    FP_EWMA_Z_HIGH,
    FP_EWMA_Z_LOW,
    FP_HAMPEL_FLOOR,
    FP_HAMPEL_K,
    FP_MAX,
    FP_MIN,
    FP_RATE_DELTA,
    FS_BASELINE,
    FS_BASELINE_SD,
    FS_CUSUM_HIGH,
    FS_CUSUM_LOW,
    FS_EWMA_MEAN,
    FS_EWMA_VAR,
    FS_FLAT_VALUE,
    I64,
    IP_BAD_QUALITY_MASK,
    IP_BASELINE_SAMPLES,
    IP_DETECTORS,
    IP_DROPOUT_NS,
    IP_EWMA_WARMUP,
    IP_FLATLINE_NS,
    IP_HAMPEL_WINDOW,
    IP_RATE_WINDOW_NS,
    IP_SENTINELS,
    IS_BASELINE_AT_NS,
    IS_BASELINE_COUNT,
    IS_BASELINE_READY,
    IS_EWMA_COUNT,
    IS_FLAT_SET,
    IS_FLAT_START_NS,
    IS_HAMPEL_COUNT,
    IS_HAMPEL_POS,
    IS_LAST_TS,
    IS_RATE_COUNT,
    IS_RATE_HEAD,
    IS_SEEN,
    U32,
    Params,
    Readings,
    State,
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

_LOGGER = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])

IMPORTED_CONSTANTS_DIGEST: Final = (
    "34daa2de0484b477fea6482603b598783211c718a10d7778422c485fff6f8a91"
)
"""SHA-256 of the name and value of every constant imported above from layout.py, flags.py and
presets.py. numba compiles them into the kernels as literals, but its on-disk cache keys on this
file's text alone: a value changed there must change this line, or a stale compiled kernel would
be loaded. tests/unit/edge_agent/filters/test_filters_aot.py computes it and names the new value.
"""


def njit(*, cache: bool, nogil: bool, forceinline: bool = False) -> Callable[[_F], _F]:
    """`numba.njit` with a typed face (mypy keeps each kernel's signature) and without NRT.

    The kernels never allocate: every buffer is preallocated by bank.py. Numba's memory manager
    (NRT) would still increment and decrement an atomic reference count for every array passed to
    every detector on every reading, which measured at over half the run time. `_nrt=False` is
    numba's own switch for that (an underscore option, so a numba upgrade must rerun the tests,
    which CI does). With NUMBA_DISABLE_JIT=1 numba returns the plain Python function.

    `forceinline` marks a detector for LLVM to inline into `process` whatever its size.
    `error_model="numpy"` drops the zero test numba's default (Python) model puts before every
    division to raise ZeroDivisionError: no divisor here can be zero (standard deviations are
    floored above 0 by preset validation, counts start at 1, the other divisors are constants),
    so the results are unchanged. Neither option touches floating-point semantics: no fastmath.

    If numba has nowhere to write its cache it raises RuntimeError at decoration, which would
    fail the agent's import; the kernels are then compiled without the cache and one warning
    names NUMBA_CACHE_DIR (docs/filters.md, "Numba's cache on a gateway").
    """
    options: dict[str, Any] = {
        "cache": cache,
        "nogil": nogil,
        "_nrt": False,
        "forceinline": forceinline,
        "error_model": "numpy",
    }

    def decorate(func: _F) -> _F:
        try:
            return cast("_F", numba.njit(**options)(func))
        except RuntimeError:
            # numba found nowhere to write its cache: the package folder is read-only (a system
            # install, systemd's ProtectSystem=strict), NUMBA_CACHE_DIR is unset and the user has
            # no writable ~/.cache. Compile at every start instead of failing the import.
            if not cache:
                raise
            _warn_uncached()
            return cast("_F", numba.njit(**{**options, "cache": False})(func))

    return decorate


@functools.cache
def _warn_uncached() -> None:
    """Say once per process that the cache is off, and what to set."""
    _LOGGER.warning(
        "no writable numba cache folder for %s: the filter kernels are compiled at every start "
        "(about 2 s); set NUMBA_CACHE_DIR to a folder the agent can write",
        __file__,
    )


# 1.4826 * MAD estimates the standard deviation of normal data: 1 / (inverse normal CDF of 3/4)
# (Rousseeuw & Croux 1993, "Alternatives to the median absolute deviation", JASA 88:1273).
MAD_TO_SIGMA: Final = 1.4826


@njit(cache=True, nogil=True, forceinline=True)
def plausibility(x: float, quality: int, fp: F64, ip: I64, sentinels: F64) -> int:
    """IMPLAUSIBLE (and MISSING for NaN) for NaN, inf, out of range or a sentinel; QUALITY_BAD."""
    found = 0
    # The range is finite, so one test inside it also rules out NaN and both infinities.
    if fp[FP_MIN] <= x <= fp[FP_MAX]:
        for j in range(ip[IP_SENTINELS]):
            if x == sentinels[j]:
                found = IMPLAUSIBLE
                break
    elif math.isnan(x):
        found = IMPLAUSIBLE | MISSING
    else:
        found = IMPLAUSIBLE
    if quality & ip[IP_BAD_QUALITY_MASK]:
        found |= QUALITY_BAD
    return found


@njit(cache=True, nogil=True, forceinline=True)
def median_of_sorted(ordered: F64, n: int) -> float:
    """Median of the first n (at least 1) values of the ascending row."""
    half = n // 2
    if n % 2 == 1:
        return float(ordered[half])
    return float((ordered[half - 1] + ordered[half]) / 2.0)


@njit(cache=True, nogil=True)
def shell_sort(row: F64, n: int) -> None:
    """Sort the first n values of the row in place (Shell 1959, halving gaps).

    Written out because numba's own sort needs its memory manager, which the kernels go without.
    """
    gap = n // 2
    while gap > 0:
        for j in range(gap, n):
            value = row[j]
            k = j
            while k >= gap and row[k - gap] > value:
                row[k] = row[k - gap]
                k -= gap
            row[k] = value
        gap //= 2


@njit(cache=True, nogil=True)
def mad_of_sorted(ordered: F64, n: int, centre: float) -> float:
    """Median absolute deviation from `centre` of the first n ascending values, in O(n).

    Deviations below the centre grow leftwards and those above grow rightwards, so merging the two
    runs outwards from the centre visits deviations in ascending order.
    """
    right = 0
    while right < n and ordered[right] < centre:
        right += 1
    left = right - 1
    low_rank = (n - 1) // 2
    high_rank = n // 2
    low_dev = 0.0
    high_dev = 0.0
    for rank in range(high_rank + 1):
        if left >= 0 and (right >= n or centre - ordered[left] <= ordered[right] - centre):
            dev = centre - ordered[left]
            left -= 1
        else:
            dev = ordered[right] - centre
            right += 1
        if rank == low_rank:
            low_dev = dev
        if rank == high_rank:
            high_dev = dev
    if n % 2 == 1:
        return float(low_dev)
    return float((low_dev + high_dev) / 2.0)


@njit(cache=True, nogil=True, forceinline=True)
def sorted_replace(ordered: F64, n: int, old: float, new: float) -> None:
    """Replace one element equal to `old` by `new` in the first n ascending values of the row.

    One pass, without searching: b, the row without `old`, is a[j] below `old` and a[j + 1]
    from there on (`old` is in the row), and inserting `new` into b puts max(b[j - 1], min(b[j],
    new)) at j, with b[-1] = -inf and b[n - 1] = +inf. Each step is compares and selects with
    no data-dependent branch. Counting both positions and then shifting, with a branch on
    whether `new` is above `old` (a coin toss on a noisy signal), took about 10 ns per reading
    at W = 9 where this takes under 2. min and max return one of their operands, so the row
    holds exactly the values of the window.
    """
    below = -math.inf  # b[j - 1]
    for j in range(n - 1):
        here = ordered[j]
        b = here if here < old else ordered[j + 1]
        ordered[j] = max(below, min(b, new))
        below = b
    ordered[n - 1] = max(below, new)


@njit(cache=True, nogil=True, forceinline=True)
def sorted_insert(ordered: F64, n: int, value: float) -> None:
    """Insert `value` into the first n ascending values (the row has room for n + 1)."""
    j = n
    while j > 0 and ordered[j - 1] > value:
        ordered[j] = ordered[j - 1]
        j -= 1
    ordered[j] = value


@njit(cache=True, nogil=True, forceinline=True)
def hampel(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, fp: F64, ip: I64, ist: I64, ring: F64, ordered: F64
) -> bool:
    """Causal Hampel: spike when |x - median| > k * max(1.4826 * MAD, floor) of the last W values.

    Every usable value enters the window, spikes included, so a genuine level shift stops being a
    spike once it fills half the window (Pearson et al. 2016, "Generalized Hampel filters",
    EURASIP J. Adv. Signal Process. 2016:87). The window is kept sorted alongside its ring, so
    median and MAD cost O(W) per reading instead of two sorts.
    """
    window = ip[IP_HAMPEL_WINDOW]
    count = ist[IS_HAMPEL_COUNT]
    pos = ist[IS_HAMPEL_POS]
    spike = False
    if count == window:
        centre = median_of_sorted(ordered, count)
        deviation = abs(x - centre)
        k = fp[FP_HAMPEL_K]
        # A flat integer signal has MAD 0: the floor keeps its single-unit steps from being spikes.
        floor = fp[FP_HAMPEL_FLOOR]
        # The scale is never below the floor, so within k * floor no MAD is needed (the usual case;
        # rounding is monotonic, so the shortcut cannot change a flag).
        if deviation > k * floor:
            scale = max(MAD_TO_SIGMA * mad_of_sorted(ordered, count, centre), floor)
            spike = deviation > k * scale
        sorted_replace(ordered, count, ring[pos], x)
    else:
        sorted_insert(ordered, count, x)
        ist[IS_HAMPEL_COUNT] = count + 1
    ring[pos] = x
    # A compare instead of `% window`: an integer division per reading costs more than the rest.
    pos += 1
    ist[IS_HAMPEL_POS] = 0 if pos == window else pos
    return spike


@njit(cache=True, nogil=True, forceinline=True)
def ewma(x: float, fp: F64, ip: I64, fs: F64, ist: I64) -> int:
    """EWMA z-score against the recent level, with warm-up and winsorised updates.

    The recursion is the exponentially weighted mean and variance of Finch (2009, "Incremental
    calculation of weighted mean and variance", section on exponentially weighted variance);
    during warm-up the weight is 1/(n + 1), a plain running mean, until it falls to `ewma_alpha`.
    """
    count = ist[IS_EWMA_COUNT]
    mean = fs[FS_EWMA_MEAN]
    var = fs[FS_EWMA_VAR]
    found = 0
    if count >= ip[IP_EWMA_WARMUP]:
        sd = max(math.sqrt(var), fp[FP_EWMA_SD_FLOOR])
        z = (x - mean) / sd
        if z > fp[FP_EWMA_Z_HIGH]:
            found = EWMA_HIGH
        elif z < -fp[FP_EWMA_Z_LOW]:
            found = EWMA_LOW
        # Winsorising bounds the pull of one outlier on both the level and the variance.
        low = mean - fp[FP_EWMA_WINSOR_Z] * sd
        high = mean + fp[FP_EWMA_WINSOR_Z] * sd
        update = min(max(x, low), high)
        weight = fp[FP_EWMA_ALPHA]
    else:
        update = x
        weight = max(1.0 / (count + 1), fp[FP_EWMA_ALPHA])
    delta = update - mean
    fs[FS_EWMA_MEAN] = mean + weight * delta
    fs[FS_EWMA_VAR] = (1.0 - weight) * (var + weight * delta * delta)
    ist[IS_EWMA_COUNT] = count + 1
    return found


@njit(cache=True, nogil=True)
def learn_baseline(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, ts: int, fp: F64, ip: I64, fs: F64, ist: I64, buf: F64
) -> None:
    """Collect the first N usable values; then baseline = median, sd = max(1.4826 * MAD, floor)."""
    n = ist[IS_BASELINE_COUNT]
    buf[n] = x
    n += 1
    ist[IS_BASELINE_COUNT] = n
    if n < ip[IP_BASELINE_SAMPLES]:
        return
    # The buffer is scratch from here on: sort it in place, then overwrite it with deviations.
    shell_sort(buf, n)
    centre = median_of_sorted(buf, n)
    for j in range(n):
        buf[j] = abs(buf[j] - centre)
    shell_sort(buf, n)
    sd = MAD_TO_SIGMA * median_of_sorted(buf, n)
    fs[FS_BASELINE] = centre
    fs[FS_BASELINE_SD] = max(sd, fp[FP_BASELINE_SD_FLOOR])
    ist[IS_BASELINE_READY] = 1
    ist[IS_BASELINE_AT_NS] = ts


@njit(cache=True, nogil=True, forceinline=True)
def cusum(x: float, fp: F64, fs: F64) -> int:
    """Two-sided tabular CUSUM (Page 1954, Biometrika 41:100) of z = (x - baseline) / sd.

    Both sums are clamped to `cusum_clamp`, which bounds how long a flag outlives its excursion.
    """
    z = (x - fs[FS_BASELINE]) / fs[FS_BASELINE_SD]
    k = fp[FP_CUSUM_K]
    clamp = fp[FP_CUSUM_CLAMP]
    high = min(max(fs[FS_CUSUM_HIGH] + z - k, 0.0), clamp)
    low = min(max(fs[FS_CUSUM_LOW] - z - k, 0.0), clamp)
    fs[FS_CUSUM_HIGH] = high
    fs[FS_CUSUM_LOW] = low
    found = 0
    if high > fp[FP_CUSUM_H]:
        found |= CUSUM_HIGH
    if low > fp[FP_CUSUM_H]:
        found |= CUSUM_LOW
    return found


@njit(cache=True, nogil=True, forceinline=True)
def rate(  # noqa: PLR0917 - numba has no keyword-only arguments
    x: float, ts: int, fp: F64, ip: I64, ist: I64, ring_ts: I64, ring: F64
) -> bool:
    """Change against the oldest value kept within the last `rate_window_ns` (by timestamps).

    The window holds at most RATE_CAPACITY values; beyond that the oldest is dropped.
    """
    head = ist[IS_RATE_HEAD]
    count = ist[IS_RATE_COUNT]
    window_ns = ip[IP_RATE_WINDOW_NS]
    while count > 0 and ts - ring_ts[head] > window_ns:
        head = (head + 1) % RATE_CAPACITY
        count -= 1
    too_fast = False
    if count > 0:
        too_fast = abs(x - ring[head]) > fp[FP_RATE_DELTA]
    if count == RATE_CAPACITY:
        head = (head + 1) % RATE_CAPACITY
        count -= 1
    tail = (head + count) % RATE_CAPACITY
    ring_ts[tail] = ts
    ring[tail] = x
    ist[IS_RATE_HEAD] = head
    ist[IS_RATE_COUNT] = count + 1
    return too_fast


@njit(cache=True, nogil=True, forceinline=True)
def flatline(x: float, ts: int, ip: I64, fs: F64, ist: I64) -> bool:
    """True once the value has stayed identical for longer than `flatline_ns`."""
    if ist[IS_FLAT_SET] == 1 and x == fs[FS_FLAT_VALUE]:
        return bool(ts - ist[IS_FLAT_START_NS] > ip[IP_FLATLINE_NS])
    fs[FS_FLAT_VALUE] = x
    ist[IS_FLAT_START_NS] = ts
    ist[IS_FLAT_SET] = 1
    return False


@njit(cache=True, nogil=True, forceinline=True)
def ordering(ts: int, ip: I64, ist: I64) -> int:
    """OUT_OF_ORDER for a timestamp not after the last one; DROPOUT after a long gap."""
    seen = ist[IS_SEEN]
    if seen > 0 and ts <= ist[IS_LAST_TS]:
        return OUT_OF_ORDER
    found = 0
    if (
        (ip[IP_DETECTORS] & DETECT_DROPOUT) != 0
        and seen > 0
        and ts - ist[IS_LAST_TS] > ip[IP_DROPOUT_NS]
    ):
        found = DROPOUT
    ist[IS_LAST_TS] = ts
    ist[IS_SEEN] = seen + 1
    return found


@njit(cache=True, nogil=True, forceinline=True)
def first_invalid(series: I64, ts_ns: I64, series_count: int) -> int:
    """Index of the first reading with a negative timestamp or an unknown series, else -1."""
    bad = False
    for i in range(series.shape[0]):
        # ORs with no early exit let LLVM vectorise the pass; the index is looked for after a hit.
        bad |= (ts_ns[i] < 0) | (series[i] < 0) | (series[i] >= series_count)
    if not bad:
        return -1
    for i in range(series.shape[0]):
        if ts_ns[i] < 0 or series[i] < 0 or series[i] >= series_count:
            return i
    return -1


@njit(cache=True, nogil=True)
def process(readings: Readings, series_count: int, params: Params, state: State, out: U32) -> int:
    """Run every enabled detector over the readings in order and write their flags to `out`.

    Returns -1, or the index of the first reading with a negative timestamp or a series id not
    below `series_count` (the rows registered), in which case nothing was processed. Unusable
    readings (flags.UNUSABLE) feed no statistical detector, so a NaN never reaches any state; a
    SPIKE is an artifact that feeds only the Hampel window.
    """
    series, ts_ns, values, quality = readings
    fparams, iparams, sentinels = params
    invalid = first_invalid(series, ts_ns, series_count)
    if invalid >= 0:
        return invalid
    fstate, istate, hampel_ring, hampel_sorted, baseline_buf, rate_ts, rate_values = state
    for i in range(series.shape[0]):
        s = series[i]
        ts = ts_ns[i]
        x = values[i]
        # One row view per table: each detector then reads its columns at fixed offsets.
        fp = fparams[s]
        ip = iparams[s]
        fs = fstate[s]
        ist = istate[s]
        found = ordering(ts, ip, ist)
        found |= plausibility(x, quality[i], fp, ip, sentinels[s])
        if found & UNUSABLE:
            out[i] = found
            continue
        detectors = ip[IP_DETECTORS]
        use_hampel = (detectors & DETECT_HAMPEL) != 0
        use_ewma = (detectors & DETECT_EWMA) != 0
        use_cusum = (detectors & DETECT_CUSUM) != 0
        if (
            (use_hampel and ist[IS_HAMPEL_COUNT] < ip[IP_HAMPEL_WINDOW])
            or (use_ewma and ist[IS_EWMA_COUNT] < ip[IP_EWMA_WARMUP])
            or (use_cusum and ist[IS_BASELINE_READY] == 0)
        ):
            found |= WARMUP
        if use_hampel and hampel(x, fp, ip, ist, hampel_ring[s], hampel_sorted[s]):
            out[i] = found | SPIKE
            continue
        if use_ewma:
            found |= ewma(x, fp, ip, fs, ist)
        if use_cusum:
            if ist[IS_BASELINE_READY] == 1:
                found |= cusum(x, fp, fs)
            else:
                learn_baseline(x, ts, fp, ip, fs, ist, baseline_buf[s])
        if (detectors & DETECT_RATE) != 0 and rate(x, ts, fp, ip, ist, rate_ts[s], rate_values[s]):
            found |= RATE_HIGH
        if (detectors & DETECT_FLATLINE) != 0 and flatline(x, ts, ip, fs, ist):
            found |= FLATLINE
        out[i] = found
    return -1


ENTRY_KERNELS: Final = {"process": process}
"""The kernels bank.py calls directly; `bank.warm_up()` compiles each of them."""

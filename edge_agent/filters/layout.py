"""The filter kernels' array layout: column offsets of the per-series rows, and the array types.

Kept apart from kernels.py so that bank.py can size and fill the rows without importing numba:
the agent runs the ahead-of-time build of the kernels (aot.py) and never loads numba or LLVM.
numba's on-disk cache keys on kernels.py's text only, not on what it imports: kernels.py pins a
digest of every constant it takes from here, flags.py and presets.py
(`kernels.IMPORTED_CONSTANTS_DIGEST`, checked by tests/unit/edge_agent/filters/test_filters_aot.py),
so changing a value here changes kernels.py and numba recompiles.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
Readings = tuple[I64, I64, F64, U32]
Params = tuple[F64, I64, F64]
State = tuple[F64, I64, F64, F64, F64, I64, F64]


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

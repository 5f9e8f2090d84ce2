"""Child process of aot.build: compile `kernels.process` ahead of time with numba.pycc.

Usage: python -m edge_agent.filters.aot_build <folder> <module name>. The module is compiled in
a private temporary folder inside <folder> and renamed into place, so two agents building at
once never load a half-written file. Exit status 0 when the module is in place.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path
from typing import Any, Final

# One reading column, one row table: the exact types bank.py hands the kernel (C-contiguous,
# kernels.Readings / Params / State). The extension checks none of them at run time.
_COLUMN: Final = "{}[::1]"
_TABLE: Final = "{}[:, ::1]"
SIGNATURE: Final = (
    "i8("
    f"Tuple(({_COLUMN.format('i8')}, {_COLUMN.format('i8')}, {_COLUMN.format('f8')}, "
    f"{_COLUMN.format('u4')})), "
    "i8, "
    f"Tuple(({_TABLE.format('f8')}, {_TABLE.format('i8')}, {_TABLE.format('f8')})), "
    f"Tuple(({_TABLE.format('f8')}, {_TABLE.format('i8')}, {_TABLE.format('f8')}, "
    f"{_TABLE.format('f8')}, {_TABLE.format('f8')}, {_TABLE.format('i8')}, "
    f"{_TABLE.format('f8')})), "
    f"{_COLUMN.format('u4')})"
)
"""numba's type string of `kernels.process` as bank.py calls it (returns the invalid index)."""


def compile_module(folder: Path, name: str) -> Path:
    """Compile into `folder`/<name><ext suffix>; returns the path."""
    from numba.core.errors import NumbaPendingDeprecationWarning  # noqa: PLC0415

    with warnings.catch_warnings():
        # numba marks pycc "pending deprecation" (a replacement is announced, none released);
        # aot.py falls back to the JIT on any failure here, including pycc's removal.
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        # numba ships no type hints for pycc: it is used through Any.
        pycc: Any = importlib.import_module("numba.pycc")

    from edge_agent.filters import kernels  # noqa: PLC0415

    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
    try:
        cc = pycc.CC(name)
        cc.output_dir = str(scratch)
        cc.output_file = name + suffix
        # The kernels never allocate (kernels.njit: `_nrt=False`), so no runtime is linked in.
        cc.use_nrt = False
        cc.verbose = False
        # No target_cpu: the architecture's generic CPU, so a copied image runs anywhere.
        kernel: Any = kernels.process
        cc.export("process", SIGNATURE)(kernel.py_func)
        cc.compile()
        target = folder / (name + suffix)
        (scratch / (name + suffix)).replace(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python -m edge_agent.filters.aot_build <folder> <module name>", file=sys.stderr
        )
        return 2
    try:
        compile_module(Path(argv[0]), argv[1])
    except Exception as exc:
        # One line for the agent's log (aot.build reads the last line), e.g. no C compiler.
        text = str(exc).strip()
        print(f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

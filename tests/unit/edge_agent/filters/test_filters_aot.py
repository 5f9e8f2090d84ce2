"""The kernels built ahead of time: the reference's flags, loaded without numba, never stale.

The build takes a few seconds; one build serves the whole module.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_agent.filters import FilterBank, Presets, aot
from edge_agent.filters import bank as bank_module
from edge_agent.filters.aot import ProcessKernel
from edge_agent.filters.errors import AheadOfTimeError
from tests.unit.edge_agent.filters import test_filters_equivalence as equivalence

KERNELS_SOURCE = Path(aot.__file__).with_name("kernels.py")
CONSTANT_MODULES = (
    "edge_agent.filters.layout",
    "edge_agent.filters.flags",
    "edge_agent.filters.presets",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cache folder holding this version's build, and its key."""
    folder = tmp_path_factory.mktemp("numba-cache") / aot.FOLDER_NAME
    key = aot.build_key()
    aot.build(folder, key)
    return folder, key


@contextlib.contextmanager
def running(kernel: ProcessKernel) -> Iterator[None]:
    """Every bank in this process runs `kernel` for the duration."""
    selected = bank_module._SELECTED
    previous = selected.kernel
    selected.kernel = kernel
    try:
        yield
    finally:
        selected.kernel = previous


def test_the_built_kernels_give_the_reference_flags_over_any_chunking(
    built: tuple[Path, str],
) -> None:
    folder, key = built
    kernel = aot.load(aot.module_file(folder, key), key)
    with running(kernel):
        # The JIT's own equivalence properties, run again on the ahead-of-time machine code.
        equivalence.test_any_chunking_of_interleaved_series_gives_the_reference_flags()
        equivalence.test_unusable_readings_leave_the_other_readings_flags_alone()


def test_the_built_kernels_take_every_input_the_bank_accepts(built: tuple[Path, str]) -> None:
    """The extension checks no types: the bank must hand it exactly its signature's arrays."""
    folder, key = built
    presets = Presets.of(bank_module._WARM_UP_PRESET)  # every detector on

    def flags(kernel: ProcessKernel | None) -> list[list[int]]:
        out: list[list[int]] = []
        selected = bank_module._kernel() if kernel is None else kernel
        with running(selected):
            bank = FilterBank(presets, initial_capacity=1)
            series = bank.series_id("device", "heart_rate")
            stamps = np.arange(1, 41, dtype=np.int64) * 1_000_000_000
            values = np.array([72.0, 73.0, 150.0, math.nan] * 10)
            frozen = values.copy()
            frozen.flags.writeable = False
            # Lists, other dtypes, strided, read-only: each converted before the kernel sees it.
            out.append(
                bank.process(series, stamps[:10].tolist(), values[:10].tolist(), [0] * 10).tolist()
            )
            out.append(
                bank.process(
                    np.full(5, series, np.int32),
                    stamps[10:15],
                    values[10:15].astype(np.float32),
                    np.zeros(5, np.uint8),
                ).tolist()
            )
            out.append(
                bank.process(
                    series, stamps[15:35:2], frozen[15:35:2], np.zeros(20, np.uint32)[::2]
                ).tolist()
            )
            out.append(
                bank.process(
                    series,
                    stamps[35:],
                    np.array([72, 73, 150, 74, 75], np.int64),
                    np.ones(5, np.int64),
                ).tolist()
            )
        return out

    assert flags(aot.load(aot.module_file(folder, key), key)) == flags(None)


def _probe(cache_dir: Path, prelude: str = "") -> dict[str, object]:
    """warm_up(ahead_of_time=True) in a fresh interpreter, as the agent starts."""
    code = prelude + (
        "import json, sys\n"
        "from edge_agent.filters import warm_up\n"
        "build = warm_up(ahead_of_time=True)\n"
        "print(json.dumps({'aot': build.ahead_of_time, 'path': build.path,"
        " 'built_s': build.built_s, 'reason': build.reason,"
        " 'numba': 'numba' in sys.modules, 'llvmlite': 'llvmlite' in sys.modules}))\n"
    )
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)  # the compiled paths are under test even then
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_start_with_the_build_in_its_cache_loads_it_and_never_imports_numba(
    built: tuple[Path, str],
) -> None:
    folder, key = built
    started = _probe(folder.parent)
    assert started == {
        "aot": True,
        "path": str(aot.module_file(folder, key)),
        "built_s": None,
        "reason": None,
        "numba": False,
        "llvmlite": False,
    }


def test_without_a_compiler_the_jit_runs_and_later_starts_do_not_try_again(
    tmp_path: Path,
) -> None:
    # numba.pycc refuses at once when the C compiler distutils would call is missing.
    prelude = "import os\nos.environ['CC'] = '/nonexistent/cc'\n"
    first = _probe(tmp_path, prelude)
    assert first["aot"] is False
    assert first["numba"] is True
    assert "the build failed" in str(first["reason"])
    failed = list((tmp_path / aot.FOLDER_NAME).glob("*.failed"))
    assert len(failed) == 1
    second = _probe(tmp_path, prelude)
    assert second["aot"] is False
    assert "an earlier start" in str(second["reason"])
    assert str(failed[0]) in str(second["reason"])


def test_a_failed_build_is_remembered_until_its_marker_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NUMBA_DISABLE_JIT", raising=False)
    attempts: list[str] = []

    def no_compiler(folder: Path, key: str) -> Path:
        attempts.append(key)
        msg = "the build failed: no C compiler"
        raise AheadOfTimeError(msg)

    monkeypatch.setattr(aot, "build", no_compiler)
    for _ in range(3):
        kernel, build = aot.load_or_build()
        assert kernel is None
        assert not build.ahead_of_time
        assert "no C compiler" in str(build.reason)
    assert len(attempts) == 1
    for marker in (tmp_path / aot.FOLDER_NAME).glob("*.failed"):
        marker.unlink()
    aot.load_or_build()
    assert len(attempts) == 2


def test_a_corrupt_build_is_refused_and_the_jit_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NUMBA_DISABLE_JIT", raising=False)
    folder = tmp_path / aot.FOLDER_NAME
    folder.mkdir()
    aot.module_file(folder, aot.build_key()).write_bytes(b"not an ELF object")
    kernel, build = aot.load_or_build()
    assert kernel is None
    assert "cannot be loaded" in str(build.reason)


def test_with_the_jit_disabled_the_kernels_stay_plain_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    kernel, build = aot.load_or_build()
    assert kernel is None
    assert "NUMBA_DISABLE_JIT" in str(build.reason)
    assert not (tmp_path / aot.FOLDER_NAME).exists()


def test_the_build_key_changes_with_every_source_the_kernels_depend_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = Path(aot.__file__).parent
    for name in aot._SOURCES:
        shutil.copy(here / name, tmp_path / name)
    monkeypatch.setattr(aot, "_HERE", tmp_path)
    keys = {aot.build_key()}
    for name in aot._SOURCES:
        path = tmp_path / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        keys.add(aot.build_key())
        path.write_bytes(original)
    assert len(keys) == 1 + len(aot._SOURCES)
    assert aot.build_key() in keys


def _imported_constants_digest() -> str:
    lines: list[str] = []
    for node in ast.parse(KERNELS_SOURCE.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module in CONSTANT_MODULES:
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name)
                if isinstance(value, int | float):
                    lines.append(f"{node.module}.{alias.name}={value!r}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def test_kernels_py_pins_the_constants_numba_compiles_into_it() -> None:
    """numba's cache keys on kernels.py's text: an imported constant changed elsewhere must
    change kernels.py too, or a stale compiled kernel is loaded."""
    from edge_agent.filters import kernels  # noqa: PLC0415 - imports numba

    digest = _imported_constants_digest()
    assert digest == kernels.IMPORTED_CONSTANTS_DIGEST, (
        f"set IMPORTED_CONSTANTS_DIGEST in kernels.py to {digest!r}"
    )

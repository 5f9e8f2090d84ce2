"""The filter kernels built ahead of time: numba compiles them once, the agent loads them bare.

numba's JIT keeps numba and LLVM in the process for as long as it runs: about 100 MB of the
agent's resident memory (libllvmlite.so alone is 35 MB at import and 69 MB once the cached
kernels are loaded) and 0.4 s of start-up. The ahead-of-time build is the same kernels compiled
by the same numba (`numba.pycc`, in a child process, aot_build.py) into a CPython extension
module, which needs only numpy to load. The agent uses it when it can (`bank.warm_up(
ahead_of_time=True)`) and falls back to the JIT otherwise: no C compiler on the gateway, no
writable cache folder, `NUMBA_DISABLE_JIT=1`, or a numba without pycc.

The build is a cache entry, like numba's own: `bt_filter_kernels_<key><ext suffix>` in the
cache folder, where the key hashes the kernels' source files, the numba, numpy and Python
versions and the machine architecture, so an upgrade builds once at the next start and a stale
build is never loaded. It is compiled for the generic CPU of the architecture (no host-specific
instructions), so an image copied to another gateway keeps working. A failed build leaves a
`.failed` file with its reason beside where the module would be, so later starts go straight to
the JIT instead of paying for the attempt again; deleting it retries.

The folder is the first that can be written of: `$NUMBA_CACHE_DIR/bedside-twin-filters` (the
systemd unit sets NUMBA_CACHE_DIR), `__pycache__` beside this file, `$XDG_CACHE_HOME` (or
`~/.cache`) `/bedside-twin/filters`. Whoever can write that folder can run code in the agent,
exactly as with numba's cache (whose index files are pickles): it must belong to the agent's
user.

The extension does not check its arguments' types: an array of another dtype or layout reaches
the machine code as it is. bank.py is its only caller and hands it exactly the arrays of the
exported signature (`aot_build.SIGNATURE`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import edge_agent
from edge_agent.filters.errors import AheadOfTimeError
from edge_agent.filters.layout import U32, Params, Readings, State

_LOGGER = logging.getLogger(__name__)

MODULE_STEM: Final = "bt_filter_kernels"
BUILD_TIMEOUT_S: Final = 300.0
"""A build takes 3-5 s on the 2-core test machine; this only stops a hung compiler."""
FOLDER_NAME: Final = "bedside-twin-filters"
_HERE: Final = Path(__file__).resolve().parent
# Everything the compiled code depends on: the kernels, the constants they import, the build.
_SOURCES: Final = ("kernels.py", "layout.py", "flags.py", "presets.py", "aot.py", "aot_build.py")
_FAILED_SUFFIX: Final = ".failed"

ProcessKernel = Callable[[Readings, int, Params, State, U32], int]
"""`kernels.process`, whichever way it was compiled."""


@dataclass(slots=True, frozen=True)
class KernelBuild:
    """Which kernels the filter bank runs, and why."""

    ahead_of_time: bool
    """True: the extension module at `path`; False: numba's JIT (or plain Python)."""
    path: str | None
    built_s: float | None
    """Seconds this process spent building the module; None when it was loaded as it was."""
    reason: str | None
    """Why the JIT runs instead, for the log; None when ahead-of-time."""


def build_key() -> str:
    """What the compiled module must match: sources, numba, numpy, Python, architecture."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode())
        digest.update((_HERE / name).read_bytes())
    for distribution in ("numba", "numpy"):
        digest.update(f"{distribution}={importlib.metadata.version(distribution)}".encode())
    digest.update(f"{sys.implementation.cache_tag}|{platform.machine()}".encode())
    return digest.hexdigest()[:20]


def module_name(key: str) -> str:
    return f"{MODULE_STEM}_{key}"


def module_file(folder: Path, key: str) -> Path:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return folder / f"{module_name(key)}{suffix}"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # As numba checks its own cache folders: by writing, not by asking os.access.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def cache_folder() -> Path | None:
    """The first folder the build can be written to, or None."""
    candidates: list[Path] = []
    numba_cache = os.environ.get("NUMBA_CACHE_DIR")
    if numba_cache:
        candidates.append(Path(numba_cache) / FOLDER_NAME)
    candidates.append(_HERE / "__pycache__")
    user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidates.append(Path(user_cache) / "bedside-twin" / "filters")
    for folder in candidates:
        if _writable(folder):
            return folder
    return None


def load(path: Path, key: str) -> ProcessKernel:
    """The `process` kernel of a built module; AheadOfTimeError when it cannot be loaded."""
    name = module_name(key)
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        msg = f"{path}: not loadable as an extension module"
        raise AheadOfTimeError(msg)
    try:
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except ImportError as exc:
        msg = f"{path}: cannot be loaded ({exc}); delete it to rebuild"
        raise AheadOfTimeError(msg) from exc
    kernel = getattr(module, "process", None)
    if not callable(kernel):
        msg = f"{path}: has no process function; delete it to rebuild"
        raise AheadOfTimeError(msg)
    return cast("ProcessKernel", kernel)


def build(folder: Path, key: str) -> Path:
    """Compile the module into `folder` in a child process; AheadOfTimeError on failure.

    A child, because compiling loads numba and LLVM: the agent's own memory never holds them.
    """
    target = module_file(folder, key)
    # The child compiles the very sources the key was computed from.
    package_root = str(Path(edge_agent.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (package_root, env.get("PYTHONPATH", "")) if part
    )
    env.pop("NUMBA_DISABLE_JIT", None)
    command = [sys.executable, "-m", "edge_agent.filters.aot_build", str(folder), module_name(key)]
    try:
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"the build did not finish: {exc}"
        raise AheadOfTimeError(msg) from exc
    if done.returncode != 0 or not target.is_file():
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        msg = f"the build failed: {last}"
        raise AheadOfTimeError(msg)
    return target


def load_or_build() -> tuple[ProcessKernel | None, KernelBuild]:
    """The ahead-of-time `process` kernel, building it first when needed; or None and why."""

    def jit(reason: str) -> tuple[ProcessKernel | None, KernelBuild]:
        return None, KernelBuild(ahead_of_time=False, path=None, built_s=None, reason=reason)

    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return jit("NUMBA_DISABLE_JIT is set: the kernels run as plain Python")
    folder = cache_folder()
    if folder is None:
        return jit("no writable cache folder (set NUMBA_CACHE_DIR)")
    key = build_key()
    target = module_file(folder, key)
    failed = target.with_name(target.name + _FAILED_SUFFIX)
    built_s: float | None = None
    if not target.is_file():
        if failed.is_file():
            reason = failed.read_text(encoding="utf-8", errors="replace").strip()
            return jit(f"{reason} (an earlier start; delete {failed} to try again)")
        started = time.monotonic()
        try:
            build(folder, key)
        except AheadOfTimeError as exc:
            with contextlib.suppress(OSError):
                failed.write_text(exc.reason + "\n", encoding="utf-8")
            return jit(exc.reason)
        built_s = time.monotonic() - started
    try:
        kernel = load(target, key)
    except AheadOfTimeError as exc:
        return jit(exc.reason)
    return kernel, KernelBuild(ahead_of_time=True, path=str(target), built_s=built_s, reason=None)

"""Numba's on-disk cache: after one start has compiled the kernels, the next compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edge_agent.filters import kernel_cache_info, warm_up

# Runs in a fresh interpreter: warm up, then report what numba did for each entry kernel.
_PROBE = """
import dataclasses, json
from edge_agent.filters import kernel_cache_info, warm_up
warm_up()
print(json.dumps([dataclasses.asdict(info) for info in kernel_cache_info()]))
"""


# As on a gateway with a read-only install, no NUMBA_CACHE_DIR and no writable home: every folder
# numba tries refuses the write (numba checks each by creating a temporary file in it).
_READ_ONLY = """
import numba.core.caching as caching
def refuse(self):
    raise PermissionError(13, "read-only", self.get_cache_path())
caching._CacheLocator.ensure_cache_path = refuse
"""


def _start(cache_dir: Path | None, prelude: str = "") -> tuple[list[dict[str, object]], str]:
    """Warm up in a fresh interpreter: what numba did per entry kernel, and what was logged."""
    env = dict(os.environ)
    # The compiled path is under test here even when this suite runs with the JIT disabled.
    env.pop("NUMBA_DISABLE_JIT", None)
    env.pop("NUMBA_CACHE_DIR", None)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", prelude + _PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    infos: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return infos, done.stderr


def test_a_second_start_loads_every_kernel_from_the_cache(tmp_path: Path) -> None:
    first, _ = _start(tmp_path)
    assert first
    assert all(info["jit_enabled"] for info in first)
    assert all(info["cache_misses"] == 1 and info["cache_hits"] == 0 for info in first)
    assert any(tmp_path.rglob("*.nbi")), "numba wrote no cache index under NUMBA_CACHE_DIR"
    second, _ = _start(tmp_path)
    assert [info["name"] for info in second] == [info["name"] for info in first]
    assert all(info["cache_misses"] == 0 and info["cache_hits"] == 1 for info in second)
    assert all(info["signatures"] == first[0]["signatures"] for info in second[:1])
    assert all(str(info["cache_path"]).startswith(str(tmp_path)) for info in second)


def test_kernel_cache_info_reports_one_signature_after_warm_up() -> None:
    warm_up()
    for info in kernel_cache_info():
        # With NUMBA_DISABLE_JIT=1 the kernels are plain Python: nothing compiled, nothing cached.
        assert info.jit_enabled == (len(info.signatures) == 1)
        assert info.cache_hits + info.cache_misses == len(info.signatures)


def test_without_a_writable_cache_folder_the_kernels_compile_and_say_what_to_set() -> None:
    infos, stderr = _start(None, prelude=_READ_ONLY)
    assert infos
    assert all(info["jit_enabled"] and info["cache_path"] is None for info in infos)
    assert "NUMBA_CACHE_DIR" in stderr

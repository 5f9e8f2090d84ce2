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


def _start(cache_dir: Path) -> list[dict[str, object]]:
    env = dict(os.environ)
    # The compiled path is under test here even when this suite runs with the JIT disabled.
    env.pop("NUMBA_DISABLE_JIT", None)
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    infos: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return infos


def test_a_second_start_loads_every_kernel_from_the_cache(tmp_path: Path) -> None:
    first = _start(tmp_path)
    assert first
    assert all(info["jit_enabled"] for info in first)
    assert all(info["cache_misses"] == 1 and info["cache_hits"] == 0 for info in first)
    assert any(tmp_path.rglob("*.nbi")), "numba wrote no cache index under NUMBA_CACHE_DIR"
    second = _start(tmp_path)
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

"""SIGKILL the sealer 100 times while it seals: no (key, nonce) pair is ever used twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# A child that seals as fast as it can and records every (epoch, seq) it used, flushed at once,
# so whatever a SIGKILL interrupts, each used nonce is on disk before the next seal.
CHILD = """
import os, sys
from pathlib import Path
from edge_agent.sealer import Sealer, SequenceCounter
state, log = Path(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
sealer = Sealer(bytes(32), "crash-gw", SequenceCounter(state, reserve_block=64))
while True:
    seq, _envelope = sealer.seal("bt/v1/gw/crash-gw/up/telemetry", b"frame")
    log.write(f"{sealer.epoch} {seq}\\n")
"""


def test_no_nonce_is_reused_across_100_sigkills(tmp_path: Path) -> None:
    state, log = tmp_path / "seq.json", tmp_path / "used.log"
    rng = random.Random(5)
    for _ in range(100):
        size_before = log.stat().st_size if log.exists() else 0
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(state), str(log)])
        deadline = time.monotonic() + 30.0
        while (
            not log.exists() or log.stat().st_size == size_before
        ) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the middle of sealing
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
    used = [tuple(line.split()) for line in log.read_text().splitlines() if line.count(" ") == 1]
    assert len(used) > 1000
    assert len(set(used)) == len(used), "a (key epoch, sequence number) pair was used twice"
    # The reservation, not luck, is what protected us: every restart resumed past its block.
    assert len({epoch for epoch, _ in used}) == 1

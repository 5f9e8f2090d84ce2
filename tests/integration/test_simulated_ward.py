"""The simulated ward behind the agent's real BLE and serial sources.

The agent's own BleManager (bleak, simulated radio behind its backend seam) and SerialSource
(pyserial on pseudo-terminals) read the ward; what they emit is reconciled with the ledger the
simulated devices wrote: nothing missing, nothing extra, every value equal. Once with the ward
in the same process, once served on a unix socket (`firmware-sims ward`) and reached through
the socket's bleak backend and the manifest it serves.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from edge_agent.protocol import by_code
from edge_agent.sources import Reading
from firmware_sims.ledger import Identity, Ledger, read_ledger, reconcile
from firmware_sims.remote.server import WardServer
from firmware_sims.remote.ward import remote_ward
from firmware_sims.ward import SimulatedWard, WardSettings

pytestmark = pytest.mark.integration

RUN_S = 3.0
WAIT_S = 20.0  # a hang guard, not a performance bound


@pytest.mark.asyncio
async def test_every_delivered_value_is_emitted_once_by_the_real_sources(tmp_path: Path) -> None:
    settings = WardSettings(
        patients=2, seed=4, interval_scale=0.25, implant_receivers=1, bedside_monitors=1
    )
    readings: list[Reading] = []

    async def emit(reading: Reading) -> None:
        readings.append(reading)

    with Ledger(tmp_path / "ledger.jsonl") as ledger:
        ward = SimulatedWard(settings, ports_dir=tmp_path / "ports", ledger=ledger)
        sources = ward.sources()
        async with ward.powered(), asyncio.TaskGroup() as group:
            for source in sources:
                group.create_task(source.run(emit))
            await asyncio.sleep(RUN_S)
            async with asyncio.timeout(WAIT_S):
                await ward.quiesce()
            for source in sources:
                source.stop()
    _assert_exactly_once(tmp_path / "ledger.jsonl", readings)


@pytest.mark.asyncio
async def test_a_ward_served_on_a_socket_is_read_exactly_once_too(tmp_path: Path) -> None:
    settings = WardSettings(
        patients=2, seed=4, interval_scale=0.25, implant_receivers=1, bedside_monitors=1
    )
    readings: list[Reading] = []

    async def emit(reading: Reading) -> None:
        readings.append(reading)

    socket_path = tmp_path / "ward.sock"
    with Ledger(tmp_path / "ledger.jsonl") as ledger:
        ward = SimulatedWard(
            settings, ports_dir=tmp_path / "ports", ledger=ledger, readers_elsewhere=True
        )
        async with ward.powered(), asyncio.TaskGroup() as serving:
            listening = asyncio.Event()
            server = serving.create_task(
                WardServer(ward.radio, socket_path, ward).serve(listening.set)
            )
            await listening.wait()
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
            async with remote_ward(socket_path, wait_s=5.0) as remote:
                sources = remote.sources()
                async with asyncio.TaskGroup() as group:
                    for source in sources:
                        group.create_task(source.run(emit))
                    await asyncio.sleep(RUN_S)
                    async with asyncio.timeout(WAIT_S):
                        await remote.quiesce()
                    for source in sources:
                        source.stop()
            server.cancel()
    assert not socket_path.exists()
    _assert_exactly_once(tmp_path / "ledger.jsonl", readings)


def _assert_exactly_once(ledger_file: Path, readings: list[Reading]) -> None:
    entries = read_ledger(ledger_file)
    stored: dict[Identity, float] = {}
    for r in readings:
        identity = (r.patient_token, by_code(r.metric_code).name, r.device_token, r.ts_ns)
        assert identity not in stored, f"two readings share the identity {identity}"
        stored[identity] = r.value
    result = reconcile(entries, stored)
    assert result.exact, result
    assert result.generated == result.stored > 100
    kinds = {entry.device_kind for entry in entries}
    assert {"chest-patch", "pulse-oximeter", "implant-receiver", "bedside-monitor"} <= kinds
    assert result.receipt_stamped > 0  # clockless wearables, stamped on receipt
    assert len({entry.patient for entry in entries}) == 2

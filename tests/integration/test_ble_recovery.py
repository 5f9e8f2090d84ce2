"""100 scripted BLE link drops and 100 notification silences, all recovered by one running agent."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence

import pytest
from bleak.uuids import normalize_uuid_16

from edge_agent.sources.base import Reading
from edge_agent.sources.ble import (
    Backoff,
    BleLink,
    BleManager,
    BleSettings,
    BondedDevice,
    LossCause,
)
from firmware_sims.ble.backend import SimulatedRadio
from firmware_sims.ble.peripherals import HeartRateStrap, simulated_address
from tests.support.polling import until

# What the agent must subscribe to on every connection: Heart Rate Measurement and Battery Level.
ARMED = sorted([normalize_uuid_16(0x2A37), normalize_uuid_16(0x2A19)])
DEVICES = 4
DROPS = 100
SILENCES = 100
INTERVAL_S = 0.01
EXPECTED_INTERVAL_S = 0.02
SILENCE_FACTOR = 4.0
FAST = Backoff(initial_s=0.002, max_s=0.02)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def recovered(link: BleLink, n: int) -> Callable[[], bool]:
    return lambda: len(link.counters.recoveries) >= n


async def torture(
    link: BleLink, strap: HeartRateStrap, radio: SimulatedRadio, faults: Sequence[LossCause]
) -> None:
    """Inject each fault once the link streams again, and check the re-arm on every reconnect."""
    counters = link.counters
    await until(lambda: counters.notifications > 0, f"{link.name} streaming")
    for n, fault in enumerate(faults, start=1):
        if fault is LossCause.LINK_DROP:
            assert strap.drop_link()
        else:
            strap.silence_notifications()
        await until(recovered(link, n), f"{link.name} recovery {n}")
        assert sorted(radio.connections_to(strap.address)[-1].subscribed_uuids) == ARMED


@pytest.mark.slow
@pytest.mark.asyncio
async def test_hundred_drops_and_hundred_silences_recover(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(3)
    faults = [LossCause.LINK_DROP] * DROPS + [LossCause.SILENCE] * SILENCES
    rng.shuffle(faults)
    plan = [faults[n::DEVICES] for n in range(DEVICES)]
    async with SimulatedRadio(advertising_interval_s=0.005) as radio:
        straps = [
            radio.add(HeartRateStrap(simulated_address(1, n), seed=n, interval_s=INTERVAL_S))
            for n in range(DEVICES)
        ]
        devices = [
            BondedDevice(
                address=strap.address,
                device_token=f"{n:02x}" * 16,
                patient_token="aa" * 16,
                device_kind="hr-strap",
                expected_interval_s=EXPECTED_INTERVAL_S,
            )
            for n, strap in enumerate(straps)
        ]
        manager = BleManager(
            devices,
            settings=BleSettings(
                silence_factor=SILENCE_FACTOR,
                scan_timeout_s=5.0,
                connect_timeout_s=5.0,
                io_timeout_s=5.0,
                backoff_not_found=FAST,
                backoff_in_progress=FAST,
                backoff_other=FAST,
            ),
            client_backend=radio.client_backend,
            scanner_backend=radio.scanner_backend,
            rng=rng,
        )
        readings: list[Reading] = []

        async def emit(reading: Reading) -> None:
            readings.append(reading)

        agent = asyncio.create_task(manager.run(emit), name="test.ble.agent")
        links = [manager.links[device.device_token] for device in devices]
        async with asyncio.TaskGroup() as group:
            for link, strap, faults_of_link in zip(links, straps, plan, strict=True):
                group.create_task(torture(link, strap, radio, faults_of_link))
        assert not agent.done()  # one agent run, never restarted
        manager.stop()
        await agent

    recoveries = [r for link in links for r in link.counters.recoveries]
    drops = sum(link.counters.link_drops for link in links)
    silences = sum(link.counters.silences for link in links)
    assert drops == DROPS
    assert silences == SILENCES
    assert sum(r.cause is LossCause.LINK_DROP for r in recoveries) == DROPS
    assert sum(r.cause is LossCause.SILENCE for r in recoveries) == SILENCES
    assert sum(link.counters.reconnects for link in links) == DROPS + SILENCES
    assert sum(link.counters.decode_errors for link in links) == 0
    assert len(radio.connections) == DEVICES + DROPS + SILENCES
    assert all(sorted(record.subscribed_uuids) == ARMED for record in radio.connections)
    by_cause = {
        cause: [r.loss_to_stream_s for r in recoveries if r.cause is cause] for cause in LossCause
    }
    gaps = [r.data_gap_s for r in recoveries if r.cause is LossCause.SILENCE]
    with capsys.disabled():
        print(
            f"\nBLE recovery over {len(recoveries)} losses ({DEVICES} links, "
            f"notify every {INTERVAL_S * 1e3:.0f} ms, silence after "
            f"{SILENCE_FACTOR * EXPECTED_INTERVAL_S * 1e3:.0f} ms): p95 loss->streaming "
            f"{p95([r.loss_to_stream_s for r in recoveries]) * 1e3:.1f} ms "
            f"(drops {p95(by_cause[LossCause.LINK_DROP]) * 1e3:.1f} ms, "
            f"silences {p95(by_cause[LossCause.SILENCE]) * 1e3:.1f} ms after detection, "
            f"{p95(gaps) * 1e3:.1f} ms data gap); {len(readings)} readings"
        )

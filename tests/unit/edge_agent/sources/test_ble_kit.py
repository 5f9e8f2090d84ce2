"""The ward's simulated BLE kit through one BleManager, and glucose records filling a link gap."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from edge_agent.protocol.metrics import by_code, by_name
from edge_agent.sources.base import Reading
from edge_agent.sources.ble import (
    Backoff,
    BleManager,
    BleSettings,
    BleSource,
    racp_report_request,
)
from firmware_sims.ble.backend import SimulatedRadio
from firmware_sims.ble.peripherals import (
    PERIPHERAL_KINDS,
    GlucoseMeter,
    PulseOximeter,
    simulated_address,
)
from tests.support.ble import bonded, over_ward_socket
from tests.support.polling import until

FAST = Backoff(initial_s=0.001, max_s=0.01)
SETTINGS = BleSettings(
    silence_factor=10.0,
    scan_timeout_s=2.0,
    connect_timeout_s=2.0,
    io_timeout_s=2.0,
    max_links=len(PERIPHERAL_KINDS),
    backoff_not_found=FAST,
    backoff_in_progress=FAST,
    backoff_other=FAST,
)
NS = 1_000_000_000


@pytest_asyncio.fixture(params=["in-process", "ward-socket"])
async def radio(request: pytest.FixtureRequest) -> AsyncIterator[SimulatedRadio]:
    """The simulated radio in this process, and the same across a ward socket."""
    async with SimulatedRadio(advertising_interval_s=0.005) as running:
        if request.param == "in-process":
            yield running
        else:
            async with over_ward_socket(running) as remote:
                yield remote


@pytest.mark.asyncio
async def test_whole_kit_streams_every_metric(radio: SimulatedRadio) -> None:
    peripherals = [
        radio.add(cls(simulated_address(1, n), seed=11, interval_s=0.02))
        for n, cls in enumerate(PERIPHERAL_KINDS.values())
    ]
    for peripheral in peripherals:
        if isinstance(peripheral, PulseOximeter):
            peripheral.spot_check_every = 2
    manager = BleManager(
        [bonded(p, n) for n, p in enumerate(peripherals)],
        settings=SETTINGS,
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
    )
    readings: list[Reading] = []

    async def emit(reading: Reading) -> None:
        readings.append(reading)

    expected = {
        "heart_rate",
        "rr_interval",
        "energy_expended",
        "spo2",
        "pulse_rate",
        "body_temp",
        "bp_systolic",
        "bp_diastolic",
        "bp_mean",
        "glucose",
        "room_temp",
        "humidity",
        "resp_rate",
        "battery",
    }
    task = asyncio.create_task(manager.run(emit))
    await until(lambda: {by_code(r.metric_code).name for r in readings} >= expected, "all")
    manager.stop()
    await task
    assert {by_code(r.metric_code).name for r in readings} == expected
    by_kind = {r.device_kind for r in readings}
    assert by_kind == set(PERIPHERAL_KINDS)
    assert all(link.counters.decode_errors == 0 for link in manager.links.values())
    # Devices with a clock stamp their readings (whole seconds); the others get receive time.
    temps = [r for r in readings if r.metric_code == by_name("body_temp").code]
    assert all(r.ts_ns % NS == 0 for r in temps)
    for link in manager.links.values():
        assert link.device_info is not None
        assert link.device_info.manufacturer == "bedside-twin sims"


@pytest.mark.asyncio
async def test_glucose_records_missed_while_away_are_fetched_exactly_once(
    radio: SimulatedRadio,
) -> None:
    meter = radio.add(GlucoseMeter(simulated_address(2, 1), seed=3, interval_s=0.005))
    source = BleSource(
        bonded(meter, 1),
        settings=SETTINGS,
        client_backend=radio.client_backend,
        scanner_backend=radio.scanner_backend,
    )
    readings: list[Reading] = []

    async def emit(reading: Reading) -> None:
        readings.append(reading)

    link = source.link
    task = asyncio.create_task(source.run(emit))
    await until(lambda: (link.stored_records.newest or 0) >= 5, "first records")
    meter.leave_range()
    away_from = meter.next_sequence
    await until(lambda: meter.next_sequence >= away_from + 20, "records taken while away")
    meter.enter_range()
    back_at = meter.next_sequence
    await until(lambda: (link.stored_records.newest or 0) >= back_at + 5, "records after return")
    source.stop()
    await task

    delivered = link.stored_records.newest
    assert delivered is not None
    # Every record up to the newest delivered one is in the readings, each exactly once
    # (glucose records share a device second at this pace, so compare (time, value) counts).
    records = [r for r in meter.records if r.sequence_number <= delivered]
    assert records[0].sequence_number == 0
    want = Counter((r.ts_ns, r.glucose_mg_dl) for r in records)
    got = Counter((r.ts_ns, r.value) for r in readings if r.metric_code == by_name("glucose").code)
    assert got == want
    # The first connection asked for all records, the second for those after the last seen.
    assert meter.racp_requests[0] == racp_report_request(None)
    assert len(meter.racp_requests) == 2
    assert meter.racp_requests[1][:3] == bytes.fromhex("010301")
    assert int.from_bytes(meter.racp_requests[1][3:], "little") <= away_from
    assert link.counters.link_drops == 1

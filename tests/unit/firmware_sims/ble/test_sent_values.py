"""What a peripheral reports to the ledger is exactly what a central received and decoded."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from bleak import BleakClient

from edge_agent.sources.ble import decode_characteristic, value_times
from firmware_sims.ble.backend import SimulatedRadio
from firmware_sims.ble.peripherals import (
    BATTERY_LEVEL,
    HEART_RATE_MEASUREMENT,
    PERIPHERAL_KINDS,
    RECORD_ACCESS_CONTROL_POINT,
    GlucoseMeter,
    HeartRateStrap,
    SentValue,
    rr_sent_values,
    simulated_address,
)

T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def connected(radio: SimulatedRadio, address: str) -> tuple[BleakClient, list[bytes]]:
    client = BleakClient(address, backend=radio.client_backend)
    await client.connect()
    payloads: list[bytes] = []
    for char in client.services.characteristics.values():
        if "notify" in char.properties or "indicate" in char.properties:
            await client.start_notify(
                char, lambda c, data: payloads.append(bytes([len(c.uuid)]) + c.uuid.encode() + data)
            )
    return client, payloads


def _decode(payloads: list[bytes]) -> list[tuple[str, float, int | None]]:
    out = []
    for raw in payloads:
        uuid = raw[1 : 1 + raw[0]].decode()
        out += [
            (v.metric, v.value, v.device_ts_ns)
            for v in decode_characteristic(uuid, raw[1 + raw[0] :])
        ]
    return out


@pytest.mark.parametrize("kind", sorted(PERIPHERAL_KINDS))
@pytest.mark.asyncio
async def test_reported_values_are_what_the_central_decoded(kind: str) -> None:
    radio = SimulatedRadio()
    peripheral = radio.add(PERIPHERAL_KINDS[kind](simulated_address(2, 1), seed=3))
    sent: list[SentValue] = []
    peripheral.on_sent = sent.append
    client, payloads = await connected(radio, peripheral.address)
    for n in range(8):
        peripheral.measure(T0_NS + n * 1_000_000_000)
    await settle()
    decoded = _decode(payloads)
    assert sent
    assert Counter((m, v) for m, v, _ in decoded) == Counter((s.metric, s.value) for s in sent)
    # A value with the device's clock carries exactly the reported stamp; the others none.
    assert Counter((m, v, ts) for m, v, ts in decoded if ts is not None) == Counter(
        (s.metric, s.value, s.ts_ns) for s in sent if s.device_clock
    )
    await client.disconnect()


@pytest.mark.asyncio
async def test_nothing_is_reported_without_a_subscriber_or_when_garbage_was_sent() -> None:
    radio = SimulatedRadio()
    strap = radio.add(HeartRateStrap(simulated_address(2, 2)))
    sent: list[SentValue] = []
    strap.on_sent = sent.append
    strap.measure(T0_NS)  # nobody listening: lost on air, never delivered
    await settle()
    assert sent == []
    client, payloads = await connected(radio, strap.address)
    strap.inject_garbage(payload=b"\xff")
    strap.measure(T0_NS + 1_000_000_000)  # the central got garbage, not this measurement
    strap.measure(T0_NS + 2_000_000_000)
    await settle()
    assert len(payloads) == 2
    assert [s.metric for s in sent if s.metric == "heart_rate"] == ["heart_rate"]
    await client.disconnect()


@pytest.mark.asyncio
async def test_a_battery_read_is_reported_as_delivered() -> None:
    radio = SimulatedRadio()
    strap = radio.add(HeartRateStrap(simulated_address(2, 3)))
    sent: list[SentValue] = []
    strap.on_sent = sent.append
    client = BleakClient(strap.address, backend=radio.client_backend)
    await client.connect()
    await client.read_gatt_char(BATTERY_LEVEL)
    assert [(s.metric, s.value, s.device_clock) for s in sent] == [("battery", 100.0, False)]
    await client.disconnect()


@pytest.mark.asyncio
async def test_a_glucose_record_sent_live_and_on_request_is_reported_once() -> None:
    radio = SimulatedRadio()
    meter = radio.add(GlucoseMeter(simulated_address(2, 4)))
    sent: list[SentValue] = []
    meter.on_sent = sent.append
    meter.measure(T0_NS)  # stored while nobody listened
    client, payloads = await connected(radio, meter.address)
    meter.measure(T0_NS + 60_000_000_000)  # notified live
    await client.write_gatt_char(RECORD_ACCESS_CONTROL_POINT, b"\x01\x01", response=True)
    await settle()
    glucose = [s for s in sent if s.metric == "glucose"]
    assert len(payloads) == 4  # live record, both stored records again, the RACP response
    assert [s.ts_ns for s in glucose] == [T0_NS + 60_000_000_000, T0_NS]
    assert all(s.device_clock for s in glucose)
    await client.disconnect()


@pytest.mark.parametrize("intervals", [(0.8,), (0.5, 0.75), (0.4, 0.41, 0.42, 0.43)])
def test_rr_intervals_are_stamped_at_their_beats_as_the_agent_stamps_them(
    intervals: tuple[float, ...],
) -> None:
    sent = rr_sent_values(intervals, T0_NS)
    raw = bytes([0x10, 70]) + b"".join(round(s * 1024).to_bytes(2, "little") for s in intervals)
    decoded = list(decode_characteristic(HEART_RATE_MEASUREMENT, raw))
    rr = [v for v in decoded if v.metric == "rr_interval"]
    stamps = [ts for v, ts in zip(decoded, value_times(decoded, T0_NS), strict=True) if v in rr]
    assert [s.ts_ns for s in sent] == stamps
    assert [s.value for s in sent] == [v.value for v in rr]
    assert stamps[-1] == T0_NS
    assert stamps == sorted(set(stamps))  # distinct, oldest first: one identity per beat

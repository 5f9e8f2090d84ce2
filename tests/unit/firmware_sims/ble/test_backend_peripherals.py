"""The simulated health peripherals over the simulated radio, checked with the agent's decoders."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakGATTProtocolError, BleakGATTProtocolErrorCode
from bleak.uuids import normalize_uuid_str

from edge_agent.devices import quality as q
from edge_agent.sources.ble import DecodedValue, decode_characteristic
from firmware_sims.ble.backend import MAX_NOTIFY_PAYLOAD_BYTES, SimulatedRadio
from firmware_sims.ble.peripherals import (
    PERIPHERAL_KINDS,
    RECORD_ACCESS_CONTROL_POINT,
    ChestPatch,
    GlucoseMeter,
    HealthPeripheral,
    PulseOximeter,
    encode_vendor_respiration,
    simulated_address,
)

T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
RACP = normalize_uuid_str(RECORD_ACCESS_CONTROL_POINT)


class Received:
    def __init__(self) -> None:
        self.values: list[tuple[str, bytes]] = []

    def __call__(self, char: BleakGATTCharacteristic, data: bytearray) -> None:
        self.values.append((char.uuid, bytes(data)))

    def decoded(self, *, skip: str | None = None) -> list[DecodedValue]:
        return [
            value
            for uuid, payload in self.values
            if uuid != skip
            for value in decode_characteristic(uuid, payload)
        ]


async def subscribed(
    radio: SimulatedRadio, peripheral: HealthPeripheral
) -> tuple[BleakClient, Received]:
    """A client subscribed to every notifiable characteristic (the radio is not running, so
    only the test's `measure` calls produce values)."""
    client = BleakClient(peripheral.address, backend=radio.client_backend)
    await client.connect()
    received = Received()
    for char in client.services.characteristics.values():
        if "notify" in char.properties or "indicate" in char.properties:
            await client.start_notify(char, received)
    return client, received


async def settle() -> None:
    """Let the loop deliver the notifications queued by synchronous `measure` calls."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", sorted(PERIPHERAL_KINDS))
@pytest.mark.asyncio
async def test_every_model_decodes_to_its_truth(kind: str) -> None:
    radio = SimulatedRadio()
    peripheral = radio.add(PERIPHERAL_KINDS[kind](simulated_address(1, 1), seed=5))
    client, received = await subscribed(radio, peripheral)
    for n in range(8):
        peripheral.measure(T0_NS + n * 1_000_000_000)
    await settle()
    assert received.values
    assert all(len(payload) <= MAX_NOTIFY_PAYLOAD_BYTES for _, payload in received.values)
    decoded = received.decoded()
    truth = Counter((t.metric, t.value) for t in peripheral.truth)
    got = Counter(
        (v.metric, v.value) for v in decoded if v.metric not in ("rr_interval", "energy_expended")
    )
    assert got == truth
    assert all(v.quality & q.BAD_QUALITY_MASK == 0 for v in decoded)
    await client.disconnect()


@pytest.mark.asyncio
async def test_timestamped_models_send_device_time() -> None:
    radio = SimulatedRadio()
    thermometer = radio.add(PERIPHERAL_KINDS["thermometer"](simulated_address(1, 2)))
    client, received = await subscribed(radio, thermometer)
    thermometer.measure(T0_NS + 1_234_567_890)
    await settle()
    (value,) = received.decoded()
    assert value.metric == "body_temp"
    assert value.device_ts_ns == T0_NS + 1_000_000_000  # whole seconds of the device clock
    await client.disconnect()


@pytest.mark.asyncio
async def test_device_information_and_battery_are_readable() -> None:
    radio = SimulatedRadio()
    strap = radio.add(PERIPHERAL_KINDS["hr-strap"](simulated_address(1, 3)))
    client = BleakClient(strap.address, backend=radio.client_backend)
    await client.connect()
    assert bytes(await client.read_gatt_char("2a29")) == b"bedside-twin sims"
    assert bytes(await client.read_gatt_char("2a24")) == b"SIM-HRS-1"
    assert decode_characteristic(
        normalize_uuid_str("2a19"), bytes(await client.read_gatt_char("2a19"))
    ) == [DecodedValue("battery", 100.0)]
    await client.disconnect()


@pytest.mark.asyncio
async def test_oximeter_probe_off_sends_nan_and_status() -> None:
    radio = SimulatedRadio()
    oximeter = radio.add(PulseOximeter(simulated_address(1, 4)))
    oximeter.spot_check_every = 1
    client, received = await subscribed(radio, oximeter)
    oximeter.probe_off = True
    oximeter.measure(T0_NS)
    await settle()
    assert len(received.values) == 2  # continuous and spot-check
    assert received.decoded() == []  # NaN SpO2 and PR: no value, never a number
    await client.disconnect()


@pytest.mark.asyncio
async def test_chest_patch_vendor_respiration() -> None:
    radio = SimulatedRadio()
    patch = radio.add(ChestPatch(simulated_address(1, 5)))
    patch.respiration_every = 1
    client, received = await subscribed(radio, patch)
    patch.measure(T0_NS)
    patch.motion = True
    patch.measure(T0_NS + 1_000_000_000)
    await settle()
    resp = [v for v in received.decoded() if v.metric == "resp_rate"]
    assert [v.quality for v in resp] == [0, q.MOTION]
    assert [v.value for v in resp] == [t.value for t in patch.truth if t.metric == "resp_rate"]
    await client.disconnect()


@pytest.mark.parametrize(
    ("rate", "contact", "motion", "payload_hex"),
    [
        (16, True, False, "1001"),
        (12, True, True, "0c03"),
        (16, False, False, "ff00"),  # no contact: no value, whatever the rate
        (None, True, False, "ff01"),
    ],
)
def test_vendor_respiration_encoder_vectors(
    rate: int | None, *, contact: bool, motion: bool, payload_hex: str
) -> None:
    assert encode_vendor_respiration(rate, contact=contact, motion=motion).hex() == payload_hex


# --- glucose meter and the Record Access Control Point ---------------------------------------


def sequence_numbers(values: Sequence[DecodedValue]) -> list[int | None]:
    return [v.record_seq for v in values]


async def racp(client: BleakClient, received: Received, request_hex: str) -> bytes:
    """Write a RACP request; return the Response Code indication."""
    before = len(received.values)
    await client.write_gatt_char(RACP, bytes.fromhex(request_hex), response=True)
    await settle()
    responses = [p for u, p in received.values[before:] if u == RACP]
    assert len(responses) == 1
    return responses[0]


@pytest.mark.asyncio
async def test_glucose_records_taken_while_away_are_reported_on_request() -> None:
    radio = SimulatedRadio()
    meter = radio.add(GlucoseMeter(simulated_address(1, 6)))
    for n in range(5):  # nobody connected: stored, not sent
        meter.measure(T0_NS + n * 60_000_000_000)
    client, received = await subscribed(radio, meter)
    meter.measure(T0_NS + 5 * 60_000_000_000)  # live: notified at once
    await settle()
    assert sequence_numbers(received.decoded(skip=RACP)) == [5]
    received.values.clear()
    # Report stored records (0x01), operator >= (0x03), filter sequence number (0x01), N = 2.
    assert (await racp(client, received, "0103010200")).hex() == "06000101"  # success
    assert sequence_numbers(received.decoded(skip=RACP)) == [2, 3, 4, 5]
    received.values.clear()
    assert (await racp(client, received, "0101")).hex() == "06000101"  # all records
    assert sequence_numbers(received.decoded(skip=RACP)) == [0, 1, 2, 3, 4, 5]
    received.values.clear()
    assert (await racp(client, received, "0106")).hex() == "06000101"  # last record
    assert sequence_numbers(received.decoded(skip=RACP)) == [5]
    await client.disconnect()


@pytest.mark.parametrize(
    ("request_hex", "response_hex"),
    [
        ("0103010900", "06000106"),  # >= 9: no records found
        ("0104", "06000104"),  # within range: operator not supported by this meter
        ("0107", "06000103"),  # operator 7: invalid operator
        ("0103020000", "06000109"),  # filter type 2 (user facing time): operand not supported
        ("01030100", "06000105"),  # truncated operand: invalid operand
        ("010100", "06000105"),  # "all records" with an operand: invalid operand
        ("0401", "06000402"),  # report number of records: op code not supported
    ],
)
@pytest.mark.asyncio
async def test_racp_refusals(request_hex: str, response_hex: str) -> None:
    radio = SimulatedRadio()
    meter = radio.add(GlucoseMeter(simulated_address(1, 7)))
    meter.measure(T0_NS)
    client, received = await subscribed(radio, meter)
    assert (await racp(client, received, request_hex)).hex() == response_hex
    await client.disconnect()


@pytest.mark.asyncio
async def test_racp_needs_indications_enabled() -> None:
    radio = SimulatedRadio()
    meter = radio.add(GlucoseMeter(simulated_address(1, 8)))
    client = BleakClient(meter.address, backend=radio.client_backend)
    await client.connect()
    with pytest.raises(BleakGATTProtocolError) as info:
        await client.write_gatt_char(RACP, bytes.fromhex("0101"), response=True)
    assert info.value.code == BleakGATTProtocolErrorCode.CCCD_IMPROPERLY_CONFIGURED
    await client.disconnect()


@pytest.mark.asyncio
async def test_glucose_sequence_numbers_wrap_at_16_bits() -> None:
    radio = SimulatedRadio()
    meter = GlucoseMeter(simulated_address(1, 9))
    meter.next_sequence = 0xFFFF
    radio.add(meter)
    client, received = await subscribed(radio, meter)
    meter.measure(T0_NS)
    meter.measure(T0_NS + 60_000_000_000)
    await settle()
    assert sequence_numbers(received.decoded(skip=RACP)) == [0xFFFF, 0]
    await client.disconnect()


def test_addresses_are_static_random_and_distinct() -> None:
    addresses = {simulated_address(p, d) for p in range(300) for d in range(8)}
    assert len(addresses) == 300 * 8
    assert all(int(a[:2], 16) >> 6 == 0b11 for a in addresses)

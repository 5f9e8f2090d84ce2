"""The BLE source's pure parts: error classification, backoff, settings, vendor decoding, RACP."""

from __future__ import annotations

import random

import pytest
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.devices import quality as q
from edge_agent.devices.errors import DeviceDecodeError, UnknownCharacteristicError
from edge_agent.errors import ConfigError
from edge_agent.sources.ble import (
    VENDOR_RESPIRATION_RATE,
    Backoff,
    BleManager,
    BleSettings,
    BondedDevice,
    DecodedValue,
    LinkFailure,
    StoredRecords,
    classify,
    decode_characteristic,
    decode_vendor_respiration,
    racp_report_request,
)

ADDRESS = "C0:FF:EE:12:34:56"


def device(**overrides: object) -> BondedDevice:
    fields: dict[str, object] = {
        "address": ADDRESS,
        "device_token": "ab" * 16,
        "patient_token": "cd" * 16,
        "device_kind": "hr-strap",
        "expected_interval_s": 1.0,
    }
    fields.update(overrides)
    return BondedDevice(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (BleakDeviceNotFoundError("x", "Device was not found."), LinkFailure.NOT_FOUND),
        (BleakDBusError("org.bluez.Error.InProgress", ["busy"]), LinkFailure.IN_PROGRESS),
        (
            BleakGATTProtocolError(BleakGATTProtocolErrorCode.PROCEDURE_ALREADY_IN_PROGRESS),
            LinkFailure.IN_PROGRESS,
        ),
        (
            BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"]),
            LinkFailure.OTHER,
        ),
        (BleakGATTProtocolError(BleakGATTProtocolErrorCode.UNLIKELY_ERROR), LinkFailure.OTHER),
        # The words in a message never decide: only types and structured fields do.
        (BleakError("org.bluez.Error.InProgress"), LinkFailure.OTHER),
        (TimeoutError(), LinkFailure.OTHER),
        (OSError(5, "I/O error"), LinkFailure.OTHER),
    ],
)
def test_classify_uses_types_and_fields(exc: BaseException, failure: LinkFailure) -> None:
    assert classify(exc) is failure


def test_each_failure_kind_has_its_own_backoff() -> None:
    chosen = BleSettings()
    assert chosen.backoff(LinkFailure.NOT_FOUND) is chosen.backoff_not_found
    assert chosen.backoff(LinkFailure.IN_PROGRESS) is chosen.backoff_in_progress
    assert chosen.backoff(LinkFailure.OTHER) is chosen.backoff_other
    # Busy adapters clear quickly; an absent device does not.
    assert chosen.backoff_in_progress.max_s < chosen.backoff_not_found.initial_s * 2


@settings(max_examples=200, deadline=None)
@given(
    initial_s=st.floats(0.001, 10.0),
    cap_factor=st.floats(1.0, 100.0),
    multiplier=st.floats(1.0, 4.0),
    jitter=st.floats(0.0, 1.0),
    attempt=st.integers(0, 10_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_backoff_is_capped_jittered_and_grows(
    *,
    initial_s: float,
    cap_factor: float,
    multiplier: float,
    jitter: float,
    attempt: int,
    seed: int,
) -> None:
    policy = Backoff(initial_s, initial_s * cap_factor, multiplier, jitter)
    rng = random.Random(seed)
    delay_s = policy.delay_s(attempt, rng)
    ceiling_s = min(policy.max_s, initial_s * multiplier ** min(attempt, 64))
    assert ceiling_s * (1.0 - jitter) - 1e-12 <= delay_s <= ceiling_s + 1e-12
    assert delay_s <= policy.max_s + 1e-12
    no_jitter = Backoff(initial_s, initial_s * cap_factor, multiplier, 0.0)
    assert no_jitter.delay_s(attempt, rng) <= no_jitter.delay_s(attempt + 1, rng)


def test_jitter_spreads_retries() -> None:
    policy = Backoff(1.0, 8.0)
    rng = random.Random(1)
    delays = {round(policy.delay_s(3, rng), 6) for _ in range(20)}
    assert len(delays) > 1
    assert all(4.0 <= d <= 8.0 for d in delays)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("silence_factor", 0.0),
        ("scan_timeout_s", -1.0),
        ("connect_timeout_s", 0.0),
        ("io_timeout_s", 0.0),
        ("queue_capacity", 0),
        ("max_links", 0),
        ("recovery_history", 0),
    ],
)
def test_settings_reject_nonsense_with_the_key(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        BleSettings(**{field: value})  # type: ignore[arg-type]
    assert info.value.key == field


def test_bonded_device_rejects_bad_interval_and_hides_its_address() -> None:
    with pytest.raises(ConfigError, match="expected_interval_s"):
        device(expected_interval_s=0.0)
    bonded = device()
    assert ADDRESS not in repr(bonded)
    assert bonded.log_name == "hr-strap-abababab"


def test_manager_rejects_no_devices_and_duplicate_addresses() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        BleManager([])
    with pytest.raises(ConfigError, match="twice"):
        BleManager([device(), device(address=ADDRESS.lower(), device_token="ef" * 16)])


# Vendor respiration characteristic (layout in firmware_sims.ble.peripherals): octet 0 rate
# (uint8, /min, 0xFF = no value), octet 1 status (bit 0 contact, bit 1 motion artefact).
@pytest.mark.parametrize(
    ("payload_hex", "expected"),
    [
        ("1001", [DecodedValue("resp_rate", 16.0, 0)]),
        ("0c03", [DecodedValue("resp_rate", 12.0, q.MOTION)]),
        ("10fd", [DecodedValue("resp_rate", 16.0, 0)]),  # RFU status bits 2-7 ignored
        ("1000", []),  # no electrode contact: no value
        ("ff01", []),  # 0xFF: no value
        ("120100", [DecodedValue("resp_rate", 18.0, 0)]),  # trailing octets tolerated
    ],
)
def test_vendor_respiration_vectors(payload_hex: str, expected: list[DecodedValue]) -> None:
    assert decode_vendor_respiration(bytes.fromhex(payload_hex)) == expected
    assert list(decode_characteristic(VENDOR_RESPIRATION_RATE, bytes.fromhex(payload_hex))) == (
        expected
    )


@pytest.mark.parametrize("payload_hex", ["", "10"])
def test_vendor_respiration_truncated_names_offset(payload_hex: str) -> None:
    payload = bytes.fromhex(payload_hex)
    with pytest.raises(DeviceDecodeError) as info:
        decode_vendor_respiration(payload)
    assert info.value.characteristic == VENDOR_RESPIRATION_RATE
    assert info.value.offset == len(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24))
def test_vendor_respiration_random_bytes_raise_only_our_error(payload: bytes) -> None:
    try:
        values = decode_vendor_respiration(payload)
    except DeviceDecodeError:
        return
    assert all(0.0 <= v.value < 255.0 for v in values)


@pytest.mark.parametrize(
    ("last_seq", "request_hex"),
    [
        # Op code 0x01 Report Stored Records, operator 0x01 All records, no operand.
        (None, "0101"),
        # Operator 0x03 >=, filter type 0x01 sequence number, uint16 LE (N + 1).
        (0, "0103010100"),
        (0x01FF, "0103010002"),
        (0xFFFF, "0103010000"),  # the uint16 sequence number wraps
    ],
)
def test_racp_report_request_vectors(last_seq: int | None, request_hex: str) -> None:
    assert racp_report_request(last_seq).hex() == request_hex


def test_stored_records_reject_repeats_and_follow_the_uint16_wrap() -> None:
    assert StoredRecords().newest is None
    records = StoredRecords(window=4)
    assert [records.accept(seq) for seq in (0xFFFE, 0xFFFF, 0, 0xFFFF)] == [True, True, True, False]
    assert records.newest == 0  # 0 follows 0xFFFF
    assert records.accept(0xFFFD)  # an older record fetched late is new, but not the newest
    assert records.newest == 0
    # Past the window the oldest numbers are forgotten (a meter's storage wraps long before).
    assert records.accept(1)
    assert records.accept(0xFFFE)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), max_size=60))
def test_stored_records_accept_each_number_once(seqs: list[int]) -> None:
    records = StoredRecords()
    accepted = [seq for seq in seqs if records.accept(seq)]
    assert sorted(accepted) == sorted(set(seqs))


def test_characteristics_decode_the_same_in_any_spelling_and_unknown_ones_keep_failing() -> None:
    # The UUID -> decoder lookup is remembered per spelling; a failure is never remembered.
    payload = bytes.fromhex("0648")  # Heart Rate Measurement: contact detected, 72 bpm
    spellings = [
        "2a37",
        "00002a37-0000-1000-8000-00805f9b34fb",
        "00002A37-0000-1000-8000-00805F9B34FB",
    ]
    for _ in range(2):
        for uuid in spellings:
            assert [(v.metric, v.value) for v in decode_characteristic(uuid, payload)] == [
                ("heart_rate", 72.0)
            ]
    for _ in range(2):
        with pytest.raises(UnknownCharacteristicError):
            decode_characteristic("b7e40099-9c4d-4e5a-8f36-2d1a6c0e5b90", payload)

"""The ward socket's codec: messages, errors, GATT tables and manifests, against garbage too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from hypothesis import given
from hypothesis import strategies as st

from firmware_sims.ble.peripherals import PERIPHERAL_KINDS
from firmware_sims.remote.ward import WardManifest
from firmware_sims.remote.wire import (
    MessageReader,
    WardLinkError,
    check_socket_path,
    decode_error,
    encode_error,
    gatt_spec,
    pack,
    services_from_spec,
)
from firmware_sims.ward import SimulatedWard, WardSettings

ADDRESS = "C0:FF:EE:00:00:01"

wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(st.lists(wire_values, min_size=1, max_size=5), max_size=5), st.integers(1, 7))
def test_messages_round_trip_whatever_the_reads_split(
    messages: list[list[Any]], chunk: int
) -> None:
    stream = b"".join(pack(message) for message in messages)
    reader = MessageReader()
    received: list[list[Any]] = []
    for start in range(0, len(stream), chunk):
        received.extend(reader.feed(stream[start : start + chunk]))
    assert received == messages


@given(st.binary(max_size=256))
def test_random_bytes_are_messages_or_a_ward_link_error(data: bytes) -> None:
    reader = MessageReader()
    problem = ""
    try:
        messages = reader.feed(data)
    except WardLinkError as exc:
        problem, messages = str(exc), []
    assert problem.startswith(("not a ward message", "a ward message is")) or not problem
    assert all(isinstance(message, list) and message for message in messages)


def test_a_message_that_is_not_an_array_is_refused() -> None:
    with pytest.raises(WardLinkError, match="non-empty array"):
        MessageReader().feed(msgpack.packb({"op": "connect"}))
    with pytest.raises(WardLinkError, match="non-empty array"):
        MessageReader().feed(msgpack.packb([]))


@pytest.mark.parametrize(
    "raised",
    [
        BleakDeviceNotFoundError(ADDRESS, "Device was not found."),
        BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]),
        BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED),
        BleakError("Not connected"),
    ],
)
def test_the_agent_sees_the_exception_type_the_radio_raised(raised: Exception) -> None:
    wire = msgpack.unpackb(pack(encode_error(raised)))
    seen = decode_error(wire, ADDRESS)
    assert type(seen) is type(raised)
    if isinstance(raised, BleakDBusError):
        assert isinstance(seen, BleakDBusError)
        assert seen.dbus_error == raised.dbus_error
    if isinstance(raised, BleakGATTProtocolError):
        assert isinstance(seen, BleakGATTProtocolError)
        assert seen.code == raised.code


def test_a_ward_failure_is_a_ward_link_error_naming_it() -> None:
    seen = decode_error(encode_error(KeyError("implant-bed09")), ADDRESS)
    assert isinstance(seen, WardLinkError)
    assert "implant-bed09" in str(seen)


@given(wire_values)
def test_any_error_spec_decodes_to_an_exception(spec: object) -> None:
    assert isinstance(decode_error(spec, ADDRESS), Exception)


@pytest.mark.parametrize("kind", sorted(PERIPHERAL_KINDS))
def test_every_gatt_table_crosses_the_socket_unchanged(kind: str) -> None:
    services = PERIPHERAL_KINDS[kind].gatt_services()
    assert services_from_spec(msgpack.unpackb(pack(gatt_spec(services)))) == tuple(services)


@given(wire_values)
def test_a_gatt_table_is_read_or_refused(spec: object) -> None:
    try:
        services = services_from_spec(spec)
    except WardLinkError:
        return
    assert all(isinstance(service.uuid, str) for service in services)


def test_a_characteristic_with_an_unknown_property_is_refused() -> None:
    with pytest.raises(WardLinkError, match="characteristic"):
        services_from_spec([["180d", [["2a37", ["notify", "teleport"]]]]])


def test_a_socket_path_too_long_for_sun_path_says_what_to_do() -> None:
    assert check_socket_path("/tmp/ward.sock") == "/tmp/ward.sock"
    with pytest.raises(WardLinkError, match="shorter"):
        check_socket_path("/tmp/" + "w" * 120)


def test_a_ward_manifest_crosses_the_socket(tmp_path: Path) -> None:
    settings = WardSettings(patients=3, seed=5, implant_receivers=1, bedside_monitors=2)
    ward = SimulatedWard(settings, ports_dir=tmp_path / "ports", ledger=None)
    manifest = WardManifest.parse(msgpack.unpackb(pack([ward.manifest()]))[0])
    assert [bed.index for bed in manifest.beds] == [1, 2, 3]
    for bed, patient in zip(manifest.beds, ward.patients, strict=True):
        assert [device.address for device in bed.devices] == [
            device.peripheral.address for device in patient.devices
        ]
        assert {device.patient_token for device in bed.devices} == {patient.patient_token}
    assert [(sim.label, sim.kind, sim.device_token) for sim in manifest.serial] == [
        (sim.label, sim.kind, sim.device_token) for sim in ward.serial
    ]
    assert all(sim.path.is_absolute() for sim in manifest.serial)


@given(wire_values)
def test_a_manifest_is_read_or_refused(raw: object) -> None:
    problem = ""
    try:
        manifest = WardManifest.parse(raw)
    except WardLinkError as exc:
        problem = str(exc)
    if problem:
        assert problem.startswith("the ward's manifest is malformed")
    else:
        assert isinstance(manifest.beds, tuple)


def test_a_manifest_with_a_wrong_field_type_names_the_problem() -> None:
    raw = {"beds": [{"bed": "one", "patient": "p", "devices": []}], "serial": []}
    with pytest.raises(WardLinkError, match="malformed"):
        WardManifest.parse(raw)

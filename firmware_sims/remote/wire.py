"""The simulated ward's socket protocol: msgpack arrays on a unix stream socket.

Not a device format. It stands where BlueZ's D-Bus and the kernel's tty layer stand on a real
gateway: between the radio (the ward process) and the agent's bleak backend. A message is one
msgpack array (msgpack is self-delimiting, so there is no length prefix):

- request, central to ward: `[id, op, *args]` (`id` a positive integer, `op` a string);
- from the ward: `[REPLY, id, error, result]`, `[NOTIFY, uuid, value]` (a notification on the
  link), `[LINK_LOST]` (the peripheral dropped the link), `[ADVERT, address, name, uuids, rssi]`.

`error` is None or a list naming the exception the in-process radio raised, so the agent's
error classification sees the very exception types bleak raises on BlueZ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, cast, get_args

import msgpack
from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from edge_agent.config import MAX_SOCKET_PATH
from firmware_sims.ble.backend import CharacteristicDef, ServiceDef

REPLY: Final = 0
NOTIFY: Final = 1
LINK_LOST: Final = 2
ADVERT: Final = 3

# The largest message either side accepts: a manifest of the largest ward (64 beds) is ~40 KB.
MAX_MESSAGE_BYTES: Final = 1 << 20

_PROPERTY_NAMES: Final = frozenset(get_args(CharacteristicPropertyName))


class WardLinkError(Exception):
    """The ward socket carried something that is not this protocol (or the ward is gone)."""


class MessageReader:
    """Splits the bytes of a stream into messages; garbage raises WardLinkError."""

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(
            raw=False, max_buffer_size=MAX_MESSAGE_BYTES, strict_map_key=True
        )

    def feed(self, data: bytes) -> list[list[Any]]:
        try:
            self._unpacker.feed(data)
            messages = list(self._unpacker)
        except (msgpack.exceptions.UnpackException, ValueError) as exc:
            msg = f"not a ward message ({type(exc).__name__}: {exc})"
            raise WardLinkError(msg) from exc
        for message in messages:
            if not isinstance(message, list) or not message:
                msg = f"a ward message is a non-empty array, got {type(message).__name__}"
                raise WardLinkError(msg)
        return messages


def pack(message: Sequence[object]) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def encode_error(exc: BaseException) -> list[object]:
    """The wire form of an exception the ward's radio raised (its type and structured fields)."""
    if isinstance(exc, BleakDeviceNotFoundError):
        return ["not_found"]
    if isinstance(exc, BleakDBusError):
        return ["dbus", exc.dbus_error, list(exc.dbus_error_details or ())]
    if isinstance(exc, BleakGATTProtocolError):
        return ["gatt", int(exc.code)]
    return ["bleak" if isinstance(exc, BleakError) else "ward", f"{type(exc).__name__}: {exc}"]


def decode_error(spec: object, address: str) -> Exception:  # noqa: PLR0911 - one per kind
    """The exception to raise in the agent for an error the ward reported."""
    match spec:
        case ["not_found"]:
            return BleakDeviceNotFoundError(address, "Device was not found.")
        case ["dbus", str(name), list(details)]:
            return BleakDBusError(name, [str(item) for item in details])
        case ["gatt", int(code)]:
            try:
                return BleakGATTProtocolError(BleakGATTProtocolErrorCode(code))
            except ValueError:
                return WardLinkError(f"the ward reported an unknown ATT error code {code}")
        case ["bleak", str(message)]:
            return BleakError(message)
        case ["ward", str(message)]:
            return WardLinkError(f"the simulated ward failed: {message}")
    return WardLinkError(f"the ward reported an error this client cannot read: {spec!r:.80}")


def gatt_spec(services: Sequence[ServiceDef]) -> list[object]:
    """A peripheral's GATT table on the wire: [[service uuid, [[char uuid, [props]], ...]], ...]."""
    return [
        [service.uuid, [[char.uuid, list(char.properties)] for char in service.characteristics]]
        for service in services
    ]


def services_from_spec(spec: object) -> tuple[ServiceDef, ...]:
    """The GATT table a ward sent; anything else raises WardLinkError."""
    if not isinstance(spec, list):
        msg = "a GATT table is an array of services"
        raise WardLinkError(msg)
    services: list[ServiceDef] = []
    for entry in spec:
        match entry:
            case [str(service_uuid), list(chars)]:
                services.append(ServiceDef(service_uuid, tuple(_characteristic(c) for c in chars)))
            case _:
                msg = f"a GATT service is [uuid, [characteristics]], got {entry!r:.80}"
                raise WardLinkError(msg)
    return tuple(services)


def _characteristic(entry: object) -> CharacteristicDef:
    match entry:
        case [str(uuid), list(properties)] if all(
            isinstance(item, str) and item in _PROPERTY_NAMES for item in properties
        ):
            names = cast("list[CharacteristicPropertyName]", properties)
            return CharacteristicDef(uuid, tuple(names))
    msg = f"a GATT characteristic is [uuid, [properties]], got {entry!r:.80}"
    raise WardLinkError(msg)


def check_socket_path(path: str) -> str:
    """`path` if it fits a unix socket address, else WardLinkError saying what to do."""
    if len(path.encode()) > MAX_SOCKET_PATH:
        msg = (
            f"the ward socket path is {len(path.encode())} bytes; a unix socket path holds at "
            f"most {MAX_SOCKET_PATH}: choose a shorter [simulation] ward_socket"
        )
        raise WardLinkError(msg)
    return path

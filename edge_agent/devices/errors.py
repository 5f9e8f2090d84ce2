"""Errors of the GATT codecs: which characteristic, at which byte offset, and why."""

from __future__ import annotations

import enum

from edge_agent.errors import EdgeAgentError


class DecodeFault(enum.StrEnum):
    """The kind of problem; the BLE source counts decode errors per fault."""

    TRUNCATED = "truncated"
    """The flags announce a field the payload is too short to hold."""
    IMPOSSIBLE = "impossible value"
    """A field holds a value the specification prohibits (a 13th month, humidity above 100 %)."""
    INVALID_TEXT = "invalid UTF-8"
    """A Device Information string is not UTF-8."""


class DeviceDecodeError(EdgeAgentError):
    """A characteristic value cannot be decoded; the caller drops this payload and counts it.

    `characteristic` is the 16-bit UUID as "0x2A37", `name` the Bluetooth SIG name, `offset`
    the byte offset in the payload where decoding failed and `reason` what was wrong there.
    """

    def __init__(
        self, characteristic: str, name: str, offset: int, fault: DecodeFault, reason: str
    ) -> None:
        super().__init__(f"{characteristic} {name}: {fault} at offset {offset}: {reason}")
        self.characteristic = characteristic
        self.name = name
        self.offset = offset
        self.fault = fault
        self.reason = reason


class UnknownCharacteristicError(EdgeAgentError):
    """A characteristic name or UUID this codec does not know; pick one it lists."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"characteristic {text!r}: {reason}")
        self.text = text
        self.reason = reason

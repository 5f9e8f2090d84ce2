"""A bounds-checked little-endian reader over one characteristic value, raising only our errors."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from edge_agent.devices.errors import DecodeFault, DeviceDecodeError
from edge_agent.devices.ieee11073 import Measured, decode_float, decode_sfloat

# Date Time, org.bluetooth.characteristic.date_time 0x2A08 (GATT Specification Supplement,
# "Date Time"): year uint16 1582..9999 (0 = not known), month uint8 1..12 (0 = not known),
# day uint8 1..31 (0 = not known), hours 0..23, minutes 0..59, seconds 0..59.
DATE_TIME_BYTES: Final = 7
_YEAR_MIN: Final = 1582
_YEAR_MAX: Final = 9999
_TIME_LIMITS: Final = (("hours", 23), ("minutes", 59), ("seconds", 59))


def _plural(count: int) -> str:
    return f"{count} byte" if count == 1 else f"{count} bytes"


class Reader:
    """Reads the fields of one payload in order; every read checks the bytes are there.

    Integers are little-endian: every characteristic definition in the GATT Specification
    Supplement lists its octets "LSO to MSO" (least significant octet first).
    """

    __slots__ = ("_characteristic", "_data", "_name", "offset")

    def __init__(self, uuid16: int, name: str, payload: bytes) -> None:
        self._characteristic = f"0x{uuid16:04X}"
        self._name = name
        self._data = payload
        self.offset = 0

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self.offset

    def error(
        self, fault: DecodeFault, reason: str, offset: int | None = None
    ) -> DeviceDecodeError:
        """An error about this payload, at `offset` (default: the current read position)."""
        at = self.offset if offset is None else offset
        return DeviceDecodeError(self._characteristic, self._name, at, fault, reason)

    def take(self, count: int, what: str) -> bytes:
        """The next `count` bytes, holding the field `what` (named in the error if short)."""
        if count > self.remaining:
            left = _plural(self.remaining)
            raise self.error(
                DecodeFault.TRUNCATED,
                f"needs {_plural(count)} for the {what}, payload has {left} left",
            )
        chunk = self._data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def rest(self) -> bytes:
        """Every byte not read yet."""
        chunk = self._data[self.offset :]
        self.offset = len(self._data)
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, f"uint8 {what}")[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, f"uint16 {what}"), "little")

    def s16(self, what: str) -> int:
        return int.from_bytes(self.take(2, f"sint16 {what}"), "little", signed=True)

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, f"24-bit {what}"), "little")

    def sfloat(self, what: str) -> Measured:
        return decode_sfloat(int.from_bytes(self.take(2, f"SFLOAT {what}"), "little"))

    def float32(self, what: str) -> Measured:
        return decode_float(int.from_bytes(self.take(4, f"FLOAT {what}"), "little"))

    def date_time(self, what: str) -> datetime | None:
        """A Date Time field as a naive datetime in the device's clock; None when not known.

        A zero year, month or day is the format's "not known" and yields None; any other value
        outside its range, or a day the month does not have, is impossible.
        """
        start = self.offset
        raw = self.take(DATE_TIME_BYTES, f"7-byte Date Time {what}")
        year = int.from_bytes(raw[0:2], "little")
        month, day = raw[2], raw[3]
        for index, (field, limit) in enumerate(_TIME_LIMITS):
            if raw[4 + index] > limit:
                raise self.error(
                    DecodeFault.IMPOSSIBLE,
                    f"{what} {field} is {raw[4 + index]}, at most {limit}",
                    start + 4 + index,
                )
        if year != 0 and not _YEAR_MIN <= year <= _YEAR_MAX:
            raise self.error(
                DecodeFault.IMPOSSIBLE,
                f"{what} year is {year}, outside {_YEAR_MIN}..{_YEAR_MAX} (0 = not known)",
                start,
            )
        if month > 12:
            raise self.error(
                DecodeFault.IMPOSSIBLE, f"{what} month is {month}, at most 12", start + 2
            )
        if 0 in (year, month, day):
            return None
        try:
            # Device time has no zone in the Date Time format: a naive datetime says exactly that.
            return datetime(year, month, day, raw[4], raw[5], raw[6])  # noqa: DTZ001
        except ValueError:
            raise self.error(
                DecodeFault.IMPOSSIBLE,
                f"{what} day is {day}, which {year}-{month:02d} does not have",
                start + 3,
            ) from None

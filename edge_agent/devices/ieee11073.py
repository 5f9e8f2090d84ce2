"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit): decimal numbers with explicit "no value".

Both types are a signed base-10 exponent and a signed mantissa in two's complement, value =
mantissa x 10**exponent (IEEE 11073-20601, Annex F.7 FLOAT-Type and F.8 SFLOAT-Type; the
Bluetooth health profiles use them as "FLOAT" and "SFLOAT", the GATT Specification Supplement
as medfloat32 and medfloat16):

    SFLOAT  bits 15-12 exponent (4 bits, -8..7)   bits 11-0 mantissa (12 bits, -2048..2047)
    FLOAT   bits 31-24 exponent (8 bits, -128..127) bits 23-0 mantissa (24 bits)

With exponent 0 five mantissa values are reserved for special values (same clauses):

    meaning        SFLOAT   FLOAT        mantissa
    NaN            0x07FF   0x007FFFFF   +(2**(n-1) - 1)
    NRes           0x0800   0x00800000   -(2**(n-1))       not representable at this resolution
    +INF           0x07FE   0x007FFFFE   +(2**(n-1) - 2)
    -INF           0x0802   0x00800002   -(2**(n-1) - 2)
    reserved       0x0801   0x00800001   -(2**(n-1) - 1)

A special value is never turned into a number: it decodes to `NoValue` with its reason. Finite
values decode to `Number`, which keeps mantissa and exponent so unit conversions are exact and a
value converts to the float nearest the decimal (36.4, not 36.400000000000006).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, TypeAlias


class NoValueReason(enum.StrEnum):
    """Why a field carries no number."""

    NAN = "NaN"
    """Not a Number: the device has no valid value (probe off, measurement failed)."""
    NRES = "NRes"
    """Not at this Resolution: the value exists but the format cannot hold it."""
    POSITIVE_INFINITY = "+INF"
    """Above the device's measuring range."""
    NEGATIVE_INFINITY = "-INF"
    """Below the device's measuring range."""
    RESERVED = "reserved"
    """A pattern the standard reserves for future use."""
    NOT_KNOWN = "not known"
    """A fixed-point GATT field's "value is not known" pattern (e.g. 0x8000 for Temperature)."""


@dataclass(slots=True, frozen=True)
class NoValue:
    """A field that holds no number; `raw` is the field's bit pattern as sent."""

    reason: NoValueReason
    raw: int


@dataclass(slots=True, frozen=True)
class Number:
    """A finite IEEE 11073 decimal: mantissa x 10**exponent."""

    mantissa: int
    exponent: int

    def to_fraction(self) -> Fraction:
        """The exact value."""
        return Fraction(self.mantissa) * Fraction(10) ** self.exponent

    def __float__(self) -> float:
        # The double nearest the exact decimal, rounded once: int -> float and int / int are
        # both correctly rounded in CPython, and Fraction's own float() is that same division,
        # at about a twentieth of its cost (test_ieee11073: equal for every SFLOAT pattern).
        if self.exponent >= 0:
            return float(self.mantissa * 10**self.exponent)
        divisor: int = 10**-self.exponent
        return self.mantissa / divisor


Measured: TypeAlias = Number | NoValue
"""What an SFLOAT or FLOAT field decodes to."""


@dataclass(slots=True, frozen=True)
class _Layout:
    exponent_bits: int
    mantissa_bits: int

    @property
    def mantissa_mask(self) -> int:
        return (1 << self.mantissa_bits) - 1

    @property
    def exponent_mask(self) -> int:
        return (1 << self.exponent_bits) - 1

    @property
    def specials(self) -> dict[int, NoValueReason]:
        # Annex F.7/F.8: the special values sit at exponent 0, at the ends of the mantissa range.
        top = 1 << (self.mantissa_bits - 1)
        return {
            top - 1: NoValueReason.NAN,
            -top: NoValueReason.NRES,
            top - 2: NoValueReason.POSITIVE_INFINITY,
            -(top - 2): NoValueReason.NEGATIVE_INFINITY,
            -(top - 1): NoValueReason.RESERVED,
        }


_SFLOAT: Final = _Layout(exponent_bits=4, mantissa_bits=12)
_FLOAT: Final = _Layout(exponent_bits=8, mantissa_bits=24)
_SFLOAT_SPECIALS: Final = _SFLOAT.specials
_FLOAT_SPECIALS: Final = _FLOAT.specials


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _decode(raw: int, layout: _Layout, specials: dict[int, NoValueReason]) -> Measured:
    exponent = _signed((raw >> layout.mantissa_bits) & layout.exponent_mask, layout.exponent_bits)
    mantissa = _signed(raw & layout.mantissa_mask, layout.mantissa_bits)
    if exponent == 0 and mantissa in specials:
        return NoValue(specials[mantissa], raw)
    return Number(mantissa, exponent)


def _encode(value: Measured, layout: _Layout, specials: dict[int, NoValueReason]) -> int:
    if isinstance(value, NoValue):
        if value.reason is NoValueReason.NOT_KNOWN:
            msg = "IEEE 11073 floats have no 'not known' pattern; use NaN"
            raise ValueError(msg)
        mantissa = next(m for m, reason in specials.items() if reason is value.reason)
        exponent = 0
    else:
        mantissa, exponent = value.mantissa, value.exponent
        if exponent == 0 and mantissa in specials:
            msg = f"mantissa {mantissa} with exponent 0 is the {specials[mantissa]} pattern"
            raise ValueError(msg)
    top_m = 1 << (layout.mantissa_bits - 1)
    top_e = 1 << (layout.exponent_bits - 1)
    if not -top_m <= mantissa < top_m or not -top_e <= exponent < top_e:
        msg = (
            f"mantissa {mantissa} or exponent {exponent} does not fit "
            f"{layout.mantissa_bits}+{layout.exponent_bits} bits"
        )
        raise ValueError(msg)
    return ((exponent & layout.exponent_mask) << layout.mantissa_bits) | (
        mantissa & layout.mantissa_mask
    )


def decode_sfloat(raw: int) -> Measured:
    """Decode a 16-bit SFLOAT given as an unsigned integer (read little-endian off the wire)."""
    return _decode(raw & 0xFFFF, _SFLOAT, _SFLOAT_SPECIALS)


def decode_float(raw: int) -> Measured:
    """Decode a 32-bit FLOAT given as an unsigned integer (read little-endian off the wire)."""
    return _decode(raw & 0xFFFF_FFFF, _FLOAT, _FLOAT_SPECIALS)


def encode_sfloat(value: Measured) -> int:
    """The 16-bit pattern of a value; ValueError if it does not fit or collides with a special."""
    return _encode(value, _SFLOAT, _SFLOAT_SPECIALS)


def encode_float(value: Measured) -> int:
    """The 32-bit pattern of a value; ValueError if it does not fit or collides with a special."""
    return _encode(value, _FLOAT, _FLOAT_SPECIALS)

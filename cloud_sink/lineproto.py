"""InfluxDB line protocol encoding (escaping per the InfluxDB 1.x line protocol reference)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from cloud_sink.errors import CloudSinkError

# Escapes per element: measurement (comma, space), tag keys/values and field keys (comma, equals,
# space), string field values (double quote, backslash).
_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_STRING: Final = str.maketrans({'"': r"\"", "\\": "\\\\"})

FieldValue = float | int | bool | str


class LineProtocolError(CloudSinkError):
    """A point cannot be encoded (non-finite float, empty fields); the caller dead-letters it."""


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"field value {value!r} is not finite"
            raise LineProtocolError(msg)
        return repr(value)
    return '"' + value.translate(_STRING) + '"'


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    ts_ns: int,
) -> str:
    """One line: tags sorted by key (InfluxDB's preferred order), fields as given, ns timestamp."""
    if not fields:
        msg = f"point {measurement!r} has no fields"
        raise LineProtocolError(msg)
    head = measurement.translate(_MEASUREMENT)
    tag_part = "".join(
        f",{key.translate(_KEY)}={value.translate(_KEY)}"
        for key, value in sorted(tags.items())
        if value != ""
    )
    field_part = ",".join(f"{key.translate(_KEY)}={_field(value)}" for key, value in fields.items())
    return f"{head}{tag_part} {field_part} {ts_ns}"

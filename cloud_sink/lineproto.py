"""InfluxDB line protocol, byte-identical to influxdb-client's Point.to_line_protocol().

Escaping follows the InfluxDB line-protocol reference: measurement (comma, space, and the
control characters newline, tab, carriage return), tag keys/values and field keys (also '='),
string field values (double quote, backslash). Tags and fields are sorted by key, empty tags
are left out, a float prints as Python's shortest round-trip form without a trailing ".0".
The one deliberate difference: a non-finite float raises instead of silently vanishing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from cloud_sink.errors import CloudSinkError

_CONTROL: Final = {"\n": r"\n", "\t": r"\t", "\r": r"\r"}
_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ ", **_CONTROL})
_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", **_CONTROL})
_STRING: Final = str.maketrans({'"': r"\"", "\\": "\\\\"})

FieldValue = float | int | bool | str


class LineProtocolError(CloudSinkError):
    """A point cannot be encoded (non-finite float, no fields); the caller dead-letters it."""


def _float(value: float) -> str:
    if not math.isfinite(value):
        msg = f"field value {value!r} is not finite"
        raise LineProtocolError(msg)
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return _float(value)
    return '"' + value.translate(_STRING) + '"'


def _tag_value(value: str) -> str:
    escaped = value.translate(_KEY)
    # A trailing backslash would escape the separating space: pad it as influxdb-client does.
    return escaped + " " if escaped.endswith("\\") else escaped


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    ts_ns: int,
) -> str:
    """One point: `measurement,tags fields ts_ns`, tags and fields sorted by key."""
    if not fields:
        msg = f"point {measurement!r} has no fields"
        raise LineProtocolError(msg)
    tag_parts = []
    for key, value in sorted(tags.items()):
        escaped_key, escaped_value = key.translate(_KEY), _tag_value(value)
        if escaped_key and escaped_value:
            tag_parts.append(f"{escaped_key}={escaped_value}")
    tag_text = "," + ",".join(tag_parts) if tag_parts else ""
    field_text = ",".join(
        f"{key.translate(_KEY)}={_field(value)}" for key, value in sorted(fields.items())
    )
    return f"{measurement.translate(_MEASUREMENT)}{tag_text} {field_text} {ts_ns}"


def vital_line(
    patient: str, metric: str, device: str, *, value: float, quality: int, flags: int, ts_ns: int
) -> str:
    """The `vital` point of DESIGN §4, on the sink's hot path.

    Identical to `encode_line("vital", ...)` for the inputs the sink passes: tokens are validated
    hex and metric names come from the catalogue, so nothing needs escaping.
    """
    if not math.isfinite(value):
        msg = f"field value {value!r} is not finite"
        raise LineProtocolError(msg)
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
    return (
        f"vital,device={device},metric={metric},patient={patient} "
        f"flags={flags}i,quality={quality}i,value={text} {ts_ns}"
    )

"""InfluxDB line protocol, byte-identical to influxdb-client's Point.to_line_protocol().

Escaping follows the InfluxDB line-protocol reference: measurement (comma, space, and the
control characters newline, tab, carriage return), tag keys/values and field keys (also '='),
string field values (double quote, backslash). Tags and fields are sorted by key, empty tags
are left out, a float prints as Python's shortest round-trip form without a trailing ".0".
The one deliberate difference: a non-finite float raises instead of silently vanishing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

from cloud_sink.errors import CloudSinkError

_CONTROL: Final = {"\n": r"\n", "\t": r"\t", "\r": r"\r"}
_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ ", **_CONTROL})
_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", **_CONTROL})
_STRING: Final = str.maketrans({'"': r"\"", "\\": "\\\\"})

FieldValue = float | int | bool | str
# Device values are quantised (whole beats per minute, tenths of a degree), so a few thousand
# floats recur: their text is kept instead of running repr() per reading. 0.0 never enters,
# because -0.0 is the same key but prints "-0"; past the limit nothing more is added.
_FLOAT_TEXT_LIMIT: Final = 1 << 16
_float_texts: Final[dict[float, str]] = {}


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


def _float_text(value: float) -> str:
    text = repr(value)
    if text[-2:] == ".0":
        text = text[:-2]
    if value and len(_float_texts) < _FLOAT_TEXT_LIMIT:
        _float_texts[value] = text
    return text


def vital_lines(
    patient: str,
    device: str,
    *,
    metrics: Sequence[str],
    values: Sequence[float],
    quality: Sequence[int],
    flags: Sequence[int],
    stamps_ns: Sequence[int],
) -> list[str]:
    """`vital_line` for every reading of one device block, the same bytes, in one pass.

    The tag prefix is formatted once per block instead of once per reading; nothing needs
    escaping for the same reason as in `vital_line`.
    """
    if not math.isfinite(sum(values)) and not all(map(math.isfinite, values)):
        # A sum is non-finite when a value is (or, rarely, when it overflows: then check each).
        msg = "a field value of the block is not finite"
        raise LineProtocolError(msg)
    head = f"vital,device={device},metric="
    middle = f",patient={patient} flags="
    known = _float_texts.get
    texts = [known(value) or _float_text(value) for value in values]
    return [
        f"{head}{metric}{middle}{f}i,quality={q}i,value={text} {ts_ns}"
        for metric, text, q, f, ts_ns in zip(metrics, texts, quality, flags, stamps_ns, strict=True)
    ]

"""The `--since` option of the sink's commands: an ISO 8601 date-time with a UTC offset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from cloud_sink.errors import CloudSinkError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class SinceError(CloudSinkError):
    """A `--since` value that is not an ISO 8601 date-time with a UTC offset."""


def parse_since(text: str | None) -> datetime | None:
    """The moment `text` names, None when it is None; SinceError saying what to type."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"--since {text!r} is not an ISO 8601 date-time, e.g. 2025-03-14T08:00:00Z"
        raise SinceError(msg) from None
    if moment.tzinfo is None:
        msg = f"--since {text!r} needs a UTC offset, e.g. 2025-03-14T08:00:00Z or ...+01:00"
        raise SinceError(msg)
    return moment


def since_ns(text: str | None) -> int | None:
    """`parse_since` in integer nanoseconds since the UNIX epoch (exact, no float rounding)."""
    moment = parse_since(text)
    if moment is None:
        return None
    delta = moment - _EPOCH
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000

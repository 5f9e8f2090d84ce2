"""MQTT topics of the contract: bt/v1/gw/{gateway_id}/(up/telemetry|up/alerts|status|down/...)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from edge_agent.protocol.errors import TopicError

ROOT: Final = "bt/v1/gw"
GATEWAY_ID_RE: Final = re.compile(r"[a-z0-9-]{3,32}")
# A namespace lets tests and staging share one broker; production leaves it empty.
_PREFIX_RE: Final = re.compile(r"([A-Za-z0-9_-]+/)*")


class Channel(StrEnum):
    """The per-gateway topics, as the suffix after bt/v1/gw/{gateway_id}/."""

    TELEMETRY = "up/telemetry"
    ALERTS = "up/alerts"
    STATUS = "status"
    DOWN = "down"
    KEYS = "down/keys"
    """Sink → gateway key rotation (edge_agent.protocol.commands), retained."""
    ENROL_REQUEST = "enrol/request"
    """Gateway → sink, enrolment only (docs/enrolment.md); not under up/, so not uplink data."""
    ENROL_RESPONSE = "enrol/response"


def validate_gateway_id(gateway_id: str) -> str:
    """Return the id unchanged, or raise TopicError saying what the contract allows."""
    if not GATEWAY_ID_RE.fullmatch(gateway_id):
        msg = f"gateway id {gateway_id!r} is invalid: use 3-32 characters from a-z, 0-9 and '-'"
        raise TopicError(msg)
    return gateway_id


def validate_prefix(prefix: str) -> str:
    """A topic prefix is empty or slash-terminated segments of letters, digits, '_' and '-'."""
    if not _PREFIX_RE.fullmatch(prefix):
        msg = (
            f"topic prefix {prefix!r} is invalid: use segments of [A-Za-z0-9_-] each ending in '/'"
        )
        raise TopicError(msg)
    return prefix


def topic(gateway_id: str, channel: Channel, prefix: str = "") -> str:
    """The full topic for one gateway's channel."""
    return f"{validate_prefix(prefix)}{ROOT}/{validate_gateway_id(gateway_id)}/{channel.value}"


def uplink_filter(prefix: str = "") -> str:
    """Subscription filter for every gateway's uplink (telemetry and alerts)."""
    return f"{validate_prefix(prefix)}{ROOT}/+/up/#"


@dataclass(slots=True, frozen=True)
class ParsedTopic:
    """A received topic split into its contract parts."""

    prefix: str
    gateway_id: str
    channel: Channel


def parse(full_topic: str, prefix: str = "") -> ParsedTopic:
    """Split a received uplink topic; raise TopicError when it is not one of ours."""
    if not full_topic.startswith(prefix):
        msg = f"topic {full_topic!r} lacks the expected prefix {prefix!r}"
        raise TopicError(msg)
    parts = full_topic[len(prefix) :].split("/")
    if len(parts) < 5 or "/".join(parts[:3]) != ROOT:
        msg = f"topic {full_topic!r} is not under {prefix}{ROOT}/{{gateway_id}}/"
        raise TopicError(msg)
    gateway_id = validate_gateway_id(parts[3])
    suffix = "/".join(parts[4:])
    for channel in (Channel.TELEMETRY, Channel.ALERTS, Channel.STATUS):
        if suffix == channel.value:
            return ParsedTopic(prefix, gateway_id, channel)
    if parts[4] == Channel.DOWN.value:
        return ParsedTopic(prefix, gateway_id, Channel.DOWN)
    msg = f"topic {full_topic!r} has an unknown channel {suffix!r}"
    raise TopicError(msg)

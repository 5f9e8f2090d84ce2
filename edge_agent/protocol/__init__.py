"""The edge↔cloud contract: topics, envelope v1, frames v1/v2, metric catalogue, wire errors."""

from edge_agent.protocol.envelope import (
    CONTENT_FRAME_V1,
    Header,
    Opened,
    open_envelope,
    seal,
)
from edge_agent.protocol.errors import (
    AuthenticationError,
    CatalogueError,
    EnvelopeError,
    FrameError,
    TopicError,
    UnknownKeyError,
    WireError,
)
from edge_agent.protocol.frame import (
    AlertEvent,
    BindingEvent,
    DeviceBlock,
    DeviceStatus,
    Frame,
    GatewayHealth,
    decode_frame,
    encode_frame,
)
from edge_agent.protocol.keys import Direction, SessionKey, derive_session_key
from edge_agent.protocol.metrics import CATALOGUE, Metric, by_code, by_name
from edge_agent.protocol.topics import Channel, ParsedTopic, parse, topic, uplink_filter

__all__ = [
    "CATALOGUE",
    "CONTENT_FRAME_V1",
    "AlertEvent",
    "AuthenticationError",
    "BindingEvent",
    "CatalogueError",
    "Channel",
    "DeviceBlock",
    "DeviceStatus",
    "Direction",
    "EnvelopeError",
    "Frame",
    "FrameError",
    "GatewayHealth",
    "Header",
    "Metric",
    "Opened",
    "ParsedTopic",
    "SessionKey",
    "TopicError",
    "UnknownKeyError",
    "WireError",
    "by_code",
    "by_name",
    "decode_frame",
    "derive_session_key",
    "encode_frame",
    "open_envelope",
    "parse",
    "seal",
    "topic",
    "uplink_filter",
]

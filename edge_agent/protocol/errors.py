"""Wire errors: everything the edge↔cloud contract rejects raises a WireError subclass."""

from __future__ import annotations


class WireError(Exception):
    """Root of every error raised while building or reading the edge↔cloud contract."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TopicError(WireError):
    """A topic or gateway id does not follow the contract (bt/v1/gw/{gateway_id}/...)."""


class EnvelopeError(WireError):
    """An envelope is malformed: not msgpack, wrong shape, unknown version or algorithm."""


class AuthenticationError(EnvelopeError):
    """The AEAD tag did not verify: tampered with, misrouted or sealed under another key."""


class UnknownKeyError(EnvelopeError):
    """No key for the envelope's (gateway, epoch): unknown or revoked gateway, or expired epoch."""


class FrameError(WireError):
    """A decrypted frame does not match the frame v1 schema; `path` names the offending field."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"frame field {path}: {reason}")
        self.path = path


class CatalogueError(WireError):
    """A metric name or code is not in the catalogue."""

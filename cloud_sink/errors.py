"""Exception hierarchy of the cloud sink: every error it raises derives from CloudSinkError."""

from __future__ import annotations


class CloudSinkError(Exception):
    """Root of every error the cloud sink raises on purpose."""


class ConfigError(CloudSinkError):
    """A configuration file is unreadable or a key in it is wrong; fix the file and restart."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


class RejectedEnvelope(CloudSinkError):
    """An envelope was refused (tampered, unknown key, misrouted, malformed); never written."""

    def __init__(self, gateway_id: str, reason: str) -> None:
        super().__init__(f"envelope from gateway {gateway_id!r} rejected: {reason}")
        self.gateway_id = gateway_id
        self.reason = reason


class DatabaseUnavailable(CloudSinkError):
    """InfluxDB did not accept a write for a retryable reason; back off and retry without acking."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(f"influxdb unavailable: {reason} (retry in {retry_after_s:.1f} s)")
        self.reason = reason
        self.retry_after_s = retry_after_s


class DatabaseRejected(CloudSinkError):
    """InfluxDB refused lines as malformed (4xx); those lines are dead-lettered with this reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"influxdb rejected the write (HTTP {status}): {reason}")
        self.status = status
        self.reason = reason


class QueryError(CloudSinkError):
    """An InfluxQL query failed; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"influxdb query failed: {reason}")
        self.reason = reason

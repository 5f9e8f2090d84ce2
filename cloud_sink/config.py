"""The sink's TOML configuration, validated into frozen settings (unknown keys are errors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud_sink.consumer import ConsumerSettings
from cloud_sink.errors import ConfigError
from cloud_sink.pipeline import WriterSettings
from edge_agent.protocol.settings import SettingsError, Table, load

NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
PREFIX_PATTERN = r"([A-Za-z0-9_-]+/)*"


@dataclass(slots=True, frozen=True)
class InfluxSettings:
    url: str
    database: str
    timeout_s: float
    username: str | None
    password: str | None


@dataclass(slots=True, frozen=True)
class SinkConfig:
    source_file: Path
    mqtt: ConsumerSettings
    keyring_dir: Path
    state_dir: Path
    influxdb: InfluxSettings
    writer: WriterSettings


def _mqtt(table: Table) -> ConsumerSettings:
    settings = ConsumerSettings(
        host=table.string("host"),
        port=table.integer("port", low=1, high=65535),
        client_id=table.string("client_id", "cloud-sink-1", pattern=NAME_PATTERN),
        topic_prefix=table.string("topic_prefix", "", pattern=PREFIX_PATTERN),
        keepalive_s=table.integer("keepalive_s", 10, low=2, high=60),
        session_expiry_s=table.integer("session_expiry_s", 86_400, low=0, high=2**32 - 1),
        receive_maximum=table.integer("receive_maximum", 1000, low=1, high=65_535),
        share_group=table.string("share_group", pattern=NAME_PATTERN)
        if table.has("share_group")
        else None,
        username=table.string("username") if table.has("username") else None,
        password=table.string("password") if table.has("password") else None,
    )
    table.finish()
    return settings


def _influx(table: Table) -> InfluxSettings:
    settings = InfluxSettings(
        url=table.string("url", pattern=r"https?://[^\s/]+(:\d+)?/?"),
        database=table.string("database", pattern=NAME_PATTERN),
        timeout_s=table.number("timeout_s", 10.0, low=0.5, high=300.0),
        username=table.string("username") if table.has("username") else None,
        password=table.string("password") if table.has("password") else None,
    )
    table.finish()
    return settings


def _writer(table: Table | None) -> WriterSettings:
    if table is None:
        return WriterSettings(batch_lines=5000, max_age_s=0.25, retry_max_s=30.0)
    settings = WriterSettings(
        batch_lines=table.integer("batch_lines", 5000, low=1, high=1_000_000),
        max_age_s=table.integer("max_age_ms", 250, low=1, high=60_000) / 1000.0,
        retry_max_s=table.number("retry_max_s", 30.0, low=0.1, high=3600.0),
    )
    table.finish()
    return settings


def load_sink_config(path: Path) -> SinkConfig:
    """Read and validate a sink config; ConfigError names the file, line and key."""
    try:
        root = load(path)
        keyring = root.table("keyring")
        state = root.table("state")
        config = SinkConfig(
            source_file=path,
            mqtt=_mqtt(root.table("mqtt")),
            keyring_dir=keyring.path("dir"),
            state_dir=state.path("dir"),
            influxdb=_influx(root.table("influxdb")),
            writer=_writer(root.optional_table("writer")),
        )
        keyring.finish()
        state.finish()
        root.finish()
    except SettingsError as exc:
        raise ConfigError(exc.location, exc.key, exc.why) from exc
    return config

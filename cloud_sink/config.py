"""The sink's TOML configuration, validated into frozen settings (unknown keys are errors)."""

from __future__ import annotations

import shlex
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_sink.access import AccessPolicy, parse_access
from cloud_sink.broker_auth import (
    USERNAME_PATTERN,
    BrokerAdmin,
    BrokerAuthError,
    read_client_password,
)
from cloud_sink.consumer import ConsumerSettings
from cloud_sink.errors import ConfigError
from cloud_sink.identity import IDENTITY_FILE
from cloud_sink.influx import InfluxV1
from cloud_sink.pipeline import WriterSettings
from edge_agent.protocol.settings import SettingsError, Table, load

NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
PREFIX_PATTERN = r"([A-Za-z0-9_-]+/)*"
# An absolute URI (RFC 3986 §4.3: a scheme, then no spaces): what FHIR's Identifier.system takes.
URI_PATTERN = r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+"
DEFAULT_REFERENCE_SYSTEM = "urn:bedside-twin:hospital-patient-reference"
"""Identifier.system of the reference in an identified FHIR export; set the hospital's own
(e.g. its MRN namespace URI) in [identity] reference_system."""


@dataclass(slots=True, frozen=True)
class InfluxSettings:
    url: str
    database: str
    timeout_s: float
    username: str | None
    password: str | None

    def client(self) -> InfluxV1:
        return InfluxV1(self.url, self.database, self.timeout_s, self.username, self.password)


@dataclass(slots=True, frozen=True)
class SinkConfig:
    source_file: Path
    mqtt: ConsumerSettings
    keyring_dir: Path
    state_dir: Path
    influxdb: InfluxSettings
    writer: WriterSettings
    access: AccessPolicy
    """Who may run the commands that read or change patient data or the fleet ([access];
    without it every such command is refused: docs/audit-and-access.md §2.4)."""
    broker: BrokerAdmin | None = None
    """The broker's password and ACL files, when this sink administers its broker ([broker])."""
    identity_file: Path | None = None
    """The identity registry ([identity] file); None: `state_dir/identity.json`. Sinks of one
    shared subscription name one file, so each reference is found whichever sink stored it."""
    reference_system: str = DEFAULT_REFERENCE_SYSTEM
    """FHIR Identifier.system of the hospital's patient reference in an identified export."""

    @property
    def identity_path(self) -> Path:
        return self.identity_file or self.state_dir / IDENTITY_FILE


def _password(table: Table, required: bool) -> tuple[Path | None, str | None]:
    """The sink identity's broker password from `password_file` (0600), never from the TOML."""
    if table.has("password"):
        key = f"{table.name}.password"
        raise table.doc.error(
            key,
            "do not put the broker password in the config: write it to a file of mode 0600 "
            "and name that file with password_file",
        )
    if not table.has("password_file"):
        return None, None
    path = table.path("password_file")
    if not required and not path.exists():
        return path, None
    try:
        return path, read_client_password(path)
    except BrokerAuthError as exc:
        key = f"{table.name}.password_file"
        raise table.doc.error(key, exc.reason) from None


def _mqtt(table: Table, password_required: bool) -> ConsumerSettings:
    password_file, password = _password(table, password_required)
    tls_ca_file = table.path("tls_ca_file") if table.has("tls_ca_file") else None
    if tls_ca_file is not None and not tls_ca_file.is_file():
        key = f"{table.name}.tls_ca_file"
        raise table.doc.error(key, f"{tls_ca_file} is not a file")
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
        username=table.string("username", pattern=USERNAME_PATTERN)
        if table.has("username")
        else None,
        password=password,
        tls_ca_file=tls_ca_file,
        password_file=password_file,
    )
    if settings.password is not None and settings.username is None:
        key = f"{table.name}.username"
        raise table.doc.error(key, "missing (password_file needs it)")
    table.finish()
    return settings


def _broker(table: Table | None) -> BrokerAdmin | None:
    if table is None:
        return None
    has_pid, has_command = table.has("pid_file"), table.has("reload_command")
    if has_pid == has_command:
        raise table.doc.error(
            table.name,
            "set exactly one of pid_file (Mosquitto's pid_file: the sink sends it SIGHUP) and "
            'reload_command (e.g. "systemctl reload mosquitto")',
        )
    command = shlex.split(table.string("reload_command")) if has_command else None
    if command is not None and not command:
        key = f"{table.name}.reload_command"
        raise table.doc.error(key, "is empty")
    settings = BrokerAdmin(
        password_file=table.path("password_file"),
        acl_file=table.path("acl_file"),
        pid_file=table.path("pid_file") if has_pid else None,
        reload_command=tuple(command) if command is not None else None,
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


def _identity(table: Table | None) -> dict[str, Any]:
    if table is None:
        return {}
    settings = {
        "identity_file": table.path("file") if table.has("file") else None,
        "reference_system": table.string(
            "reference_system", DEFAULT_REFERENCE_SYSTEM, pattern=URI_PATTERN
        ),
    }
    table.finish()
    return settings


def load_sink_config(path: Path, *, password_required: bool = True) -> SinkConfig:
    """Read and validate a sink config; ConfigError names the file, line and key.

    With `password_required` false a missing `[mqtt] password_file` is allowed (the command
    that creates it, `cloud-sink gateways broker-setup`, loads the config first).
    """
    try:
        root = load(path)
        keyring = root.table("keyring")
        state = root.table("state")
        config = SinkConfig(
            source_file=path,
            mqtt=_mqtt(root.table("mqtt"), password_required),
            keyring_dir=keyring.path("dir"),
            state_dir=state.path("dir"),
            influxdb=_influx(root.table("influxdb")),
            writer=_writer(root.optional_table("writer")),
            access=parse_access(root.optional_table("access")),
            broker=_broker(root.optional_table("broker")),
            **_identity(root.optional_table("identity")),
        )
        keyring.finish()
        state.finish()
        root.finish()
    except SettingsError as exc:
        raise ConfigError(exc.location, exc.key, exc.why) from exc
    return config


def open_database(config: SinkConfig) -> closing[InfluxV1]:
    """A client for the database `config` names, closed on leaving `with`.

    It takes the loaded config, not a path: the commands load it through `cli_guard.admit`,
    which checks the caller's access first.
    """
    return closing(config.influxdb.client())

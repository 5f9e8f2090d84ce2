"""The agent's TOML configuration, validated into frozen settings (unknown keys are errors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_agent.errors import ConfigError
from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import SettingsError, Table, load, read_secret_file
from edge_agent.publisher import BrokerSettings

GATEWAY_ID_PATTERN = r"[a-z0-9-]{3,32}"
CLIENT_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
BROKER_USERNAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
BROKER_PASSWORD_FILE: Final = "broker-password"  # noqa: S105 - a file name, not a secret
"""Default `[mqtt] password_file`, in the state directory; `edge-agent enroll` writes it."""
PREFIX_PATTERN = r"([A-Za-z0-9_-]+/)*"
PSEUDONYM_PATTERN = r"[0-9a-f]{32}"  # 128-bit surrogate tokens, lowercase hex
SERIAL_KINDS = ("implant-receiver", "bedside-monitor")
# Kept here rather than imported so the agent imports firmware_sims only when simulating.
SIMULATED_EVENTS = ("desaturation", "tachycardia", "bradycardia", "fever", "hypotension", "af")


@dataclass(slots=True, frozen=True)
class GatewaySettings:
    gateway_id: str
    secret_file: Path
    state_dir: Path


@dataclass(slots=True, frozen=True)
class PipelineSettings:
    batch_interval_s: float
    max_batch_readings: int
    queue_readings: int
    outbox_frames: int
    drain_timeout_s: float


@dataclass(slots=True, frozen=True)
class SpoolSettings:
    """The durable spool of sealed frames (in the state directory)."""

    max_bytes: int
    commit_interval_s: float
    backlog_frames_per_s: float
    inflight_window: int


@dataclass(slots=True, frozen=True)
class FilterSettings:
    """The filter bank: per-metric presets, or explicitly off."""

    enabled: bool
    presets_file: Path


@dataclass(slots=True, frozen=True)
class SerialDeviceSettings:
    """One serial device: its port, its protocol and the pseudonymous tokens it reports under."""

    label: str
    port: Path
    kind: str
    device_token: str
    patient_token: str
    baudrate: int


@dataclass(slots=True, frozen=True)
class SimulationSettings:
    """Present only in demo and test configs: simulated patients instead of real devices."""

    patients: int
    seed: int
    ledger_file: Path
    interval_scale: float
    events_per_hour: float
    scripted_event: str | None
    implant_receivers: int
    """Patients 1..k also have an implant telemetry receiver on a pseudo-terminal."""
    bedside_monitors: int
    """The last k patients also have a legacy bedside monitor on a pseudo-terminal."""
    warm_room: bool = False
    """The room warms to ~29.5 C from 1 s after start (firmware_sims.ward): the report's heart
    rate per degree above 25 C then has data within a short demo."""
    ward_socket: Path | None = None
    """The ward runs in its own process (`firmware-sims ward --config`), served on this unix
    socket; None: the agent powers it in its own process."""


@dataclass(slots=True, frozen=True)
class AgentConfig:
    source_file: Path
    gateway: GatewaySettings
    broker: BrokerSettings
    pipeline: PipelineSettings
    spool: SpoolSettings
    filters: FilterSettings
    serial: tuple[SerialDeviceSettings, ...]
    simulation: SimulationSettings | None

    def master_secret(self) -> bytes:
        """Read the gateway master secret (hex, file mode 0600)."""
        try:
            return read_secret_file(self.gateway.secret_file, MASTER_SECRET_BYTES)
        except SettingsError as exc:
            raise ConfigError(exc.location, "gateway.secret_file", exc.why) from exc


def _gateway(table: Table) -> GatewaySettings:
    settings = GatewaySettings(
        gateway_id=table.string("id", pattern=GATEWAY_ID_PATTERN),
        secret_file=table.path("secret_file"),
        state_dir=table.path("state_dir"),
    )
    table.finish()
    return settings


def read_broker_password(path: Path) -> str:
    """The broker password: one line in a file only its owner may read (0600)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(str(path), "mqtt.password_file", f"cannot read: {exc}") from exc
    if mode & 0o077:
        why = f"mode {mode & 0o777:04o} is too open; chmod 600 it"
        raise SettingsError(str(path), "mqtt.password_file", why)
    password = text.strip()
    if not password or "\n" in password:
        raise SettingsError(str(path), "mqtt.password_file", "must hold the password on one line")
    return password


def _broker(table: Table, gateway: GatewaySettings) -> BrokerSettings:
    gateway_id = gateway.gateway_id
    if table.has("password"):
        key = "mqtt.password"
        why = "not in the config: `edge-agent enroll` stores it in a 0600 file (password_file)"
        raise table.doc.error(key, why)
    password_file = table.path("password_file", str(gateway.state_dir / BROKER_PASSWORD_FILE))
    # Absent until `edge-agent enroll` has run (or for a broker that needs no password).
    password = read_broker_password(password_file) if password_file.exists() else None
    # Checked when the agent connects (edge_agent.publisher.tls_context), not here: `config
    # check` on an engineer's laptop must accept the gateway's paths.
    tls_ca_file = table.path("tls_ca_file") if table.has("tls_ca_file") else None
    settings = BrokerSettings(
        host=table.string("host"),
        port=table.integer("port", low=1, high=65535),
        client_id=table.string("client_id", f"gw-{gateway_id}", pattern=CLIENT_ID_PATTERN),
        topic_prefix=table.string("topic_prefix", "", pattern=PREFIX_PATTERN),
        # A dead link must be noticed within 15 s (1.5 x keepalive): at most 10 s.
        keepalive_s=table.integer("keepalive_s", 10, low=2, high=10),
        connect_timeout_s=table.number("connect_timeout_s", 10.0, low=0.5, high=120.0),
        publish_timeout_s=table.number("publish_timeout_s", 10.0, low=0.5, high=120.0),
        reconnect_max_s=table.number("reconnect_max_s", 10.0, low=0.5, high=600.0),
        tls_ca_file=str(tls_ca_file) if tls_ca_file is not None else None,
        session_expiry_s=table.integer("session_expiry_s", 86_400, low=0, high=7 * 86_400),
        # The broker's ACL patterns name a gateway's topics by its username: keep them equal.
        username=table.string("username", gateway_id, pattern=BROKER_USERNAME_PATTERN),
        password=password,
        password_file=password_file,
    )
    table.finish()
    return settings


def _pipeline(table: Table | None) -> PipelineSettings:
    if table is None:
        return PipelineSettings(1.0, 2000, 10_000, 64, 30.0)
    settings = PipelineSettings(
        batch_interval_s=table.number("batch_interval_s", 1.0, low=0.01, high=60.0),
        max_batch_readings=table.integer("max_batch_readings", 2000, low=1, high=100_000),
        queue_readings=table.integer("queue_readings", 10_000, low=1, high=10_000_000),
        outbox_frames=table.integer("outbox_frames", 64, low=1, high=100_000),
        drain_timeout_s=table.number("drain_timeout_s", 30.0, low=0.0, high=3600.0),
    )
    table.finish()
    return settings


def _spool(table: Table | None) -> SpoolSettings:
    if table is None:
        return SpoolSettings(256 * 1024 * 1024, 0.2, 50.0, 16)
    settings = SpoolSettings(
        max_bytes=table.integer("max_bytes", 256 * 1024 * 1024, low=64 * 1024, high=2**40),
        commit_interval_s=table.number("commit_interval_s", 0.2, low=0.0, high=0.2),
        backlog_frames_per_s=table.number("backlog_frames_per_s", 50.0, low=0.1, high=100_000.0),
        inflight_window=table.integer("inflight_window", 16, low=1, high=1000),
    )
    table.finish()
    return settings


def _filters(table: Table) -> FilterSettings:
    settings = FilterSettings(
        enabled=table.boolean("enabled", True), presets_file=table.path("presets_file")
    )
    table.finish()
    return settings


def _serial(table: Table) -> SerialDeviceSettings:
    settings = SerialDeviceSettings(
        label=table.string("label", pattern=r"[a-z0-9_-]{1,32}"),
        port=table.path("port"),
        kind=table.choice("kind", SERIAL_KINDS),
        device_token=table.string("device_token", pattern=PSEUDONYM_PATTERN),
        patient_token=table.string("patient_token", pattern=PSEUDONYM_PATTERN),
        baudrate=table.integer("baudrate", 115_200, low=300, high=4_000_000),
    )
    table.finish()
    return settings


# Each simulated patient brings five BLE links and an adapter's worth of tasks: a demo ward, not
# a load generator.
MAX_SIMULATED_PATIENTS: Final = 64
# sockaddr_un.sun_path is 108 bytes on Linux, the terminating NUL included (unix(7)).
MAX_SOCKET_PATH: Final = 107


def _simulation(table: Table | None) -> SimulationSettings | None:
    if table is None:
        return None
    # 0: no simulated ward, only unbound simulated devices to pair through the registry.
    patients = table.integer("patients", low=0, high=MAX_SIMULATED_PATIENTS)
    settings = SimulationSettings(
        patients=patients,
        seed=table.integer("seed", 1),
        ledger_file=table.path("ledger_file"),
        interval_scale=table.number("interval_scale", 1.0, low=0.01, high=1000.0),
        events_per_hour=table.number("events_per_hour", 0.0, low=0.0, high=60.0),
        scripted_event=table.choice("scripted_event", SIMULATED_EVENTS)
        if table.has("scripted_event")
        else None,
        # At most one of each per patient: a bed has one receiver and one monitor.
        implant_receivers=table.integer("implant_receivers", 0, low=0, high=patients),
        bedside_monitors=table.integer("bedside_monitors", 0, low=0, high=patients),
        warm_room=table.boolean("warm_room", default=False),
        ward_socket=table.path("ward_socket") if table.has("ward_socket") else None,
    )
    if settings.ward_socket is not None and len(bytes(settings.ward_socket)) > MAX_SOCKET_PATH:
        why = (
            f"{len(bytes(settings.ward_socket))} bytes; a unix socket path holds at most "
            f"{MAX_SOCKET_PATH}: use a shorter path"
        )
        key = "simulation.ward_socket"
        raise table.doc.error(key, why)
    table.finish()
    return settings


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate an agent config; ConfigError names the file, line and key."""
    try:
        root = load(path)
        gateway = _gateway(root.table("gateway"))
        config = AgentConfig(
            source_file=path,
            gateway=gateway,
            broker=_broker(root.table("mqtt"), gateway),
            pipeline=_pipeline(root.optional_table("pipeline")),
            spool=_spool(root.optional_table("spool")),
            filters=_filters(root.table("filters")),
            serial=tuple(_serial(t) for t in root.table_list("serial")),
            simulation=_simulation(root.optional_table("simulation")),
        )
        root.finish()
    except SettingsError as exc:
        raise ConfigError(exc.location, exc.key, exc.why) from exc
    return config

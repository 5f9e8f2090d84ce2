"""Runs the real agent and sink as child processes against local services, fresh configs.

With a secure broker (`MosquittoServer(..., secure=True)`) the stack is set up as a deployment
is (docs/broker-security.md): `cloud-sink gateways broker-setup` writes the ACL and the sink
identity's credential, every gateway is added with `cloud-sink gateways add` and enrolled with
`edge-agent enroll` (real commands, in child processes), and sink and agents then talk TLS with
their own credentials. With the default anonymous broker, secrets are shared by hand.

The sink config names one admin identity (docs/audit-and-access.md); its token is in a 0600
file, `admin_token_file`, which the stack's own `cloud-sink` commands pass as --token-file and
tests may too.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edge_agent.protocol.keys import MASTER_SECRET_BYTES
from edge_agent.protocol.settings import write_secret_file
from firmware_sims.services import InfluxServer, MosquittoServer, ServiceError

READY_TIMEOUT_S: Final = 30.0


def start_ward_process(
    config_file: Path,
    log_file: Path,
    *,
    timeout_s: float = READY_TIMEOUT_S,
    log_level: str = "info",
) -> subprocess.Popen[bytes]:
    """`firmware-sims ward` for an agent config, returned once its socket listens (ServiceError,
    with the log's tail, if it exits or does not listen within `timeout_s`). A ward serves one
    agent run: the agent's stop switches its devices off."""
    ready = config_file.parent / "ward.ready"
    ready.unlink(missing_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "firmware_sims", "ward", "--config", str(config_file),
                "--ready-file", str(ready), "--log-level", log_level,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=config_file.parent,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            tail = log_file.read_text(errors="replace")[-2000:]
            msg = f"firmware-sims ward did not listen; log tail:\n{tail}"
            raise ServiceError(msg)
        time.sleep(0.02)
    return process


ENROL_TIMEOUT_S: Final = 60.0
SINK_USERNAME: Final = "cloud_sink"
STACK_ADMIN: Final = "stack-admin"
# The repository's presets: the demo and the tests run the filters the gateways ship with.
PRESETS_FILE: Final = Path(__file__).resolve().parent.parent / "configs" / "filters.toml"


@dataclass(frozen=True)
class SerialDevice:
    """A simulated serial device the agent reads through a pseudo-terminal."""

    label: str
    link: Path
    kind: str
    device_token: str
    patient_token: str

    def toml(self) -> str:
        return (
            f'\n[[serial]]\nlabel = "{self.label}"\nport = "{self.link}"\nkind = "{self.kind}"\n'
            f'device_token = "{self.device_token}"\npatient_token = "{self.patient_token}"\n'
        )


@dataclass
class GatewayRun:
    """One agent process with its config and ground-truth ledger."""

    gateway_id: str
    config_file: Path
    ledger_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    ward_apart: bool = False
    """The simulated ward runs in its own process (`firmware-sims ward`), started with the agent."""
    ward_process: subprocess.Popen[bytes] | None = None

    @property
    def ward_log(self) -> Path:
        return self.log_file.with_name("ward.log")


@dataclass
class LocalStack:
    """Configs, secrets and processes of one local deployment under `root`."""

    root: Path
    broker: MosquittoServer
    influx: InfluxServer
    database: str = "bedside"
    topic_prefix: str = ""
    sink_process: subprocess.Popen[bytes] | None = None
    gateways: list[GatewayRun] = field(default_factory=list)

    @property
    def sink_config(self) -> Path:
        return self.root / "sink" / "sink.toml"

    @property
    def admin_token_file(self) -> Path:
        """The stack admin's access token (0600), for `cloud-sink ... --token-file`."""
        return self.root / "sink" / "admin.token"

    @property
    def keyring_dir(self) -> Path:
        return self.root / "sink" / "keyring"

    @property
    def sink_log(self) -> Path:
        return self.root / "sink" / "sink.log"

    @property
    def secure(self) -> bool:
        """TLS, logins and ACLs: the broker was started with `secure=True`."""
        return self.broker.secure

    def _sink_security(self) -> tuple[str, str]:
        """The [mqtt] lines and the [broker] section of a secure stack's sink config."""
        if not self.secure:
            return "", ""
        broker = self.broker
        mqtt = (
            f'tls_ca_file = "{broker.ca_file}"\n'
            f'username = "{SINK_USERNAME}"\n'
            'password_file = "broker-password"\n'
        )
        section = (
            f'\n[broker]\npassword_file = "{broker.password_file}"\n'
            f'acl_file = "{broker.acl_file}"\npid_file = "{broker.pid_file}"\n'
        )
        return mqtt, section

    def _access_section(self) -> str:
        """The sink config's [access]: one admin, whose new token goes to `admin_token_file`.

        Written as `cloud-sink access token` mints one (a prefixed 256-bit token; the config
        keeps its SHA-256), without importing the sink here.
        """
        token = "btt_" + secrets.token_urlsafe(32)
        fd = os.open(self.admin_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        os.chmod(self.admin_token_file, 0o600)  # an older file keeps its mode through O_CREAT
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        return (
            f'\n[access]\n[[access.identities]]\nname = "{STACK_ADMIN}"\nrole = "admin"\n'
            f'token_sha256 = "{digest}"\n'
        )

    def gateways_command(self, *args: str, timeout_s: float = ENROL_TIMEOUT_S) -> str:
        """Run `cloud-sink gateways ARGS --config <sink config>`; its stdout, or ServiceError."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cloud_sink",
                "gateways",
                *args,
                "--config",
                str(self.sink_config),
                "--token-file",
                str(self.admin_token_file),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            msg = f"cloud-sink gateways {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
            raise ServiceError(msg)
        return done.stdout

    def write_sink_config(self, batch_max_age_ms: int = 250) -> Path:
        """Write the sink's config; on a secure broker also set up the broker's ACL and the sink
        identity's credential (`cloud-sink gateways broker-setup`)."""
        self.sink_config.parent.mkdir(parents=True, exist_ok=True)
        self.keyring_dir.mkdir(parents=True, exist_ok=True)
        mqtt_security, broker_section = self._sink_security()
        access_section = self._access_section()
        self.sink_config.write_text(
            f"""# generated by firmware_sims.stack
[mqtt]
host = "127.0.0.1"
port = {self.broker.port}
client_id = "sink-{self.database}"
topic_prefix = "{self.topic_prefix}"
{mqtt_security}
[keyring]
dir = "keyring"

[state]
dir = "state"

[influxdb]
url = "{self.influx.url}"
database = "{self.database}"

[writer]
batch_lines = 5000
max_age_ms = {batch_max_age_ms}
{broker_section}{access_section}""",
            encoding="utf-8",
        )
        if self.secure:
            self.gateways_command("broker-setup")
        return self.sink_config

    def add_gateway(
        self,
        gateway_id: str,
        patients: int,
        seed: int,
        interval_scale: float = 1.0,
        *,
        drain_timeout_s: float = 30.0,
        scripted_event: str | None = None,
        warm_room: bool = False,
        serial: tuple[SerialDevice, ...] = (),
        implant_receivers: int = 0,
        bedside_monitors: int = 0,
        ward_apart: bool = False,
    ) -> GatewayRun:
        """Write the gateway's config and give both sides its master secret: on a secure stack by
        enrolment (`gateways add` + `edge-agent enroll`, which also mints its broker login),
        otherwise by hand (a 0600 copy each). The sink config must exist already."""
        folder = self.root / gateway_id
        folder.mkdir(parents=True, exist_ok=True)
        if not self.secure:
            secret = os.urandom(MASTER_SECRET_BYTES)
            write_secret_file(folder / "gateway.key", secret)
            write_secret_file(self.keyring_dir / f"{gateway_id}.key", secret)
        tls = f'tls_ca_file = "{self.broker.ca_file}"' if self.secure else ""
        config = folder / "agent.toml"
        config.write_text(
            f"""# generated by firmware_sims.stack
[gateway]
id = "{gateway_id}"
secret_file = "gateway.key"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {self.broker.port}
topic_prefix = "{self.topic_prefix}"
keepalive_s = 10
{tls}

[pipeline]
batch_interval_s = 0.5
drain_timeout_s = {drain_timeout_s}

[filters]
presets_file = "{PRESETS_FILE}"

[simulation]
patients = {patients}
seed = {seed}
ledger_file = "ledger.jsonl"
interval_scale = {interval_scale}
implant_receivers = {implant_receivers}
bedside_monitors = {bedside_monitors}
{f'scripted_event = "{scripted_event}"' if scripted_event else ""}
warm_room = {"true" if warm_room else "false"}
{'ward_socket = "state/ward.sock"' if ward_apart else ""}
{"".join(device.toml() for device in serial)}
""",
            encoding="utf-8",
        )
        run = GatewayRun(
            gateway_id, config, folder / "ledger.jsonl", folder / "agent.log", ward_apart=ward_apart
        )
        if self.secure:
            self.enrol(run)
        self.gateways.append(run)
        return run

    def enrol(self, run: GatewayRun) -> None:
        """`cloud-sink gateways add` and `edge-agent enroll` as an engineer runs them, the
        broker password handed over in a 0600 file (never on a command line)."""
        add = subprocess.Popen(
            [
                sys.executable, "-m", "cloud_sink", "gateways", "add", run.gateway_id, "--json",
                "--timeout", str(ENROL_TIMEOUT_S), "--config", str(self.sink_config),
                "--token-file", str(self.admin_token_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        handover = run.config_file.parent / "broker-password.handover"
        try:
            assert add.stdout is not None  # noqa: S101 - stdout=PIPE
            line = add.stdout.readline()
            if not line:
                _, err = add.communicate(timeout=ENROL_TIMEOUT_S)
                msg = f"cloud-sink gateways add {run.gateway_id} failed: {err[-2000:]}"
                raise ServiceError(msg)
            first = json.loads(line)
            fd = os.open(handover, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as handle:
                handle.write(str(first["broker_password"]) + "\n")
            enrolled = subprocess.run(
                [
                    sys.executable, "-m", "edge_agent", "enroll", str(first["token"]),
                    "--config", str(run.config_file), "--broker-password-file", str(handover),
                ],
                capture_output=True,
                text=True,
                timeout=ENROL_TIMEOUT_S + 10,
                check=False,
            )  # fmt: skip
            _, err = add.communicate(timeout=ENROL_TIMEOUT_S)
        finally:
            handover.unlink(missing_ok=True)
            if add.poll() is None:
                add.kill()
                add.wait()
        if enrolled.returncode != 0 or add.returncode != 0:
            msg = (
                f"enrolment of {run.gateway_id} failed: edge-agent enroll exited with "
                f"{enrolled.returncode} ({enrolled.stderr[-1000:]}), cloud-sink gateways add "
                f"with {add.returncode} ({err[-1000:]})"
            )
            raise ServiceError(msg)

    @staticmethod
    def _spawn(module: str, args: list[str], log_file: Path) -> subprocess.Popen[bytes]:
        with log_file.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=log_file.parent,
            )

    def start_sink(self) -> None:
        ready = self.root / "sink" / "ready"
        ready.unlink(missing_ok=True)
        self.sink_process = self._spawn(
            "cloud_sink",
            ["run", "--config", str(self.sink_config), "--ready-file", str(ready)],
            self.sink_log,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if self.sink_process.poll() is not None or time.monotonic() > deadline:
                tail = self.sink_log.read_text(errors="replace")[-2000:]
                msg = f"cloud-sink did not subscribe; log tail:\n{tail}"
                raise ServiceError(msg)
            time.sleep(0.05)

    def start_agent(self, run: GatewayRun) -> None:
        if run.ward_apart:
            run.ward_process = start_ward_process(run.config_file, run.ward_log)
        run.process = self._spawn(
            "edge_agent", ["run", "--config", str(run.config_file)], run.log_file
        )

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes] | None, timeout_s: float) -> int | None:
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop_agent(self, run: GatewayRun, timeout_s: float = 60.0) -> int | None:
        """SIGTERM: the agent stops its sources, drains to the broker and exits (then its ward,
        when the ward runs apart; a ward that fails to stop raises ServiceError)."""
        code = self._terminate(run.process, timeout_s)
        if run.ward_process is not None:
            ward_code = self._terminate(run.ward_process, timeout_s)
            run.ward_process = None
            if ward_code != 0:
                tail = run.ward_log.read_text(errors="replace")[-2000:]
                msg = f"firmware-sims ward exited with {ward_code}; log tail:\n{tail}"
                raise ServiceError(msg)
        return code

    def stop_sink(self, timeout_s: float = 30.0) -> int | None:
        return self._terminate(self.sink_process, timeout_s)

    def stop_all(self) -> None:
        for run in self.gateways:
            self.stop_agent(run)
        self.stop_sink()

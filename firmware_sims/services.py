"""Local Mosquitto and InfluxDB 1.x as child processes on free loopback ports (demo and tests)."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from firmware_sims.pki import DemoPki, generate_demo_pki

LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
SHIPPED_CONFIG: Final = Path(__file__).resolve().parent.parent / "configs" / "mosquitto.conf"
SIZING_MARKER: Final = "# --- Sizing for outages"
# Lines of the shipped config that name the deployment's listener, files and security; the local
# broker writes its own instead and keeps the rest (the sizing for outages).
_DEPLOYMENT_KEYS: Final = frozenset(
    {
        "listener", "cafile", "capath", "certfile", "keyfile", "tls_version", "ciphers",
        "require_certificate", "allow_anonymous", "password_file", "acl_file", "pid_file",
        "persistence_location", "user", "autosave_interval", "log_dest", "log_type",
        "per_listener_settings",
    }
)  # fmt: skip


def _names_deployment(line: str) -> bool:
    words = line.split(maxsplit=1)
    return bool(words) and words[0] in _DEPLOYMENT_KEYS


class ServiceError(RuntimeError):
    """A local service binary is missing or did not come up; the message says which and why."""


def find_binary(name: str) -> str | None:
    """Debian installs mosquitto in /usr/sbin, which is not on every user's PATH."""
    candidates = (f"/usr/sbin/{name}", f"/usr/bin/{name}")
    return shutil.which(name) or next((p for p in candidates if os.access(p, os.X_OK)), None)


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


class _ChildService:
    """A server child process with its own folder and log; a context manager that stops it."""

    name: str = "service"
    binary: str = ""
    package: str = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _executable(self) -> str:
        found = find_binary(self.binary)
        if found is None:
            msg = (
                f"{self.binary} not found: install the Debian package '{self.package}' "
                "(scripts/bootstrap does it)"
            )
            raise ServiceError(msg)
        return found

    def start(self) -> Self:
        argv = self._argv()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )
        self._wait(self._ready)
        return self

    def _wait(self, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                msg = f"{self.name} exited with {self.process.returncode}; log tail:\n{tail}"
                raise ServiceError(msg)
            if check():
                return
            time.sleep(0.1)
        self.stop()
        msg = f"{self.name} did not answer within {START_TIMEOUT_S:.0f} s (log: {self.log_file})"
        raise ServiceError(msg)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def restart(self) -> Self:
        """Stop and start again on the same port with the same data (an outage, for tests)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MosquittoServer(_ChildService):
    """Mosquitto 2.x on a loopback port, persistence in its own folder.

    By default anonymous and plain TCP (most tests share one such broker by topic prefix).
    With `secure=True` it is set up like a deployment (docs/broker-security.md): a TLS listener
    with a certificate from a throw-away demo CA (firmware_sims.pki), no anonymous clients, and
    a password file and ACL file in its folder, empty until `cloud-sink gateways broker-setup`
    and `gateways add` fill them; `pid_file` lets those commands make it re-read them (SIGHUP).
    """

    name = "mosquitto"
    binary = "mosquitto"
    package = "mosquitto"

    def __init__(self, workdir: Path, *, secure: bool = False) -> None:
        super().__init__(workdir)
        self.secure = secure
        self.pki: DemoPki | None = None
        if secure:
            # Once per server: a restart keeps its certificate, credentials and ACL.
            self.pki = generate_demo_pki(workdir / "pki")
            for path in (self.password_file, self.acl_file):
                if not path.exists():
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                    os.close(fd)

    @property
    def config_file(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def password_file(self) -> Path:
        return self.workdir / "passwords"

    @property
    def acl_file(self) -> Path:
        return self.workdir / "acl"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "mosquitto.pid"

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients verify a secure broker with."""
        if self.pki is None:
            msg = "a plain MosquittoServer has no CA: start it with secure=True"
            raise ServiceError(msg)
        return self.pki.ca_file

    def _listener(self) -> list[str]:
        if self.pki is None:
            return [f"listener {self.port} {LOOPBACK}", "allow_anonymous true"]
        return [
            f"listener {self.port} {LOOPBACK}",
            f"certfile {self.pki.server_cert_file}",
            f"keyfile {self.pki.server_key_file}",
            "tls_version tlsv1.2",  # the oldest version offered; 1.3 is negotiated when possible
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            f"pid_file {self.pid_file}",
        ]

    def _argv(self) -> list[str]:
        executable = self._executable()
        local = [
            "# generated by firmware_sims.services: loopback only, temporary data",
            "per_listener_settings false",
            *self._listener(),
            # Run as root, mosquitto drops to the 'mosquitto' user, which cannot read the 0600
            # files of a root-owned temporary folder: stay the invoking user for this broker.
            *(["user root"] if os.geteuid() == 0 else []),
            f"persistence_location {self.workdir}/",
            # A 1 s autosave so a test's restart finds what was queued a moment before.
            "autosave_interval 1",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
            "# the shipped sizing, from configs/mosquitto.conf:",
        ]
        text = SHIPPED_CONFIG.read_text(encoding="utf-8")
        # Only the sizing: the shipped listener and security section names deployment paths.
        sizing = text[text.find(SIZING_MARKER) :] if SIZING_MARKER in text else text
        shipped = [line for line in sizing.splitlines() if not _names_deployment(line)]
        self.config_file.write_text("\n".join([*local, *shipped, ""]), encoding="utf-8")
        return [executable, "-c", str(self.config_file)]

    def _ready(self) -> bool:
        return tcp_open(self.port)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files (what `cloud-sink gateways`
        does through the pid file)."""
        if self.process is None or self.process.poll() is not None:
            msg = f"{self.name} is not running"
            raise ServiceError(msg)
        self.process.send_signal(signal.SIGHUP)


class InfluxServer(_ChildService):
    """Debian's InfluxDB 1.x with a generated config: temporary meta/data/WAL, loopback HTTP."""

    name = "influxd"
    binary = "influxd"
    package = "influxdb"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.rpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "influxdb.conf"

    def _argv(self) -> list[str]:
        executable = self._executable()
        data = self.workdir / "data"
        self.config_file.write_text(
            f"""# generated by firmware_sims.services: loopback only, temporary data
reporting-disabled = true
bind-address = "{LOOPBACK}:{self.rpc_port}"

[meta]
  dir = "{data}/meta"

[data]
  dir = "{data}/data"
  wal-dir = "{data}/wal"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "{LOOPBACK}:{self.port}"
  log-enabled = false
  max-row-limit = 0

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
""",
            encoding="utf-8",
        )
        return [executable, "-config", str(self.config_file)]

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=1.0)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 204
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

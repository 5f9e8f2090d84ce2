"""The device registry: which device is bound to which (pseudonymous) patient, and since when.

One JSON file the agent owns, `state_dir/registry.json`, mode 0600, replaced atomically. It holds
device addresses and serial ports (needed to reach the devices) but never a patient reference in
clear: a reference is kept only as an HMAC-SHA256 under the gateway master secret, so the same
reference finds the same surrogate token again without the file naming anyone. The reference
itself leaves the gateway only inside sealed binding events (issue #6 keeps it in the sink's
identity registry).

Bindings are time-bounded: removing one sets `until_ns`, and binding the device again mints a new
device token, so readings of two patients never share a device pseudonym.

A binding is written `pending` while `pair add` proves the device (first valid reading) and
confirmed after: the running agent follows the file (pairing_watch.py) and takes a device only
once it is confirmed, so the two never contend for one device. Every change re-reads the file
under an exclusive lock (`registry.json.lock`), so two `pair` commands never undo each other's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from edge_agent.errors import EdgeAgentError

REGISTRY_FILE: Final = "registry.json"
VERSION: Final = 1
Transport = Literal["ble", "serial"]
BLE_KINDS: Final = (
    "hr-strap",
    "chest-patch",
    "pulse-oximeter",
    "thermometer",
    "bp-cuff",
    "glucose-meter",
    "env-sensor",
)
SERIAL_KINDS: Final = ("implant-receiver", "bedside-monitor")
# How often each kind measures (seconds): the silence watchdog waits a multiple of it.
EXPECTED_INTERVAL_S: Final = {
    "hr-strap": 1.0,
    "chest-patch": 1.0,
    "pulse-oximeter": 1.0,
    "thermometer": 10.0,
    "bp-cuff": 900.0,
    "glucose-meter": 300.0,
    "env-sensor": 30.0,
    "implant-receiver": 2.0,
    "bedside-monitor": 1.0,
}
_MAC: Final = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}")
_REF_LABEL: Final = b"bedside-twin/v1/patient-ref"


class RegistryError(EdgeAgentError):
    """The registry cannot be read or changed as asked; the message says what to do."""


@dataclass(slots=True, frozen=True)
class Binding:
    """One device bound to one patient over a time span (`until_ns` None: still bound)."""

    device_token: str
    transport: Transport
    address: str
    """BLE address (upper case) or serial port path: how to reach it, never logged."""
    kind: str
    patient_token: str
    from_ns: int
    until_ns: int | None = None
    pending: bool = False
    """True while `pair add` is still proving the device: not yet the agent's to read."""

    @property
    def active(self) -> bool:
        return self.until_ns is None

    @property
    def in_service(self) -> bool:
        """Bound and confirmed: the running agent reads it."""
        return self.until_ns is None and not self.pending

    @property
    def log_name(self) -> str:
        """Kind plus the first 8 hex digits of the device token: log-safe."""
        return f"{self.kind}-{self.device_token[:8]}"

    @property
    def expected_interval_s(self) -> float:
        return EXPECTED_INTERVAL_S[self.kind]


def new_token() -> str:
    """A 128-bit random surrogate token (lower-case hex)."""
    return secrets.token_hex(16)


def normalise_address(text: str) -> tuple[Transport, str]:
    """A BLE address (any case, ':' or '-') or a serial port path; RegistryError otherwise."""
    candidate = text.strip().upper().replace("-", ":")
    if _MAC.fullmatch(candidate):
        return "ble", candidate
    if text.startswith("/"):
        return "serial", text
    msg = (
        f"{text!r} is neither a Bluetooth address (AA:BB:CC:DD:EE:FF) nor a serial port path "
        "(/dev/serial/by-id/...)"
    )
    raise RegistryError(msg)


class Registry:
    """Load, change and save the registry; every change is written before it returns."""

    def __init__(self, path: Path, master_secret: bytes) -> None:
        self.path = path
        self._key = hmac.new(master_secret, _REF_LABEL, hashlib.sha256).digest()
        self.bindings: list[Binding] = []
        self._patients: dict[str, str] = {}
        self._load()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the registry's lock, with the file read afresh, for one read-modify-write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            msg = f"{lock_path}: cannot open the registry's lock: {exc.strerror}"
            raise RegistryError(msg) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._load()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _load(self) -> None:
        self.bindings = []
        self._patients = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            msg = f"{self.path}: cannot read the device registry: {exc.strerror}"
            raise RegistryError(msg) from exc
        if self.path.stat().st_mode & 0o077:
            msg = f"{self.path}: mode is too open; chmod 600 it (it lists device addresses)"
            raise RegistryError(msg)
        try:
            document: dict[str, Any] = json.loads(text)
            version = document.get("version")
            self._patients = {str(k): str(v) for k, v in document["patients"].items()}
            self.bindings = [Binding(**row) for row in document["bindings"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = f"{self.path}: not a device registry this agent can read ({exc})"
            raise RegistryError(msg) from exc
        if version != VERSION:
            msg = f"{self.path}: registry version {version!r}, this agent reads {VERSION}"
            raise RegistryError(msg)

    def _save(self) -> None:
        document = {
            "version": VERSION,
            "patients": self._patients,
            "bindings": [asdict(binding) for binding in self.bindings],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(self.path.name + ".new")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        staging.replace(self.path)

    def _ref_key(self, patient_ref: str) -> str:
        return hmac.new(self._key, patient_ref.encode("utf-8"), hashlib.sha256).hexdigest()

    def patient_token(self, patient_ref: str, *, mint: bool) -> str | None:
        """The surrogate token of a patient reference; a new one when `mint` and unknown."""
        if not patient_ref.strip():
            msg = "the patient reference is empty"
            raise RegistryError(msg)
        key = self._ref_key(patient_ref)
        if key not in self._patients and mint:
            self._patients[key] = new_token()
        return self._patients.get(key)

    def active(self) -> list[Binding]:
        """Bound now, pending ones included (what `pair` commands see)."""
        return [binding for binding in self.bindings if binding.active]

    def in_service(self) -> list[Binding]:
        """Bound and confirmed: the devices the agent reads."""
        return [binding for binding in self.bindings if binding.in_service]

    def find(self, device: str) -> Binding | None:
        """An active binding by device token (or its first 8+ hex digits) or address/port."""
        text = device.strip()
        with contextlib.suppress(RegistryError):
            _transport, text = normalise_address(device)
        for binding in self.active():
            if binding.address == text or (
                len(device) >= 8 and binding.device_token.startswith(device.lower())
            ):
                return binding
        return None

    def bind(
        self,
        address: str,
        kind: str,
        patient_ref: str,
        *,
        now_ns: int | None = None,
        pending: bool = False,
    ) -> Binding:
        """Bind a device to a patient; refuses a device that is bound (or being paired) already.

        `pending`: written for `pair add` to prove first; `confirm` puts it in service."""
        transport, where = normalise_address(address)
        kinds = BLE_KINDS if transport == "ble" else SERIAL_KINDS
        if kind not in kinds:
            msg = f"kind {kind!r} is not a {transport} device kind; one of: {', '.join(kinds)}"
            raise RegistryError(msg)
        with self._changing():
            existing = self.find(where)
            if existing is not None:
                state = (
                    "being paired (or an interrupted `pair add`)"
                    if existing.pending
                    else ("bound already")
                )
                msg = (
                    f"{existing.log_name} is {state}; `edge-agent pair remove "
                    f"{existing.device_token[:8]}` first"
                )
                raise RegistryError(msg)
            patient = self.patient_token(patient_ref, mint=True)
            assert patient is not None  # noqa: S101 -- minted just above
            binding = Binding(
                device_token=new_token(),
                transport=transport,
                address=where,
                kind=kind,
                patient_token=patient,
                from_ns=now_ns if now_ns is not None else time.time_ns(),
                pending=pending,
            )
            self.bindings.append(binding)
            self._save()
        return binding

    def confirm(self, binding: Binding) -> Binding:
        """Put a pending binding in service (the running agent then reads the device)."""
        with self._changing():
            if binding not in self.bindings:
                msg = f"{binding.log_name} is no longer in the registry; pair it again"
                raise RegistryError(msg)
            confirmed = replace(binding, pending=False)
            self.bindings[self.bindings.index(binding)] = confirmed
            self._save()
        return confirmed

    def unbind(self, device: str, *, now_ns: int | None = None) -> Binding:
        """End an active binding (it stays in the file, closed, for the record)."""
        with self._changing():
            binding = self.find(device)
            if binding is None:
                msg = f"no active binding for {device!r}; `edge-agent pair list` shows them"
                raise RegistryError(msg)
            if binding.pending:
                # Never in service, so never read: forgotten, as a failed `pair add` would be.
                self.bindings.remove(binding)
                self._save()
                return replace(binding, until_ns=binding.from_ns)
            closed = replace(binding, until_ns=now_ns if now_ns is not None else time.time_ns())
            self.bindings[self.bindings.index(binding)] = closed
            self._save()
        return closed

    def discard(self, binding: Binding) -> None:
        """Forget a binding that never took effect (`pair add` failed): nothing half-bound."""
        with self._changing():
            if binding in self.bindings:
                self.bindings.remove(binding)
                self._save()

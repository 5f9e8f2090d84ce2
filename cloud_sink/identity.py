"""The sink's identity registry: which hospital patient reference a surrogate token stands for.

The only place a reference rests in clear (issue #6 item 4, docs/pseudonyms.md). It arrives
sealed, in a gateway's binding event, and is kept in `state_dir/identity.json` (or the file
`[identity] file` names): mode 0600 (a file with wider permissions is refused, as the keyring
does), replaced atomically, fsynced. Every binding stored and every lookup of a reference goes
to the audit log, which names tokens only. Bindings are idempotent: a redelivered event changes
nothing and is not audited twice.

Several sink processes behind one shared subscription may name one file: each change takes an
exclusive flock on `<file>.lock` and re-reads the file first, and each lookup re-reads it under
a shared lock, so a binding stored by one instance is found by the others.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cloud_sink.audit import AuditLog, AuditRole
from cloud_sink.errors import CloudSinkError
from edge_agent.protocol import BindingEvent

IDENTITY_FILE: Final = "identity.json"
VERSION: Final = 1
REF_MAX_CHARS: Final = 128
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{32}")


class IdentityError(CloudSinkError):
    """The identity registry cannot be read or written; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"identity registry {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True, frozen=True)
class Recorded:
    """What one call to `record` changed (conflicts are refused and counted, never stored)."""

    stored: int
    unchanged: int
    conflicts: int


class IdentityRegistry:
    """Patient token -> reference, and device token -> (patient, bound, unbound, gateway)."""

    def __init__(self, path: Path, audit: AuditLog | None) -> None:
        """`path`: the registry file (`SinkConfig.identity_path`)."""
        self.path = path
        self._audit = audit
        self._lock = threading.Lock()
        self._patients: dict[str, str] = {}
        self._devices: dict[str, dict[str, Any]] = {}
        with self._file_lock(fcntl.LOCK_SH):
            self._load()

    @contextlib.contextmanager
    def _file_lock(self, kind: int) -> Iterator[None]:
        """The lock other processes sharing the file take too (flock on `<file>.lock`)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise IdentityError(self.path, f"cannot open its lock: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, kind)
            yield
        finally:
            os.close(fd)

    def _load(self) -> None:
        """Memory := the file (empty when there is none yet)."""
        self._patients, self._devices = {}, {}
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IdentityError(self.path, f"cannot read: {exc.strerror}") from exc
        if stat.S_IMODE(mode) & 0o077:
            reason = f"mode {stat.S_IMODE(mode):o} lets others read it; chmod 600 it first"
            raise IdentityError(self.path, reason)
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            patients, devices = document["patients"], document["devices"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"unreadable ({exc.__class__.__name__}); restore it from a backup"
            raise IdentityError(self.path, reason) from None
        if not isinstance(patients, dict) or not isinstance(devices, dict):
            raise IdentityError(self.path, "unreadable (not the registry's layout)")
        self._patients = {str(k): str(v) for k, v in patients.items()}
        self._devices = {str(k): dict(v) for k, v in devices.items() if isinstance(v, dict)}

    def _save(self) -> None:
        document = {"version": VERSION, "patients": self._patients, "devices": self._devices}
        staging = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            staging.replace(self.path)
        except OSError as exc:
            raise IdentityError(self.path, f"cannot write: {exc.strerror}") from exc

    def record(self, gateway_id: str, events: Iterable[BindingEvent]) -> Recorded:
        """Store a gateway's binding events (blocking: file write, fsync, audit)."""
        stored = unchanged = conflicts = 0
        audit: list[tuple[str, dict[str, str | int | bool | None]]] = []
        with self._lock, self._file_lock(fcntl.LOCK_EX):
            # What another sink instance stored meanwhile is the starting point.
            self._load()
            # All or nothing: if the audit log or the file cannot be written, memory goes back
            # to what the file holds, so the caller's retry does it all again (the audit log
            # may then hold an entry twice, never miss one).
            before = copy.deepcopy((self._patients, self._devices))
            try:
                for event in events:
                    change = self._apply(gateway_id, event)
                    if change is None:
                        unchanged += 1
                    elif change == "conflict":
                        conflicts += 1
                        audit.append((event.patient_token, {"event": "conflict"}))
                    else:
                        stored += 1
                        audit.append((event.patient_token, {"event": change}))
                self._write_audit(gateway_id, audit)
                if stored:
                    self._save()
            except BaseException:
                self._patients, self._devices = before
                raise
        return Recorded(stored, unchanged, conflicts)

    def _write_audit(
        self, gateway_id: str, entries: list[tuple[str, dict[str, str | int | bool | None]]]
    ) -> None:
        if self._audit is None:
            return
        for patient, detail in entries:
            self._audit.append(
                actor=gateway_id,
                role="system",
                action="binding",
                outcome="ok" if detail["event"] != "conflict" else "failed",
                subject=patient,
                detail=detail,
            )

    def _apply(self, gateway_id: str, event: BindingEvent) -> str | None:
        """'bound' / 'unbound' when something changed, 'conflict' when refused, else None."""
        ref = event.patient_ref
        if event.action == "bound" and ref is not None:
            ref = " ".join(ref.split())[:REF_MAX_CHARS]
            known = self._patients.get(event.patient_token)
            if known is not None and known != ref:
                # One token is minted per reference on a gateway; two references for one token
                # is a gateway fault or an attack, and the first one stays.
                return "conflict"
            changed = known is None
            self._patients[event.patient_token] = ref
        else:
            changed = False
        device = self._devices.setdefault(
            event.device_token, {"patient": event.patient_token, "gateway": gateway_id}
        )
        if device.get("patient") != event.patient_token:
            return "conflict"
        field = "bound_ns" if event.action == "bound" else "unbound_ns"
        if device.get(field) != event.ts_ns:
            device[field] = event.ts_ns
            changed = True
        return event.action if changed else None

    def resolve(self, patient_token: str, *, actor: str, role: AuditRole) -> str | None:
        """The reference of a token, None when unknown; every call is audited (the caller has
        already been authorised for `identity_lookup` of this patient)."""
        if not _TOKEN_RE.fullmatch(patient_token):
            raise IdentityError(self.path, "a lookup needs a patient token (32 hex characters)")
        with self._lock, self._file_lock(fcntl.LOCK_SH):
            self._load()
            ref = self._patients.get(patient_token)
        if self._audit is not None:
            self._audit.append(
                actor=actor,
                role=role,
                action="identity_lookup",
                outcome="ok" if ref is not None else "failed",
                subject=patient_token,
                detail={"found": ref is not None},
            )
        return ref

    def device_patient(self, device_token: str) -> str | None:
        """The patient token a device token was bound to (no reference: not audited)."""
        with self._lock, self._file_lock(fcntl.LOCK_SH):
            self._load()
            device = self._devices.get(device_token)
        return None if device is None else str(device.get("patient"))

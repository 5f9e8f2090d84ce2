"""Binding events waiting to be sealed into a frame: one encrypted file per event.

`edge-agent pair add/remove` puts an event here; the running agent (or the next one to start)
seals it into a frame, spools it, and only after the spool's commit removes the file. The event
carries the hospital's patient reference, which must reach the sink's identity registry (issue #6)
but must never rest on the gateway in clear: each file is AES-256-GCM (NIST SP 800-38D) under a key
derived from the gateway master secret with HKDF-SHA256 (RFC 5869, its own `info` label), a random
96-bit nonce per file (few files, each written once) and the file name as associated data, so a
file renamed or swapped for another fails to open. Files are 0600 and written atomically; one file
per event means the pair command and the agent never rewrite a shared file.

Layout of a file: nonce (12 bytes) | ciphertext and tag of the JSON event.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_agent.errors import EdgeAgentError
from edge_agent.protocol.frame import BINDING_ACTIONS, BindingEvent

OUTBOX_DIR: Final = "binding-outbox"
NONCE_BYTES: Final = 12
_HKDF_INFO: Final = b"bedside-twin/v1/binding-outbox"
_NAME_RE: Final = re.compile(r"[0-9]{19,20}-[0-9a-f]{16}\.bin")
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{32}")


class OutboxError(EdgeAgentError):
    """An outbox file that cannot be written or opened; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"binding outbox {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True, frozen=True)
class PendingBinding:
    path: Path
    event: BindingEvent


def _key(master_secret: bytes) -> AESGCM:
    okm = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        master_secret
    )
    return AESGCM(okm)


def _event_json(event: BindingEvent) -> bytes:
    document = {
        "device_token": event.device_token,
        "patient_token": event.patient_token,
        "action": event.action,
        "ts_ns": event.ts_ns,
        "patient_ref": event.patient_ref,
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _event(path: Path, plaintext: bytes) -> BindingEvent:
    try:
        document = json.loads(plaintext)
        device, patient = document["device_token"], document["patient_token"]
        action, ts_ns, ref = document["action"], document["ts_ns"], document["patient_ref"]
    except (ValueError, KeyError, TypeError) as exc:
        raise OutboxError(path, f"not a binding event ({exc.__class__.__name__})") from None
    tokens_ok = all(isinstance(t, str) and _TOKEN_RE.fullmatch(t) for t in (device, patient))
    if not tokens_ok or action not in BINDING_ACTIONS:
        raise OutboxError(path, "not a binding event (bad token or action)")
    if not isinstance(ts_ns, int) or isinstance(ts_ns, bool) or ts_ns < 0:
        raise OutboxError(path, "not a binding event (bad time)")
    if ref is not None and not isinstance(ref, str):
        raise OutboxError(path, "not a binding event (bad reference)")
    return BindingEvent(device, patient, action, ts_ns, ref)


class BindingOutbox:
    """The folder of pending binding events under the agent's state dir."""

    def __init__(self, state_dir: Path, master_secret: bytes) -> None:
        self.folder = state_dir / OUTBOX_DIR
        self._aead = _key(master_secret)

    def put(self, event: BindingEvent) -> Path:
        """Write one event durably (fsync file and folder) and return its file."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(self.folder, f"cannot create: {exc.strerror}") from exc
        # Time first, so files sort in the order the events happened.
        name = f"{event.ts_ns:019d}-{secrets.token_hex(8)}.bin"
        path = self.folder / name
        nonce = secrets.token_bytes(NONCE_BYTES)
        blob = nonce + self._aead.encrypt(nonce, _event_json(event), name.encode("ascii"))
        staging = path.with_suffix(".tmp")
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            staging.replace(path)
            folder_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)
        except OSError as exc:
            raise OutboxError(path, f"cannot write: {exc.strerror}") from exc
        return path

    def pending(self) -> tuple[list[PendingBinding], list[OutboxError]]:
        """Every readable event, oldest first, and an error for each file that is not one
        (left in place for a person to look at: it may hold a reference)."""
        try:
            names = sorted(p.name for p in self.folder.iterdir())
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            return [], [OutboxError(self.folder, f"cannot list: {exc.strerror}")]
        found: list[PendingBinding] = []
        errors: list[OutboxError] = []
        for name in names:
            if not _NAME_RE.fullmatch(name):
                continue  # a staging file of a write in progress, or not ours
            path = self.folder / name
            try:
                blob = path.read_bytes()
                plaintext = self._aead.decrypt(
                    blob[:NONCE_BYTES], blob[NONCE_BYTES:], name.encode("ascii")
                )
                found.append(PendingBinding(path, _event(path, plaintext)))
            except FileNotFoundError:
                continue  # sent and removed meanwhile
            except (InvalidTag, ValueError):
                errors.append(OutboxError(path, "does not open under this gateway's key"))
            except OSError as exc:
                errors.append(OutboxError(path, f"cannot read: {exc.strerror}"))
            except OutboxError as exc:
                errors.append(exc)
        return found, errors

    def done(self, sent: list[PendingBinding]) -> None:
        """Remove events that are in a committed spool frame."""
        for item in sent:
            try:
                item.path.unlink(missing_ok=True)
            except OSError as exc:
                # Left behind, it is sent again: the sink stores each binding once.
                raise OutboxError(item.path, f"cannot remove: {exc.strerror}") from exc

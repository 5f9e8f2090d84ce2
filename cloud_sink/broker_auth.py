"""The broker's credentials and ACL: Mosquitto 2.x password file, ACL patterns, reload.

Mosquitto authenticates clients against its `password_file` and authorises topics with its
`acl_file`; it re-reads both on SIGHUP and then disconnects every connected client whose
credential no longer verifies (Mosquitto 2.0 `mosquitto_security_apply_default`, checked
against the real broker in tests/integration/test_broker_acl.py). This module writes both files
the way Mosquitto reads them, so `cloud-sink gateways add/revoke` can mint and remove a
gateway's credential without a person editing broker files (docs/broker-security.md).

Password file format (one `username:hash` line per client, as `mosquitto_passwd` 2.0 writes
it): `$7$<iterations>$<base64 salt>$<base64 hash>`, where 7 means PBKDF2-HMAC-SHA512 (RFC 8018
§5.2 with HMAC-SHA512), the salt is 12 random bytes, the hash is 64 bytes, base64 is RFC 4648
§4 with padding, and 101 iterations is mosquitto_passwd 2.0's default. The passwords minted
here carry 192 random bits, so the iteration count is not what protects them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloud_sink.errors import CloudSinkError
from edge_agent.protocol.topics import ROOT, Channel, validate_prefix

_LOGGER = logging.getLogger(__name__)

PBKDF2_SHA512_TYPE: Final = "7"
"""Mosquitto's hash type number for PBKDF2-HMAC-SHA512 (its enum mosquitto_pwhash_type)."""
DEFAULT_ITERATIONS: Final = 101
SALT_BYTES: Final = 12
HASH_BYTES: Final = 64
PASSWORD_BYTES: Final = 24
"""Random bytes in a minted password (192 bits; the brief asks for at least 128)."""
USERNAME_PATTERN: Final = r"[A-Za-z0-9_.-]{1,64}"
"""Broker usernames we manage: no ':' (the file's separator) and no '/', '+', '#', which would
make Mosquitto refuse the `%u` substitution in ACL patterns."""
DEFAULT_SINK_USERNAME: Final = "cloud_sink"
"""The '_' keeps it out of the gateway-id alphabet [a-z0-9-], so no gateway can be enrolled
under the sink's name and no ACL pattern for gateways ever matches the sink's topics."""
RELOAD_TIMEOUT_S: Final = 30.0
_USERNAME_RE: Final = re.compile(USERNAME_PATTERN)
_HASH: Final = "(hash)"
_USERNAME: Final = "(username)"
_FILE_MODE: Final = 0o600


class BrokerAuthError(CloudSinkError):
    """A broker credential or ACL file could not be read, written or applied; `path` says which
    file (or command) and `reason` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True, frozen=True)
class BrokerAdmin:
    """The sink config's optional [broker] section: the broker's files and how to reload it.

    Exactly one of `pid_file` (send SIGHUP to the pid it holds) and `reload_command` (e.g.
    `systemctl reload mosquitto`, whose unit sends SIGHUP) says how Mosquitto re-reads them.
    """

    password_file: Path
    acl_file: Path
    pid_file: Path | None = None
    reload_command: tuple[str, ...] | None = None


# --- password hashes -----------------------------------------------------------------------------


def validate_username(username: str) -> str:
    if not _USERNAME_RE.fullmatch(username):
        msg = f"broker username {username!r} must be 1-64 characters from A-Z a-z 0-9 _ . -"
        raise BrokerAuthError(_USERNAME, msg)
    return username


def mint_password() -> str:
    """A fresh broker password: 192 random bits, URL-safe base64 (32 characters, no padding)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """The `$7$...` hash Mosquitto 2.x checks `password` against (a fresh salt unless given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    return f"${PBKDF2_SHA512_TYPE}${iterations}${_b64(salt)}${_b64(digest)}"


@dataclass(slots=True, frozen=True)
class PasswordHash:
    """A decoded `$7$` entry."""

    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def decode(cls, encoded: str) -> PasswordHash:
        parts = encoded.split("$")
        # "$7$101$salt$hash".split("$") == ["", "7", "101", "salt", "hash"]
        if len(parts) != 5 or parts[0] or parts[1] != PBKDF2_SHA512_TYPE:
            msg = "not a Mosquitto $7$ (PBKDF2-SHA512) hash"
            raise BrokerAuthError(_HASH, msg)
        try:
            iterations = int(parts[2])
            salt = base64.b64decode(parts[3], validate=True)
            digest = base64.b64decode(parts[4], validate=True)
        except (ValueError, binascii.Error) as exc:
            msg = f"malformed $7$ hash: {exc}"
            raise BrokerAuthError(_HASH, msg) from None
        # Mosquitto 2.0 accepts 12-byte salts (and 64-byte ones from 2.1) and 64-byte hashes.
        if iterations < 1 or len(salt) not in {SALT_BYTES, HASH_BYTES} or len(digest) != HASH_BYTES:
            msg = "malformed $7$ hash: bad iteration count, salt or hash length"
            raise BrokerAuthError(_HASH, msg)
        return cls(iterations, salt, digest)

    def verify(self, password: str) -> bool:
        computed = hashlib.pbkdf2_hmac(
            "sha512", password.encode("utf-8"), self.salt, self.iterations, HASH_BYTES
        )
        return hmac.compare_digest(computed, self.digest)


def verify_password(encoded: str, password: str) -> bool:
    """Whether `password` matches a `$7$` hash, computed as Mosquitto computes it."""
    return PasswordHash.decode(encoded).verify(password)


# --- files ---------------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` by a 0600 file holding `text`: a reader sees the old or the new file whole.

    The new file keeps the old one's owner and group (a new file takes its folder's) when we
    may set them (root), so a broker that dropped to its own user (Debian's `mosquitto`) can
    still read its 0600 files after a reload; a broker run as the invoking user (the local
    stack) owns them anyway.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        status = path.stat()
    except FileNotFoundError:
        status = path.parent.stat()
    owner = (status.st_uid, status.st_gid)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        try:
            os.fchmod(fd, _FILE_MODE)
            if os.geteuid() == 0:
                os.fchown(fd, *owner)
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staging, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise BrokerAuthError(str(path), f"cannot write: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write cycles of one file (two `gateways add` at once)."""
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    except OSError as exc:
        raise BrokerAuthError(str(lock_path), f"cannot lock: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_password_entries(path: Path) -> dict[str, str]:
    """The file's `username -> hash` entries in file order; empty if the file does not exist.

    Blank lines and `#` comments are skipped, as Mosquitto skips them.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerAuthError(str(path), f"cannot read: {exc}") from exc
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, colon, encoded = line.partition(":")
        where = f"{path}:{number}"
        if not colon or not username or not encoded:
            raise BrokerAuthError(where, "expected `username:hash`")
        if username in entries:
            raise BrokerAuthError(where, f"user {username!r} appears twice")
        entries[username] = encoded
    return entries


def password_file_text(entries: Mapping[str, str]) -> str:
    return "".join(f"{username}:{encoded}\n" for username, encoded in entries.items())


def write_password_entries(path: Path, entries: Mapping[str, str]) -> None:
    for username in entries:
        validate_username(username)
    _write_atomically(path, password_file_text(entries))


def set_password(path: Path, username: str, password: str) -> str | None:
    """Add or replace `username`'s credential; return its previous hash (for `restore_entry`)."""
    validate_username(username)
    with _locked(path):
        entries = read_password_entries(path)
        previous = entries.get(username)
        entries[username] = hash_password(password)
        write_password_entries(path, entries)
    return previous


def restore_entry(path: Path, username: str, previous: str | None) -> None:
    """Put back what `set_password` replaced: the old hash, or no entry at all."""
    with _locked(path):
        entries = read_password_entries(path)
        if previous is None:
            entries.pop(username, None)
        else:
            entries[username] = previous
        write_password_entries(path, entries)


def remove_user(path: Path, username: str) -> bool:
    """Remove `username`'s credential; False when it had none."""
    with _locked(path):
        entries = read_password_entries(path)
        if entries.pop(username, None) is None:
            return False
        write_password_entries(path, entries)
    return True


def has_user(path: Path, username: str) -> bool:
    return username in read_password_entries(path)


# --- the sink's own credential -------------------------------------------------------------------


def read_client_password(path: Path) -> str:
    """A client's broker password: one line in a file only its owner may read (0600)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerAuthError(str(path), f"cannot read the broker password: {exc}") from exc
    if mode & 0o077:
        raise BrokerAuthError(str(path), f"mode {mode & 0o777:04o} is too open; chmod 600 it")
    password = text.strip()
    if not password or "\n" in password:
        raise BrokerAuthError(str(path), "must hold the broker password on one line")
    return password


def write_client_password(path: Path, password: str) -> None:
    """Store a client's broker password (0600 from the start, replaced atomically)."""
    _write_atomically(path, password + "\n")


# --- ACL -----------------------------------------------------------------------------------------


def acl_text(sink_username: str = DEFAULT_SINK_USERNAME, prefix: str = "") -> str:
    """The ACL file: the sink identity's topics, then patterns every gateway gets by its username.

    Mosquitto's default ACL check (mosquitto.conf(5), acl_file): `topic` lines apply to the
    `user` above them, `pattern` lines to every client with `%u` replaced by its username, and
    whatever no line grants is denied. Publishing is checked per message; reading is checked
    when a message is delivered, so a subscription to someone else's topic receives nothing.
    """
    validate_username(sink_username)
    root = f"{validate_prefix(prefix)}{ROOT}"
    sink = [
        ("read", f"{root}/+/up/#"),  # telemetry and alerts of every gateway
        ("read", f"{root}/+/{Channel.STATUS.value}"),
        ("read", f"{root}/+/{Channel.ENROL_REQUEST.value}"),
        ("write", f"{root}/+/{Channel.ENROL_RESPONSE.value}"),
        ("write", f"{root}/+/{Channel.DOWN.value}/#"),  # commands and key rotation
    ]
    gateway = [
        ("write", f"{root}/%u/up/#"),
        ("write", f"{root}/%u/{Channel.STATUS.value}"),  # also its last will
        ("read", f"{root}/%u/{Channel.DOWN.value}/#"),
        ("write", f"{root}/%u/{Channel.ENROL_REQUEST.value}"),
        ("read", f"{root}/%u/{Channel.ENROL_RESPONSE.value}"),
    ]
    lines = [
        "# Generated by cloud-sink (cloud_sink.broker_auth.acl_text); docs/broker-security.md.",
        "# Anything not granted below is denied.",
        "",
        "# The sink identity: reads every gateway's uplink, answers enrolment, sends commands.",
        f"user {sink_username}",
        *(f"topic {access} {topic}" for access, topic in sink),
        "",
        "# Every gateway, by its MQTT username (= its gateway id): its own topics only.",
        *(f"pattern {access} {topic}" for access, topic in gateway),
        "",
    ]
    return "\n".join(lines)


def write_acl_file(path: Path, text: str) -> None:
    with _locked(path):
        _write_atomically(path, text)


# --- reload --------------------------------------------------------------------------------------


def _broker_pid(pid_file: Path) -> int:
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read the broker's pid file: {exc}; is Mosquitto running with pid_file set?"
        raise BrokerAuthError(str(pid_file), msg) from exc
    if not text.isdigit() or int(text) <= 1:
        raise BrokerAuthError(str(pid_file), f"holds {text!r}, not a process id")
    return int(text)


def reload_broker(admin: BrokerAdmin) -> None:
    """Make Mosquitto re-read its password and ACL files (SIGHUP): disconnects clients whose
    credential is gone and applies the ACL to everyone connected."""
    if admin.pid_file is not None:
        pid = _broker_pid(admin.pid_file)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            msg = f"no process {pid}: the pid file is stale; is Mosquitto running?"
            raise BrokerAuthError(str(admin.pid_file), msg) from None
        except PermissionError:
            msg = f"not allowed to signal process {pid}: run as root or as the broker's user"
            raise BrokerAuthError(str(admin.pid_file), msg) from None
        _LOGGER.info("sent SIGHUP to the broker (pid %d)", pid)
        return
    if admin.reload_command is None:
        section = "[broker]"
        raise BrokerAuthError(section, "neither pid_file nor reload_command is set")
    command = shlex.join(admin.reload_command)
    try:
        done = subprocess.run(
            admin.reload_command,
            capture_output=True,
            text=True,
            timeout=RELOAD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerAuthError(command, f"reload command failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-300:]
        raise BrokerAuthError(command, f"reload command exited with {done.returncode}: {tail}")

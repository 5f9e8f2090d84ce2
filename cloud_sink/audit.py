"""The sink's append-only, hash-chained and keyed audit log (HIPAA 45 CFR 164.312(b)).

One JSON object per line in `state_dir/audit.jsonl` (mode 0600, opened O_APPEND, fsync after each
entry). Each entry names who (`actor`, `role`) did what (`action`) to which pseudonymous subject,
with what `outcome`, and carries `prev`, the hash of the entry before it (64 zero hex digits for
the first), and `hash`, SHA-256 over the canonical JSON of every other field except `mac`. A plain
hash chain can be recomputed by anyone who can edit the file, so each entry also carries `mac`,
HMAC-SHA256 (RFC 2104) of its hash under a 32-byte audit key kept in its own 0600 file
(`audit.key`, created with the first entry, never logged). A head file (`audit.head`, 0600,
replaced atomically, MACed too) records the last sequence number and hash, so cutting entries off
the end is detected as well. Writers take an exclusive `flock` on the log around "read the last
hash, append, update the head", so the sink and several CLI processes can write one chain.

Every call here blocks (fsync); async callers go through `asyncio.to_thread`. Entries hold only
pseudonymous tokens, gateway ids and staff identity names: never secrets, never hospital
references (the validators below refuse the obvious mistakes). docs/audit-and-access.md has the
format, what `verify` detects and what it cannot.
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
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

from cloud_sink.errors import CloudSinkError
from edge_agent.protocol.settings import SettingsError, read_secret_file

LOG_FILE: Final = "audit.jsonl"
KEY_FILE: Final = "audit.key"
HEAD_FILE: Final = "audit.head"
FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
KEY_BYTES: Final = 32

Action = Literal[
    "enrol",  # the sink completed (or refused) a gateway enrolment exchange
    "gateway_add",
    "gateway_revoke",
    "gateway_list",
    "key_rotate",
    "binding",  # a device <-> patient binding event reached the identity registry
    "identity_lookup",  # a pseudonymous token was resolved to a hospital reference
    "twin_read",
    "twin_list",
    "twin_observe",
    "patient_profile",
    "export",  # detail.anonymised says which kind
    "report",
    "audit_verify",
    "audit_show",
    "audit_repair",
    "access_admin",
    "auth_failure",  # a token matched no identity (or none was given)
    "access_denied",  # a known identity asked for something its role does not allow
]
ACTIONS: Final[tuple[str, ...]] = get_args(Action)
Outcome = Literal["ok", "denied", "failed"]
OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)
AuditRole = Literal["clinician", "researcher", "admin", "system", "none"]
AUDIT_ROLES: Final[tuple[str, ...]] = get_args(AuditRole)
Reason = Literal["edited", "removed", "reordered", "truncated", "malformed", "bad_mac"]
DetailValue = str | int | bool | None

# Domain separation: an entry MAC and a head MAC can never be swapped for one another.
_ENTRY_LABEL: Final = b"bedside-twin/v1/audit-entry|"
_HEAD_LABEL: Final = b"bedside-twin/v1/audit-head|"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_TS: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)
ACTOR_PATTERN: Final = r"[A-Za-z0-9_.:@-]{1,64}"
SUBJECT_PATTERN: Final = r"[A-Za-z0-9_.:-]{1,64}"
_ACTOR: Final = re.compile(ACTOR_PATTERN)
_SUBJECT: Final = re.compile(SUBJECT_PATTERN)
_DETAIL_KEY: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
# A detail key naming any of these is refused: secrets and hospital references have no place here.
_FORBIDDEN_DETAIL_WORDS: Final = ("secret", "password", "passwd", "token", "key", "ref", "mrn")
_MAX_DETAIL_KEYS: Final = 16
_MAX_DETAIL_STR: Final = 200
_MAX_DETAIL_INT: Final = 2**53  # exact in every JSON reader
MAX_LINE_BYTES: Final = 8192
_SHOWN_BYTES: Final = 400
_ENTRY_KEYS: Final = frozenset(
    {"v", "seq", "ts", "actor", "role", "action", "subject", "outcome", "detail", "prev"}
)
_LINE_KEYS: Final = _ENTRY_KEYS | {"hash", "mac"}
_HEAD_KEYS: Final = frozenset({"v", "seq", "hash", "mac"})


class AuditError(CloudSinkError):
    """The audit log cannot be written or read as needed; access that needs it is refused."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"audit log {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True, frozen=True)
class AuditPaths:
    """Where the log, its key and its head live (by default all in the sink's state_dir)."""

    log: Path
    key: Path
    head: Path

    @classmethod
    def in_dir(cls, state_dir: Path) -> AuditPaths:
        return cls(state_dir / LOG_FILE, state_dir / KEY_FILE, state_dir / HEAD_FILE)


@dataclass(slots=True, frozen=True)
class AuditEntry:
    """One line of the log, as written."""

    seq: int
    ts: str
    actor: str
    role: str
    action: str
    subject: str | None
    outcome: str
    detail: Mapping[str, DetailValue]
    prev: str
    hash: str
    mac: str

    def body(self) -> dict[str, Any]:
        """The hashed fields (everything but `hash` and `mac`)."""
        return {
            "v": FORMAT_VERSION,
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "subject": self.subject,
            "outcome": self.outcome,
            "detail": dict(self.detail),
            "prev": self.prev,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash, "mac": self.mac}

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.ts)


@dataclass(slots=True, frozen=True)
class VerifyResult:
    """What `verify` found; when not ok, `reason` and the first bad line say where to look."""

    ok: bool
    entries: int
    """Entries that verified (all of them when ok; those before the first bad line otherwise)."""
    reason: Reason | None = None
    message: str = ""
    first_bad_seq: int | None = None
    """The sequence number that should have been at the first bad line."""
    first_bad_line: int | None = None
    bad_line: str | None = None
    """The first bad line as found (pseudonymous content only), cut to a few hundred bytes."""
    note: str = ""
    last_seq: int = 0
    last_hash: str = GENESIS_HASH


@dataclass(slots=True, frozen=True)
class AuditSummary:
    """Counts over a time window, for the population report and for reviews (164.308(a)(1))."""

    entries: int
    by_action: Mapping[str, int]
    by_outcome: Mapping[str, int]
    exports_total: int
    """Exports that went ahead (outcome ok); refused ones count under access_denied."""
    exports_anonymised: int
    access_denied: int
    auth_failures: int
    unreadable_lines: int
    first_ts: str | None
    last_ts: str | None


@dataclass(slots=True, frozen=True)
class _Head:
    seq: int
    hash: str
    mac: str


def _canonical(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, ASCII only: one byte string per value, so hashes are stable."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _entry_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


def _entry_mac(key: bytes, entry_hash: str) -> str:
    return hmac.new(key, _ENTRY_LABEL + entry_hash.encode("ascii"), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, head_hash: str) -> str:
    message = _HEAD_LABEL + f"{seq}|{head_hash}".encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def iso_ts(ts_ns: int) -> str:
    """UTC ISO 8601 with microseconds and a Z: `2025-03-14T08:00:00.123456Z`."""
    seconds, rest_ns = divmod(ts_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _is_ts(value: object) -> bool:
    if not isinstance(value, str) or not _TS.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _first_problem(checks: Iterable[tuple[bool, str]]) -> str | None:
    return next((message for passed, message in checks if not passed), None)


def _detail_item_problem(key: object, value: object) -> str | None:
    if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
        return f"detail key {key!r} is not lower_snake_case of at most 32 characters"
    if any(word in key for word in _FORBIDDEN_DETAIL_WORDS):
        return f"detail key {key!r} looks like a secret or a hospital reference"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= _MAX_DETAIL_INT else f"detail {key} = {value} is too large"
    if not isinstance(value, str):
        return f"detail {key} must be a string, integer, boolean or null"
    fits = len(value) <= _MAX_DETAIL_STR and value.isascii() and value.isprintable()
    return None if fits else f"detail {key} must be printable ASCII, {_MAX_DETAIL_STR} at most"


def _detail_problem(detail: object) -> str | None:
    """Why a detail mapping may not be logged, or None when it may."""
    if not isinstance(detail, dict):
        return "detail must be a mapping"
    if len(detail) > _MAX_DETAIL_KEYS:
        return f"detail has {len(detail)} keys, at most {_MAX_DETAIL_KEYS}"
    problems = (_detail_item_problem(key, value) for key, value in detail.items())
    return next((problem for problem in problems if problem is not None), None)


def _fields_problem(
    *, actor: object, role: object, action: object, outcome: object, subject: object, detail: object
) -> str | None:
    """Why these entry fields may not be logged, or None when they may."""
    subject_ok = subject is None or (
        isinstance(subject, str) and _SUBJECT.fullmatch(subject) is not None
    )
    checks = (
        (isinstance(actor, str) and _ACTOR.fullmatch(actor) is not None,
         f"actor must match {ACTOR_PATTERN}"),
        (role in AUDIT_ROLES, f"role must be one of {', '.join(AUDIT_ROLES)}"),
        (action in ACTIONS, f"action must be one of {', '.join(ACTIONS)}"),
        (outcome in OUTCOMES, f"outcome must be one of {', '.join(OUTCOMES)}"),
        (subject_ok, f"subject must be a pseudonymous token or gateway id ({SUBJECT_PATTERN})"),
    )  # fmt: skip
    return _first_problem(checks) or _detail_problem(detail)


def _json_object(raw: bytes) -> dict[str, Any] | str:
    """A JSON object from bytes, or why they are not one."""
    try:
        document = json.loads(raw.decode("ascii"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "not a JSON object"
    return document if isinstance(document, dict) else "not a JSON object"


def _entry_problem(document: dict[str, Any]) -> str | None:
    keys = set(document)
    if keys != _LINE_KEYS:
        missing = ", ".join(sorted(_LINE_KEYS - keys)) or "none"
        extra = ", ".join(sorted(keys - _LINE_KEYS)) or "none"
        return f"wrong fields (missing: {missing}; unexpected: {extra})"
    version, seq = document["v"], document["seq"]
    checks = (
        (_is_int(version) and version == FORMAT_VERSION,
         f"format version {version!r}, this sink reads {FORMAT_VERSION}"),
        (_is_int(seq) and seq >= 1, f"seq {seq!r} is not a positive integer"),
        (_is_ts(document["ts"]), "ts is not a UTC time like 2025-03-14T08:00:00.000000Z"),
        *((_is_hex64(document[name]), f"{name} is not 64 lower-case hex digits")
          for name in ("prev", "hash", "mac")),
    )  # fmt: skip
    return _first_problem(checks) or _fields_problem(
        actor=document["actor"],
        role=document["role"],
        action=document["action"],
        outcome=document["outcome"],
        subject=document["subject"],
        detail=document["detail"],
    )


def _parse_entry(raw: bytes) -> AuditEntry | str:
    """An entry from one line, or why the line is not one (structure only, no hash checks)."""
    document = _json_object(raw)
    if isinstance(document, str):
        return document
    problem = _entry_problem(document)
    if problem is not None:
        return problem
    return AuditEntry(
        seq=document["seq"],
        ts=document["ts"],
        actor=document["actor"],
        role=document["role"],
        action=document["action"],
        subject=document["subject"],
        outcome=document["outcome"],
        detail=document["detail"],
        prev=document["prev"],
        hash=document["hash"],
        mac=document["mac"],
    )


def _refuse_constant(name: str) -> object:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def _fsync_dir(folder: Path) -> None:
    """Make a new or renamed directory entry durable (POSIX: fsync the directory)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key(path: Path) -> bytes:
    try:
        return read_secret_file(path, KEY_BYTES)
    except SettingsError as exc:
        raise AuditError(path, exc.why) from exc


def _create_key(path: Path) -> bytes:
    """A new random key, written whole to a staging file and linked into place (never torn)."""
    key = secrets.token_bytes(KEY_BYTES)
    staging = path.with_name(f"{path.name}.{os.getpid()}.new")
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "w", encoding="ascii") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails when the name exists: a key somebody else created is never overwritten.
        os.link(staging, path)
    except FileExistsError:
        return _read_key(path)
    finally:
        staging.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return key


def _read_head(path: Path) -> _Head | str | None:
    """The head, None when there is no head file, or why the file is not a head."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(path, f"cannot read the head file: {exc.strerror}") from exc
    document = _json_object(raw[:-1]) if raw.endswith(b"\n") else "incomplete"
    if isinstance(document, str) or set(document) != _HEAD_KEYS:
        return "the head file is not a head (incomplete, not JSON, or wrong fields)"
    version, seq = document["v"], document["seq"]
    if not (
        _is_int(version)
        and version == FORMAT_VERSION
        and _is_int(seq)
        and seq >= 0
        and _is_hex64(document["hash"])
        and _is_hex64(document["mac"])
    ):
        return "the head file has a bad version, seq, hash or mac"
    if _canonical(document) != raw[:-1]:
        return "the head file is not in the canonical form the sink writes (edited by hand?)"
    return _Head(seq, document["hash"], document["mac"])


def _write_head(path: Path, key: bytes, seq: int, head_hash: str) -> None:
    """Replace the head atomically: a staging file, fsync, rename, fsync the folder."""
    document = {"v": FORMAT_VERSION, "seq": seq, "hash": head_hash}
    document["mac"] = _head_mac(key, seq, head_hash)
    staging = path.with_name(path.name + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover staging file keeps its old mode through O_CREAT
    with open(fd, "wb") as handle:
        handle.write(_canonical(document) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    staging.replace(path)
    _fsync_dir(path.parent)


def _last_line(path: Path, fd: int, size: int) -> bytes | None:
    """The log's last line without reading the whole file; None for an empty log."""
    if size == 0:
        return None
    start = max(0, size - 2 * MAX_LINE_BYTES)
    chunk = os.pread(fd, size - start, start)
    if not chunk.endswith(b"\n"):
        msg = (
            "its last line is incomplete (an append was interrupted, or the file was edited); "
            "nothing more is recorded, so access that needs auditing is refused: run "
            "`cloud-sink audit verify`, and `cloud-sink audit repair` if only that line is bad"
        )
        raise AuditError(path, msg)
    body = chunk[:-1]
    cut = body.rfind(b"\n")
    if cut < 0 and start > 0:
        msg = f"its last line is longer than {MAX_LINE_BYTES} bytes; run `cloud-sink audit verify`"
        raise AuditError(path, msg)
    return body[cut + 1 :]


def _check_head(
    paths: AuditPaths, head: _Head | str | None, last: AuditEntry | None, key: bytes
) -> None:
    """Refuse to extend a log whose end disagrees with its head: appending would hide a cut."""
    verify_hint = "run `cloud-sink audit verify`; appending now would hide what happened"
    if isinstance(head, str):
        raise AuditError(paths.head, f"{head}; {verify_hint}")
    if head is None:
        if last is None:
            return
        raise AuditError(
            paths.head, f"the head file is missing while the log has entries; {verify_hint}"
        )
    if not hmac.compare_digest(_head_mac(key, head.seq, head.hash), head.mac):
        raise AuditError(paths.head, f"the head file's MAC is wrong; {verify_hint}")
    if last is None:
        if head.seq == 0:
            return
        msg = f"the head records {head.seq} entries but the log is empty; {verify_hint}"
        raise AuditError(paths.log, msg)
    if last.seq == head.seq and last.hash == head.hash:
        return
    # A crash between the log's fsync and the head's rename leaves the head one entry behind.
    if last.seq == head.seq + 1 and last.prev == head.hash:
        return
    msg = f"the log ends at seq {last.seq} but the head records seq {head.seq}; {verify_hint}"
    raise AuditError(paths.log, msg)


class AuditLog:
    """Append to, verify and read one audit log; safe across threads and processes (flock)."""

    def __init__(self, paths: AuditPaths) -> None:
        self.paths = paths

    def append(
        self,
        *,
        actor: str,
        role: AuditRole,
        action: Action,
        outcome: Outcome,
        subject: str | None = None,
        detail: Mapping[str, DetailValue] | None = None,
        now_ns: int | None = None,
    ) -> AuditEntry:
        """Write one entry durably (fsync) and return it; AuditError when that is impossible."""
        fields = dict(detail or {})
        problem = _fields_problem(
            actor=actor, role=role, action=action, outcome=outcome, subject=subject, detail=fields
        )
        if problem is not None:
            raise AuditError(self.paths.log, f"refusing to log a {action!r} entry: {problem}")
        with self._locked() as fd:
            return self._append_locked(
                fd,
                actor=actor,
                role=role,
                action=action,
                outcome=outcome,
                subject=subject,
                detail=fields,
                now_ns=now_ns,
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The log opened for reading and appending, under an exclusive flock."""
        log = self.paths.log
        try:
            log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(log, f"cannot open: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
            yield fd
        except OSError as exc:
            raise AuditError(log, f"cannot write: {exc.strerror}") from exc
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _key(self, *, create: bool) -> bytes:
        if self.paths.key.exists():
            return _read_key(self.paths.key)
        if not create:
            msg = (
                "the audit key is missing although the log has entries; restore it from "
                "backup (a new key would make every existing entry fail verification)"
            )
            raise AuditError(self.paths.key, msg)
        return _create_key(self.paths.key)

    def _append_locked(
        self,
        fd: int,
        *,
        actor: str,
        role: str,
        action: str,
        outcome: str,
        subject: str | None,
        detail: dict[str, DetailValue],
        now_ns: int | None,
    ) -> AuditEntry:
        size = os.fstat(fd).st_size
        raw = _last_line(self.paths.log, fd, size)
        last: AuditEntry | None = None
        if raw is not None:
            parsed = _parse_entry(raw)
            if isinstance(parsed, str):
                msg = f"its last line is not an entry ({parsed}); run `cloud-sink audit verify`"
                raise AuditError(self.paths.log, msg)
            last = parsed
        head = _read_head(self.paths.head)
        key = self._key(create=last is None and head is None)
        _check_head(self.paths, head, last, key)
        body: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "seq": 1 if last is None else last.seq + 1,
            "ts": iso_ts(time.time_ns() if now_ns is None else now_ns),
            "actor": actor,
            "role": role,
            "action": action,
            "subject": subject,
            "outcome": outcome,
            "detail": detail,
            "prev": GENESIS_HASH if last is None else last.hash,
        }
        entry_hash = _entry_hash(body)
        line = _canonical({**body, "hash": entry_hash, "mac": _entry_mac(key, entry_hash)})
        if len(line) >= MAX_LINE_BYTES:
            raise AuditError(self.paths.log, f"an entry of {len(line)} bytes is too long")
        view = memoryview(line + b"\n")
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        if size == 0:
            _fsync_dir(self.paths.log.parent)
        _write_head(self.paths.head, key, body["seq"], entry_hash)
        parsed = _parse_entry(line)
        assert isinstance(parsed, AuditEntry)  # noqa: S101 -- validated above, written by us
        return parsed

    def verify(self) -> VerifyResult:
        return verify(self.paths.log, self.paths.key, self.paths.head)

    def read(self) -> tuple[list[AuditEntry], int]:
        return read_entries(self.paths.log)

    def summary(self, since: datetime | None = None, until: datetime | None = None) -> AuditSummary:
        return summary(self.paths.log, since, until)

    def repair(self, *, actor: str, role: AuditRole) -> AuditEntry:
        """Cut off an incomplete last line left by a crash, and record that (audit_repair).

        Refused unless every complete line before it verifies and agrees with the head: this
        removes only bytes that never formed an entry, never evidence.
        """
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)
            if not data or data.endswith(b"\n"):
                msg = "nothing to repair: the log ends with a complete line"
                raise AuditError(self.paths.log, msg)
            cut = data.rfind(b"\n") + 1
            fragment = data[cut:]
            if not self.paths.key.exists():
                raise AuditError(self.paths.key, "the audit key is missing; cannot check the log")
            before = _verify_bytes(data[:cut], _read_key(self.paths.key), self.paths.head)
            if not before.ok:
                msg = (
                    f"only an incomplete last line can be repaired, but line "
                    f"{before.first_bad_line} is bad too ({before.reason}: {before.message})"
                )
                raise AuditError(self.paths.log, msg)
            os.ftruncate(fd, cut)
            os.fsync(fd)
            detail: dict[str, DetailValue] = {
                "discarded_bytes": len(fragment),
                "discarded_sha256": hashlib.sha256(fragment).hexdigest()[:32],
                "at_line": data[:cut].count(b"\n") + 1,
            }
            return self._append_locked(
                fd,
                actor=actor,
                role=role,
                action="audit_repair",
                outcome="ok",
                subject=None,
                detail=detail,
                now_ns=None,
            )


def verify(log: Path, key: Path, head: Path) -> VerifyResult:
    """Check every entry, the chain, the MACs and the head; AuditError only if unreadable."""
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise AuditError(log, f"cannot read: {exc.strerror}") from exc
    if not key.exists():
        if not data and not head.exists():
            return VerifyResult(ok=True, entries=0, message="no audit log yet")
        msg = "the audit key is missing, so the entries cannot be checked; restore it from backup"
        raise AuditError(key, msg)
    return _verify_bytes(data, _read_key(key), head)


def _split(data: bytes) -> tuple[list[bytes], list[AuditEntry | str]]:
    """The log's lines and, for each, its entry or why it is not one."""
    lines = data.split(b"\n")
    torn = lines.pop() != b""  # the piece after the final newline is empty unless torn
    parsed: list[AuditEntry | str] = [_parse_entry(raw) for raw in lines]
    if torn:
        lines.append(data[data.rfind(b"\n") + 1 :])
        parsed.append(
            "incomplete last line (no newline): an append was interrupted or the line was "
            "edited; if every line before it verifies, `cloud-sink audit repair` cuts it off"
        )
    return lines, parsed


Problem = tuple[Reason, str]


def _content_problem(entry: AuditEntry, raw: bytes, key: bytes) -> Problem | None:
    """Is the line exactly what the sink wrote: canonical, its hash right, its MAC right?"""
    if _canonical(entry.to_json()) != raw:
        return "malformed", "not in the canonical form the sink writes (edited by hand?)"
    if _entry_hash(entry.body()) != entry.hash:
        return "edited", f"entry seq {entry.seq} was changed after it was written"
    if not hmac.compare_digest(_entry_mac(key, entry.hash), entry.mac):
        message = (
            f"entry seq {entry.seq} has a wrong MAC: it was rewritten (chain recomputed) or "
            "forged by someone without the audit key"
        )
        return "bad_mac", message
    return None


def _order_problem(
    entry: AuditEntry, expected_seq: int, expected_prev: str, later: Sequence[AuditEntry | str]
) -> Problem | None:
    """Does the entry come where it belongs in the chain? `later`: the lines after it."""
    if entry.seq < expected_seq:
        message = f"entry seq {entry.seq} appears again after seq {expected_seq - 1}"
        return "reordered", message + " (moved or duplicated)"
    if entry.seq > expected_seq:
        if any(isinstance(other, AuditEntry) and other.seq == expected_seq for other in later):
            message = (
                f"entry seq {entry.seq} stands where seq {expected_seq} belongs "
                f"(seq {expected_seq} is further down)"
            )
            return "reordered", message
        gap = str(expected_seq)
        if entry.seq - 1 > expected_seq:
            gap = f"{expected_seq}..{entry.seq - 1}"
        return "removed", f"entries {gap} are missing before entry seq {entry.seq}"
    if entry.prev != expected_prev:
        message = (
            f"entry seq {entry.seq} does not chain to the entry before it: that entry was "
            "replaced by one from another log"
        )
        return "removed", message
    return None


def _verify_bytes(data: bytes, key: bytes, head_path: Path) -> VerifyResult:
    lines, parsed = _split(data)
    expected_seq, expected_prev = 1, GENESIS_HASH
    for number, (raw, item) in enumerate(zip(lines, parsed, strict=True), start=1):
        if isinstance(item, str):
            problem: Problem | None = ("malformed", item)
        else:
            problem = _content_problem(item, raw, key) or _order_problem(
                item, expected_seq, expected_prev, parsed[number:]
            )
        if problem is not None:
            reason, message = problem
            return VerifyResult(
                ok=False,
                entries=number - 1,
                reason=reason,
                message=f"line {number}: {message}",
                first_bad_seq=expected_seq,
                first_bad_line=number,
                bad_line=raw[:_SHOWN_BYTES].decode("ascii", errors="replace"),
                last_seq=expected_seq - 1,
                last_hash=expected_prev,
            )
        assert isinstance(item, AuditEntry)  # noqa: S101 -- a str item is always a problem
        expected_seq, expected_prev = item.seq + 1, item.hash
    entries = [item for item in parsed if isinstance(item, AuditEntry)]
    last_seq, last_hash = expected_seq - 1, expected_prev
    problem, note = _head_problem(entries, key, head_path)
    if problem is None:
        return VerifyResult(
            ok=True, entries=len(entries), note=note, last_seq=last_seq, last_hash=last_hash
        )
    reason, message = problem
    return VerifyResult(
        ok=False,
        entries=len(entries),
        reason=reason,
        message=message,
        first_bad_seq=last_seq + 1,
        last_seq=last_seq,
        last_hash=last_hash,
    )


def _head_problem(
    entries: list[AuditEntry], key: bytes, head_path: Path
) -> tuple[Problem | None, str]:
    """Does an intact chain end where the head file says? (problem or None, note)."""
    last_seq = entries[-1].seq if entries else 0
    head = _read_head(head_path)
    if head is None:
        if not entries:
            return None, "no audit log yet"
        message = (
            f"the head file {head_path} is missing, so entries cut off the end after seq "
            f"{last_seq} would go unseen; restore it from backup"
        )
        return ("truncated", message), ""
    if isinstance(head, str):
        return ("malformed", f"{head_path}: {head}"), ""
    recorded = entries[head.seq - 1].hash if 0 < head.seq <= last_seq else GENESIS_HASH
    checks: tuple[tuple[bool, Reason, str], ...] = (
        (hmac.compare_digest(_head_mac(key, head.seq, head.hash), head.mac), "bad_mac",
         f"{head_path}: the head's MAC is wrong (rewritten without the audit key)"),
        (head.seq <= last_seq, "truncated",
         f"the log ends at seq {last_seq} but the head records seq {head.seq}: entries "
         f"{last_seq + 1}..{head.seq} were cut off the end"),
        (recorded == head.hash, "edited",
         f"entry seq {head.seq} is not the one the head recorded: the log was replaced"),
        (head.seq >= last_seq - 1, "malformed",
         f"the head records seq {head.seq} but the log's authentic entries go on to seq "
         f"{last_seq}: the head file was put back from an older copy"),
    )  # fmt: skip
    problem = next(((reason, message) for ok, reason, message in checks if not ok), None)
    note = ""
    if problem is None and head.seq == last_seq - 1:
        note = "the head is one entry behind (an append was interrupted); the next append fixes it"
    return problem, note


def read_entries(log: Path) -> tuple[list[AuditEntry], int]:
    """Every readable entry in file order, and how many lines were not entries (no checks)."""
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise AuditError(log, f"cannot read: {exc.strerror}") from exc
    entries: list[AuditEntry] = []
    unreadable = 0
    for raw in data.splitlines():
        parsed = _parse_entry(raw)
        if isinstance(parsed, AuditEntry):
            entries.append(parsed)
        else:
            unreadable += 1
    return entries, unreadable


def summary(
    log: Path, since: datetime | None = None, until: datetime | None = None
) -> AuditSummary:
    """Counts per action and outcome for entries with since <= ts < until (both aware)."""
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            raise AuditError(log, "a summary window needs times with a UTC offset")
    entries, unreadable = read_entries(log)
    chosen = [
        entry
        for entry in entries
        if (since is None or entry.time >= since) and (until is None or entry.time < until)
    ]
    exports = [e for e in chosen if e.action == "export" and e.outcome == "ok"]
    return AuditSummary(
        entries=len(chosen),
        by_action=dict(Counter(entry.action for entry in chosen)),
        by_outcome=dict(Counter(entry.outcome for entry in chosen)),
        exports_total=len(exports),
        exports_anonymised=sum(1 for e in exports if e.detail.get("anonymised") is True),
        access_denied=sum(1 for e in chosen if e.action == "access_denied"),
        auth_failures=sum(1 for e in chosen if e.action == "auth_failure"),
        unreadable_lines=unreadable,
        first_ts=chosen[0].ts if chosen else None,
        last_ts=chosen[-1].ts if chosen else None,
    )

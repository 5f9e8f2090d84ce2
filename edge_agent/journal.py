"""Intake journal: every accepted reading is on disk, encrypted, before the pipeline takes it.

Readings wait in memory between a device and the spool (the queue, the framer's open batch, the
spool's uncommitted group) for up to about a second. A `kill -9` of the agent would lose them;
the journal does not, because each record is written with one `write(2)` as it arrives, and the
kernel keeps what a killed process wrote. (A power cut can still lose the last group commit of
the spool; that window is `[spool] commit_interval_s`.)

The spool stores, in the same transaction as each frame, the journal sequence number of the last
reading the frame holds. On start the agent replays every journaled reading after the spool's
durable mark, so a reading framed twice is stored once (a reading's identity is its point key),
and a reading never framed is framed now.

Segment file `intake-<first seq>.jnl`, mode 0600:

    magic "BTJ1" | salt (16 random bytes) | first_seq (u64 big-endian)
    record*: length (u32 big-endian) | AES-256-GCM ciphertext and tag

Each segment has its own key, HKDF-SHA256 (RFC 5869) of the gateway master secret with the
segment's random salt and info "bedside-twin/v1/intake-journal|<gateway id>", and the record
nonce is its index in the segment (NIST SP 800-38D §8.2.1, deterministic construction): a new
segment after a crash gets a new salt, so a (key, nonce) pair never repeats. The AAD binds each
record to its segment header and index. Plaintext: msgpack [device token, patient token, device
kind, metric code, ts_ns, value, quality] (tokens are pseudonyms; even so, nothing rests on the
card in clear).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_agent.errors import EdgeAgentError
from edge_agent.sources import Reading

_LOGGER = logging.getLogger(__name__)
MAGIC: Final = b"BTJ1"
SALT_BYTES: Final = 16
HEADER: Final = struct.Struct(">4s16sQ")
LENGTH: Final = struct.Struct(">I")
MAX_RECORD_BYTES: Final = 4096
ROTATE_BYTES: Final = 1 << 20
"""A segment is closed at this size; it is deleted once every reading in it is spooled."""
HKDF_INFO_LABEL: Final = b"bedside-twin/v1/intake-journal"
_NAME: Final = re.compile(r"intake-(\d{20})\.jnl")
_FIELDS: Final = 7


class JournalError(EdgeAgentError):
    """The journal directory or a segment header cannot be used; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"intake journal {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True)
class _Segment:
    path: Path
    first_seq: int
    count: int
    size: int

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


def _segment_key(master_secret: bytes, gateway_id: str, salt: bytes) -> AESGCM:
    info = HKDF_INFO_LABEL + b"|" + gateway_id.encode("ascii")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(master_secret)
    return AESGCM(key)


_NONCE_PAD: Final = bytes(4)


def _nonce(index: int) -> bytes:
    return _NONCE_PAD + index.to_bytes(8, "big")


def _encode(reading: Reading, packer: msgpack.Packer | None = None) -> bytes:
    fields = (
        reading.device_token,
        reading.patient_token,
        reading.device_kind,
        reading.metric_code,
        reading.ts_ns,
        reading.value,
        reading.quality,
    )
    if packer is None:
        return msgpack.packb(fields, use_bin_type=True)
    # A kept Packer: packb builds a new one for every call (a third of the encoding cost).
    return packer.pack(fields)


def _decode(plaintext: bytes) -> Reading | None:
    try:
        fields = msgpack.unpackb(plaintext, raw=False)
        if not isinstance(fields, list) or len(fields) != _FIELDS:
            return None
        device, patient, kind, code, ts_ns, value, quality = fields
        return Reading(
            str(device), str(patient), str(kind), int(code), int(ts_ns), float(value), int(quality)
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None


class IntakeJournal:
    """Append on the event loop (one small write per reading); release from the commit timer."""

    def __init__(
        self, directory: Path, master_secret: bytes, gateway_id: str, next_seq: int
    ) -> None:
        self._directory = directory
        self._master = master_secret
        self._gateway_id = gateway_id
        self._closed: list[_Segment] = []
        self._current: _Segment | None = None
        self._fd = -1
        self._aead: AESGCM | None = None
        self._aad_prefix = b""
        self._next_seq = next_seq
        self.run_first_seq = next_seq
        """The sequence number of the first reading journaled by this run."""
        self.torn_records = 0
        self._broken = False
        self._shut = False
        self._packer = msgpack.Packer(use_bin_type=True)

    # --- opening and recovery ---------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, master_secret: bytes, gateway_id: str, durable_seq: int
    ) -> tuple[IntakeJournal, list[Reading]]:
        """Open the journal in `directory`; return it and the readings after `durable_seq`.

        Those readings are journaled again at the start of a fresh segment (so this run's
        sequence numbers count them first) and the old segments are deleted.
        """
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JournalError(directory, f"cannot create: {exc.strerror}") from exc
        old = sorted(p for p in directory.iterdir() if _NAME.fullmatch(p.name))
        recovered: list[Reading] = []
        torn = 0
        highest = durable_seq
        for path in old:
            first_seq, readings, torn_here = cls._read_segment(path, master_secret, gateway_id)
            torn += torn_here
            for offset, reading in enumerate(readings):
                if first_seq + offset > durable_seq:
                    recovered.append(reading)
            # Even an empty segment used its first number: the next one never takes its name.
            highest = max(highest, first_seq + max(len(readings), 1) - 1)
        journal = cls(directory, master_secret, gateway_id, highest + 1)
        journal.torn_records = torn
        journal._start_segment()
        for reading in recovered:
            journal.append(reading)
        if recovered:
            journal.sync()
        for path in old:
            path.unlink()
        if recovered or torn:
            _LOGGER.warning(
                "intake journal: %d readings were not spooled before the last stop; framing "
                "them now (%d torn records skipped)",
                len(recovered),
                torn,
            )
        return journal, recovered

    @staticmethod
    def _read_segment(
        path: Path, master_secret: bytes, gateway_id: str
    ) -> tuple[int, list[Reading], int]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalError(path, f"cannot read: {exc.strerror}") from exc
        if len(data) < HEADER.size:
            # Killed between creating the file and writing its header: nothing was journaled.
            match = _NAME.fullmatch(path.name)
            return (int(match.group(1)) if match else 0), [], 0
        magic, salt, first_seq = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise JournalError(path, "not an intake journal segment (bad magic); move it away")
        aead = _segment_key(master_secret, gateway_id, salt)
        readings: list[Reading] = []
        offset = HEADER.size
        while offset < len(data):
            torn = 1
            if offset + LENGTH.size > len(data):
                return first_seq, readings, torn
            (size,) = LENGTH.unpack_from(data, offset)
            end = offset + LENGTH.size + size
            if size > MAX_RECORD_BYTES or end > len(data):
                return first_seq, readings, torn
            index = len(readings)
            aad = data[: HEADER.size] + index.to_bytes(8, "big")
            try:
                plaintext = aead.decrypt(_nonce(index), data[offset + LENGTH.size : end], aad)
            except InvalidTag:
                return first_seq, readings, torn
            reading = _decode(plaintext)
            if reading is None:
                return first_seq, readings, torn
            readings.append(reading)
            offset = end
        return first_seq, readings, 0

    # --- writing ------------------------------------------------------------------------------

    def _retire_current(self) -> None:
        if self._current is not None:
            os.close(self._fd)
            self._fd = -1
            self._closed.append(self._current)
            self._current = None
            self._aead = None

    def _start_segment(self) -> tuple[_Segment, AESGCM]:
        self._retire_current()
        salt = os.urandom(SALT_BYTES)
        path = self._directory / f"intake-{self._next_seq:020d}.jnl"
        header = HEADER.pack(MAGIC, salt, self._next_seq)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise JournalError(path, f"cannot create: {exc.strerror}") from exc
        try:
            os.write(fd, header)
        except OSError as exc:
            os.close(fd)
            raise JournalError(path, f"cannot write the header: {exc.strerror}") from exc
        self._fd = fd
        self._aead = aead = _segment_key(self._master, self._gateway_id, salt)
        self._aad_prefix = header
        self._current = segment = _Segment(path, self._next_seq, 0, len(header))
        return segment, aead

    def append(self, reading: Reading) -> int:
        """Journal one reading and return its sequence number; JournalError if the write fails."""
        if self._shut:
            msg = "append after close"
            raise JournalError(self._directory, msg)
        segment, aead = self._current, self._aead
        try:
            if segment is None or aead is None or segment.size >= ROTATE_BYTES or self._broken:
                segment, aead = self._start_segment()
                self._broken = False
        except JournalError:
            self._skip()
            raise
        index = segment.count
        counter = index.to_bytes(8, "big")  # the nonce's low 8 bytes and the AAD's tail
        nonce = _NONCE_PAD + counter
        sealed = aead.encrypt(nonce, _encode(reading, self._packer), self._aad_prefix + counter)
        record = LENGTH.pack(len(sealed)) + sealed
        try:
            # One write per record: a killed process never leaves half of one behind.
            os.write(self._fd, record)
        except OSError as exc:
            self._skip()
            raise JournalError(segment.path, f"write failed: {exc.strerror}") from exc
        segment.count += 1
        segment.size += len(record)
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _skip(self) -> None:
        # The reading keeps its number (the pipeline counts every reading it takes), and the
        # next one starts a new segment, whose first number says where the journal resumed.
        self._next_seq += 1
        self._broken = True

    def sync(self) -> None:
        """fsync the current segment (after recovery, so replayed readings survive power loss)."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def release(self, durable_seq: int) -> None:
        """Delete closed segments whose every reading is spooled (seq <= `durable_seq`)."""
        keep: list[_Segment] = []
        for segment in self._closed:
            if segment.last_seq <= durable_seq:
                with contextlib.suppress(FileNotFoundError):
                    segment.path.unlink()
            else:
                keep.append(segment)
        self._closed = keep

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def segments(self) -> int:
        return len(self._closed) + (self._current is not None)

    def close(self, durable_seq: int) -> None:
        """Close; when everything is spooled the journal is left empty."""
        self._retire_current()
        self._shut = True
        self.release(durable_seq)

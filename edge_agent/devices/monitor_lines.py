"""Legacy bedside monitor output: checksummed ASCII vital-sign sentences, parsed from a byte stream.

The monitor prints one sentence per measurement cycle on its RS-232 port, shaped like an NMEA 0183
sentence (normative copy with worked examples: docs/serial-formats.md section 2):

    $VS,<seq>,<time>,<key>=<value>,...*<hh>\\r\\n

* `$` starts a sentence and never occurs inside one, so a receiver resynchronises on it: a
  sentence starts at the LAST `$` of its line and anything before it is line noise.
* `seq` is the monitor's sentence counter, decimal 0..65535, wrapping to 0.
* `time` is the monitor's clock in UTC, ISO 8601 extended form with an optional millisecond part:
  `2026-11-22T18:45:01Z` or `2026-11-22T18:45:01.250Z`.
* Parameters are `KEY=value` in any order; a parameter the monitor is not measuring is either
  absent or printed as `---`. Defined keys (integers unless said otherwise):
      HR    heart rate, /min, 0..400
      RR    respiration rate, /min, 0..200
      SPO2  oxygen saturation, %, 0..100
      NIBP  non-invasive blood pressure systolic/diastolic/mean, mmHg, each 0..400; printed only on
            the sentence that follows a completed cuff cycle, so each measurement is stored once
      TEMP  temperature, degrees Celsius, decimal with up to two decimals, 0.0..60.0
  Other keys are tolerated and ignored (newer monitors add parameters); a key given twice is an
  error.
* `hh` is the checksum as NMEA 0183 defines its checksum field: the 8-bit XOR of every byte
  between `$` and `*` (both excluded), in two hex digits (upper case sent, either case accepted).
* Only printable ASCII (0x20-0x7E) may appear; the line ends with CR LF (a bare LF is accepted).
  A sentence, `$` to the end of the checksum, is at most MAX_SENTENCE_BYTES long.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from edge_agent.errors import EdgeAgentError

MAX_SENTENCE_BYTES: Final = 126  # 128 with CR LF; a full VS sentence is about 90
SENTENCE_ID: Final = b"VS"
NO_VALUE: Final = b"---"
_SEQ_MODULUS: Final = 1 << 16
_NS_PER_S: Final = 1_000_000_000
_NS_PER_MS: Final = 1_000_000
_MAX_HR_BPM: Final = 400
_MAX_RR_PER_MIN: Final = 200
_MAX_SPO2_PCT: Final = 100
_MAX_NIBP_MMHG: Final = 400
_MAX_TEMP_C: Final = 60.0

_CHECKSUM: Final = re.compile(rb"[0-9A-Fa-f]{2}")
_SEQ: Final = re.compile(rb"[0-9]{1,5}")
_TIME: Final = re.compile(
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{3}))?Z"
)
_KEY: Final = re.compile(rb"[A-Z][A-Z0-9]*")
_INT: Final = re.compile(rb"[0-9]{1,3}")
_DECIMAL: Final = re.compile(rb"[0-9]{1,2}(?:\.[0-9]{1,2})?")
_NIBP: Final = re.compile(rb"([0-9]{1,3})/([0-9]{1,3})/([0-9]{1,3})")
_DELIMITERS: Final = re.compile(rb"[\n$]")
_BLANK: Final = b" \t\r"


class LineFault(enum.StrEnum):
    """Why a line was rejected; the streaming decoder keeps one counter per fault."""

    CHECKSUM = "checksum"  # well-formed, but the XOR does not match
    MALFORMED = "malformed"  # not a sentence of this format
    OVERSIZE = "oversize"  # longer than MAX_SENTENCE_BYTES
    UNKNOWN_SENTENCE = "unknown_sentence"  # checksum good, sentence id not VS: skipped


class MonitorLineError(EdgeAgentError):
    """A monitor line cannot be used; the stream continues with the next line.

    `column` is the 0-based byte offset within the sentence, counted from its `$`.
    """

    def __init__(self, reason: str, line_no: int, column: int, fault: LineFault) -> None:
        super().__init__(f"bedside monitor line {line_no}, column {column}: {reason} ({fault})")
        self.reason = reason
        self.line_no = line_no
        self.column = column
        self.fault = fault


@dataclass(slots=True, frozen=True)
class Nibp:
    """One completed cuff cycle."""

    systolic_mmhg: int
    diastolic_mmhg: int
    mean_mmhg: int


@dataclass(slots=True, frozen=True)
class VitalsSentence:
    """A `$VS` sentence; a parameter the monitor did not report is None."""

    seq: int
    ts_ns: int
    heart_rate_bpm: int | None
    resp_rate_per_min: int | None
    spo2_pct: int | None
    nibp: Nibp | None
    temp_c: float | None


def checksum(body: bytes) -> int:
    """NMEA 0183 checksum field: XOR of the bytes between `$` and `*`."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def _parse_time(raw: bytes, line_no: int, column: int) -> int:
    match = _TIME.fullmatch(raw)
    if match is None:
        msg = "time is not YYYY-MM-DDThh:mm:ss[.fff]Z"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    year, month, day, hour, minute, second = (int(group) for group in match.groups()[:6])
    try:
        stamp = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        msg = f"time {raw.decode('ascii')} is not a valid UTC date and time"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED) from None
    millis = int(match.group(7)) if match.group(7) is not None else 0
    # Whole seconds are exact in a float timestamp; the milliseconds are added as integers.
    return int(stamp.timestamp()) * _NS_PER_S + millis * _NS_PER_MS


def _parse_int(key: str, entry: tuple[bytes, int], high: int, line_no: int) -> int:
    raw, column = entry
    if _INT.fullmatch(raw) is None:
        msg = f"{key} value {raw.decode('ascii')!r} is not an unsigned integer"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    value = int(raw)
    if value > high:
        msg = f"{key} value {value} is above {high}"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    return value


def _parse_nibp(raw: bytes, line_no: int, column: int) -> Nibp:
    match = _NIBP.fullmatch(raw)
    if match is None:
        msg = "NIBP is not systolic/diastolic/mean"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    systolic, diastolic, mean = (int(group) for group in match.groups())
    if max(systolic, diastolic, mean) > _MAX_NIBP_MMHG:
        msg = f"NIBP {raw.decode('ascii')} has a pressure above {_MAX_NIBP_MMHG} mmHg"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    return Nibp(systolic, diastolic, mean)


def _parse_temp(raw: bytes, line_no: int, column: int) -> float:
    if _DECIMAL.fullmatch(raw) is None:
        msg = f"TEMP value {raw.decode('ascii')!r} is not a decimal like 36.8"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    value = float(raw)
    if value > _MAX_TEMP_C:
        msg = f"TEMP value {value} is above {_MAX_TEMP_C} degrees C"
        raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    return value


def _check_frame(sentence: bytes, line_no: int) -> bytes:
    """Check length, character set and checksum; return the body between `$` and `*`."""
    if len(sentence) > MAX_SENTENCE_BYTES:
        msg = f"{len(sentence)} bytes exceed the {MAX_SENTENCE_BYTES}-byte sentence cap"
        raise MonitorLineError(msg, line_no, MAX_SENTENCE_BYTES, LineFault.OVERSIZE)
    if not sentence.startswith(b"$"):
        msg = "a sentence starts with '$'"
        raise MonitorLineError(msg, line_no, 0, LineFault.MALFORMED)
    for column, byte in enumerate(sentence):
        if not 0x20 <= byte <= 0x7E:
            msg = f"byte 0x{byte:02X} is not printable ASCII"
            raise MonitorLineError(msg, line_no, column, LineFault.MALFORMED)
    star = sentence.rfind(b"*")
    if star < 0:
        msg = "no '*' before the checksum"
        raise MonitorLineError(msg, line_no, len(sentence), LineFault.MALFORMED)
    sent = sentence[star + 1 :]
    if _CHECKSUM.fullmatch(sent) is None:
        msg = "the checksum is not two hex digits"
        raise MonitorLineError(msg, line_no, star + 1, LineFault.MALFORMED)
    body = sentence[1:star]
    computed = checksum(body)
    if int(sent, 16) != computed:
        msg = f"checksum {sent.decode('ascii')} sent, {computed:02X} computed"
        raise MonitorLineError(msg, line_no, star + 1, LineFault.CHECKSUM)
    return body


def parse_sentence(sentence: bytes, line_no: int = 0) -> VitalsSentence:
    """Parse one sentence, `$` through the checksum digits, without CR LF."""
    body = _check_frame(sentence, line_no)
    fields = body.split(b",")
    if fields[0] != SENTENCE_ID:
        msg = f"sentence {fields[0].decode('ascii')!r} is not {SENTENCE_ID.decode('ascii')}"
        raise MonitorLineError(msg, line_no, 1, LineFault.UNKNOWN_SENTENCE)
    if len(fields) < 3:
        msg = "a VS sentence needs a sequence number and a time"
        raise MonitorLineError(msg, line_no, len(body) + 1, LineFault.MALFORMED)
    # Column of each field: 1 for '$', plus the bytes and commas before it.
    columns: list[int] = []
    column = 1
    for field in fields:
        columns.append(column)
        column += len(field) + 1
    if _SEQ.fullmatch(fields[1]) is None or int(fields[1]) >= _SEQ_MODULUS:
        msg = "sequence number is not 0..65535"
        raise MonitorLineError(msg, line_no, columns[1], LineFault.MALFORMED)
    seq = int(fields[1])
    ts_ns = _parse_time(fields[2], line_no, columns[2])
    values: dict[bytes, tuple[bytes, int]] = {}
    for field, at in zip(fields[3:], columns[3:], strict=True):
        key, equals, raw = field.partition(b"=")
        if not equals or _KEY.fullmatch(key) is None:
            msg = f"field {field.decode('ascii')!r} is not KEY=value"
            raise MonitorLineError(msg, line_no, at, LineFault.MALFORMED)
        if key in values:
            msg = f"parameter {key.decode('ascii')} given twice"
            raise MonitorLineError(msg, line_no, at, LineFault.MALFORMED)
        values[key] = (raw, at + len(key) + 1)

    def present(key: bytes) -> tuple[bytes, int] | None:
        entry = values.get(key)
        if entry is None or entry[0] == NO_VALUE:
            return None
        return entry

    hr = present(b"HR")
    rr = present(b"RR")
    spo2 = present(b"SPO2")
    nibp = present(b"NIBP")
    temp = present(b"TEMP")
    return VitalsSentence(
        seq=seq,
        ts_ns=ts_ns,
        heart_rate_bpm=None if hr is None else _parse_int("HR", hr, _MAX_HR_BPM, line_no),
        resp_rate_per_min=None if rr is None else _parse_int("RR", rr, _MAX_RR_PER_MIN, line_no),
        spo2_pct=None if spo2 is None else _parse_int("SPO2", spo2, _MAX_SPO2_PCT, line_no),
        nibp=None if nibp is None else _parse_nibp(nibp[0], line_no, nibp[1]),
        temp_c=None if temp is None else _parse_temp(temp[0], line_no, temp[1]),
    )


@dataclass(slots=True)
class LineCounters:
    """What a LineDecoder has seen; every non-blank line lands in exactly one of these."""

    lines_ok: int = 0
    bad_checksums: int = 0
    malformed_lines: int = 0
    oversize_lines: int = 0
    unknown_sentences: int = 0
    seq_gaps: int = 0
    garbage_bytes: int = 0

    @property
    def lines_bad(self) -> int:
        """Lines that were damaged or not of this format (unknown sentences are not bad)."""
        return self.bad_checksums + self.malformed_lines + self.oversize_lines

    def count(self, fault: LineFault) -> None:
        """Add one to the counter of `fault`."""
        match fault:
            case LineFault.CHECKSUM:
                self.bad_checksums += 1
            case LineFault.MALFORMED:
                self.malformed_lines += 1
            case LineFault.OVERSIZE:
                self.oversize_lines += 1
            case LineFault.UNKNOWN_SENTENCE:
                self.unknown_sentences += 1


class LineDecoder:
    """Streaming decoder: feed it byte chunks of any size, get back the sentences they complete.

    Memory is bounded by MAX_SENTENCE_BYTES whatever arrives. Nothing raises: bad lines are
    counted in `counters` and the last one is kept in `last_error`. Blank lines are ignored.
    """

    def __init__(self) -> None:
        self.counters = LineCounters()
        self.last_error: MonitorLineError | None = None
        self._line_no = 1
        self._sentence = bytearray()
        self._sentence_len = 0
        self._in_sentence = False
        self._stray_text = False
        self._last_seq: int | None = None

    def reset(self) -> None:
        """Forget a partial line (e.g. after the port was reopened); keep counters and seq."""
        self._sentence.clear()
        self._sentence_len = 0
        self._in_sentence = False
        self._stray_text = False

    def feed(self, chunk: bytes) -> list[VitalsSentence]:
        """Consume `chunk`; return the sentences it completed, in order."""
        out: list[VitalsSentence] = []
        start = 0
        for match in _DELIMITERS.finditer(chunk):
            self._absorb(chunk[start : match.start()])
            if match.group() == b"$":
                self._start_sentence()
            else:
                sentence = self._end_line()
                if sentence is not None:
                    out.append(sentence)
            start = match.end()
        self._absorb(chunk[start:])
        return out

    def _absorb(self, piece: bytes) -> None:
        if not piece:
            return
        if not self._in_sentence:
            self.counters.garbage_bytes += len(piece)
            if piece.strip(_BLANK):
                self._stray_text = True
            return
        room = MAX_SENTENCE_BYTES + 1 - len(self._sentence)
        if room > 0:
            self._sentence += piece[:room]
        self._sentence_len += len(piece)

    def _start_sentence(self) -> None:
        if self._in_sentence:
            # A second '$' on one line: what came before it was noise, not a sentence.
            self.counters.garbage_bytes += self._sentence_len
        self._in_sentence = True
        self._sentence.clear()
        self._sentence += b"$"
        self._sentence_len = 1

    def _end_line(self) -> VitalsSentence | None:
        line_no = self._line_no
        self._line_no += 1
        in_sentence, stray_text = self._in_sentence, self._stray_text
        sentence = bytes(self._sentence)
        self.reset()
        if not in_sentence:
            if stray_text:
                self._reject(
                    MonitorLineError("no '$' on the line", line_no, 0, LineFault.MALFORMED)
                )
            return None
        if sentence.endswith(b"\r"):
            sentence = sentence[:-1]
        try:
            parsed = parse_sentence(sentence, line_no)
        except MonitorLineError as exc:
            self._reject(exc)
            return None
        self.counters.lines_ok += 1
        self._track_seq(parsed.seq)
        return parsed

    def _reject(self, error: MonitorLineError) -> None:
        self.counters.count(error.fault)
        self.last_error = error

    def _track_seq(self, seq: int) -> None:
        last = self._last_seq
        self._last_seq = seq
        if last is not None and seq != (last + 1) % _SEQ_MODULUS:
            self.counters.seq_gaps += 1

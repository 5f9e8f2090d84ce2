"""Implant telemetry receiver framing: COBS-delimited frames with CRC-16, decoded to typed messages.

The receiver at the bedside talks to the implant over its radio link and forwards each record to
the gateway over a serial port as one frame (normative copy with worked examples:
docs/serial-formats.md section 1):

    00 | COBS( type u8 | seq u16 LE | len u8 | payload[len] | crc u16 LE ) | 00

* Framing is Consistent Overhead Byte Stuffing (Cheshire & Baker, "Consistent Overhead Byte
  Stuffing", IEEE/ACM Transactions on Networking 7(2), 1999): the encoded frame contains no 0x00,
  so 0x00 only ever delimits frames and a receiver resynchronises at the next one. Senders encode
  as the paper does, data plus a phantom final zero, so a frame whose last run is a full 254-byte
  block ends with a 0x01 code; the shorter form without it is accepted too.
* `len` is ONE byte: payloads are at most 255 bytes, so a decoded frame is at most 261 bytes and an
  encoded one at most 261 + floor(261 / 254) + 1 = 263 bytes (one code byte per 254 data bytes
  plus the first).
  A longer run between delimiters is counted as oversize and skipped without being buffered.
* `crc` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout; check value
  0x29B1 over b"123456789") over type..payload, sent least significant byte first.
* `seq` counts frames sent, modulo 2**16; the receiver numbers every frame, so a jump means frames
  were lost (counted as a gap, with the number missed) and a repeat is a retransmission.
* Integers are little-endian. Device times are the implant's clock: u32 seconds since
  1970-01-01T00:00:00Z (UTC, no leap seconds). Payloads may grow at the end in later versions:
  bytes past the layouts below are ignored.

Payloads (offsets within the payload; terms follow the IEEE 11073-10103 IDC nomenclature for
implantable cardiac devices, whose observations these are):

0x01 DEVICE_STATUS, 9 bytes
    0  u32  device_time_s
    4  u16  status flags: bit0 reset since last report, bit1 magnet response, bit2 MRI mode,
            bit3 weak telemetry link, bit4 memory integrity error, bit5 long charge time;
            bits 6-15 reserved (ignored)
    6  u16  error_code, 0 = no error (vendor-defined otherwise)
    8  i8   link_rssi_dbm of the implant radio link, 0x7F (127) = not measured

0x02 NIGHTLY_TREND, 11 bytes, one record per trend day (24 h starting at period_start_s)
    0  u32  period_start_s
    4  u8   night_heart_rate_bpm (mean rate 00:00-04:00 device time), 0xFF = not measured
    5  u16  activity_min, minutes of activity in the day, 0..1440, 0xFFFF = not measured
    7  u16  af_burden, 0.1 % units, 0..1000, 0xFFFF = not measured
    9  u16  fluid_index_ohm_d, thoracic impedance fluid index in ohm-days, 0xFFFF = not measured

0x03 BATTERY, 8 bytes
    0  u32  device_time_s
    4  u16  voltage_mv
    6  u8   longevity_months (remaining), 0xFF = not estimated
    7  u8   phase: 0 BOS (beginning of service), 1 ERI (elective replacement indicator),
            2 EOS (end of service); other values are invalid

0x04 LEAD_IMPEDANCE, 5 + 3 x count bytes
    0  u32  device_time_s
    4  u8   count
    5  count x ( u8 channel: 1 RA, 2 RV, 3 LV, 4 HV (defibrillation coil);
                 u16 impedance_ohm, 0xFFFF = not measured )
    Channels are distinct within one record.

0x05 ARRHYTHMIA_EPISODE, 14 bytes
    0  u16  episode_id (device's own counter)
    2  u8   type: 1 AF, 2 AT/AFL, 3 SVT, 4 VT, 5 VF, 6 NSVT, 7 pause, 8 bradycardia
    3  u32  start_s
    7  u32  duration_s
    11 u16  max_rate_bpm, 0xFFFF = not measured
    13 u8   therapy: 0 none, 1 ATP, 2 shock, 3 ATP then shock
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass
from typing import Final, TypeVar

from edge_agent.errors import EdgeAgentError

FRAME_DELIMITER: Final = 0x00
HEADER_BYTES: Final = 4  # type u8, seq u16, len u8
CRC_BYTES: Final = 2
MAX_PAYLOAD_BYTES: Final = 255  # the u8 length field
MAX_FRAME_BYTES: Final = HEADER_BYTES + MAX_PAYLOAD_BYTES + CRC_BYTES
# COBS worst case: a first code byte plus one more per full 254-byte block (Cheshire & Baker 1999).
MAX_ENCODED_BYTES: Final = MAX_FRAME_BYTES + MAX_FRAME_BYTES // 254 + 1
_COBS_MAX_RUN: Final = 0xFF
_SEQ_MODULUS: Final = 1 << 16
_SEQ_HALF: Final = _SEQ_MODULUS // 2

_E = TypeVar("_E", bound=enum.IntEnum)

_U8_NONE: Final = 0xFF
_U16_NONE: Final = 0xFFFF
_RSSI_NONE: Final = 0x7F
_MINUTES_PER_DAY: Final = 1440
_AF_BURDEN_MAX_TENTHS: Final = 1000


class FrameFault(enum.StrEnum):
    """Why a frame was rejected; the streaming decoder keeps one counter per fault."""

    COBS = "cobs"  # a code byte points past the end of the run, or a zero inside it
    RUNT = "runt"  # shorter than header + CRC
    CRC = "crc"  # CRC-16/CCITT-FALSE mismatch
    LENGTH = "length"  # the len field disagrees with the bytes carried
    UNKNOWN_TYPE = "unknown_type"  # CRC good, but a message type this decoder does not know
    LAYOUT = "layout"  # payload too short or a field outside its defined values
    OVERSIZE = "oversize"  # more than MAX_ENCODED_BYTES between delimiters


class SerialFrameError(EdgeAgentError):
    """An implant receiver frame cannot be used; the stream continues at the next delimiter.

    `offset` counts from the frame's type byte, except for COBS and oversize faults where it
    counts within the encoded bytes between the delimiters.
    """

    def __init__(
        self, reason: str, offset: int, fault: FrameFault, msg_type: int | None = None
    ) -> None:
        what = f"message type 0x{msg_type:02X}" if msg_type is not None else "frame"
        super().__init__(f"implant receiver {what}, byte {offset}: {reason} ({fault})")
        self.reason = reason
        self.offset = offset
        self.fault = fault
        self.msg_type = msg_type


class MessageType(enum.IntEnum):
    """The message type byte (docs/serial-formats.md §1.3)."""

    DEVICE_STATUS = 0x01
    NIGHTLY_TREND = 0x02
    BATTERY = 0x03
    LEAD_IMPEDANCE = 0x04
    ARRHYTHMIA_EPISODE = 0x05


class StatusFlags(enum.IntFlag):
    """DEVICE_STATUS flag bits (docs/serial-formats.md §1.3.1); bits 6-15 are reserved."""

    RESET_SINCE_LAST = 1 << 0
    MAGNET = 1 << 1
    MRI_MODE = 1 << 2
    WEAK_LINK = 1 << 3
    MEMORY_ERROR = 1 << 4
    LONG_CHARGE_TIME = 1 << 5


_KNOWN_STATUS_BITS: Final = 0x003F


class BatteryPhase(enum.IntEnum):
    """Battery service phase, as the IDC nomenclature names them."""

    BOS = 0
    ERI = 1
    EOS = 2


class LeadChannel(enum.IntEnum):
    """The lead channel an impedance was measured on."""

    RA = 1
    RV = 2
    LV = 3
    HV = 4


class EpisodeType(enum.IntEnum):
    """Arrhythmia episode classification reported by the implant."""

    AF = 1
    AT = 2
    SVT = 3
    VT = 4
    VF = 5
    NSVT = 6
    PAUSE = 7
    BRADY = 8


class Therapy(enum.IntEnum):
    """Therapy the implant delivered during an episode."""

    NONE = 0
    ATP = 1
    SHOCK = 2
    ATP_THEN_SHOCK = 3


@dataclass(slots=True, frozen=True)
class DeviceStatus:
    """DEVICE_STATUS (type 0x01)."""

    device_time_s: int
    flags: StatusFlags
    error_code: int
    link_rssi_dbm: int | None


@dataclass(slots=True, frozen=True)
class NightlyTrend:
    """NIGHTLY_TREND (type 0x02): one trend day."""

    period_start_s: int
    night_heart_rate_bpm: int | None
    activity_min: int | None
    af_burden_pct: float | None
    fluid_index_ohm_d: int | None


@dataclass(slots=True, frozen=True)
class Battery:
    """BATTERY (type 0x03)."""

    device_time_s: int
    voltage_mv: int
    longevity_months: int | None
    phase: BatteryPhase


@dataclass(slots=True, frozen=True)
class LeadMeasurement:
    """One channel of a LEAD_IMPEDANCE record."""

    channel: LeadChannel
    impedance_ohm: int | None


@dataclass(slots=True, frozen=True)
class LeadImpedance:
    """LEAD_IMPEDANCE (type 0x04)."""

    device_time_s: int
    channels: tuple[LeadMeasurement, ...]


@dataclass(slots=True, frozen=True)
class ArrhythmiaEpisode:
    """ARRHYTHMIA_EPISODE (type 0x05)."""

    episode_id: int
    episode_type: EpisodeType
    start_s: int
    duration_s: int
    max_rate_bpm: int | None
    therapy: Therapy


ImplantMessage = DeviceStatus | NightlyTrend | Battery | LeadImpedance | ArrhythmiaEpisode


@dataclass(slots=True, frozen=True)
class ImplantFrame:
    """A frame that passed its CRC and whose payload decoded."""

    msg_type: MessageType
    seq: int
    message: ImplantMessage


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: binascii's CRC-CCITT (XMODEM polynomial) started at 0xFFFF."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_decode(encoded: bytes) -> bytes:
    """Undo COBS on the bytes between two delimiters (Cheshire & Baker 1999).

    Each code byte n (1..255) is followed by n - 1 data bytes; a code below 0xFF also stands for
    a zero after its data, except at the very end where that zero is the phantom the encoder
    appended.
    """
    out = bytearray()
    index = 0
    end = len(encoded)
    while index < end:
        code = encoded[index]
        if code == 0:
            msg = "zero byte inside a COBS run"
            raise SerialFrameError(msg, index, FrameFault.COBS)
        block_end = index + code
        if block_end > end:
            msg = f"COBS code {code} needs {code - 1} data bytes, only {end - index - 1} follow"
            raise SerialFrameError(
                msg,
                index,
                FrameFault.COBS,
            )
        data = encoded[index + 1 : block_end]
        zero_at = data.find(0)
        if zero_at >= 0:
            msg = "zero byte inside a COBS run"
            raise SerialFrameError(msg, index + 1 + zero_at, FrameFault.COBS)
        out += data
        index = block_end
        if code != _COBS_MAX_RUN and index < end:
            out.append(0)
    return bytes(out)


def _open_frame(encoded: bytes) -> tuple[int, int, bytes]:
    """COBS-decode, check the CRC and the length field; return (type, seq, payload)."""
    if len(encoded) > MAX_ENCODED_BYTES:
        msg = f"{len(encoded)} encoded bytes exceed the {MAX_ENCODED_BYTES}-byte cap"
        raise SerialFrameError(
            msg,
            MAX_ENCODED_BYTES,
            FrameFault.OVERSIZE,
        )
    body = cobs_decode(encoded)
    if len(body) < HEADER_BYTES + CRC_BYTES:
        msg = f"{len(body)} bytes, a frame needs at least {HEADER_BYTES + CRC_BYTES}"
        raise SerialFrameError(
            msg,
            len(body),
            FrameFault.RUNT,
        )
    crc_at = len(body) - CRC_BYTES
    sent_crc = int.from_bytes(body[crc_at:], "little")
    computed_crc = crc16_ccitt_false(body[:crc_at])
    if sent_crc != computed_crc:
        msg = f"CRC 0x{sent_crc:04X} on the wire, 0x{computed_crc:04X} computed"
        raise SerialFrameError(
            msg,
            crc_at,
            FrameFault.CRC,
        )
    msg_type = body[0]
    seq = int.from_bytes(body[1:3], "little")
    length = body[3]
    carried = crc_at - HEADER_BYTES
    if length != carried:
        msg = f"length field says {length} payload bytes, the frame carries {carried}"
        raise SerialFrameError(
            msg,
            3,
            FrameFault.LENGTH,
            msg_type,
        )
    return msg_type, seq, body[HEADER_BYTES:crc_at]


def _need(payload: bytes, size: int, msg_type: int) -> None:
    if len(payload) < size:
        msg = f"payload has {len(payload)} bytes, this message needs at least {size}"
        raise SerialFrameError(
            msg,
            HEADER_BYTES + len(payload),
            FrameFault.LAYOUT,
            msg_type,
        )


def _enum_field(kind: type[_E], raw: int, field: str, payload_offset: int, msg_type: int) -> _E:
    try:
        return kind(raw)
    except ValueError:
        msg = f"{field} value {raw} is not defined"
        raise SerialFrameError(
            msg,
            HEADER_BYTES + payload_offset,
            FrameFault.LAYOUT,
            msg_type,
        ) from None


def _optional(raw: int, none_value: int) -> int | None:
    return None if raw == none_value else raw


_STATUS: Final = struct.Struct("<IHHb")
_TREND: Final = struct.Struct("<IBHHH")
_BATTERY: Final = struct.Struct("<IHBB")
_LEAD_HEAD: Final = struct.Struct("<IB")
_LEAD_ENTRY: Final = struct.Struct("<BH")
_EPISODE: Final = struct.Struct("<HBIIHB")


def _decode_status(payload: bytes) -> DeviceStatus:
    _need(payload, _STATUS.size, MessageType.DEVICE_STATUS)
    time_s, flags, error_code, rssi = _STATUS.unpack_from(payload)
    return DeviceStatus(
        device_time_s=time_s,
        flags=StatusFlags(flags & _KNOWN_STATUS_BITS),
        error_code=error_code,
        link_rssi_dbm=_optional(rssi, _RSSI_NONE),
    )


def _decode_trend(payload: bytes) -> NightlyTrend:
    kind = MessageType.NIGHTLY_TREND
    _need(payload, _TREND.size, kind)
    start_s, night_hr, activity, af_tenths, fluid = _TREND.unpack_from(payload)
    if activity != _U16_NONE and activity > _MINUTES_PER_DAY:
        msg = f"activity {activity} min exceeds the {_MINUTES_PER_DAY} minutes of a day"
        raise SerialFrameError(
            msg,
            HEADER_BYTES + 5,
            FrameFault.LAYOUT,
            kind,
        )
    if af_tenths != _U16_NONE and af_tenths > _AF_BURDEN_MAX_TENTHS:
        msg = f"AF burden {af_tenths / 10:.1f} % exceeds 100 %"
        raise SerialFrameError(
            msg,
            HEADER_BYTES + 7,
            FrameFault.LAYOUT,
            kind,
        )
    return NightlyTrend(
        period_start_s=start_s,
        night_heart_rate_bpm=_optional(night_hr, _U8_NONE),
        activity_min=_optional(activity, _U16_NONE),
        af_burden_pct=None if af_tenths == _U16_NONE else af_tenths / 10,
        fluid_index_ohm_d=_optional(fluid, _U16_NONE),
    )


def _decode_battery(payload: bytes) -> Battery:
    kind = MessageType.BATTERY
    _need(payload, _BATTERY.size, kind)
    time_s, voltage_mv, longevity, phase = _BATTERY.unpack_from(payload)
    return Battery(
        device_time_s=time_s,
        voltage_mv=voltage_mv,
        longevity_months=_optional(longevity, _U8_NONE),
        phase=_enum_field(BatteryPhase, phase, "battery phase", 7, kind),
    )


def _decode_leads(payload: bytes) -> LeadImpedance:
    kind = MessageType.LEAD_IMPEDANCE
    _need(payload, _LEAD_HEAD.size, kind)
    time_s, count = _LEAD_HEAD.unpack_from(payload)
    _need(payload, _LEAD_HEAD.size + count * _LEAD_ENTRY.size, kind)
    channels: list[LeadMeasurement] = []
    seen: set[LeadChannel] = set()
    for index in range(count):
        at = _LEAD_HEAD.size + index * _LEAD_ENTRY.size
        raw_channel, impedance = _LEAD_ENTRY.unpack_from(payload, at)
        channel = _enum_field(LeadChannel, raw_channel, "lead channel", at, kind)
        if channel in seen:
            # Two values for one channel at one time would collide in storage (same identity).
            msg = f"lead channel {channel.name} appears twice"
            raise SerialFrameError(
                msg,
                HEADER_BYTES + at,
                FrameFault.LAYOUT,
                kind,
            )
        seen.add(channel)
        channels.append(LeadMeasurement(channel, _optional(impedance, _U16_NONE)))
    return LeadImpedance(device_time_s=time_s, channels=tuple(channels))


def _decode_episode(payload: bytes) -> ArrhythmiaEpisode:
    kind = MessageType.ARRHYTHMIA_EPISODE
    _need(payload, _EPISODE.size, kind)
    episode_id, raw_type, start_s, duration_s, max_rate, raw_therapy = _EPISODE.unpack_from(payload)
    return ArrhythmiaEpisode(
        episode_id=episode_id,
        episode_type=_enum_field(EpisodeType, raw_type, "episode type", 2, kind),
        start_s=start_s,
        duration_s=duration_s,
        max_rate_bpm=_optional(max_rate, _U16_NONE),
        therapy=_enum_field(Therapy, raw_therapy, "therapy", 13, kind),
    )


def decode_payload(msg_type: int, payload: bytes) -> ImplantMessage:
    """Decode one message payload by its type byte."""
    if msg_type == MessageType.DEVICE_STATUS:
        return _decode_status(payload)
    if msg_type == MessageType.NIGHTLY_TREND:
        return _decode_trend(payload)
    if msg_type == MessageType.BATTERY:
        return _decode_battery(payload)
    if msg_type == MessageType.LEAD_IMPEDANCE:
        return _decode_leads(payload)
    if msg_type == MessageType.ARRHYTHMIA_EPISODE:
        return _decode_episode(payload)
    msg = "message type is not defined"
    raise SerialFrameError(msg, 0, FrameFault.UNKNOWN_TYPE, msg_type)


def decode_frame(encoded: bytes) -> ImplantFrame:
    """Decode the COBS bytes found between two 0x00 delimiters into one frame."""
    msg_type, seq, payload = _open_frame(encoded)
    message = decode_payload(msg_type, payload)
    return ImplantFrame(MessageType(msg_type), seq, message)


@dataclass(slots=True)
class FrameCounters:
    """What a FrameDecoder has seen.

    Every run between delimiters lands in exactly one fault counter or in `frames_ok`.
    """

    frames_ok: int = 0
    crc_failures: int = 0
    cobs_errors: int = 0
    runt_frames: int = 0
    length_errors: int = 0
    layout_errors: int = 0
    unknown_types: int = 0
    oversize_frames: int = 0
    seq_gaps: int = 0
    frames_missed: int = 0
    seq_duplicates: int = 0
    bytes_discarded: int = 0

    def count(self, fault: FrameFault) -> None:
        """Add one to the counter of `fault`."""
        match fault:
            case FrameFault.CRC:
                self.crc_failures += 1
            case FrameFault.COBS:
                self.cobs_errors += 1
            case FrameFault.RUNT:
                self.runt_frames += 1
            case FrameFault.LENGTH:
                self.length_errors += 1
            case FrameFault.LAYOUT:
                self.layout_errors += 1
            case FrameFault.UNKNOWN_TYPE:
                self.unknown_types += 1
            case FrameFault.OVERSIZE:
                self.oversize_frames += 1

    @property
    def frames_rejected(self) -> int:
        """All runs that did not yield a message."""
        return (
            self.crc_failures
            + self.cobs_errors
            + self.runt_frames
            + self.length_errors
            + self.layout_errors
            + self.unknown_types
            + self.oversize_frames
        )


class FrameDecoder:
    """Streaming decoder: feed it byte chunks of any size, get back the frames they complete.

    Until the first 0x00 it is hunting (it may have been started mid-frame) and discards what it
    sees. Runs longer than MAX_ENCODED_BYTES are never buffered beyond the cap. Nothing raises:
    bad frames are counted in `counters` and the last one is kept in `last_error`.
    """

    def __init__(self) -> None:
        self.counters = FrameCounters()
        self.last_error: SerialFrameError | None = None
        self._run = bytearray()
        self._synced = False
        self._overflowed = False
        self._last_seq: int | None = None

    def reset(self) -> None:
        """Forget a partial frame (e.g. after the port was reopened); keep counters and seq."""
        self._run.clear()
        self._synced = False
        self._overflowed = False

    def feed(self, chunk: bytes) -> list[ImplantFrame]:
        """Consume `chunk`; return the frames it completed, in order."""
        frames: list[ImplantFrame] = []
        start = 0
        while True:
            zero_at = chunk.find(FRAME_DELIMITER, start)
            piece = chunk[start:] if zero_at < 0 else chunk[start:zero_at]
            self._absorb(piece)
            if zero_at < 0:
                return frames
            frame = self._end_run()
            if frame is not None:
                frames.append(frame)
            start = zero_at + 1

    def _absorb(self, piece: bytes) -> None:
        if not piece:
            return
        if not self._synced:
            self.counters.bytes_discarded += len(piece)
            return
        if self._overflowed:
            return
        if len(self._run) + len(piece) > MAX_ENCODED_BYTES:
            self._overflowed = True
            self._run.clear()
            self.counters.count(FrameFault.OVERSIZE)
            self.last_error = SerialFrameError(
                f"no delimiter within {MAX_ENCODED_BYTES} bytes",
                MAX_ENCODED_BYTES,
                FrameFault.OVERSIZE,
            )
            return
        self._run += piece

    def _end_run(self) -> ImplantFrame | None:
        if not self._synced:
            self._synced = True
            return None
        if self._overflowed:
            self._overflowed = False
            return None
        if not self._run:
            return None  # back-to-back delimiters: idle line, not a frame
        encoded = bytes(self._run)
        self._run.clear()
        try:
            msg_type, seq, payload = _open_frame(encoded)
            self._track_seq(seq)
            message = decode_payload(msg_type, payload)
            frame = ImplantFrame(MessageType(msg_type), seq, message)
        except SerialFrameError as exc:
            self.counters.count(exc.fault)
            self.last_error = exc
            return None
        self.counters.frames_ok += 1
        return frame

    def _track_seq(self, seq: int) -> None:
        last = self._last_seq
        self._last_seq = seq
        if last is None:
            return
        if seq == last:
            self.counters.seq_duplicates += 1
            return
        missed = (seq - last - 1) % _SEQ_MODULUS
        if missed:
            self.counters.seq_gaps += 1
            # A backward jump (receiver restart) is a gap with no count of frames missed.
            if missed < _SEQ_HALF:
                self.counters.frames_missed += missed

"""Simulated implant telemetry receiver: encodes its records as COBS frames with CRC-16.

Written from docs/serial-formats.md section 1 alone, never from the agent's decoder, so that a
misreading of the format on one side shows up as a disagreement. The CRC is computed bit by bit
here (the agent uses binascii), and COBS is built by splitting on zeros (the agent walks codes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np

from firmware_sims.physiology import MODELS, VitalGenerator
from firmware_sims.serial.pty import Sent

# Message types, docs/serial-formats.md §1.3.
TYPE_DEVICE_STATUS: Final = 0x01
TYPE_NIGHTLY_TREND: Final = 0x02
TYPE_BATTERY: Final = 0x03
TYPE_LEAD_IMPEDANCE: Final = 0x04
TYPE_ARRHYTHMIA_EPISODE: Final = 0x05

# "Not measured" sentinels, §1.3.
NONE_U8: Final = 0xFF
NONE_U16: Final = 0xFFFF
NONE_RSSI: Final = 0x7F

# Enumerations, §1.3.3-§1.3.5.
PHASE_BOS: Final = 0
PHASE_ERI: Final = 1
PHASE_EOS: Final = 2
CHANNEL_RA: Final = 1
CHANNEL_RV: Final = 2
CHANNEL_LV: Final = 3
CHANNEL_HV: Final = 4
EPISODE_AF: Final = 1
EPISODE_VT: Final = 4
EPISODE_NSVT: Final = 6
THERAPY_NONE: Final = 0
THERAPY_ATP: Final = 1

_CRC_POLY: Final = 0x1021
_SECONDS_PER_DAY: Final = 86_400
_NS_PER_S: Final = 1_000_000_000
_MV_PER_V: Final = 1000
_TENTHS: Final = 10
# Catalogue names of the lead channels, §1.3.4.
LEAD_NAMES: Final = {CHANNEL_RA: "ra", CHANNEL_RV: "rv", CHANNEL_LV: "lv", CHANNEL_HV: "hv"}

ReportedValue = tuple[str, int, float]
"""(catalogue metric, UTC ns, value): one reading a record reports, for the ground-truth ledger."""


def _reported(at_s: int, pairs: list[tuple[str, float | None]]) -> list[ReportedValue]:
    return [(metric, at_s * _NS_PER_S, float(v)) for metric, v in pairs if v is not None]


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, MSB first: poly 0x1021, init 0xFFFF, no reflection, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS as Cheshire & Baker (1999) define it: the data plus a phantom final zero, encoded.

    The data is cut at each zero; each piece becomes 0xFF blocks of 254 bytes and then one block
    whose code (length + 1, below 0xFF) also stands for the zero that ended the piece. The last
    piece ends with the phantom zero, so a frame ending in a full 254-byte run gets a final 0x01.
    """
    out = bytearray()
    for piece in data.split(b"\x00"):
        full_blocks, tail = divmod(len(piece), 254)
        for block in range(full_blocks):
            out.append(0xFF)
            out += piece[block * 254 : (block + 1) * 254]
        out.append(tail + 1)
        out += piece[full_blocks * 254 :]
    return bytes(out)


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _or_none(value: int | None, none_value: int) -> int:
    return none_value if value is None else value


@dataclass(slots=True, frozen=True)
class StatusRecord:
    """§1.3.1 DEVICE_STATUS."""

    TYPE: ClassVar[int] = TYPE_DEVICE_STATUS
    device_time_s: int
    flags: int
    error_code: int
    link_rssi_dbm: int | None

    def payload(self) -> bytes:
        rssi = _or_none(self.link_rssi_dbm, NONE_RSSI)
        return (
            _u32(self.device_time_s)
            + _u16(self.flags)
            + _u16(self.error_code)
            + rssi.to_bytes(1, "little", signed=True)
        )

    def readings(self) -> list[ReportedValue]:
        return _reported(
            self.device_time_s,
            [("implant_error_code", self.error_code), ("implant_link_rssi", self.link_rssi_dbm)],
        )


@dataclass(slots=True, frozen=True)
class TrendRecord:
    """§1.3.2 NIGHTLY_TREND; AF burden in tenths of a percent, as on the wire."""

    TYPE: ClassVar[int] = TYPE_NIGHTLY_TREND
    period_start_s: int
    night_heart_rate_bpm: int | None
    activity_min: int | None
    af_burden_tenths_pct: int | None
    fluid_index_ohm_d: int | None

    def payload(self) -> bytes:
        return (
            _u32(self.period_start_s)
            + bytes([_or_none(self.night_heart_rate_bpm, NONE_U8)])
            + _u16(_or_none(self.activity_min, NONE_U16))
            + _u16(_or_none(self.af_burden_tenths_pct, NONE_U16))
            + _u16(_or_none(self.fluid_index_ohm_d, NONE_U16))
        )

    def readings(self) -> list[ReportedValue]:
        burden = self.af_burden_tenths_pct
        return _reported(
            self.period_start_s,
            [
                ("night_heart_rate", self.night_heart_rate_bpm),
                ("activity_time", self.activity_min),
                ("af_burden", None if burden is None else burden / _TENTHS),
                ("fluid_index", self.fluid_index_ohm_d),
            ],
        )


@dataclass(slots=True, frozen=True)
class BatteryRecord:
    """§1.3.3 BATTERY."""

    TYPE: ClassVar[int] = TYPE_BATTERY
    device_time_s: int
    voltage_mv: int
    longevity_months: int | None
    phase: int

    def payload(self) -> bytes:
        longevity = _or_none(self.longevity_months, NONE_U8)
        return _u32(self.device_time_s) + _u16(self.voltage_mv) + bytes([longevity, self.phase])

    def readings(self) -> list[ReportedValue]:
        return _reported(
            self.device_time_s,
            [
                ("battery_voltage", self.voltage_mv / _MV_PER_V),
                ("battery_longevity", self.longevity_months),
                ("battery_phase", self.phase),
            ],
        )


@dataclass(slots=True, frozen=True)
class LeadRecord:
    """§1.3.4 LEAD_IMPEDANCE: (channel, impedance in ohm or None) per lead."""

    TYPE: ClassVar[int] = TYPE_LEAD_IMPEDANCE
    device_time_s: int
    impedances: tuple[tuple[int, int | None], ...]

    def payload(self) -> bytes:
        out = bytearray(_u32(self.device_time_s))
        out.append(len(self.impedances))
        for channel, ohm in self.impedances:
            out.append(channel)
            out += _u16(_or_none(ohm, NONE_U16))
        return bytes(out)

    def readings(self) -> list[ReportedValue]:
        return _reported(
            self.device_time_s,
            [(f"lead_impedance_{LEAD_NAMES[channel]}", ohm) for channel, ohm in self.impedances],
        )


@dataclass(slots=True, frozen=True)
class EpisodeRecord:
    """§1.3.5 ARRHYTHMIA_EPISODE."""

    TYPE: ClassVar[int] = TYPE_ARRHYTHMIA_EPISODE
    episode_id: int
    episode_type: int
    start_s: int
    duration_s: int
    max_rate_bpm: int | None
    therapy: int

    def payload(self) -> bytes:
        return (
            _u16(self.episode_id)
            + bytes([self.episode_type])
            + _u32(self.start_s)
            + _u32(self.duration_s)
            + _u16(_or_none(self.max_rate_bpm, NONE_U16))
            + bytes([self.therapy])
        )

    def readings(self) -> list[ReportedValue]:
        return _reported(
            self.start_s,
            [
                ("episode_type", self.episode_type),
                ("episode_duration", self.duration_s),
                ("episode_max_rate", self.max_rate_bpm),
                ("episode_therapy", self.therapy),
            ],
        )


ImplantRecord = StatusRecord | TrendRecord | BatteryRecord | LeadRecord | EpisodeRecord


def encode_frame(msg_type: int, seq: int, payload: bytes, *, crc_xor: int = 0) -> bytes:
    """A complete frame with both 0x00 delimiters (§1.1); `crc_xor` != 0 breaks the CRC."""
    if len(payload) > 0xFF:
        msg = f"payload of {len(payload)} bytes does not fit the u8 length field"
        raise ValueError(msg)
    body = bytes([msg_type]) + _u16(seq % 0x10000) + bytes([len(payload)]) + payload
    crc = crc16_ccitt_false(body) ^ crc_xor
    return b"\x00" + cobs_encode(body + _u16(crc)) + b"\x00"


def encode_record(record: ImplantRecord, seq: int, *, corrupt: bool = False) -> bytes:
    """Frame one record; `corrupt` flips CRC bits so only the CRC check can catch it."""
    return encode_frame(record.TYPE, seq, record.payload(), crc_xor=0x5A5A if corrupt else 0)


class ImplantReceiverSim:
    """A receiver forwarding a cardiac implant's records, one frame per call, seeded.

    It cycles through status, trend, battery, lead and (now and then) episode records; trend
    records re-send the last seven days, as a receiver does after each nightly session, which the
    storage identity makes harmless. Every frame, corrupted or not, uses the next sequence number.
    """

    _CYCLE: ClassVar[tuple[int, ...]] = (
        TYPE_DEVICE_STATUS,
        TYPE_NIGHTLY_TREND,
        TYPE_BATTERY,
        TYPE_LEAD_IMPEDANCE,
        TYPE_NIGHTLY_TREND,
        TYPE_ARRHYTHMIA_EPISODE,
    )

    def __init__(
        self, seed: int, clock_s: Callable[[], int] | None = None, start_seq: int = 0
    ) -> None:
        self._rng = np.random.default_rng([seed, 0x1A])
        self._clock_s = clock_s if clock_s is not None else (lambda: int(time.time()))
        self._heart_rate = VitalGenerator(MODELS["heart_rate"], self._rng)
        self.seq = start_seq % 0x10000
        self._turn = 0
        self._trend_day = 0
        self._episode_id = 0
        self._voltage_mv = int(self._rng.integers(2950, 3150))
        self._af_prone = bool(self._rng.random() < 0.5)
        # A trend day is summarised once; re-sending it repeats the same record.
        self._trends: dict[int, TrendRecord] = {}
        self._last_episode_start_s = 0
        self.frames_sent = 0
        self.frames_corrupted = 0

    def _status(self, now_s: int) -> StatusRecord:
        weak = self._rng.random() < 0.05
        rssi = int(self._rng.integers(-95, -60))
        return StatusRecord(now_s, 0b1000 if weak else 0, 0, None if weak else rssi)

    def _trend(self, now_s: int) -> TrendRecord:
        self._trend_day = self._trend_day % 7 + 1
        day_start_s = (now_s // _SECONDS_PER_DAY - self._trend_day) * _SECONDS_PER_DAY
        if day_start_s in self._trends:
            return self._trends[day_start_s]
        night_hr = round(self._heart_rate.sample(day_start_s + 2 * 3600.0) - 8.0)
        burden = int(self._rng.integers(0, 300)) if self._af_prone else 0
        record = TrendRecord(
            period_start_s=day_start_s,
            night_heart_rate_bpm=max(30, min(254, night_hr)),
            activity_min=int(self._rng.integers(60, 360)),
            af_burden_tenths_pct=burden,
            fluid_index_ohm_d=int(self._rng.integers(0, 80)),
        )
        self._trends[day_start_s] = record
        return record

    def _battery(self, now_s: int) -> BatteryRecord:
        phase = PHASE_BOS if self._voltage_mv >= 2650 else PHASE_ERI
        longevity = max(0, (self._voltage_mv - 2600) // 4)
        return BatteryRecord(now_s, self._voltage_mv, min(longevity, 254), phase)

    def _leads(self, now_s: int) -> LeadRecord:
        ohm = {CHANNEL_RA: 480, CHANNEL_RV: 560, CHANNEL_LV: 720, CHANNEL_HV: 62}
        return LeadRecord(
            now_s,
            tuple(
                (channel, int(base + self._rng.normal(0.0, base * 0.03)))
                for channel, base in ohm.items()
            ),
        )

    def _episode(self, now_s: int) -> EpisodeRecord:
        self._episode_id = (self._episode_id + 1) % 0x10000
        if self._af_prone:
            kind, rate, therapy = EPISODE_AF, int(self._rng.integers(130, 170)), THERAPY_NONE
            duration_s = int(self._rng.integers(300, 3600))
        else:
            kind, rate, therapy = EPISODE_VT, int(self._rng.integers(180, 220)), THERAPY_ATP
            duration_s = int(self._rng.integers(8, 40))
        start_s = now_s - duration_s - int(self._rng.integers(60, 3600))
        # Episodes are stored by their start second: two never share one.
        start_s = max(start_s, self._last_episode_start_s + 1)
        self._last_episode_start_s = start_s
        return EpisodeRecord(self._episode_id, kind, start_s, duration_s, rate, therapy)

    def next_record(self) -> ImplantRecord:
        """The next record in the receiver's cycle, stamped with the device clock."""
        kind = self._CYCLE[self._turn % len(self._CYCLE)]
        self._turn += 1
        now_s = self._clock_s()
        if kind == TYPE_DEVICE_STATUS:
            return self._status(now_s)
        if kind == TYPE_NIGHTLY_TREND:
            return self._trend(now_s)
        if kind == TYPE_BATTERY:
            return self._battery(now_s)
        if kind == TYPE_LEAD_IMPEDANCE:
            return self._leads(now_s)
        return self._episode(now_s)

    def next_unit(self, *, corrupt: bool = False) -> Sent:
        """Frame the next record with the next sequence number."""
        record = self.next_record()
        data = encode_record(record, self.seq, corrupt=corrupt)
        self.seq = (self.seq + 1) % 0x10000
        self.frames_sent += 1
        self.frames_corrupted += int(corrupt)
        return Sent(data, record, not corrupt)

    def garbage(self) -> bytes:
        """Radio-link noise: random bytes, zeros included, so framing itself is exercised."""
        size = int(self._rng.integers(1, 40))
        return bytes(self._rng.integers(0, 256, size=size, dtype=np.uint8))

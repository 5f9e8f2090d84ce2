"""Simulated legacy bedside monitor: prints checksummed `$VS` vital-sign sentences on RS-232.

Written from docs/serial-formats.md section 2 alone, never from the agent's parser. Values come
from the same seeded physiology as the other simulated devices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np

from firmware_sims.physiology import MODELS, RoomClimate, VitalGenerator, heat_response_bpm
from firmware_sims.serial.pty import Sent

_NS_PER_MS: Final = 1_000_000
_NS_PER_S: Final = 1_000_000_000


@dataclass(slots=True, frozen=True)
class VitalsRecord:
    """What one sentence carries; None is printed as `---` (§2.2)."""

    seq: int
    ts_ns: int
    heart_rate_bpm: int | None
    resp_rate_per_min: int | None
    spo2_pct: int | None
    nibp_mmhg: tuple[int, int, int] | None
    temp_c: float | None

    def readings(self) -> list[tuple[str, int, float]]:
        """(catalogue metric, UTC ns, value) of every parameter the sentence carries (§2.2)."""
        pairs: list[tuple[str, float | None]] = [
            ("heart_rate", self.heart_rate_bpm),
            ("resp_rate", self.resp_rate_per_min),
            ("spo2", self.spo2_pct),
            ("body_temp", self.temp_c),
        ]
        if self.nibp_mmhg is not None:
            pairs += zip(("bp_systolic", "bp_diastolic", "bp_mean"), self.nibp_mmhg, strict=True)
        return [(metric, self.ts_ns, float(value)) for metric, value in pairs if value is not None]


def nmea_checksum(text: str) -> str:
    """Two upper-case hex digits: the XOR of every character (NMEA 0183 checksum field)."""
    value = 0
    for char in text.encode("ascii"):
        value ^= char
    return f"{value:02X}"


def format_time(ts_ns: int) -> str:
    """ISO 8601 UTC, milliseconds only when there are some: 2026-11-22T18:45:01.250Z (§2.2)."""
    seconds, rest_ns = divmod(ts_ns, _NS_PER_S)
    stamp = datetime.fromtimestamp(seconds, tz=UTC)
    millis = rest_ns // _NS_PER_MS
    fraction = f".{millis:03d}" if millis else ""
    return f"{stamp:%Y-%m-%dT%H:%M:%S}{fraction}Z"


def encode_sentence(record: VitalsRecord, *, corrupt: bool = False) -> bytes:
    """One line, CR LF included; `corrupt` sends a checksum off by one bit."""

    def show(value: int | None) -> str:
        return "---" if value is None else str(value)

    fields = [
        "VS",
        str(record.seq % 65536),
        format_time(record.ts_ns),
        f"HR={show(record.heart_rate_bpm)}",
        f"RR={show(record.resp_rate_per_min)}",
        f"SPO2={show(record.spo2_pct)}",
    ]
    if record.nibp_mmhg is not None:
        fields.append("NIBP={}/{}/{}".format(*record.nibp_mmhg))
    fields.append("TEMP=---" if record.temp_c is None else f"TEMP={record.temp_c:.1f}")
    body = ",".join(fields)
    digits = nmea_checksum(body)
    if corrupt:
        digits = f"{int(digits, 16) ^ 0x01:02X}"
    return f"${body}*{digits}\r\n".encode("ascii")


class BedsideMonitorSim:
    """A monitor printing one sentence per call, seeded; NIBP every `nibp_every`-th sentence.

    Time stamps are the monitor clock at millisecond resolution and strictly increasing, so each
    sentence's readings have their own identity in storage. At a bed of a simulated ward the
    patient's heart rate responds to the `room` as on the BLE devices.
    """

    def __init__(
        self,
        seed: int,
        nibp_every: int = 15,
        clock_ns: Callable[[], int] | None = None,
        *,
        room: RoomClimate | None = None,
    ) -> None:
        rng = np.random.default_rng([seed, 0x3C])
        self._rng = rng
        self._room = room
        self._clock_ns = clock_ns if clock_ns is not None else time.time_ns
        self._generators = {
            name: VitalGenerator(MODELS[name], rng)
            for name in (
                "heart_rate",
                "resp_rate",
                "spo2",
                "body_temp",
                "bp_systolic",
                "bp_diastolic",
            )
        }
        self.nibp_every = nibp_every
        self.seq = 0
        self._last_ts_ns = 0
        self.lines_sent = 0
        self.lines_corrupted = 0

    def next_record(self) -> VitalsRecord:
        """Sample every parameter at the monitor's clock."""
        now_ns = (self._clock_ns() // _NS_PER_MS) * _NS_PER_MS
        ts_ns = max(now_ns, self._last_ts_ns + _NS_PER_MS)
        self._last_ts_ns = ts_ns
        t_s = ts_ns / _NS_PER_S
        sample = {name: gen.sample(t_s) for name, gen in self._generators.items()}
        if self._room is not None:
            sample["heart_rate"] += heat_response_bpm(self._room.temp_c(t_s))
        nibp: tuple[int, int, int] | None = None
        if self.nibp_every > 0 and self.seq % self.nibp_every == 0:
            systolic = round(sample["bp_systolic"])
            diastolic = round(sample["bp_diastolic"])
            nibp = (systolic, diastolic, round(diastolic + (systolic - diastolic) / 3))
        record = VitalsRecord(
            seq=self.seq,
            ts_ns=ts_ns,
            heart_rate_bpm=round(sample["heart_rate"]),
            resp_rate_per_min=round(sample["resp_rate"]),
            spo2_pct=round(sample["spo2"]),
            nibp_mmhg=nibp,
            temp_c=round(sample["body_temp"], 1),
        )
        self.seq = (self.seq + 1) % 65536
        return record

    def next_unit(self, *, corrupt: bool = False) -> Sent:
        """The next line; every line, corrupted or not, uses the next sequence number."""
        record = self.next_record()
        self.lines_sent += 1
        self.lines_corrupted += int(corrupt)
        return Sent(encode_sentence(record, corrupt=corrupt), record, not corrupt)

    def garbage(self) -> bytes:
        """RS-232 noise: random bytes ending in a line break, so they never join a sentence."""
        size = int(self._rng.integers(1, 40))
        return bytes(self._rng.integers(0, 256, size=size, dtype=np.uint8)) + b"\r\n"

"""The running agent's status file, read by `edge-agent status`.

Every STATUS_INTERVAL_S the pipeline writes `state_dir/status.json` (mode 0600, replaced
atomically): link state and last reading per device, open bedside alerts, the spool, the broker
link and the counters. Only pseudonyms appear in it, never an address or a port path, so it can
be shown to anyone who may see the gateway's logs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from edge_agent.errors import EdgeAgentError
from edge_agent.protocol import by_code, by_name
from edge_agent.protocol.frame import DeviceStatus as FrameStatus
from edge_agent.sources import Reading, Source
from edge_agent.sources.ble import BleManager
from edge_agent.sources.serial import SerialSource

STATUS_FILE: Final = "status.json"
STATUS_INTERVAL_S: Final = 2.0
HEALTH_INTERVAL_S: Final = 60.0
"""How often the devices' health travels to the sink (and once more at shutdown)."""
BATTERY_CODE: Final = by_name("battery").code
STALE_AFTER_S: Final = 10.0
"""A status older than this means the agent is not running (or is stuck)."""


class StatusError(EdgeAgentError):
    """No usable status: the agent is not running here, or the file is unreadable."""


@dataclass(slots=True)
class DeviceStatus:
    """One device as the agent sees it."""

    device: str
    patient: str
    kind: str
    transport: str
    link: str
    """streaming, connected, connecting, open, closed."""
    last_metric: str | None = None
    last_value: float | None = None
    last_reading_age_s: float | None = None
    counters: dict[str, int] = field(default_factory=dict)
    rssi_dbm: int | None = None
    battery_pct: float | None = None
    interval_s: float | None = None
    errors_total: int = 0


@dataclass(slots=True)
class LastReading:
    metric_code: int
    value: float
    received_ns: int
    battery_pct: float | None = None


def _ble_devices(manager: BleManager, last: dict[str, LastReading]) -> list[DeviceStatus]:
    out = []
    for token, link in manager.links.items():
        c = link.counters
        out.append(
            DeviceStatus(
                device=token,
                patient=link.device.patient_token,
                kind=link.device.device_kind,
                transport="ble",
                link="connected" if link.connected else "connecting",
                rssi_dbm=link.rssi_dbm,
                interval_s=link.device.expected_interval_s,
                errors_total=c.decode_errors + c.connect_failures + c.silences + c.link_drops,
                counters={
                    "notifications": c.notifications,
                    "readings": c.readings,
                    "decode_errors": c.decode_errors,
                    "reconnects": c.reconnects,
                    "connect_failures": c.connect_failures,
                    "silences": c.silences,
                    "link_drops": c.link_drops,
                    "dropped": c.dropped_total,
                },
            )
        )
    return _with_last(out, last)


def _serial_device(source: SerialSource, last: dict[str, LastReading]) -> list[DeviceStatus]:
    status = DeviceStatus(
        device=source.device_token,
        patient=source.patient_token,
        kind=source.kind.value,
        transport="serial",
        link="open" if source.is_open else "closed",
        errors_total=source.crc_failures + source.seq_gaps + source.lines_bad,
        counters={
            "readings": source.readings_emitted,
            "frames_ok": source.frames_ok,
            "crc_failures": source.crc_failures,
            "seq_gaps": source.seq_gaps,
            "lines_bad": source.lines_bad,
            "reopens": source.reopen_count,
            "dropped": source.dropped_total,
        },
    )
    return _with_last([status], last)


def _with_last(devices: list[DeviceStatus], last: dict[str, LastReading]) -> list[DeviceStatus]:
    now_ns = time.time_ns()
    for device in devices:
        seen = last.get(device.device)
        if seen is not None:
            device.last_metric = by_code(seen.metric_code).name
            device.last_value = seen.value
            device.last_reading_age_s = round((now_ns - seen.received_ns) / 1e9, 1)
            device.battery_pct = seen.battery_pct
            if device.link in ("connected", "open") and device.last_reading_age_s < STALE_AFTER_S:
                device.link = "streaming"
    return devices


def devices(sources: Sequence[Source], last: dict[str, LastReading]) -> list[DeviceStatus]:
    """Every device the agent's sources read (sources of other kinds report none)."""
    out: list[DeviceStatus] = []
    for source in sources:
        if isinstance(source, BleManager):
            out += _ble_devices(source, last)
        elif isinstance(source, SerialSource):
            out += _serial_device(source, last)
    return out


def note_reading(last: dict[str, LastReading], reading: Reading) -> None:
    # Called for every reading: the device's entry is updated in place, not rebuilt.
    entry = last.get(reading.device_token)
    if entry is None:
        battery = reading.value if reading.metric_code == BATTERY_CODE else None
        last[reading.device_token] = LastReading(
            reading.metric_code, reading.value, time.time_ns(), battery
        )
        return
    entry.metric_code = reading.metric_code
    entry.value = reading.value
    entry.received_ns = time.time_ns()
    if reading.metric_code == BATTERY_CODE:
        entry.battery_pct = reading.value


def health_records(statuses: Sequence[DeviceStatus], now_ns: int) -> tuple[FrameStatus, ...]:
    """The devices' health as frame records; the sink writes them to `device_health`."""
    return tuple(
        FrameStatus(
            device_token=status.device,
            device_kind=status.kind,
            ts_ns=now_ns,
            link_up=status.link in ("streaming", "connected", "open"),
            battery_pct=status.battery_pct,
            rssi_dbm=status.rssi_dbm,
            interval_s=status.interval_s,
            errors_total=status.errors_total,
            error_code=None,
        )
        for status in statuses
        if status.device
    )


class Footprint:
    """The agent process's CPU share since the previous sample, and its resident memory."""

    def __init__(self) -> None:
        self._cpu_s = self._process_cpu_s()
        self._at = time.monotonic()

    @staticmethod
    def _process_cpu_s() -> float:
        times = os.times()
        return times.user + times.system

    def cpu_pct(self) -> float | None:
        """Percent of one core used since the last call (None for a zero-length interval)."""
        cpu_s, at = self._process_cpu_s(), time.monotonic()
        elapsed_s = at - self._at
        used_s = cpu_s - self._cpu_s
        self._cpu_s, self._at = cpu_s, at
        return None if elapsed_s <= 0 else round(100.0 * used_s / elapsed_s, 2)

    @staticmethod
    def rss_mb() -> float | None:
        """Resident set size now (Linux /proc; None elsewhere), in MiB."""
        try:
            resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def write_status(path: Path, document: dict[str, Any]) -> None:
    staging = path.with_name(path.name + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    staging.replace(path)


def device_rows(statuses: Sequence[DeviceStatus]) -> list[dict[str, Any]]:
    return [asdict(status) for status in statuses]


def read_status(path: Path, now_s: float | None = None) -> dict[str, Any]:
    """The agent's last status; StatusError when there is none or it is stale."""
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        written_s = float(document["written_ns"]) / 1e9
    except FileNotFoundError:
        msg = f"{path}: no status file: the agent has not run with this state directory"
        raise StatusError(msg) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{path}: unreadable status ({exc}); is another program writing it?"
        raise StatusError(msg) from exc
    age_s = (time.time() if now_s is None else now_s) - written_s
    document["age_s"] = round(age_s, 1)
    if age_s > STALE_AFTER_S:
        msg = (
            f"the agent is not running: its status is {age_s:.0f} s old "
            f"(written every {STATUS_INTERVAL_S:g} s); `systemctl status bedside-twin-agent`"
        )
        raise StatusError(msg)
    return document

"""BLE source on bleak: scan, connect, re-arm every subscription, watch for silence, recover."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak.uuids import normalize_uuid_16, normalize_uuid_str

from edge_agent.devices import gatt
from edge_agent.devices import quality as q
from edge_agent.devices.errors import DecodeFault, DeviceDecodeError, UnknownCharacteristicError
from edge_agent.devices.gatt_types import DeviceInformationString, GlucoseMeasurement
from edge_agent.errors import ConfigError, EdgeAgentError, SourceError
from edge_agent.protocol.errors import CatalogueError
from edge_agent.protocol.metrics import by_name
from edge_agent.sources.base import Emit, Reading

_LOGGER = logging.getLogger(__name__)

# Services a bedside health device advertises (Bluetooth SIG Assigned Numbers, §3.4 "GATT
# Services"): the scan filter. Battery and Device Information are included because some sensors
# advertise only those and keep the health service for the GATT table.
HEART_RATE_SERVICE: Final = normalize_uuid_16(0x180D)
PULSE_OXIMETER_SERVICE: Final = normalize_uuid_16(0x1822)
HEALTH_THERMOMETER_SERVICE: Final = normalize_uuid_16(0x1809)
BLOOD_PRESSURE_SERVICE: Final = normalize_uuid_16(0x1810)
GLUCOSE_SERVICE: Final = normalize_uuid_16(0x1808)
ENVIRONMENTAL_SENSING_SERVICE: Final = normalize_uuid_16(0x181A)
BATTERY_SERVICE: Final = normalize_uuid_16(0x180F)
DEVICE_INFORMATION_SERVICE: Final = normalize_uuid_16(0x180A)
HEALTH_SERVICE_UUIDS: Final[tuple[str, ...]] = (
    HEART_RATE_SERVICE,
    PULSE_OXIMETER_SERVICE,
    HEALTH_THERMOMETER_SERVICE,
    BLOOD_PRESSURE_SERVICE,
    GLUCOSE_SERVICE,
    ENVIRONMENTAL_SENSING_SERVICE,
    BATTERY_SERVICE,
    DEVICE_INFORMATION_SERVICE,
)

# Characteristics (Assigned Numbers §3.8 "Characteristics") that carry measurements by
# notification or indication; every one a device offers is subscribed on every connection.
HEART_RATE_MEASUREMENT: Final = normalize_uuid_16(0x2A37)
PLX_SPOT_CHECK_MEASUREMENT: Final = normalize_uuid_16(0x2A5E)
PLX_CONTINUOUS_MEASUREMENT: Final = normalize_uuid_16(0x2A5F)
TEMPERATURE_MEASUREMENT: Final = normalize_uuid_16(0x2A1C)
BLOOD_PRESSURE_MEASUREMENT: Final = normalize_uuid_16(0x2A35)
GLUCOSE_MEASUREMENT: Final = normalize_uuid_16(0x2A18)
ES_TEMPERATURE: Final = normalize_uuid_16(0x2A6E)
ES_HUMIDITY: Final = normalize_uuid_16(0x2A6F)
BATTERY_LEVEL: Final = normalize_uuid_16(0x2A19)
RECORD_ACCESS_CONTROL_POINT: Final = normalize_uuid_16(0x2A52)

# The chest patch's vendor respiration characteristic: a 128-bit UUID outside the SIG base
# (Core Specification v5.3, Vol 3, Part B, §2.5.1). Its 2-octet layout is documented in
# firmware_sims.ble.peripherals and decoded by `decode_vendor_respiration` below.
VENDOR_RESPIRATION_SERVICE: Final = "b7e40001-9c4d-4e5a-8f36-2d1a6c0e5b90"
VENDOR_RESPIRATION_RATE: Final = "b7e40002-9c4d-4e5a-8f36-2d1a6c0e5b90"

MEASUREMENT_UUIDS: Final[frozenset[str]] = frozenset(
    {
        HEART_RATE_MEASUREMENT,
        PLX_SPOT_CHECK_MEASUREMENT,
        PLX_CONTINUOUS_MEASUREMENT,
        TEMPERATURE_MEASUREMENT,
        BLOOD_PRESSURE_MEASUREMENT,
        GLUCOSE_MEASUREMENT,
        ES_TEMPERATURE,
        ES_HUMIDITY,
        BATTERY_LEVEL,
        VENDOR_RESPIRATION_RATE,
    }
)

# Device Information Service strings (DIS v1.1, §3.2-§3.6). The Serial Number String (0x2A25)
# is deliberately not read: it identifies the device and must never reach a log or a frame.
DEVICE_INFORMATION_STRINGS: Final[Mapping[str, str]] = {
    normalize_uuid_16(0x2A29): "manufacturer",
    normalize_uuid_16(0x2A24): "model_number",
    normalize_uuid_16(0x2A27): "hardware_revision",
    normalize_uuid_16(0x2A26): "firmware_revision",
    normalize_uuid_16(0x2A28): "software_revision",
}

# Record Access Control Point (Glucose Service v1.0.1, "Record Access Control Point"; values from
# the GATT Specification Supplement, "Record Access Control Point"): op code, operator, operand.
RACP_REPORT_STORED_RECORDS: Final = 0x01
RACP_RESPONSE_CODE: Final = 0x06
RACP_OPERATOR_NULL: Final = 0x00
RACP_OPERATOR_ALL: Final = 0x01
RACP_OPERATOR_GREATER_OR_EQUAL: Final = 0x03
RACP_FILTER_SEQUENCE_NUMBER: Final = 0x01
RACP_SUCCESS: Final = 0x01
RACP_NO_RECORDS_FOUND: Final = 0x06
_RACP_RESPONSE_BYTES: Final = 4
RR_INTERVAL: Final = "rr_interval"
_RECORD_WINDOW: Final = 4096
_GLUCOSE_SEQUENCE_MODULUS: Final = 1 << 16

# The vendor respiration octets (see firmware_sims.ble.peripherals for the normative layout).
_VENDOR_RESPIRATION_BYTES: Final = 2
_VENDOR_RATE_NOT_AVAILABLE: Final = 0xFF
_VENDOR_STATUS_CONTACT: Final = 0x01
_VENDOR_STATUS_MOTION: Final = 0x02

# BlueZ's D-Bus error for "the adapter is busy with another operation": a structured field of
# BleakDBusError, so the classification never parses a message.
_BLUEZ_IN_PROGRESS: Final = "org.bluez.Error.InProgress"

# Core Specification v5.3, Vol 3, Part B, §2.5.1: 16-bit UUIDs live inside the Bluetooth Base UUID.
_SIG_BASE_UUID: Final = re.compile(r"0000([0-9a-f]{4})-0000-1000-8000-00805f9b34fb")
_VENDOR_RESPIRATION_ID: Final = -1  # no 16-bit SIG number is negative
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)

# Where a ConfigError about BLE settings points: they are built in code, not read from one file.
_ORIGIN: Final = "ble settings"


class LinkFailure(enum.Enum):
    """Why a connection attempt failed; each kind has its own backoff."""

    NOT_FOUND = "not_found"
    """Not advertising or unknown to the stack: out of range or off; wait long, then scan."""
    IN_PROGRESS = "in_progress"
    """The adapter is busy with another operation; retry soon."""
    OTHER = "other"
    """Anything else (timeout, aborted connection, GATT error)."""


class BleLinkError(SourceError):
    """A connection attempt failed; the link retries after `retry_after_s`."""

    def __init__(
        self, device: str, failure: LinkFailure, detail: str, retry_after_s: float
    ) -> None:
        super().__init__(
            f"ble[{device}]", f"{failure.value}: {detail} (retry in {retry_after_s:.2f} s)"
        )
        self.device = device
        self.failure = failure
        self.detail = detail
        self.retry_after_s = retry_after_s


class LossCause(enum.Enum):
    """How a streaming link was found to be lost."""

    LINK_DROP = "link_drop"
    """bleak's disconnected callback fired."""
    SILENCE = "silence"
    """No notification for silence_factor times the expected interval on a link that stayed up."""


@dataclass(slots=True, frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits about initial * multiplier**n."""

    initial_s: float
    max_s: float
    multiplier: float = 2.0
    jitter: float = 0.5
    """Fraction of each delay drawn at random, so links that failed together retry apart."""

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        capped_s = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return capped_s * (1.0 - self.jitter * rng.random())


@dataclass(slots=True, frozen=True)
class BleSettings:
    """Timing and capacity of the BLE links; defaults suit a ward gateway with one adapter."""

    silence_factor: float = 3.0
    scan_timeout_s: float = 30.0
    connect_timeout_s: float = 20.0
    io_timeout_s: float = 10.0
    queue_capacity: int = 256
    max_links: int = 5
    """Concurrent links per adapter; typical controllers manage 5-7 reliably."""
    backoff_not_found: Backoff = Backoff(initial_s=2.0, max_s=60.0)
    backoff_in_progress: Backoff = Backoff(initial_s=0.25, max_s=2.0)
    backoff_other: Backoff = Backoff(initial_s=1.0, max_s=30.0)
    recovery_history: int = 1024

    def __post_init__(self) -> None:
        positive = {
            "silence_factor": self.silence_factor,
            "scan_timeout_s": self.scan_timeout_s,
            "connect_timeout_s": self.connect_timeout_s,
            "io_timeout_s": self.io_timeout_s,
        }
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(_ORIGIN, key, f"must be positive, got {value}")
        for key, count in (
            ("queue_capacity", self.queue_capacity),
            ("max_links", self.max_links),
            ("recovery_history", self.recovery_history),
        ):
            if count < 1:
                raise ConfigError(_ORIGIN, key, f"must be at least 1, got {count}")

    def backoff(self, failure: LinkFailure) -> Backoff:
        match failure:
            case LinkFailure.NOT_FOUND:
                return self.backoff_not_found
            case LinkFailure.IN_PROGRESS:
                return self.backoff_in_progress
            case LinkFailure.OTHER:
                return self.backoff_other


@dataclass(slots=True, frozen=True)
class BondedDevice:
    """One bonded BLE device and whom it is bound to. The address never appears in logs."""

    address: str = field(repr=False)
    device_token: str
    patient_token: str
    device_kind: str
    expected_interval_s: float

    def __post_init__(self) -> None:
        if not self.expected_interval_s > 0:
            raise ConfigError(
                _ORIGIN,
                f"{self.device_kind}.expected_interval_s",
                f"must be positive, got {self.expected_interval_s}",
            )

    @property
    def log_name(self) -> str:
        """Kind plus the first 8 hex digits of the device token: log-safe and unambiguous."""
        return f"{self.device_kind}-{self.device_token[:8]}"


@dataclass(slots=True, frozen=True)
class DecodedValue:
    """One value a decoder found in a payload; `device_ts_ns` is None when the device sent none."""

    metric: str
    value: float
    quality: int = 0
    device_ts_ns: int | None = None
    record_seq: int | None = None
    """Stored-record sequence number (glucose), used to skip records delivered twice."""


Decoder = Callable[[str, bytes], Sequence[DecodedValue]]
"""Decodes one characteristic value (full 128-bit UUID, payload); raises only EdgeAgentError."""


@dataclass(slots=True, frozen=True)
class DeviceInfo:
    """Device Information Service strings read on connect (never the serial number)."""

    manufacturer: str | None = None
    model_number: str | None = None
    hardware_revision: str | None = None
    firmware_revision: str | None = None
    software_revision: str | None = None


@dataclass(slots=True, frozen=True)
class Recovery:
    """One recovered loss: detection to first notification, and the whole gap in the data."""

    cause: LossCause
    loss_to_stream_s: float
    data_gap_s: float


@dataclass(slots=True)
class BleCounters:
    """Per-device counters; `recoveries` keeps the most recent ones (bounded)."""

    notifications: int = 0
    decode_errors: int = 0
    readings: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    silences: int = 0
    link_drops: int = 0
    dropped_total: int = 0
    duplicate_records: int = 0
    failures: dict[LinkFailure, int] = field(default_factory=dict)
    """Failed connection attempts by kind (their sum is connect_failures)."""
    recoveries: deque[Recovery] = field(default_factory=deque)


def decode_vendor_respiration(payload: bytes) -> list[DecodedValue]:
    """The chest patch's respiration value (layout: firmware_sims.ble.peripherals docstring)."""
    if len(payload) < _VENDOR_RESPIRATION_BYTES:
        raise DeviceDecodeError(
            VENDOR_RESPIRATION_RATE,
            "Vendor Respiration Rate",
            len(payload),
            DecodeFault.TRUNCATED,
            f"needs {_VENDOR_RESPIRATION_BYTES} bytes (rate, status), got {len(payload)}",
        )
    rate, status = payload[0], payload[1]
    # Octet 0 0xFF means "no value"; octet 1 bit 0 = electrode contact, bit 1 = motion artefact.
    if rate == _VENDOR_RATE_NOT_AVAILABLE or not status & _VENDOR_STATUS_CONTACT:
        return []
    quality = q.MOTION if status & _VENDOR_STATUS_MOTION else 0
    return [DecodedValue("resp_rate", float(rate), quality)]


def _device_time_ns(moment: datetime | None) -> int | None:
    # Date Time carries no zone: the gateway keeps its devices' clocks on UTC (set through the
    # Current Time Service, or by the simulators), so the wall clock is read as UTC.
    if moment is None:
        return None
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return (aware - _EPOCH) // _ONE_MICROSECOND * 1000


@functools.lru_cache(maxsize=256)
def _characteristic_id(uuid: str) -> int:
    """The 16-bit SIG number of `uuid`, or _VENDOR_RESPIRATION_ID; UnknownCharacteristicError
    (never cached) otherwise. Remembered: a link notifies the same few UUIDs all day, and
    normalising one (bleak parses it as a UUID) cost a fifth of decoding the value."""
    full = normalize_uuid_str(uuid)
    if full == VENDOR_RESPIRATION_RATE:
        return _VENDOR_RESPIRATION_ID
    match = _SIG_BASE_UUID.fullmatch(full)
    if match is None:
        raise UnknownCharacteristicError(full, "not a Bluetooth SIG characteristic")
    return int(match.group(1), 16)


def decode_characteristic(uuid: str, payload: bytes) -> Sequence[DecodedValue]:
    """The default decoder: SIG characteristics through `edge_agent.devices.gatt`, plus the
    chest patch's vendor respiration characteristic. Raises only EdgeAgentError subclasses."""
    uuid16 = _characteristic_id(uuid)
    if uuid16 == _VENDOR_RESPIRATION_ID:
        return decode_vendor_respiration(payload)
    decoded = gatt.decode(uuid16, payload)
    device_ts_ns = _device_time_ns(gatt.measurement_time(decoded))
    record_seq = decoded.sequence_number if isinstance(decoded, GlucoseMeasurement) else None
    return [
        DecodedValue(metric, value, quality, device_ts_ns, record_seq)
        for metric, value, quality in gatt.to_readings(decoded)
    ]


def value_times(values: Sequence[DecodedValue], rx_ts_ns: int) -> list[int]:
    """Each value's time stamp: the device's own when it sent one, else the receipt time.

    RR intervals are the exception: one notification may carry several, oldest first (Heart
    Rate Service v1.0 §3.1.1.5), and each belongs to the beat that ended it. The newest ends at
    the notification; each earlier one ends where the intervals after it began. Without this,
    every interval of a notification would share one time stamp and so one stored identity.
    """
    stamps = [
        value.device_ts_ns if value.device_ts_ns is not None else rx_ts_ns for value in values
    ]
    later_s = 0.0
    for index in range(len(values) - 1, -1, -1):
        value = values[index]
        if value.metric == RR_INTERVAL and value.device_ts_ns is None:
            stamps[index] = rx_ts_ns - round(later_s * 1e9)
            later_s += value.value
    return stamps


def _device_string(uuid: str, raw: bytes) -> str:
    match = _SIG_BASE_UUID.fullmatch(uuid)
    try:
        if match is None:
            raise UnknownCharacteristicError(uuid, "not a Bluetooth SIG characteristic")
        decoded = gatt.decode(int(match.group(1), 16), raw)
    except EdgeAgentError:
        # A string that is not UTF-8 is shown, not fatal: the link is worth more than the label.
        return raw.decode("utf-8", errors="replace")
    return decoded.value if isinstance(decoded, DeviceInformationString) else ""


class _DropOldestQueue:
    """Bounded queue for bleak callbacks: never blocks; when full the oldest item is dropped."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[_Notified] = deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._closed = False

    def put_nowait(self, item: _Notified) -> bool:
        """Enqueue; True when an older item had to be dropped to make room."""
        dropped = len(self._items) >= self._capacity
        if dropped:
            self._items.popleft()
        self._items.append(item)
        self._ready.set()
        return dropped

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> _Notified | None:
        """The next item, or None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True, frozen=True)
class _Notified:
    uuid: str
    payload: bytes
    rx_ts_ns: int


@dataclass(slots=True)
class _Sighting:
    device: BLEDevice
    rssi_dbm: int
    seen_mono_ns: int


class _Sightings:
    """The latest advertisement of each bonded device, from the one shared scanner."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self._wanted = {address.upper() for address in addresses}
        self._latest: dict[str, _Sighting] = {}
        self._events: dict[str, asyncio.Event] = {
            address: asyncio.Event() for address in self._wanted
        }

    def want(self, address: str) -> None:
        """Listen for one more bonded device (paired while the agent runs)."""
        key = address.upper()
        self._wanted.add(key)
        self._events.setdefault(key, asyncio.Event())

    def forget(self, address: str) -> None:
        key = address.upper()
        self._wanted.discard(key)
        self._latest.pop(key, None)
        self._events.pop(key, None)

    def on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        key = device.address.upper()
        if key not in self._wanted:
            return
        self._latest[key] = _Sighting(device, adv.rssi, time.monotonic_ns())
        self._events[key].set()

    def latest(self, address: str) -> _Sighting | None:
        return self._latest.get(address.upper())

    async def fresh(self, address: str, newer_than_mono_ns: int) -> _Sighting:
        """Wait for an advertisement heard after `newer_than_mono_ns` (no timeout here)."""
        key = address.upper()
        event = self._events[key]
        while True:
            sighting = self._latest.get(key)
            if sighting is not None and sighting.seen_mono_ns > newer_than_mono_ns:
                return sighting
            event.clear()
            await event.wait()


class _Adapter:
    """What the links of one adapter share: the connect lock, the link slots, the sightings."""

    def __init__(
        self,
        settings: BleSettings,
        addresses: Sequence[str],
        client_backend: type[BaseBleakClient] | None,
    ) -> None:
        self.connect_lock = asyncio.Lock()
        self.link_slots = asyncio.Semaphore(settings.max_links)
        self.sightings = _Sightings(addresses)
        self.client_backend = client_backend


def _describe(exc: BaseException) -> str:
    """A log-safe description: bleak messages may embed the device address, so never use them."""
    if isinstance(exc, BleakDBusError):
        return f"{type(exc).__name__}({exc.dbus_error})"
    if isinstance(exc, BleakGATTProtocolError):
        return f"{type(exc).__name__}({exc.code.name})"
    return type(exc).__name__


def classify(exc: BaseException) -> LinkFailure:
    """Which backoff a connection error calls for, from its type and structured fields only."""
    if isinstance(exc, BleakDeviceNotFoundError):
        return LinkFailure.NOT_FOUND
    if isinstance(exc, BleakDBusError) and exc.dbus_error == _BLUEZ_IN_PROGRESS:
        return LinkFailure.IN_PROGRESS
    if (
        isinstance(exc, BleakGATTProtocolError)
        and exc.code == BleakGATTProtocolErrorCode.PROCEDURE_ALREADY_IN_PROGRESS
    ):
        return LinkFailure.IN_PROGRESS
    return LinkFailure.OTHER


def racp_report_request(last_seq: int | None) -> bytes:
    """Report stored records: all of them, or those with sequence number >= last_seq + 1."""
    if last_seq is None:
        return bytes((RACP_REPORT_STORED_RECORDS, RACP_OPERATOR_ALL))
    # RACP has no strict "greater than" operator: >= N+1 over the uint16 sequence (LE operand).
    start = (last_seq + 1) % _GLUCOSE_SEQUENCE_MODULUS
    return bytes(
        (
            RACP_REPORT_STORED_RECORDS,
            RACP_OPERATOR_GREATER_OR_EQUAL,
            RACP_FILTER_SEQUENCE_NUMBER,
            start & 0xFF,
            start >> 8,
        )
    )


class StoredRecords:
    """Sequence numbers (uint16, wrapping) of the stored records already delivered."""

    def __init__(self, window: int = _RECORD_WINDOW) -> None:
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._window = window
        self.newest: int | None = None
        """The most recent sequence number seen, in the uint16 wrap-around order."""

    def accept(self, seq: int) -> bool:
        """True the first time `seq` is seen (within the window), False for a repeat."""
        if seq in self._seen:
            return False
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > self._window:
            self._seen.discard(self._order.popleft())
        # Serial-number order (as RFC 1982): ahead by less than half the space means newer.
        ahead = (seq - self.newest) % _GLUCOSE_SEQUENCE_MODULUS if self.newest is not None else 1
        if 0 < ahead < _GLUCOSE_SEQUENCE_MODULUS // 2:
            self.newest = seq
        return True


class BleLink:
    """One bonded device's link: connect, arm, watch, recover; decode in its own task."""

    def __init__(
        self,
        device: BondedDevice,
        settings: BleSettings,
        decoder: Decoder,
        adapter: _Adapter,
        rng: random.Random,
    ) -> None:
        self.device = device
        self.counters = BleCounters(recoveries=deque(maxlen=settings.recovery_history))
        self.device_info: DeviceInfo | None = None
        self.subscribed_uuids: tuple[str, ...] = ()
        self.stored_records = StoredRecords()
        self._settings = settings
        self._decoder = decoder
        self._adapter = adapter
        self._rng = rng
        self._queue = _DropOldestQueue(settings.queue_capacity)
        self._client: BleakClient | None = None
        self._wake = asyncio.Event()
        self._lost: LossCause | None = None
        self._loss_mono_ns: int | None = None
        self._loss_cause: LossCause | None = None
        self._last_rx_mono_ns = 0
        self._armed_mono_ns = 0
        self._gap_start_mono_ns = 0
        self._streamed = False
        self._connected_once = False
        self._attempt = 0
        self._generation = 0

    @property
    def name(self) -> str:
        return self.device.log_name

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and client.is_connected

    @property
    def rssi_dbm(self) -> int | None:
        sighting = self._adapter.sightings.latest(self.device.address)
        return sighting.rssi_dbm if sighting is not None else None

    @property
    def silence_after_s(self) -> float:
        return self._settings.silence_factor * self.device.expected_interval_s

    # --- bleak callbacks: only bookkeeping and a non-blocking enqueue ----------------------------

    def _notification_handler(self) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        """A callback bound to this connection: a late value from a closed link is ignored."""
        generation = self._generation

        def handler(characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
            if generation == self._generation:
                self._on_notification(characteristic, data)

        return handler

    def _on_notification(self, characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
        rx_ts_ns = time.time_ns()
        now_ns = time.monotonic_ns()
        counters = self.counters
        counters.notifications += 1
        if self._loss_mono_ns is not None and self._loss_cause is not None:
            counters.recoveries.append(
                Recovery(
                    cause=self._loss_cause,
                    loss_to_stream_s=(now_ns - self._loss_mono_ns) / 1e9,
                    data_gap_s=(now_ns - self._gap_start_mono_ns) / 1e9,
                )
            )
            self._loss_mono_ns = None
            self._loss_cause = None
        self._last_rx_mono_ns = now_ns
        self._streamed = True
        if self._queue.put_nowait(_Notified(characteristic.uuid, bytes(data), rx_ts_ns)):
            counters.dropped_total += 1

    def _on_disconnected(self, client: BleakClient) -> None:
        if client is not self._client or self._lost is not None:
            return  # a link we closed ourselves, or a loss already noted
        self.counters.link_drops += 1
        self._mark_lost(LossCause.LINK_DROP)

    def _mark_lost(self, cause: LossCause) -> None:
        self._lost = cause
        if self._streamed:
            self._loss_mono_ns = time.monotonic_ns()
            self._loss_cause = cause
            self._gap_start_mono_ns = self._last_rx_mono_ns
        self._wake.set()

    # --- the link task --------------------------------------------------------------------------

    async def run_link(self) -> None:
        """Connect and keep the link alive until cancelled."""
        newer_than_ns = 0
        while True:
            attempt_start_ns = time.monotonic_ns()
            self._streamed = False
            try:
                await self._session(newer_than_ns)
            except BleLinkError as exc:
                counters = self.counters
                counters.connect_failures += 1
                counters.failures[exc.failure] = counters.failures.get(exc.failure, 0) + 1
                self._attempt += 1
                _LOGGER.warning(
                    "ble[%s]: %s; retry in %.2f s", self.name, exc.detail, exc.retry_after_s
                )
                newer_than_ns = attempt_start_ns
                await asyncio.sleep(exc.retry_after_s)
                continue
            if self._streamed:
                self._attempt = 0
                newer_than_ns = self._loss_mono_ns or attempt_start_ns
            else:
                # Lost before any data arrived: a flapping link backs off like a failure.
                delay_s = self._settings.backoff_other.delay_s(self._attempt, self._rng)
                self._attempt += 1
                newer_than_ns = attempt_start_ns
                await asyncio.sleep(delay_s)

    def _fail(self, failure: LinkFailure, detail: str) -> BleLinkError:
        """The error for a failed attempt, its delay drawn from the backoff of its kind."""
        delay_s = self._settings.backoff(failure).delay_s(self._attempt, self._rng)
        return BleLinkError(self.name, failure, detail, delay_s)

    async def _session(self, newer_than_ns: int) -> None:
        settings = self._settings
        try:
            async with asyncio.timeout(settings.scan_timeout_s):
                sighting = await self._adapter.sightings.fresh(self.device.address, newer_than_ns)
        except TimeoutError:
            raise self._fail(
                LinkFailure.NOT_FOUND, f"not advertising for {settings.scan_timeout_s:g} s"
            ) from None
        # Taken before the link comes up: a live record notified while arming must not move the
        # start of the stored-record request past the records missed while disconnected.
        racp_after = self.stored_records.newest
        async with self._adapter.link_slots:
            self._lost = None
            self._wake.clear()
            client = BleakClient(
                sighting.device,
                disconnected_callback=self._on_disconnected,
                timeout=settings.connect_timeout_s,
                backend=self._adapter.client_backend,
            )
            self._client = client
            try:
                await self._connect(client)
                await self._arm(client, racp_after)
                await self._watch()
            except (BleakError, TimeoutError, OSError) as exc:
                failure = classify(exc)
                raise self._fail(failure, f"{_describe(exc)} while connecting") from exc
            finally:
                self._client = None
                self._generation += 1
                self.subscribed_uuids = ()
                await self._close(client)

    async def _connect(self, client: BleakClient) -> None:
        # One connect at a time per adapter: concurrent LE Create Connection requests are what
        # makes BlueZ answer "InProgress".
        async with self._adapter.connect_lock, asyncio.timeout(self._settings.connect_timeout_s):
            await client.connect()
        counters = self.counters
        counters.connects += 1
        if self._connected_once:
            counters.reconnects += 1
        self._connected_once = True
        _LOGGER.info("ble[%s]: connected (rssi %s dBm)", self.name, self.rssi_dbm)

    async def _arm(self, client: BleakClient, racp_after: int | None) -> None:
        """Read device information and battery, then (re-)subscribe to every measurement."""
        io_timeout_s = self._settings.io_timeout_s
        characteristics = [char for service in client.services for char in service.characteristics]
        strings: dict[str, str] = {}
        for char in characteristics:
            key = DEVICE_INFORMATION_STRINGS.get(char.uuid)
            if key is not None and "read" in char.properties:
                async with asyncio.timeout(io_timeout_s):
                    raw = await client.read_gatt_char(char)
                strings[key] = _device_string(char.uuid, bytes(raw))
        if strings:
            self.device_info = DeviceInfo(**strings)
        subscribed: list[str] = []
        racp: BleakGATTCharacteristic | None = None
        on_value = self._notification_handler()
        for char in characteristics:
            notifiable = "notify" in char.properties or "indicate" in char.properties
            if char.uuid == BATTERY_LEVEL and "read" in char.properties:
                async with asyncio.timeout(io_timeout_s):
                    raw = await client.read_gatt_char(char)
                # A read value is data, not a notification: queued for decoding, not counted.
                self._queue.put_nowait(_Notified(char.uuid, bytes(raw), time.time_ns()))
            if char.uuid in MEASUREMENT_UUIDS and notifiable:
                async with asyncio.timeout(io_timeout_s):
                    await client.start_notify(char, on_value)
                subscribed.append(char.uuid)
            elif char.uuid == RECORD_ACCESS_CONTROL_POINT and notifiable:
                racp = char
        if not subscribed:
            raise self._fail(LinkFailure.OTHER, "the device offers no measurement characteristic")
        if racp is not None:
            async with asyncio.timeout(io_timeout_s):
                await client.start_notify(racp, on_value)
                await client.write_gatt_char(racp, racp_report_request(racp_after), response=True)
            subscribed.append(racp.uuid)
        self.subscribed_uuids = tuple(subscribed)
        self._armed_mono_ns = time.monotonic_ns()

    async def _watch(self) -> None:
        """Return when the link is lost: disconnected callback, or data silence (watchdog)."""
        silence_ns = int(self.silence_after_s * 1e9)
        loop = asyncio.get_running_loop()
        while self._lost is None:
            # The watchdog counts from the later of the last value and the (re-)arming.
            since_ns = max(self._last_rx_mono_ns, self._armed_mono_ns)
            remaining_ns = since_ns + silence_ns - time.monotonic_ns()
            if remaining_ns <= 0:
                self.counters.silences += 1
                _LOGGER.warning(
                    "ble[%s]: no notification for %.1f s; resetting the link",
                    self.name,
                    self.silence_after_s,
                )
                self._mark_lost(LossCause.SILENCE)
                return
            # A timer that wakes the watchdog to look again, not a timeout: a streaming link
            # reaches its deadline about once per silence period, and a timeout cancels the task
            # and raises each time. `_wake` also wakes it for a loss (`_lost` is set first).
            timer = loop.call_later(remaining_ns / 1e9, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            if self._lost is None:
                self._wake.clear()
        _LOGGER.warning("ble[%s]: link dropped", self.name)

    async def _close(self, client: BleakClient) -> None:
        try:
            async with asyncio.timeout(self._settings.io_timeout_s):
                await client.disconnect()
        except (BleakError, TimeoutError, OSError) as exc:
            _LOGGER.debug("ble[%s]: disconnect failed: %s", self.name, _describe(exc))

    # --- the decode task ------------------------------------------------------------------------

    def close_queue(self) -> None:
        self._queue.close()

    async def run_consumer(self, emit: Emit) -> None:
        """Decode queued values into readings until the queue is closed and drained."""
        while (item := await self._queue.get()) is not None:
            if item.uuid == RECORD_ACCESS_CONTROL_POINT:
                self._on_racp(item.payload)
                continue
            for reading in self._readings(item):
                await emit(reading)
                self.counters.readings += 1

    def _readings(self, item: _Notified) -> list[Reading]:
        try:
            values = self._decoder(item.uuid, item.payload)
            stamps = value_times(values, item.rx_ts_ns)
            readings = [
                Reading(
                    device_token=self.device.device_token,
                    patient_token=self.device.patient_token,
                    device_kind=self.device.device_kind,
                    metric_code=by_name(value.metric).code,
                    ts_ns=ts_ns,
                    value=value.value,
                    quality=value.quality,
                )
                for value, ts_ns in zip(values, stamps, strict=True)
            ]
        except (EdgeAgentError, CatalogueError) as exc:
            self.counters.decode_errors += 1
            _LOGGER.warning("ble[%s]: undecodable value: %s", self.name, exc)
            return []
        except Exception:
            # A decoder must raise only our errors; if one does not, count and report the bug
            # rather than let one device's bytes stop every source of the gateway.
            self.counters.decode_errors += 1
            _LOGGER.exception("ble[%s]: decoder bug on characteristic %s", self.name, item.uuid)
            return []
        seqs = {value.record_seq for value in values if value.record_seq is not None}
        if seqs and not all(self.stored_records.accept(seq) for seq in seqs):
            # A stored record delivered live and again by the record request: keep one.
            self.counters.duplicate_records += 1
            return []
        return readings

    def _on_racp(self, payload: bytes) -> None:
        # Response Code indication: op code 0x06, operator 0x00, request op code, response value.
        if len(payload) < _RACP_RESPONSE_BYTES or payload[0] != RACP_RESPONSE_CODE:
            self.counters.decode_errors += 1
            _LOGGER.warning("ble[%s]: unexpected record access response", self.name)
            return
        if payload[3] not in (RACP_SUCCESS, RACP_NO_RECORDS_FOUND):
            _LOGGER.warning(
                "ble[%s]: stored-record request failed with RACP code 0x%02x", self.name, payload[3]
            )


class BleManager:
    """The Source for all bonded BLE devices of one adapter: one scanner, one link per device."""

    def __init__(
        self,
        devices: Sequence[BondedDevice],
        *,
        settings: BleSettings | None = None,
        decoder: Decoder | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        scanner_backend: type[BaseBleakScanner] | None = None,
        rng: random.Random | None = None,
        name: str = "ble",
    ) -> None:
        if not devices:
            raise ConfigError(_ORIGIN, "devices", "at least one bonded device is needed")
        addresses = [device.address.upper() for device in devices]
        if len(set(addresses)) != len(addresses):
            raise ConfigError(_ORIGIN, "devices", "a device address is listed twice")
        self._settings = settings or BleSettings()
        self._scanner_backend = scanner_backend
        self._name = name
        # Jitter only spreads retries; it needs no cryptographic quality.
        jitter_rng = rng or random.Random()  # noqa: S311
        self._rng = jitter_rng
        self._decoder = decoder or decode_characteristic
        self._adapter = _Adapter(self._settings, addresses, client_backend)
        self._sightings = self._adapter.sightings
        self.links: dict[str, BleLink] = {
            device.device_token: BleLink(
                device, self._settings, self._decoder, self._adapter, jitter_rng
            )
            for device in devices
        }
        self._stopped = asyncio.Event()
        self.scanner_failures = 0
        # While run() runs: its task group, where it emits, and each link's two tasks.
        self._group: asyncio.TaskGroup | None = None
        self._emit: Emit | None = None
        self._link_tasks: dict[str, tuple[asyncio.Task[None], asyncio.Task[None]]] = {}

    @property
    def name(self) -> str:
        return self._name

    def stop(self) -> None:
        self._stopped.set()

    def counters(self, device_token: str) -> BleCounters:
        return self.links[device_token].counters

    def add(self, device: BondedDevice) -> None:
        """Take one more bonded device (paired while the agent runs); its link starts now when
        the manager runs, else with it."""
        address = device.address.upper()
        if device.device_token in self.links or any(
            link.device.address.upper() == address for link in self.links.values()
        ):
            raise ConfigError(_ORIGIN, "devices", "the device is taken already")
        link = BleLink(device, self._settings, self._decoder, self._adapter, self._rng)
        self.links[device.device_token] = link
        self._sightings.want(address)
        if self._group is not None and self._emit is not None:
            self._start_link(self._group, link, self._emit)

    async def remove(self, device_token: str) -> None:
        """Let one device go (unpaired): its link is closed and what it queued is emitted."""
        link = self.links.pop(device_token, None)
        if link is None:
            return
        tasks = self._link_tasks.pop(device_token, None)
        if tasks is not None:
            consumer, radio = tasks
            radio.cancel()
            await asyncio.wait([radio])
            link.close_queue()
            await asyncio.wait([consumer])
        self._sightings.forget(link.device.address)
        _LOGGER.info("%s: %s released", self._name, link.name)

    def _start_link(self, group: asyncio.TaskGroup, link: BleLink, emit: Emit) -> None:
        consumer = group.create_task(
            link.run_consumer(emit), name=f"agent.source.ble[{link.name}].decode"
        )
        radio = group.create_task(link.run_link(), name=f"agent.source.ble[{link.name}]")
        self._link_tasks[link.device.device_token] = (consumer, radio)

    async def run(self, emit: Emit) -> None:
        async with asyncio.TaskGroup() as group:
            for link in self.links.values():
                self._start_link(group, link, emit)
            scan = group.create_task(self._scan(), name=f"agent.source.{self._name}.scan")
            self._group, self._emit = group, emit
            try:
                await self._stopped.wait()
            finally:
                self._group = self._emit = None
            tasks = list(self._link_tasks.values())
            self._link_tasks.clear()
            radio_tasks = [scan, *(radio for _consumer, radio in tasks)]
            for task in radio_tasks:
                task.cancel()
            await asyncio.wait(radio_tasks)
            for link in self.links.values():
                link.close_queue()
            consumers = [consumer for consumer, _radio in tasks]
            if consumers:
                await asyncio.wait(consumers)
        _LOGGER.info("%s: stopped", self._name)

    async def _scan(self) -> None:
        """Keep one scanner running, filtered by the health services; restart it if it fails."""
        attempt = 0
        rng = random.Random()  # noqa: S311 -- jitter only
        while True:
            scanner = BleakScanner(
                detection_callback=self._sightings.on_advertisement,
                service_uuids=list(HEALTH_SERVICE_UUIDS),
                backend=self._scanner_backend,
            )
            try:
                async with asyncio.timeout(self._settings.io_timeout_s):
                    await scanner.start()
            except (BleakError, OSError, TimeoutError) as exc:
                self.scanner_failures += 1
                delay_s = self._settings.backoff_other.delay_s(attempt, rng)
                attempt += 1
                _LOGGER.warning(
                    "%s: scanner failed (%s); retry in %.1f s", self._name, _describe(exc), delay_s
                )
                await asyncio.sleep(delay_s)
                continue
            try:
                await asyncio.Event().wait()
            finally:
                try:
                    async with asyncio.timeout(self._settings.io_timeout_s):
                        await scanner.stop()
                except (BleakError, TimeoutError, OSError) as exc:
                    _LOGGER.debug("%s: scanner stop failed: %s", self._name, _describe(exc))


class BleSource(BleManager):
    """The Source for one bonded device (a BleManager of one)."""

    def __init__(
        self,
        device: BondedDevice,
        *,
        settings: BleSettings | None = None,
        decoder: Decoder | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        scanner_backend: type[BaseBleakScanner] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            [device],
            settings=settings,
            decoder=decoder,
            client_backend=client_backend,
            scanner_backend=scanner_backend,
            rng=rng,
            name=f"ble[{device.log_name}]",
        )
        self.link = self.links[device.device_token]

    @property
    def device_counters(self) -> BleCounters:
        return self.link.counters

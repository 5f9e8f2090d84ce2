"""Frames v1 and v2: the msgpack plaintext of an envelope, columnar per-device reading blocks.

v2 is v1 with one more element, the gateway's own health record; a frame without one is still
written as v1, so readings, alerts and device health keep their exact v1 bytes.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, cast

import msgpack
import numpy as np
import numpy.typing as npt

from edge_agent.protocol._slots import twin
from edge_agent.protocol.errors import FrameError
from edge_agent.protocol.topics import GATEWAY_ID_RE

SCHEMA_VERSION: Final = 1
SCHEMA_VERSION_GATEWAY: Final = 2
MAX_READINGS_PER_BLOCK: Final = 100_000
MAX_ITEMS: Final = 10_000
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{32}")
_NAME_RE: Final = re.compile(r"[a-z0-9_-]{1,32}")
# Column dtypes are little-endian on the wire whatever the host (docs/wire-format.md §4).
CODE_DTYPE: Final = np.dtype("<u2")
TS_DTYPE: Final = np.dtype("<i8")
VALUE_DTYPE: Final = np.dtype("<f8")
BITS_DTYPE: Final = np.dtype("<u4")
SEVERITIES: Final = ("info", "warning", "critical")
ALERT_STATES: Final = ("raised", "cleared")
BINDING_ACTIONS: Final = ("bound", "unbound")
_MSGPACK_ERRORS: Final = (ValueError, TypeError, OverflowError, msgpack.UnpackException)

Severity = Literal["info", "warning", "critical"]
AlertState = Literal["raised", "cleared"]
BindingAction = Literal["bound", "unbound"]


@dataclass(slots=True, frozen=True, eq=False)
class DeviceBlock:
    """Readings of one device for one patient, column by column (all columns the same length)."""

    device_token: str
    patient_token: str
    device_kind: str
    metric_codes: npt.NDArray[np.uint16]
    ts_ns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint32]
    flags: npt.NDArray[np.uint32]

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


@dataclass(slots=True, frozen=True)
class AlertEvent:
    """An alert raised or cleared at the edge; `alert_id` is stable across raise and clear."""

    alert_id: str
    patient_token: str
    device_token: str
    metric_code: int
    kind: str
    severity: Severity
    state: AlertState
    ts_ns: int
    value: float | None
    detail: str


@dataclass(slots=True, frozen=True)
class DeviceStatus:
    """A device's health as the gateway sees it."""

    device_token: str
    device_kind: str
    ts_ns: int
    link_up: bool
    battery_pct: float | None
    rssi_dbm: int | None
    interval_s: float | None
    errors_total: int
    error_code: int | None


@dataclass(slots=True, frozen=True)
class BindingEvent:
    """A device bound to or unbound from a patient; the hospital reference stays encrypted."""

    device_token: str
    patient_token: str
    action: BindingAction
    ts_ns: int
    patient_ref: str | None = field(default=None, repr=False)


@dataclass(slots=True, frozen=True)
class GatewayHealth:
    """The gateway's own health (DESIGN §4 `gateway_health`): its spool, link and footprint."""

    ts_ns: int
    uptime_s: float
    spool_frames: int
    spool_bytes: int
    oldest_unsent_s: float | None
    publish_lag_s: float | None
    # Readings the gateway gave up on: evicted from a full spool (the only way it drops any).
    dropped_total: int
    evicted_frames: int
    cpu_pct: float | None
    rss_mb: float | None
    connections_total: int


@dataclass(slots=True, frozen=True)
class Frame:
    """One sealed unit of uplink data from a gateway."""

    gateway_id: str
    sent_ns: int
    blocks: tuple[DeviceBlock, ...] = ()
    alerts: tuple[AlertEvent, ...] = ()
    statuses: tuple[DeviceStatus, ...] = ()
    bindings: tuple[BindingEvent, ...] = ()
    gateway: GatewayHealth | None = None

    @property
    def reading_count(self) -> int:
        return sum(len(block) for block in self.blocks)


def _column(values: npt.ArrayLike, dtype: np.dtype[Any]) -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def encode_frame(frame: Frame) -> bytes:
    """Serialise a frame to msgpack (layout in docs/wire-format.md §4)."""
    blocks = []
    for block in frame.blocks:
        n = len(block)
        columns = (block.metric_codes, block.values, block.quality, block.flags)
        if any(column.shape != (n,) for column in columns):
            msg = "blocks"
            raise FrameError(msg, f"device {block.device_token}: columns differ in length")
        blocks.append(
            [
                block.device_token,
                block.patient_token,
                block.device_kind,
                _column(block.metric_codes, CODE_DTYPE),
                _column(block.ts_ns, TS_DTYPE),
                _column(block.values, VALUE_DTYPE),
                _column(block.quality, BITS_DTYPE),
                _column(block.flags, BITS_DTYPE),
            ]
        )
    alerts = [
        [a.alert_id, a.patient_token, a.device_token, a.metric_code, a.kind, a.severity, a.state,
         a.ts_ns, a.value, a.detail]
        for a in frame.alerts
    ]  # fmt: skip
    statuses = [
        [s.device_token, s.device_kind, s.ts_ns, s.link_up, s.battery_pct, s.rssi_dbm,
         s.interval_s, s.errors_total, s.error_code]
        for s in frame.statuses
    ]  # fmt: skip
    bindings = [
        [b.device_token, b.patient_token, b.action, b.ts_ns, b.patient_ref] for b in frame.bindings
    ]
    body: list[object] = [frame.gateway_id, frame.sent_ns, blocks, alerts, statuses, bindings]
    g = frame.gateway
    if g is None:
        return msgpack.packb([SCHEMA_VERSION, *body], use_bin_type=True)
    gateway = [g.ts_ns, g.uptime_s, g.spool_frames, g.spool_bytes, g.oldest_unsent_s,
               g.publish_lag_s, g.dropped_total, g.evicted_frames, g.cpu_pct, g.rss_mb,
               g.connections_total]  # fmt: skip
    return msgpack.packb([SCHEMA_VERSION_GATEWAY, *body, gateway], use_bin_type=True)


# --- decoding: every check names the field path so a rejected frame can be diagnosed -------------
# The sink opens thousands of frames a second, so the common case is a handful of type and length
# tests per block; a field path is only formatted once something is wrong.

_T = TypeVar("_T")
# Elements of the top-level array per schema version (docs/wire-format.md §4).
_ELEMENTS: Final = {SCHEMA_VERSION: 7, SCHEMA_VERSION_GATEWAY: 8}
_LITTLE_ENDIAN_HOST: Final = sys.byteorder == "little"
_COLUMNS: Final[tuple[tuple[str, np.dtype[Any]], ...]] = (
    ("metric_codes", CODE_DTYPE),
    ("ts_ns", TS_DTYPE),
    ("values", VALUE_DTYPE),
    ("quality", BITS_DTYPE),
    ("flags", BITS_DTYPE),
)


# Tokens and gateway ids repeat from frame to frame: remember the ones that already matched so a
# block costs a set lookup instead of a regex. Only valid strings enter; the set is emptied when
# it reaches its limit, so garbage cannot grow it.
_MEMO_LIMIT: Final = 1 << 16
_valid_tokens: Final[set[str]] = set()
_valid_gateways: Final[set[str]] = set()
_valid_names: Final[set[str]] = set()


def _memo_str(value: object, path: str, name: str, pattern: re.Pattern[str], memo: set[str]) -> str:
    if type(value) is str and value in memo:
        return value
    checked = _str(value, path, name, pattern)
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo.add(checked)
    return checked


# A frozen dataclass's __init__ sets each field through object.__setattr__, which costs more than
# the rest of decoding a block: blocks and frames are built as their mutable twins and then
# become what they are (_slots.py), identical to constructed ones (equality, repr, pickling).
_new: Final = object.__new__
_frombuffer: Final = np.frombuffer
_unpackb: Final = msgpack.unpackb
_BLOCK_TWIN: Final = twin(DeviceBlock)
_FRAME_TWIN: Final = twin(Frame)


def _where(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _array(value: object, path: str, length: int | None = None) -> tuple[object, ...]:
    if type(value) is not tuple:
        raise FrameError(path, "must be an array")
    if length is not None and len(value) != length:
        raise FrameError(path, f"must have {length} elements, has {len(value)}")
    return value


def _int(value: object, path: str, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise FrameError(_where(path, name), f"must be an integer in {low}..{high}, got {value!r}")
    return value


def _str(
    value: object, path: str, name: str, pattern: re.Pattern[str] | None = None, limit: int = 256
) -> str:
    if type(value) is not str or len(value) > limit:
        raise FrameError(_where(path, name), f"must be a string of at most {limit} characters")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise FrameError(_where(path, name), f"{value!r} does not match {pattern.pattern}")
    return value


def _choice(value: object, path: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise FrameError(_where(path, name), f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _optional(
    value: object, path: str, name: str, check: Callable[[object, str, str], _T]
) -> _T | None:
    return None if value is None else check(value, path, name)


def _finite(value: object, path: str, name: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise FrameError(_where(path, name), f"must be a finite number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _ns(value: object, path: str, name: str) -> int:
    return _int(value, path, name, 0, 2**63 - 1)


def _bool(value: object, path: str, name: str) -> bool:
    if type(value) is not bool:
        raise FrameError(_where(path, name), f"must be a boolean, got {value!r}")
    return value


def _column_error(raw: tuple[object, ...], path: str) -> FrameError:
    """Name the first of a block's five columns that is not what docs/wire-format.md §4 says."""
    n: int | None = None
    for (name, dtype), value in zip(_COLUMNS, raw[3:8], strict=True):
        where = _where(path, name)
        if type(value) is not bytes or len(value) % dtype.itemsize:
            return FrameError(where, f"must be a binary column of {dtype.itemsize}-byte items")
        count = len(value) // dtype.itemsize
        if count > MAX_READINGS_PER_BLOCK:
            return FrameError(
                where, f"{count} readings exceed the block limit {MAX_READINGS_PER_BLOCK}"
            )
        if n is not None and count != n:
            return FrameError(where, f"has {count} items, the block's other columns have {n}")
        n = count
    return FrameError(path, "columns are inconsistent")  # unreachable when the caller is right


def _block(raw: object, path: str) -> DeviceBlock:
    # The common case inline (no helper calls): an 8-array whose strings were seen before.
    if type(raw) is not tuple or len(raw) != 8:
        raise FrameError(path, "must be an 8-element array")
    f: tuple[object, ...] = raw
    device_token, patient_token, device_kind = f[0], f[1], f[2]
    if not (
        type(device_token) is str
        and device_token in _valid_tokens
        and type(patient_token) is str
        and patient_token in _valid_tokens
        and type(device_kind) is str
        and device_kind in _valid_names
    ):
        device_token = _memo_str(f[0], path, "device_token", _TOKEN_RE, _valid_tokens)
        patient_token = _memo_str(f[1], path, "patient_token", _TOKEN_RE, _valid_tokens)
        device_kind = _memo_str(f[2], path, "device_kind", _NAME_RE, _valid_names)
    codes, stamps, values, quality, flags = f[3:8]
    if (
        type(codes) is not bytes
        or type(stamps) is not bytes
        or type(values) is not bytes
        or type(quality) is not bytes
        or type(flags) is not bytes
    ):
        raise _column_error(f, path)
    # One pass over the lengths (wire-format §4: n items of u16, i64, f64, u32, u32, little-endian).
    n = len(codes) >> 1
    if not (
        n <= MAX_READINGS_PER_BLOCK
        and len(codes) == 2 * n
        and len(stamps) == 8 * n
        and len(values) == 8 * n
        and len(quality) == 4 * n
        and len(flags) == 4 * n
    ):
        raise _column_error(f, path)
    # Byte 7 of each little-endian i64 holds its sign bit: every such byte below 0x80 (isascii)
    # means no timestamp is negative, without building an array to find the minimum.
    if not stamps[7::8].isascii():
        raise FrameError(_where(path, "ts_ns"), "timestamps must not be negative")
    metric_codes = _frombuffer(codes, CODE_DTYPE)
    ts_ns = _frombuffer(stamps, TS_DTYPE)
    readings = _frombuffer(values, VALUE_DTYPE)
    quality_bits = _frombuffer(quality, BITS_DTYPE)
    flag_bits = _frombuffer(flags, BITS_DTYPE)
    if not _LITTLE_ENDIAN_HOST:
        # The wire is little-endian whatever the host; everything past the decoder sees native.
        metric_codes = metric_codes.astype(np.uint16)
        ts_ns = ts_ns.astype(np.int64)
        readings = readings.astype(np.float64)
        quality_bits = quality_bits.astype(np.uint32)
        flag_bits = flag_bits.astype(np.uint32)
    block: Any = _new(_BLOCK_TWIN)
    block.device_token = device_token
    block.patient_token = patient_token
    block.device_kind = device_kind
    block.metric_codes = metric_codes
    block.ts_ns = ts_ns
    block.values = readings
    block.quality = quality_bits
    block.flags = flag_bits
    block.__class__ = DeviceBlock
    return cast("DeviceBlock", block)


def _alert(raw: object, path: str) -> AlertEvent:
    f = _array(raw, path, 10)
    return AlertEvent(
        alert_id=_str(f[0], path, "alert_id", limit=64),
        patient_token=_str(f[1], path, "patient_token", _TOKEN_RE),
        device_token=_str(f[2], path, "device_token", _TOKEN_RE),
        metric_code=_int(f[3], path, "metric_code", 0, 0xFFFF),
        kind=_str(f[4], path, "kind", _NAME_RE),
        severity=_choice(f[5], path, "severity", SEVERITIES),  # type: ignore[arg-type]
        state=_choice(f[6], path, "state", ALERT_STATES),  # type: ignore[arg-type]
        ts_ns=_ns(f[7], path, "ts_ns"),
        value=_optional(f[8], path, "value", _finite),
        detail=_str(f[9], path, "detail"),
    )


def _rssi(value: object, path: str, name: str) -> int:
    return _int(value, path, name, -150, 20)


def _error_code(value: object, path: str, name: str) -> int:
    return _int(value, path, name, 0, 2**32 - 1)


def _status(raw: object, path: str) -> DeviceStatus:
    f = _array(raw, path, 9)
    return DeviceStatus(
        device_token=_str(f[0], path, "device_token", _TOKEN_RE),
        device_kind=_str(f[1], path, "device_kind", _NAME_RE),
        ts_ns=_ns(f[2], path, "ts_ns"),
        link_up=_bool(f[3], path, "link_up"),
        battery_pct=_optional(f[4], path, "battery_pct", _finite),
        rssi_dbm=_optional(f[5], path, "rssi_dbm", _rssi),
        interval_s=_optional(f[6], path, "interval_s", _finite),
        errors_total=_int(f[7], path, "errors_total", 0, 2**63 - 1),
        error_code=_optional(f[8], path, "error_code", _error_code),
    )


def _count(value: object, path: str, name: str) -> int:
    return _int(value, path, name, 0, 2**63 - 1)


def _gateway(raw: object) -> GatewayHealth:
    path = "gateway"
    f = _array(raw, path, 11)
    return GatewayHealth(
        ts_ns=_ns(f[0], path, "ts_ns"),
        uptime_s=_finite(f[1], path, "uptime_s"),
        spool_frames=_count(f[2], path, "spool_frames"),
        spool_bytes=_count(f[3], path, "spool_bytes"),
        oldest_unsent_s=_optional(f[4], path, "oldest_unsent_s", _finite),
        publish_lag_s=_optional(f[5], path, "publish_lag_s", _finite),
        dropped_total=_count(f[6], path, "dropped_total"),
        evicted_frames=_count(f[7], path, "evicted_frames"),
        cpu_pct=_optional(f[8], path, "cpu_pct", _finite),
        rss_mb=_optional(f[9], path, "rss_mb", _finite),
        connections_total=_count(f[10], path, "connections_total"),
    )


def _binding(raw: object, path: str) -> BindingEvent:
    f = _array(raw, path, 5)
    return BindingEvent(
        device_token=_str(f[0], path, "device_token", _TOKEN_RE),
        patient_token=_str(f[1], path, "patient_token", _TOKEN_RE),
        action=_choice(f[2], path, "action", BINDING_ACTIONS),  # type: ignore[arg-type]
        ts_ns=_ns(f[3], path, "ts_ns"),
        patient_ref=_optional(f[4], path, "patient_ref", _str),
    )


def _items(raw: object, path: str, parse: Callable[[object, str], _T]) -> tuple[_T, ...]:
    items = _array(raw, path)
    if not items:
        return ()
    if len(items) > MAX_ITEMS:
        raise FrameError(path, f"{len(items)} items exceed the limit {MAX_ITEMS}")
    parsed = []
    try:
        for item in items:  # a plain loop: cheaper than a comprehension for one block
            parsed.append(parse(item, path))  # noqa: PERF401 - see above
    except FrameError:
        # Paths are formatted only when something is wrong: parsing is deterministic, so the
        # first failing item fails again, now with its index in the path.
        for i, item in enumerate(items):
            parse(item, f"{path}[{i}]")
        raise
    return tuple(parsed)


def decode_frame(data: bytes) -> Frame:
    """Parse and structurally validate a frame; raise FrameError naming the first bad field."""
    try:
        fields = _unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except _MSGPACK_ERRORS as exc:
        msg = "$"
        raise FrameError(msg, f"not msgpack: {exc}") from exc
    if type(fields) is not tuple:
        fields = _array(fields, "$")  # raises
    version = fields[0] if fields else None
    if type(version) is not int or version not in _ELEMENTS:
        msg = "schema_version"
        raise FrameError(msg, f"unsupported {version!r} (this reader knows 1 and 2)")
    if len(fields) != _ELEMENTS[version]:
        msg = "$"
        raise FrameError(
            msg, f"a v{version} frame has {_ELEMENTS[version]} elements, not {len(fields)}"
        )
    gateway_id = fields[1]
    if type(gateway_id) is not str or gateway_id not in _valid_gateways:
        gateway_id = _memo_str(gateway_id, "", "gateway_id", GATEWAY_ID_RE, _valid_gateways)
    sent_ns = fields[2]
    if type(sent_ns) is not int or not 0 <= sent_ns < 2**63:
        sent_ns = _ns(sent_ns, "", "sent_ns")
    blocks, alerts, statuses, bindings = fields[3], fields[4], fields[5], fields[6]
    # Most frames carry readings only, most often of one device: empty arrays skip the item
    # parser altogether, and a single block is parsed without it (same checks, same errors).
    if type(blocks) is tuple and len(blocks) == 1:
        try:
            parsed_blocks: tuple[DeviceBlock, ...] = (_block(blocks[0], "blocks"),)
        except FrameError:
            _block(blocks[0], "blocks[0]")  # raises again, with the item's path
            raise
    else:
        parsed_blocks = () if blocks == () else _items(blocks, "blocks", _block)
    frame: Any = _new(_FRAME_TWIN)
    frame.gateway_id = gateway_id
    frame.sent_ns = sent_ns
    frame.blocks = parsed_blocks
    frame.alerts = () if alerts == () else _items(alerts, "alerts", _alert)
    frame.statuses = () if statuses == () else _items(statuses, "statuses", _status)
    frame.bindings = () if bindings == () else _items(bindings, "bindings", _binding)
    frame.gateway = None if version == SCHEMA_VERSION or fields[7] is None else _gateway(fields[7])
    frame.__class__ = Frame
    return cast("Frame", frame)

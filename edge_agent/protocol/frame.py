"""Frame v1: the msgpack plaintext of an envelope, with columnar per-device reading blocks."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import msgpack
import numpy as np
import numpy.typing as npt

from edge_agent.protocol.errors import FrameError
from edge_agent.protocol.topics import GATEWAY_ID_RE

SCHEMA_VERSION: Final = 1
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
class Frame:
    """One sealed unit of uplink data from a gateway."""

    gateway_id: str
    sent_ns: int
    blocks: tuple[DeviceBlock, ...] = ()
    alerts: tuple[AlertEvent, ...] = ()
    statuses: tuple[DeviceStatus, ...] = ()
    bindings: tuple[BindingEvent, ...] = ()

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
    return msgpack.packb(
        [SCHEMA_VERSION, frame.gateway_id, frame.sent_ns, blocks, alerts, statuses, bindings],
        use_bin_type=True,
    )


# --- decoding: every check names the field path so a rejected frame can be diagnosed -------------

_T = TypeVar("_T")


def _array(value: object, path: str, length: int | None = None) -> tuple[object, ...]:
    if not isinstance(value, tuple):
        raise FrameError(path, "must be an array")
    if length is not None and len(value) != length:
        raise FrameError(path, f"must have {length} elements, has {len(value)}")
    return value


def _int(value: object, path: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise FrameError(path, f"must be an integer in {low}..{high}, got {value!r}")
    return value


def _str(value: object, path: str, pattern: re.Pattern[str] | None = None, limit: int = 256) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise FrameError(path, f"must be a string of at most {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise FrameError(path, f"{value!r} does not match {pattern.pattern}")
    return value


def _choice(value: object, path: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise FrameError(path, f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _optional(value: object, path: str, check: Callable[[object, str], _T]) -> _T | None:
    return None if value is None else check(value, path)


def _finite(value: object, path: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise FrameError(path, f"must be a finite number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _ns(value: object, path: str) -> int:
    return _int(value, path, 0, 2**63 - 1)


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise FrameError(path, f"must be a boolean, got {value!r}")
    return value


def _col(value: object, path: str, dtype: np.dtype[Any], n: int | None) -> npt.NDArray[Any]:
    if not isinstance(value, bytes) or len(value) % dtype.itemsize:
        raise FrameError(path, f"must be a binary column of {dtype.itemsize}-byte items")
    count = len(value) // dtype.itemsize
    if count > MAX_READINGS_PER_BLOCK:
        raise FrameError(path, f"{count} readings exceed the block limit {MAX_READINGS_PER_BLOCK}")
    if n is not None and count != n:
        raise FrameError(path, f"has {count} items, the block's other columns have {n}")
    return np.frombuffer(value, dtype=dtype)


def _block(raw: object, path: str) -> DeviceBlock:
    f = _array(raw, path, 8)
    codes = _col(f[3], f"{path}.metric_codes", CODE_DTYPE, None)
    n = int(codes.shape[0])
    ts_ns = _col(f[4], f"{path}.ts_ns", TS_DTYPE, n)
    if n and int(ts_ns.min()) < 0:
        msg = f"{path}.ts_ns"
        raise FrameError(msg, "timestamps must not be negative")
    return DeviceBlock(
        device_token=_str(f[0], f"{path}.device_token", _TOKEN_RE),
        patient_token=_str(f[1], f"{path}.patient_token", _TOKEN_RE),
        device_kind=_str(f[2], f"{path}.device_kind", _NAME_RE),
        metric_codes=codes.astype(np.uint16, copy=False),
        ts_ns=ts_ns.astype(np.int64, copy=False),
        values=_col(f[5], f"{path}.values", VALUE_DTYPE, n).astype(np.float64, copy=False),
        quality=_col(f[6], f"{path}.quality", BITS_DTYPE, n).astype(np.uint32, copy=False),
        flags=_col(f[7], f"{path}.flags", BITS_DTYPE, n).astype(np.uint32, copy=False),
    )


def _alert(raw: object, path: str) -> AlertEvent:
    f = _array(raw, path, 10)
    return AlertEvent(
        alert_id=_str(f[0], f"{path}.alert_id", limit=64),
        patient_token=_str(f[1], f"{path}.patient_token", _TOKEN_RE),
        device_token=_str(f[2], f"{path}.device_token", _TOKEN_RE),
        metric_code=_int(f[3], f"{path}.metric_code", 0, 0xFFFF),
        kind=_str(f[4], f"{path}.kind", _NAME_RE),
        severity=_choice(f[5], f"{path}.severity", SEVERITIES),  # type: ignore[arg-type]
        state=_choice(f[6], f"{path}.state", ALERT_STATES),  # type: ignore[arg-type]
        ts_ns=_ns(f[7], f"{path}.ts_ns"),
        value=_optional(f[8], f"{path}.value", _finite),
        detail=_str(f[9], f"{path}.detail"),
    )


def _status(raw: object, path: str) -> DeviceStatus:
    f = _array(raw, path, 9)
    return DeviceStatus(
        device_token=_str(f[0], f"{path}.device_token", _TOKEN_RE),
        device_kind=_str(f[1], f"{path}.device_kind", _NAME_RE),
        ts_ns=_ns(f[2], f"{path}.ts_ns"),
        link_up=_bool(f[3], f"{path}.link_up"),
        battery_pct=_optional(f[4], f"{path}.battery_pct", _finite),
        rssi_dbm=_optional(f[5], f"{path}.rssi_dbm", lambda v, p: _int(v, p, -150, 20)),
        interval_s=_optional(f[6], f"{path}.interval_s", _finite),
        errors_total=_int(f[7], f"{path}.errors_total", 0, 2**63 - 1),
        error_code=_optional(f[8], f"{path}.error_code", lambda v, p: _int(v, p, 0, 2**32 - 1)),
    )


def _binding(raw: object, path: str) -> BindingEvent:
    f = _array(raw, path, 5)
    return BindingEvent(
        device_token=_str(f[0], f"{path}.device_token", _TOKEN_RE),
        patient_token=_str(f[1], f"{path}.patient_token", _TOKEN_RE),
        action=_choice(f[2], f"{path}.action", BINDING_ACTIONS),  # type: ignore[arg-type]
        ts_ns=_ns(f[3], f"{path}.ts_ns"),
        patient_ref=_optional(f[4], f"{path}.patient_ref", _str),
    )


def _items(raw: object, path: str, parse: Callable[[object, str], _T]) -> tuple[_T, ...]:
    items = _array(raw, path)
    if len(items) > MAX_ITEMS:
        raise FrameError(path, f"{len(items)} items exceed the limit {MAX_ITEMS}")
    return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(items))


def decode_frame(data: bytes) -> Frame:
    """Parse and structurally validate a frame; raise FrameError naming the first bad field."""
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except _MSGPACK_ERRORS as exc:
        msg = "$"
        raise FrameError(msg, f"not msgpack: {exc}") from exc
    top = _array(raw, "$", 7)
    if top[0] != SCHEMA_VERSION or type(top[0]) is not int:
        msg = "schema_version"
        raise FrameError(msg, f"unsupported {top[0]!r} (this reader knows 1)")
    return Frame(
        gateway_id=_str(top[1], "gateway_id", GATEWAY_ID_RE),
        sent_ns=_ns(top[2], "sent_ns"),
        blocks=_items(top[3], "blocks", _block),
        alerts=_items(top[4], "alerts", _alert),
        statuses=_items(top[5], "statuses", _status),
        bindings=_items(top[6], "bindings", _binding),
    )

"""Groups readings into frame v1: one columnar block per (device, patient)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edge_agent.protocol import DeviceBlock, Frame
from edge_agent.sources import Reading


@dataclass(slots=True)
class _Columns:
    device_kind: str
    codes: list[int] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)


class Framer:
    """Accumulates readings; `take` returns everything pending as one frame (or None when empty)."""

    def __init__(self, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self._pending: dict[tuple[str, str], _Columns] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, reading: Reading, flags: int = 0) -> None:
        key = (reading.device_token, reading.patient_token)
        columns = self._pending.get(key)
        if columns is None:
            columns = self._pending[key] = _Columns(reading.device_kind)
        columns.codes.append(reading.metric_code)
        columns.ts_ns.append(reading.ts_ns)
        columns.values.append(reading.value)
        columns.quality.append(reading.quality)
        columns.flags.append(flags)
        self._count += 1

    def take(self) -> Frame | None:
        if not self._pending:
            return None
        blocks = tuple(
            DeviceBlock(
                device_token=device_token,
                patient_token=patient_token,
                device_kind=columns.device_kind,
                metric_codes=np.asarray(columns.codes, dtype=np.uint16),
                ts_ns=np.asarray(columns.ts_ns, dtype=np.int64),
                values=np.asarray(columns.values, dtype=np.float64),
                quality=np.asarray(columns.quality, dtype=np.uint32),
                flags=np.asarray(columns.flags, dtype=np.uint32),
            )
            for (device_token, patient_token), columns in self._pending.items()
        )
        self._pending = {}
        self._count = 0
        return Frame(gateway_id=self.gateway_id, sent_ns=time.time_ns(), blocks=blocks)

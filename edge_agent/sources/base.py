"""The Source protocol every device path implements, and the Reading it emits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class Reading:
    """One value of one metric from one device, stamped once at acquisition (UTC ns)."""

    device_token: str
    patient_token: str
    device_kind: str
    metric_code: int
    ts_ns: int
    value: float
    quality: int = 0


Emit = Callable[[Reading], Awaitable[None]]
"""Hands a reading to the pipeline; awaiting it is how a source feels backpressure."""


class Source(Protocol):
    """A device path. `run` emits readings until `stop` is called, then returns."""

    @property
    def name(self) -> str:
        """A log-safe name (never a MAC address or serial number)."""
        ...

    async def run(self, emit: Emit) -> None:
        """Produce readings until stopped; errors inside are the source's to retry."""
        ...

    def stop(self) -> None:
        """Ask `run` to return soon; idempotent."""
        ...

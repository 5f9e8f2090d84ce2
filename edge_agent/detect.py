"""The detection stage: filter-bank flags for every reading, then the alerts they cause."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_agent.alerts import DEFAULT_RULES, AlertEngine, advisory_rules, technical_rules
from edge_agent.filters import BaselineStore, FilterBank, Presets, UnknownMetricError
from edge_agent.filters.presets import DETECT_CUSUM
from edge_agent.protocol import AlertEvent, by_code
from edge_agent.sources import Reading

_LOGGER = logging.getLogger(__name__)


class DetectionStage:
    """Runs the same bank and alert logic the agent, `edge-agent replay` and the evaluation use.

    Readings of metrics without a preset (battery, RR intervals) pass with flags 0 but still reach
    the alert rules (battery_low). Readings must arrive in time order per device and metric.
    """

    def __init__(self, presets: Presets, engine: AlertEngine | None = None) -> None:
        self.bank = FilterBank(presets)
        self.engine = engine or AlertEngine(
            rules=(
                *DEFAULT_RULES,
                *technical_rules(presets.metrics),
                *advisory_rules(
                    m for m in presets.metrics if presets.get(m).detectors & DETECT_CUSUM
                ),
            )
        )
        self._watched: set[tuple[str, str]] = set()
        # (device token, metric code) -> filter series, or None for a metric without a preset:
        # asked for every reading, so the catalogue and the bank's key are looked up once.
        self._series: dict[tuple[str, int], int | None] = {}

    def process(self, readings: Sequence[Reading]) -> tuple[list[int], list[AlertEvent]]:
        """Flags for each reading (same order) and the alert events raised or cleared."""
        ids: list[int] = []
        filtered: list[int] = []
        known = self._series
        for index, reading in enumerate(readings):
            series_key = (reading.device_token, reading.metric_code)
            series = known.get(series_key, -1)
            if series == -1:
                series = known[series_key] = self._series_id(*series_key)
            if series is None:
                continue
            ids.append(series)
            filtered.append(index)
            key = (reading.patient_token, reading.device_token)
            if key not in self._watched:
                self._watched.add(key)
                preset = self.bank.presets.get(by_code(reading.metric_code).name)
                self.engine.expect(*key, preset.expected_interval_s, reading.ts_ns)
        flags = [0] * len(readings)
        if filtered:
            chosen = [readings[i] for i in filtered]
            out = self.bank.process(
                np.asarray(ids, np.int64),
                np.asarray([r.ts_ns for r in chosen], np.int64),
                np.asarray([r.value for r in chosen], np.float64),
                np.asarray([r.quality for r in chosen], np.uint32),
            )
            for i, value in zip(filtered, out.tolist(), strict=True):
                flags[i] = int(value)
        alerts = [
            event
            for reading, bits in zip(readings, flags, strict=True)
            for event in self.engine.observe(reading, bits)
        ]
        return flags, alerts

    def _series_id(self, device_token: str, metric_code: int) -> int | None:
        try:
            return self.bank.series_id(device_token, by_code(metric_code).name)
        except UnknownMetricError:
            return None

    def tick(self, now_ns: int) -> list[AlertEvent]:
        """Alerts for devices that went silent."""
        return self.engine.tick(now_ns)

    def release(self, device_token: str, now_ns: int) -> list[AlertEvent]:
        """An unpaired device: no longer watched for silence (its open silence alert clears)."""
        self._watched = {key for key in self._watched if key[1] != device_token}
        return self.engine.release(device_token, now_ns)

    def save_baselines(self, path: Path) -> None:
        self.bank.baselines().save(path)

    def load_baselines(self, path: Path) -> int:
        """Restore learned baselines (a missing file is a first start); returns how many."""
        restored = self.bank.restore_baselines(BaselineStore.load(path, missing_ok=True))
        if restored:
            _LOGGER.info("restored %d personal baselines from %s", restored, path)
        return restored

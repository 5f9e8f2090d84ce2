"""Replays a recorded session (CSV) through the agent's own filter bank and alert logic."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from edge_agent.detect import DetectionStage
from edge_agent.errors import EdgeAgentError
from edge_agent.filters import Presets
from edge_agent.protocol import AlertEvent, CatalogueError, by_code, by_name
from edge_agent.sources import Reading

REQUIRED_COLUMNS: Final = ("time", "patient", "metric", "value")


class RecordingError(EdgeAgentError):
    """The recording cannot be read at all (missing file, missing header columns)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True, frozen=True)
class RowProblem:
    """A malformed row: reported with its line number and skipped, never silently."""

    line: int
    reason: str


@dataclass(slots=True, frozen=True)
class _Row:
    ts_ns: int
    line: int
    patient: str
    metric: str
    value: float
    quality: int


@dataclass(slots=True)
class ReplayResult:
    alerts: list[tuple[AlertEvent, str]] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0

    def summary(self) -> dict[str, object]:
        raised = Counter(e.kind for e, _ in self.alerts if e.state == "raised")
        cleared = Counter(e.kind for e, _ in self.alerts if e.state == "cleared")
        return {
            "rows": self.rows,
            "rows_skipped": len(self.problems),
            "raised": dict(sorted(raised.items())),
            "cleared": dict(sorted(cleared.items())),
        }


def parse_time(text: str) -> int:
    """ISO 8601 (a zone is required, or 'Z') or integer nanoseconds since the UNIX epoch."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        msg = f"time {text!r} has no zone; write it as UTC ('Z') or with an offset"
        raise ValueError(msg)
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _rows(path: Path, result: ReplayResult) -> Iterator[_Row]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordingError(path, f"cannot read: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RecordingError(path, f"missing column(s) {', '.join(missing)} in the header line")
    for record in reader:
        result.rows += 1
        try:
            yield _parse_row(record, reader.line_num)
        except (ValueError, CatalogueError) as exc:
            result.problems.append(RowProblem(reader.line_num, str(exc)))


def _parse_row(record: dict[str, str | None], line: int) -> _Row:
    metric = by_name((record["metric"] or "").strip()).name
    value = float(record["value"] or "")
    quality = int((record.get("quality") or "0").strip() or "0", 0)
    patient = (record["patient"] or "").strip()
    if not patient:
        msg = "patient is empty"
        raise ValueError(msg)
    if not 0 <= quality <= 0xFFFF_FFFF:
        msg = f"quality {quality} is not a 32-bit unsigned value"
        raise ValueError(msg)
    return _Row(parse_time(record["time"] or ""), line, patient, metric, value, quality)


def _token(text: str) -> str:
    # The bank and the alert ids expect 128-bit tokens; derive stable ones from the file's names.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def replay(path: Path, presets: Presets) -> ReplayResult:
    """Run the recording in time order (stable for equal times) through a fresh stage."""
    result = ReplayResult()
    rows = sorted(_rows(path, result), key=lambda row: (row.ts_ns, row.line))
    stage = DetectionStage(presets)
    names: dict[str, str] = {}
    for row in rows:
        token = _token(row.patient)
        names[token] = row.patient
        reading = Reading(
            device_token=_token(f"replay|{row.patient}"),
            patient_token=token,
            device_kind="replay",
            metric_code=by_name(row.metric).code,
            ts_ns=row.ts_ns,
            value=row.value,
            quality=row.quality,
        )
        _flags, alerts = stage.process([reading])
        events = stage.tick(row.ts_ns) + alerts
        result.alerts.extend((event, names[event.patient_token]) for event in events)
    return result


def alert_row(event: AlertEvent, patient: str) -> dict[str, object]:
    """One alert as `edge-agent replay --json` prints it."""
    moment = datetime.fromtimestamp(event.ts_ns / 1e9, tz=UTC)
    return {
        "time": moment.isoformat(timespec="milliseconds"),
        "patient": patient,
        "metric": by_code(event.metric_code).name if event.metric_code else None,
        "kind": event.kind,
        "severity": event.severity,
        "state": event.state,
        "alert_id": event.alert_id,
    }

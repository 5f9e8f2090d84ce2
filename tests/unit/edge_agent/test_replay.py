"""`edge-agent replay`: a recording through the agent's own filters and alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.filters import load_presets
from edge_agent.replay import RecordingError, parse_time, replay

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _recording(tmp_path: Path, extra: list[str]) -> Path:
    rows = ["time,patient,metric,value,quality"]
    for second in range(300):
        spo2 = 88 if 60 <= second < 120 else 97
        stamp = (T0 + timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
        rows.append(f"{stamp},bed-4,spo2,{spo2},")
    path = tmp_path / "session.csv"
    path.write_text("\n".join(rows + extra) + "\n", encoding="utf-8")
    return path


def test_desaturation_is_raised_and_cleared_and_bad_rows_reported(
    tmp_path: Path, repo_root: Path
) -> None:
    path = _recording(
        tmp_path, ["not-a-time,bed-4,spo2,97,", "1767225600000000000,bed-4,pulse,80,"]
    )
    config = repo_root / "configs" / "agent.toml"
    result = CliRunner().invoke(app, ["replay", str(path), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    alerts, summary = lines[:-1], lines[-1]["summary"]
    assert [(a["kind"], a["state"], a["patient"]) for a in alerts] == [
        ("spo2_low", "raised", "bed-4"),
        ("spo2_low", "cleared", "bed-4"),
    ]
    raised_at = datetime.fromisoformat(alerts[0]["time"])
    # Not before the 15 s persistence has elapsed after the dip began at 60 s.
    assert raised_at >= T0 + timedelta(seconds=75)
    assert summary == {
        "rows": 302,
        "rows_skipped": 2,
        "raised": {"spo2_low": 1},
        "cleared": {"spo2_low": 1},
    }
    assert "session.csv:302: skipped" in result.stderr
    assert "session.csv:303: skipped: metric 'pulse' is not in the catalogue" in result.stderr


def test_missing_columns_are_a_clear_error(tmp_path: Path, repo_root: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,who,value\n", encoding="utf-8")
    presets = load_presets(repo_root / "configs" / "filters.toml")
    with pytest.raises(RecordingError, match="missing column"):
        replay(path, presets)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1767225600000000000", 1_767_225_600_000_000_000),
        ("2026-01-01T00:00:00Z", 1_767_225_600_000_000_000),
        ("2026-01-01T01:00:00.5+01:00", 1_767_225_600_500_000_000),
    ],
)
def test_time_formats(text: str, ns: int) -> None:
    assert parse_time(text) == ns


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="no zone"):
        parse_time("2026-01-01T00:00:00")

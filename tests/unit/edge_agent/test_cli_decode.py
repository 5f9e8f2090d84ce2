"""`edge-agent decode`: one payload, the documented JSON keys, exit 2 with a reason on garbage."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edge_agent.cli import app

runner = CliRunner()


def test_heart_rate_by_uuid_and_by_name() -> None:
    # Flags 0x16: uint8 rate, contact supported and detected, RR intervals present (HRS §3.1).
    for name in ("2a37", "heart_rate"):
        result = runner.invoke(app, ["decode", name, "16480004", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {
            "heart_rate_bpm": 72,
            "sensor_contact": "detected",
            "energy_expended_kj": None,
            "rr_intervals_s": [1.0],
        }


def test_battery_level() -> None:
    result = runner.invoke(app, ["decode", "2a19", "5a", "--json"])
    assert json.loads(result.stdout) == {"battery_pct": 90}


def test_truncated_payload_exits_2_naming_characteristic_and_offset() -> None:
    result = runner.invoke(app, ["decode", "2a37", "01"])
    assert result.exit_code == 2
    assert "0x2A37 Heart Rate Measurement: truncated at offset 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_characteristic_and_bad_hex_exit_2() -> None:
    assert runner.invoke(app, ["decode", "ffff", "00"]).exit_code == 2
    result = runner.invoke(app, ["decode", "2a19", "zz"])
    assert result.exit_code == 2
    assert "not a hex string" in result.stderr

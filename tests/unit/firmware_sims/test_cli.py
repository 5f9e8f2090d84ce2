"""`firmware-sims list`, `firmware-sims vectors` and `firmware-sims ward`'s refusals."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.protocol import by_name
from firmware_sims.ble.peripherals import PERIPHERAL_KINDS
from firmware_sims.cli import app
from firmware_sims.remote.ward import remote_ward
from firmware_sims.remote.wire import WardLinkError
from firmware_sims.vectors import GATT_DIR, SERIAL_DIR

runner = CliRunner()


def test_list_names_every_ble_and_serial_model_with_catalogue_metrics() -> None:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    kinds = {row["kind"]: row for row in rows}
    assert set(PERIPHERAL_KINDS) | {"implant-receiver", "bedside-monitor"} == set(kinds)
    assert {row["transport"] for row in rows} == {"ble", "serial"}
    for row in rows:
        assert [by_name(metric).ucum for metric in row["metrics"]] == row["units"]
    assert kinds["chest-patch"]["in_ward_kit"] is True
    assert kinds["thermometer"]["device_clock"] is True


def test_vectors_prints_every_golden_vector() -> None:
    result = runner.invoke(app, ["vectors", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    gatt = 0
    for path in GATT_DIR.glob("*.toml"):
        doc = tomllib.loads(path.read_text())
        gatt += sum(len(doc.get(table, [])) for table in ("vector", "sfloat", "float"))
    implant = json.loads((SERIAL_DIR / "implant_frames.json").read_text())
    monitor = json.loads((SERIAL_DIR / "monitor_lines.json").read_text())
    serial = sum(len(implant[k]) for k in ("frames", "rejects")) + sum(
        len(monitor[k]) for k in ("sentences", "rejects")
    )
    assert len(rows) == gatt + serial
    first_hrm = next(row for row in rows if row["format"].startswith("2a37"))
    assert first_hrm["wire"] == "16 48 00 04"
    assert first_hrm["expect"]["heart_rate_bpm"] == 72
    only_serial = json.loads(runner.invoke(app, ["vectors", "--kind", "serial", "--json"]).output)
    assert len(only_serial) == serial


def test_vectors_rejects_an_unknown_kind() -> None:
    result = runner.invoke(app, ["vectors", "--kind", "usb"])
    assert result.exit_code == 2
    assert "--kind must be gatt, serial or all" in result.output


def test_ward_needs_a_config_with_a_ward_socket(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[gateway]\nid = "gw-1"\nsecret_file = "k"\nstate_dir = "s"\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 1883\n[filters]\npresets_file = "f.toml"\n'
        '[simulation]\npatients = 1\nledger_file = "l.jsonl"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["ward", "--config", str(config)])
    assert result.exit_code == 2
    assert "[simulation] ward_socket is not set" in result.output
    result = runner.invoke(app, ["ward", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2
    assert "missing.toml" in result.output


@pytest.mark.asyncio
async def test_an_agent_waits_for_its_ward_then_says_how_to_start_it(tmp_path: Path) -> None:
    with pytest.raises(WardLinkError, match="firmware-sims ward --config"):
        async with remote_ward(tmp_path / "nobody.sock", wait_s=0.3):
            pass

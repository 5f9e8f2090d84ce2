"""`cloud-sink news2`: the command line over the NEWS2 module."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cloud_sink.cli import app

runner = CliRunner()


def test_json_has_exactly_the_documented_keys_and_scores() -> None:
    argv = ["news2", "--rr", "22", "--spo2", "93", "--scale", "1", "--oxygen", "o2"]
    argv += ["--sbp", "105", "--hr", "115", "--acvpu", "A", "--temp", "38.3", "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(document) == {"total", "band", "complete", "subscores", "response"}
    assert document["subscores"] == {
        "rr": 2, "spo2": 2, "oxygen": 2, "sbp": 1, "hr": 2, "acvpu": 0, "temp": 1,
    }  # fmt: skip
    assert (document["total"], document["band"], document["complete"]) == (10, "high", True)


def test_missing_parameters_make_the_score_incomplete_not_zero() -> None:
    result = runner.invoke(app, ["news2", "--rr", "26", "--hr", "80", "--json"])
    document = json.loads(result.output)
    assert document["complete"] is False
    assert document["subscores"]["spo2"] is None
    assert (document["total"], document["band"]) == (3, "low-medium")


def test_impossible_input_exits_2_with_the_parameter_named() -> None:
    result = runner.invoke(app, ["news2", "--spo2", "120"])
    assert result.exit_code == 2
    assert "spo2" in result.output
    result = runner.invoke(app, ["news2", "--oxygen", "nasal"])
    assert result.exit_code == 2
    assert "oxygen" in result.output

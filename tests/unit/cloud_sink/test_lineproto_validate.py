"""Line protocol escaping and the sink's frame validation."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from cloud_sink.config import load_sink_config
from cloud_sink.errors import ConfigError
from cloud_sink.keyring import Keyring
from cloud_sink.lineproto import LineProtocolError, encode_line
from cloud_sink.validate import frame_points
from edge_agent.protocol import BindingEvent, DeviceBlock, Frame, UnknownKeyError, by_name
from edge_agent.protocol.settings import write_secret_file

P, D = "a" * 32, "b" * 32


def test_line_protocol_escapes_every_special_character() -> None:
    line = encode_line(
        "my measurement,x",
        {"z tag": "v=1,2", "a": "plain"},
        {'f"=,': 'say "hi" \\ ok', "n": 3, "ok": True, "x": 0.5},
        123,
    )
    assert line == (
        r"my\ measurement\,x,a=plain,z\ tag=v\=1\,2 "
        r'f"\=\,="say \"hi\" \\ ok",n=3i,ok=true,x=0.5 123'
    )


def test_line_protocol_refuses_non_finite_and_empty() -> None:
    with pytest.raises(LineProtocolError, match="not finite"):
        encode_line("m", {}, {"v": float("nan")}, 1)
    with pytest.raises(LineProtocolError, match="no fields"):
        encode_line("m", {}, {}, 1)


def _block(codes: list[int], values: list[float], ts_ns: list[int]) -> DeviceBlock:
    n = len(codes)
    return DeviceBlock(
        D, P, "hr-strap", np.array(codes, np.uint16), np.array(ts_ns, np.int64),
        np.array(values, np.float64), np.zeros(n, np.uint32), np.zeros(n, np.uint32),
    )  # fmt: skip


def test_valid_readings_become_vital_points() -> None:
    now = time.time_ns()
    hr = by_name("heart_rate").code
    points = frame_points(Frame("ward-1", now, (_block([hr], [72.0], [now]),)), now)
    assert points.lines == [
        f"vital,device={D},metric=heart_rate,patient={P} flags=0i,quality=0i,value=72 {now}"
    ]
    assert points.vitals == 1
    assert not points.refused


def test_invalid_readings_are_refused_by_reason_not_dropped() -> None:
    now = time.time_ns()
    hr = by_name("heart_rate").code
    block = _block(
        [hr, 999, hr, hr], [70.0, 1.0, float("nan"), 71.0], [now, now, now, now + 10**12]
    )
    frame = Frame("ward-1", now, (block,), bindings=(BindingEvent(D, P, "bound", now),))
    points = frame_points(frame, now)
    assert points.vitals == 1
    assert dict(points.refused) == {
        "unknown_metric": 1,
        "not_finite": 1,
        "timestamp_out_of_range": 1,
    }
    # A binding is not a point: the pipeline hands it to the identity registry.
    assert not any(line.startswith("binding") for line in points.lines)


def test_keyring_refuses_unknown_and_loose_secrets(tmp_path: Path) -> None:
    write_secret_file(tmp_path / "ward-1.key", os.urandom(32))
    keyring = Keyring(tmp_path)
    assert keyring.lookup("ward-1", 3).epoch == 3
    with pytest.raises(UnknownKeyError, match="not enrolled"):
        keyring.lookup("ward-2", 3)
    write_secret_file(tmp_path / "ward-3.key", os.urandom(32))
    (tmp_path / "ward-3.key").chmod(0o644)
    with pytest.raises(UnknownKeyError, match="unusable"):
        keyring.lookup("ward-3", 1)


def test_example_sink_config_in_repo_is_valid(repo_root: Path) -> None:
    config = load_sink_config(repo_root / "configs" / "sink.toml")
    assert config.writer.batch_lines == 5000
    assert config.writer.max_age_s == 0.25


def test_sink_config_errors_name_file_line_and_key(tmp_path: Path, repo_root: Path) -> None:
    text = (
        (repo_root / "configs" / "sink.toml")
        .read_text()
        .replace("max_age_ms = 250", "max_age_ms = 0")
    )
    path = tmp_path / "sink.toml"
    path.write_text(text)
    line = text.splitlines().index("max_age_ms = 0") + 1
    with pytest.raises(
        ConfigError, match=rf"sink\.toml:{line}: writer\.max_age_ms: 0 is outside 1\.\.60000"
    ):
        load_sink_config(path)


def test_the_identity_registry_file_and_reference_system_are_configurable(
    tmp_path: Path, repo_root: Path
) -> None:
    text = (repo_root / "configs" / "sink.toml").read_text()
    default = tmp_path / "default.toml"
    default.write_text(text)
    config = load_sink_config(default)
    assert config.identity_path == config.state_dir / "identity.json"
    assert config.reference_system == "urn:bedside-twin:hospital-patient-reference"
    shared = tmp_path / "shared.toml"
    shared.write_text(
        text + '\n[identity]\nfile = "shared/identity.json"\nreference_system = "urn:oid:1.2.3"\n'
    )
    config = load_sink_config(shared)
    assert config.identity_path == tmp_path / "shared" / "identity.json"
    assert config.reference_system == "urn:oid:1.2.3"
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text + '\n[identity]\nreference_system = "our MRNs"\n')
    with pytest.raises(ConfigError, match=r"identity\.reference_system"):
        load_sink_config(wrong)

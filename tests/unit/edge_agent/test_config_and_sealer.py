"""Agent configuration errors and the crash-safe sequence counter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.config import load_agent_config
from edge_agent.errors import ConfigError
from edge_agent.protocol import Direction, derive_session_key, open_envelope
from edge_agent.protocol.keys import SessionKey
from edge_agent.protocol.settings import write_secret_file
from edge_agent.publisher import Publisher
from edge_agent.sealer import Sealer, SequenceCounter

GOOD = """\
[gateway]
id = "ward3-bed12"
secret_file = "gw.key"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = 1883

[filters]
presets_file = "filters.toml"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_in_repo_is_valid(repo_root: Path) -> None:
    config = load_agent_config(repo_root / "configs" / "agent.toml")
    assert config.gateway.gateway_id
    assert config.broker.keepalive_s <= 10


def test_relative_paths_resolve_next_to_the_file(tmp_path: Path) -> None:
    config = load_agent_config(_write(tmp_path, GOOD))
    assert config.gateway.secret_file == tmp_path / "gw.key"
    assert config.pipeline.batch_interval_s == 1.0
    assert config.simulation is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            GOOD.replace("port = 1883", 'port = "1883"'),
            r"agent\.toml:8: mqtt\.port: must be an integer",
        ),
        (
            GOOD.replace("port = 1883", "port = 70000"),
            r"agent\.toml:8: mqtt\.port: 70000 is outside",
        ),
        (
            GOOD + "\n[pipeline]\nbatch_intervl_s = 2\n",
            r"agent\.toml:14: pipeline\.batch_intervl_s: unknown key",
        ),
        (
            GOOD.replace('id = "ward3-bed12"', 'id = "Ward 3"'),
            r"agent\.toml:2: gateway\.id: 'Ward 3' does not match",
        ),
        (GOOD.replace('host = "127.0.0.1"\n', ""), r"agent\.toml: mqtt\.host: missing"),
        ("[gateway\n", r"agent\.toml: \(syntax\)"),
        (
            GOOD + '\n[simulation]\npatients = 2\nledger_file = "l.jsonl"\nimplant_receivers = 3\n',
            r"agent\.toml:16: simulation\.implant_receivers: 3 is outside 0\.\.2",
        ),
        (
            GOOD + f'\n[simulation]\npatients = 2\nledger_file = "l.jsonl"\n'
            f'ward_socket = "/tmp/{"w" * 110}.sock"\n',
            r"simulation\.ward_socket: 1\d\d bytes; a unix socket path holds at most 107",
        ),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        load_agent_config(_write(tmp_path, text))


def test_simulation_section_selects_the_ward_and_its_serial_devices(tmp_path: Path) -> None:
    text = GOOD + (
        '\n[simulation]\npatients = 3\nledger_file = "l.jsonl"\n'
        "implant_receivers = 1\nbedside_monitors = 2\n"
    )
    simulation = load_agent_config(_write(tmp_path, text)).simulation
    assert simulation is not None
    assert (simulation.patients, simulation.implant_receivers, simulation.bedside_monitors) == (
        3,
        1,
        2,
    )
    assert simulation.ledger_file == tmp_path / "l.jsonl"
    assert simulation.ward_socket is None  # the ward runs in the agent's process


def test_ward_socket_runs_the_ward_apart_at_a_path_relative_to_the_config(tmp_path: Path) -> None:
    text = GOOD + '\n[simulation]\npatients = 1\nledger_file = "l.jsonl"\nward_socket = "w.sock"\n'
    simulation = load_agent_config(_write(tmp_path, text)).simulation
    assert simulation is not None
    assert simulation.ward_socket == tmp_path / "w.sock"


@pytest.mark.asyncio
async def test_the_mqtt_session_outlives_the_link(tmp_path: Path) -> None:
    config = load_agent_config(_write(tmp_path, GOOD))
    assert (config.broker.keepalive_s, config.broker.session_expiry_s) == (10, 86_400)
    client = Publisher(config.broker, config.gateway.gateway_id)._new_client()
    # What CONNECT will carry: a session that outlives the link (MQTT v5 §3.1.2.11.2), resumed
    # on every reconnect (clean start on the first connect only), and a 10 s keepalive.
    assert client._properties is not None
    assert client._properties.SessionExpiryInterval == 86_400  # type: ignore[attr-defined]
    assert client._clean_start == MQTT_CLEAN_START_FIRST_ONLY
    assert client._keepalive == 10


def test_world_readable_secret_is_refused(tmp_path: Path) -> None:
    config = load_agent_config(_write(tmp_path, GOOD))
    write_secret_file(config.gateway.secret_file, os.urandom(32))
    assert len(config.master_secret()) == 32
    assert (config.gateway.secret_file.stat().st_mode & 0o777) == 0o600
    config.gateway.secret_file.chmod(0o644)
    with pytest.raises(ConfigError, match="too open; chmod 600"):
        config.master_secret()


def test_counter_never_repeats_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "seq.json"
    first = SequenceCounter(state, reserve_block=4)
    issued = [first.next() for _ in range(10)]
    # A "crash": a new counter on the same file without any shutdown hook.
    second = SequenceCounter(state, reserve_block=4)
    later = [second.next() for _ in range(10)]
    assert second.epoch == first.epoch
    assert len(set(issued + later)) == 20
    assert min(later) > max(issued)
    assert json.loads(state.read_text())["reserved_until"] > max(later)


def test_lost_or_corrupt_state_starts_a_new_epoch(tmp_path: Path) -> None:
    state = tmp_path / "seq.json"
    state.write_text(json.dumps({"version": 1, "epoch": 5, "reserved_until": 100}))
    assert SequenceCounter(state).epoch == 5
    state.write_text("{torn")
    assert SequenceCounter(state).epoch > 5


def test_sealer_uses_the_counter_epoch_and_sequence(tmp_path: Path) -> None:
    secret = os.urandom(32)
    sealer = Sealer(secret, "ward3-bed12", SequenceCounter(tmp_path / "seq.json"))
    topic = "bt/v1/gw/ward3-bed12/up/telemetry"
    seqs = []
    for _ in range(3):
        seq, envelope = sealer.seal(topic, b"frame")

        def lookup(gateway_id: str, epoch: int) -> SessionKey:
            return derive_session_key(secret, gateway_id, epoch, Direction.UP)

        opened = open_envelope(topic, envelope, lookup)
        assert (opened.header.seq, opened.header.epoch) == (seq, sealer.epoch)
        seqs.append(seq)
    assert seqs == sorted(set(seqs))


def test_config_check_reports_file_line_key_and_masks_secrets(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("port = 1883", "port = 1883\nkeepalive_s = 100"))
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2
    assert f"{path}:9: mqtt.keepalive_s: 100 is outside 2..10" in result.stderr
    path = _write(tmp_path, GOOD)
    secret = os.urandom(32)
    write_secret_file(tmp_path / "gw.key", secret)
    (tmp_path / "filters.toml").write_text(
        (Path(__file__).resolve().parents[3] / "configs" / "filters.toml").read_text()
    )
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["config"]["gateway"]["gateway_id"] == "ward3-bed12"
    assert secret.hex() not in result.output

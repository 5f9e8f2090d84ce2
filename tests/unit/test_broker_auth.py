"""Broker credentials and ACL files as Mosquitto reads them, and the configs that name them."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sink.broker_auth import (
    DEFAULT_ITERATIONS,
    BrokerAdmin,
    BrokerAuthError,
    PasswordHash,
    acl_text,
    hash_password,
    mint_password,
    read_client_password,
    read_password_entries,
    reload_broker,
    remove_user,
    restore_entry,
    set_password,
    verify_password,
    write_client_password,
)
from cloud_sink.config import load_sink_config
from cloud_sink.errors import ConfigError
from edge_agent.config import load_agent_config
from edge_agent.errors import ConfigError as AgentConfigError

# Written by `mosquitto_passwd -c -b pwfile alice 'secret pw'` of Debian's mosquitto 2.0.11:
# an independent implementation of the format (PBKDF2-SHA512, 101 iterations, 12-byte salt).
MOSQUITTO_ENTRY = (
    "alice:$7$101$tsZJ+I0SceKRLPyE$9P7aNYEPAZdM9x3G0S/L4OZeBZ1hhN11xXgSyvagq5OQXVOLX8o2WVfGftpwFp6l"
    "+ASrvhywE0JRObvgqPNPNQ=="
)
HASH_RE = re.compile(r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==")


def _pbkdf2(password: str, encoded: str) -> bool:
    """The check Mosquitto makes, written out here from the format rather than imported."""
    _, kind, iterations, salt, digest = encoded.split("$")
    assert kind == "7"
    computed = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return computed == base64.b64decode(digest)


def test_a_mosquitto_passwd_entry_verifies(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    path.write_text(MOSQUITTO_ENTRY + "\n")
    entries = read_password_entries(path)
    assert verify_password(entries["alice"], "secret pw")
    assert not verify_password(entries["alice"], "secret pw ")
    assert _pbkdf2("secret pw", entries["alice"])


@settings(max_examples=10, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_our_hashes_have_mosquittos_layout_and_verify(password: str) -> None:
    encoded = hash_password(password)
    assert HASH_RE.fullmatch(encoded)
    assert _pbkdf2(password, encoded)
    assert verify_password(encoded, password)
    assert not verify_password(encoded, password + "x")


def test_a_fixed_salt_gives_the_pbkdf2_sha512_digest() -> None:
    salt = bytes(range(12))
    encoded = hash_password("pw", salt=salt)
    digest = hashlib.pbkdf2_hmac("sha512", b"pw", salt, DEFAULT_ITERATIONS)
    assert encoded == (
        f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_a_malformed_hash_raises_only_our_error(text: str) -> None:
    with contextlib.suppress(BrokerAuthError):  # anything else fails the test
        PasswordHash.decode(text)


@pytest.mark.parametrize(
    "encoded",
    [
        "$6$c2FsdA==$aGFzaA==",  # salted SHA-512, not PBKDF2
        "$7$0$AAAAAAAAAAAAAAAA$" + "A" * 86 + "==",  # no iterations
        "$7$101$AAAA$" + "A" * 86 + "==",  # 3-byte salt
        "$7$101$AAAAAAAAAAAAAAAA$AAAA",  # 3-byte hash
        "$7$101$!!!!$" + "A" * 86 + "==",  # not base64
    ],
)
def test_malformed_hashes_are_named(encoded: str) -> None:
    with pytest.raises(BrokerAuthError, match=r"\$7\$"):
        PasswordHash.decode(encoded)


def test_minted_passwords_carry_192_random_bits() -> None:
    passwords = {mint_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(base64.urlsafe_b64decode(p + "==")) == 24 for p in passwords)


def test_add_replace_restore_and_remove_keep_the_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    path.write_text(MOSQUITTO_ENTRY + "\n# a comment\n\n")
    assert set_password(path, "ward-1", "one") is None
    first = read_password_entries(path)["ward-1"]
    assert set_password(path, "ward-1", "two") == first
    entries = read_password_entries(path)
    assert list(entries) == ["alice", "ward-1"]
    assert verify_password(entries["ward-1"], "two")
    assert entries["alice"] == MOSQUITTO_ENTRY.partition(":")[2]
    assert path.stat().st_mode & 0o777 == 0o600
    restore_entry(path, "ward-1", first)
    assert verify_password(read_password_entries(path)["ward-1"], "one")
    assert remove_user(path, "ward-1")
    assert not remove_user(path, "ward-1")
    assert list(read_password_entries(path)) == ["alice"]
    restore_entry(path, "ward-2", None)  # a rollback of a first enrolment: nothing left
    assert list(read_password_entries(path)) == ["alice"]
    assert not list(tmp_path.glob(".passwords.*.tmp"))


@pytest.mark.parametrize(
    ("text", "where"),
    [("alice\n", "passwords:1"), ("a:$7$x\n\nb:\n", "passwords:3"), ("a:x\na:y\n", ":2")],
)
def test_a_broken_password_file_names_the_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "passwords"
    path.write_text(text)
    with pytest.raises(BrokerAuthError, match=where):
        read_password_entries(path)


@pytest.mark.parametrize("username", ["", "a:b", "gw/1", "gw+", "#", "x" * 65, "ünï"])
def test_usernames_that_would_break_the_file_or_the_acl_are_refused(
    tmp_path: Path, username: str
) -> None:
    with pytest.raises(BrokerAuthError, match="broker username"):
        set_password(tmp_path / "passwords", username, "pw")


def test_the_acl_gives_each_gateway_its_own_topics_and_the_sink_every_uplink() -> None:
    lines = [line for line in acl_text("cloud_sink").splitlines() if not line.startswith("#")]
    assert [line for line in lines if line] == [
        "user cloud_sink",
        "topic read bt/v1/gw/+/up/#",
        "topic read bt/v1/gw/+/status",
        "topic read bt/v1/gw/+/enrol/request",
        "topic write bt/v1/gw/+/enrol/response",
        "topic write bt/v1/gw/+/down/#",
        "pattern write bt/v1/gw/%u/up/#",
        "pattern write bt/v1/gw/%u/status",
        "pattern read bt/v1/gw/%u/down/#",
        "pattern write bt/v1/gw/%u/enrol/request",
        "pattern read bt/v1/gw/%u/enrol/response",
    ]
    prefixed = acl_text("cloud_sink", prefix="staging/")
    assert "pattern write staging/bt/v1/gw/%u/up/#" in prefixed
    with pytest.raises(BrokerAuthError):
        acl_text("cloud sink")


def test_client_password_files_are_0600_and_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sink.password"
    write_client_password(path, "s3cret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_client_password(path) == "s3cret"
    path.chmod(0o640)
    with pytest.raises(BrokerAuthError, match="too open"):
        read_client_password(path)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(BrokerAuthError, match="one line"):
        read_client_password(path)


@pytest.mark.parametrize(
    ("content", "why"),
    [("abc", "not a process id"), ("1", "not a process id"), ("99999999", "stale")],
)
def test_a_bad_pid_file_is_reported(tmp_path: Path, content: str, why: str) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(content)
    admin = BrokerAdmin(tmp_path / "passwords", tmp_path / "acl", pid_file=pid_file)
    with pytest.raises(BrokerAuthError, match=why):
        reload_broker(admin)
    with pytest.raises(BrokerAuthError, match="pid file"):
        reload_broker(BrokerAdmin(tmp_path / "p", tmp_path / "a", pid_file=tmp_path / "none"))


def test_a_failing_reload_command_is_reported(tmp_path: Path) -> None:
    admin = BrokerAdmin(tmp_path / "p", tmp_path / "a", reload_command=("false",))
    with pytest.raises(BrokerAuthError, match="exited with 1"):
        reload_broker(admin)


SINK = """
[mqtt]
host = "127.0.0.1"
port = 8883
{mqtt}
[keyring]
dir = "keyring"
[state]
dir = "state"
[influxdb]
url = "http://127.0.0.1:8086"
database = "bedside"
{broker}
"""
BROKER = """
[broker]
password_file = "passwords"
acl_file = "acl"
"""


def _sink(tmp_path: Path, mqtt: str = "", broker: str = "") -> Path:
    path = tmp_path / "sink.toml"
    path.write_text(SINK.format(mqtt=mqtt, broker=broker))
    return path


def test_the_sink_reads_tls_credentials_and_broker_sections(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-")
    write_client_password(tmp_path / "sink.password", "pw")
    config = load_sink_config(
        _sink(
            tmp_path,
            'tls_ca_file = "ca.pem"\nusername = "cloud_sink"\npassword_file = "sink.password"',
            BROKER + 'reload_command = "systemctl reload mosquitto"\n',
        )
    )
    assert config.mqtt.tls_ca_file == tmp_path / "ca.pem"
    assert (config.mqtt.username, config.mqtt.password) == ("cloud_sink", "pw")
    assert "pw" not in repr(config.mqtt)
    assert config.broker == BrokerAdmin(
        tmp_path / "passwords",
        tmp_path / "acl",
        reload_command=("systemctl", "reload", "mosquitto"),
    )
    assert load_sink_config(_sink(tmp_path)).broker is None  # optional: old configs still load


@pytest.mark.parametrize(
    ("mqtt", "broker", "message"),
    [
        ('username = "s"\npassword = "pw"', "", "mqtt.password: do not put"),
        ('username = "s"\npassword_file = "missing"', "", "mqtt.password_file: cannot read"),
        ('tls_ca_file = "missing.pem"', "", "mqtt.tls_ca_file"),
        ('username = "a:b"', "", "mqtt.username"),
        ("", BROKER, "set exactly one of pid_file"),
        ("", BROKER + 'pid_file = "p"\nreload_command = "x"\n', "set exactly one"),
        ("", BROKER + 'reload_command = ""\n', "reload_command: is empty"),
    ],
)
def test_sink_security_mistakes_are_config_errors(
    tmp_path: Path, mqtt: str, broker: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_sink_config(_sink(tmp_path, mqtt, broker))


def test_the_sink_may_load_without_its_password_file_only_when_asked(tmp_path: Path) -> None:
    path = _sink(tmp_path, 'username = "cloud_sink"\npassword_file = "later.password"')
    with pytest.raises(ConfigError, match="password_file"):
        load_sink_config(path)
    config = load_sink_config(path, password_required=False)
    assert config.mqtt.password is None
    assert config.mqtt.password_file == tmp_path / "later.password"


AGENT = """
[gateway]
id = "ward-7"
secret_file = "gw.key"
state_dir = "state"
[mqtt]
host = "127.0.0.1"
port = 8883
{mqtt}
[filters]
presets_file = "filters.toml"
"""


def test_the_agent_logs_in_as_its_gateway_id_with_the_enrolled_password(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT.format(mqtt=""))
    before = load_agent_config(path).broker
    assert (before.username, before.password) == ("ward-7", None)  # not enrolled yet
    assert before.password_file == tmp_path / "state" / "broker-password"
    write_client_password(tmp_path / "state" / "broker-password", "gw-pw")
    after = load_agent_config(path).broker
    assert after.password == "gw-pw"  # noqa: S105 - the test's own throw-away value
    assert "gw-pw" not in repr(after)
    os.chmod(tmp_path / "state" / "broker-password", 0o644)
    with pytest.raises(AgentConfigError, match="too open"):
        load_agent_config(path)
    path.write_text(AGENT.format(mqtt='password = "x"'))
    with pytest.raises(AgentConfigError, match=r"mqtt\.password"):
        load_agent_config(path)

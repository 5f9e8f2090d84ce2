"""The gateway's systemd unit keeps the hardening and the paths issue #8 and the agent rely on."""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

import pytest

from edge_agent.config import load_agent_config

REPO: Final = Path(__file__).resolve().parents[2]
UNIT_FILE: Final = REPO / "configs" / "bedside-twin-agent.service"
EXAMPLE_CONFIG: Final = REPO / "configs" / "agent.toml"
SERVICE_USER: Final = "bedside-twin"
# Specifiers of a system unit that the unit may use in paths (systemd.unit(5), "Specifiers").
SYSTEM_SPECIFIERS: Final = {"%C": "/var/cache", "%S": "/var/lib", "%%": "%"}
STATE_ROOT: Final = PurePosixPath("/var/lib")
CACHE_ROOT: Final = PurePosixPath("/var/cache")
# systemd.time(5) time span units, in seconds.
TIME_UNITS_S: Final = {
    "": 1.0,
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
_SPAN_PART: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)")
TRUE_WORDS: Final = ("1", "yes", "y", "true", "t", "on")


@dataclass(slots=True, frozen=True)
class Directive:
    """One `Key=value` assignment of a unit file, where it stands."""

    section: str
    key: str
    value: str
    line: int


def parse_unit(text: str) -> list[Directive]:
    """Parse a unit file as systemd.syntax(7) describes it: sections, repeatable keys, comments.

    configparser would fold repeated keys (DeviceAllow=, After=) into one; systemd keeps them all.
    """
    directives: list[Directive] = []
    section = ""
    pending = ""
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):  # a continuation: the value goes on on the next line
            pending_line = pending_line or number
            pending += line[:-1] + " "
            continue
        line = pending + line
        start = pending_line or number
        pending, pending_line = "", 0
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        assert equals, f"{UNIT_FILE.name}:{start}: not a Key=value line: {line!r}"
        assert section, f"{UNIT_FILE.name}:{start}: {key.strip()} outside any [section]"
        directives.append(Directive(section, key.strip(), value.strip(), start))
    return directives


def values(directives: list[Directive], section: str, key: str) -> list[str]:
    return [d.value for d in directives if d.section == section and d.key == key]


def single(directives: list[Directive], section: str, key: str) -> str:
    """The one value of a key that must be set exactly once (so no later line overrides it)."""
    found = values(directives, section, key)
    assert len(found) == 1, f"[{section}] {key}= is set {len(found)} times, expected once"
    return found[0]


def seconds(span: str) -> float:
    """A systemd.time(5) time span ("45s", "1min 30s", "90") in seconds."""
    if span.strip() == "infinity":
        return math.inf
    total = 0.0
    position = 0
    text = span.strip()
    while position < len(text):
        match = _SPAN_PART.match(text, position)
        assert match is not None, f"not a time span: {span!r}"
        assert match.group(2) in TIME_UNITS_S, f"unknown time unit in {span!r}"
        total += float(match.group(1)) * TIME_UNITS_S[match.group(2)]
        position = match.end()
    return total


def resolve_specifiers(path: str) -> str:
    return re.sub(r"%.", lambda m: SYSTEM_SPECIFIERS.get(m.group(0), m.group(0)), path)


def environment(directives: list[Directive]) -> dict[str, str]:
    """Every Environment= assignment (space-separated, optionally quoted), the last one winning."""
    result: dict[str, str] = {}
    for line in values(directives, "Service", "Environment"):
        for item in shlex.split(line):
            name, _, value = item.partition("=")
            result[name] = value
    return result


@pytest.fixture(scope="module")
def unit() -> list[Directive]:
    return parse_unit(UNIT_FILE.read_text(encoding="utf-8"))


def default_drain_timeout_s(tmp_path: Path) -> float:
    """The agent's drain_timeout_s when [pipeline] leaves it out, read through the real loader."""
    config = tmp_path / "agent.toml"
    config.write_text(
        '[gateway]\nid = "ward3-bed12"\nsecret_file = "gateway.key"\nstate_dir = "state"\n'
        '[mqtt]\nhost = "broker.invalid"\nport = 8883\n'
        '[filters]\npresets_file = "filters.toml"\n',
        encoding="utf-8",
    )
    return load_agent_config(config).pipeline.drain_timeout_s


def test_every_directive_has_a_comment_saying_why() -> None:
    lines = UNIT_FILE.read_text(encoding="utf-8").splitlines()
    for directive in parse_unit("\n".join(lines)):
        above = lines[directive.line - 2].strip() if directive.line >= 2 else ""
        assert above.startswith("#"), (
            f"{UNIT_FILE.name}:{directive.line}: {directive.key}= has no comment line above it"
        )


def test_runs_as_a_dedicated_system_user(unit: list[Directive]) -> None:
    assert single(unit, "Service", "User") == SERVICE_USER
    assert single(unit, "Service", "Group") == SERVICE_USER
    # A dynamic user would get a new uid per start and lose ownership of the registry and secret.
    assert not values(unit, "Service", "DynamicUser")
    groups = " ".join(values(unit, "Service", "SupplementaryGroups")).split()
    assert "dialout" in groups  # USB serial adapters
    assert "bluetooth" in groups  # BlueZ's D-Bus policy group


def test_restarts_on_failure_with_a_start_limit(unit: list[Directive]) -> None:
    assert single(unit, "Service", "Restart") == "on-failure"
    assert seconds(single(unit, "Service", "RestartSec")) > 0
    assert int(single(unit, "Unit", "StartLimitBurst")) > 1
    assert seconds(single(unit, "Unit", "StartLimitIntervalSec")) > 0


def test_no_new_privileges_and_a_read_only_system(unit: list[Directive]) -> None:
    assert single(unit, "Service", "NoNewPrivileges") == "yes"
    assert single(unit, "Service", "ProtectSystem") == "strict"
    assert single(unit, "Service", "ProtectHome") == "yes"
    assert single(unit, "Service", "PrivateTmp") == "yes"
    assert single(unit, "Service", "CapabilityBoundingSet") == ""


def test_the_example_state_dir_is_the_writable_state_directory(unit: list[Directive]) -> None:
    # Under ProtectSystem=strict only State/Cache/...Directory= and ReadWritePaths= are writable.
    state_directory = single(unit, "Service", "StateDirectory")
    assert single(unit, "Service", "StateDirectoryMode") == "0700"
    with EXAMPLE_CONFIG.open("rb") as handle:
        state_dir = tomllib.load(handle)["gateway"]["state_dir"]
    assert PurePosixPath(state_dir) == STATE_ROOT / state_directory


def test_numba_caches_in_the_writable_cache_directory(unit: list[Directive]) -> None:
    cache_directory = CACHE_ROOT / single(unit, "Service", "CacheDirectory")
    numba_cache = PurePosixPath(resolve_specifiers(environment(unit)["NUMBA_CACHE_DIR"]))
    assert numba_cache.is_absolute()
    assert numba_cache == cache_directory or cache_directory in numba_cache.parents


def test_stop_timeout_outlasts_the_agents_drain(unit: list[Directive], tmp_path: Path) -> None:
    assert single(unit, "Service", "KillSignal") == "SIGTERM"
    stop_s = seconds(single(unit, "Service", "TimeoutStopSec"))
    default_drain_s = default_drain_timeout_s(tmp_path)
    assert default_drain_s == 30.0  # the figure the unit's comment and the guide quote
    with EXAMPLE_CONFIG.open("rb") as handle:
        example_drain_s = tomllib.load(handle)["pipeline"]["drain_timeout_s"]
    assert stop_s > max(default_drain_s, example_drain_s)
    assert not math.isinf(stop_s)  # a hung agent must still be killed eventually


def test_exec_start_runs_the_installed_agent_with_json_logs(unit: list[Directive]) -> None:
    argv = shlex.split(single(unit, "Service", "ExecStart"))
    assert argv[0] == "/opt/bedside-twin/venv/bin/edge-agent"
    assert argv[1] == "run"
    assert argv[argv.index("--config") + 1] == "/etc/bedside-twin/agent.toml"
    assert argv[argv.index("--log-format") + 1] == "json"
    assert single(unit, "Service", "Type") == "simple"
    assert single(unit, "Service", "StandardOutput") == "journal"


def test_no_memory_deny_write_execute_because_numba_jits(unit: list[Directive]) -> None:
    setting = values(unit, "Service", "MemoryDenyWriteExecute")
    assert not any(value.lower() in TRUE_WORDS for value in setting)


def test_device_access_is_closed_except_serial_adapters(unit: list[Directive]) -> None:
    assert single(unit, "Service", "DevicePolicy") == "closed"
    allowed = {
        value.split()[0]: value.split()[1] for value in values(unit, "Service", "DeviceAllow")
    }
    assert allowed == {"char-ttyUSB": "rw", "char-ttyACM": "rw"}
    # Device groups resolve from /proc/devices at start: their drivers must be loaded before.
    wants = " ".join(values(unit, "Unit", "Wants")).split()
    after = " ".join(values(unit, "Unit", "After")).split()
    for module in ("usbserial", "cdc_acm"):
        assert f"modprobe@{module}.service" in wants
        assert f"modprobe@{module}.service" in after


def test_socket_families_cover_dbus_and_the_broker(unit: list[Directive]) -> None:
    families = single(unit, "Service", "RestrictAddressFamilies").split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    assert not any(family.startswith("~") for family in families)  # an allow list, not a deny list
    assert "AF_PACKET" not in families


def _systemd_analyze() -> str:
    """The binary, or a skip (a fail under CI) that says why it is missing."""
    found = shutil.which("systemd-analyze")
    if found is not None:
        return found
    reason = (
        "systemd-analyze not found (Debian package 'systemd'; containers without systemd, "
        "such as a minimal Debian image, lack it): the unit was not checked by systemd itself"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must verify the unit with systemd: {reason}")
    pytest.skip(reason)


def _verify(analyze: str, unit_text: str, folder: Path) -> list[str]:
    """`systemd-analyze verify` on a copy whose ExecStart exists here; lines about our unit.

    verify exits 0 even for unknown keys and unparsable values (it logs them and ignores the
    line), so the check is on what it says about this unit, not on its exit status alone.
    """
    copy = folder / UNIT_FILE.name
    copy.write_text(
        re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", unit_text), encoding="utf-8"
    )
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=60,
        check=False,
    )
    said = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(said)
    return [line for line in said if UNIT_FILE.stem in line]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    complaints = _verify(analyze, UNIT_FILE.read_text(encoding="utf-8"), tmp_path)
    assert complaints == []


def test_systemd_analyze_verify_would_catch_a_typo(tmp_path: Path) -> None:
    # Proves the check above can fail: a misspelt value must be reported about this unit.
    analyze = _systemd_analyze()
    broken = UNIT_FILE.read_text(encoding="utf-8").replace("Type=simple", "Type=simpel")
    complaints = _verify(analyze, broken, tmp_path)
    assert any("simpel" in line for line in complaints), complaints

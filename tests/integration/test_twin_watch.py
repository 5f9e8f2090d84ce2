"""`cloud-sink twin watch` against a real InfluxDB: the table follows the data, Ctrl-C exits 0."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud_sink.cli import app
from cloud_sink.clinical import record_observation
from cloud_sink.influx import InfluxV1
from cloud_sink.lineproto import vital_line
from firmware_sims.services import InfluxServer, free_port
from tests.support.access import access_section, person

pytestmark = [pytest.mark.integration]

S = 1_000_000_000
PATIENT = "b2" * 16
MONITOR = "6" * 32
# Only turns a hung child into a failure; nothing here waits for a time to pass.
HANG_GUARD_S = 60.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]|\r")
# A watch's access check is tested in test_access_audit.py; here an admin watches.
ADMIN = person("it-admin", "admin")
runner = CliRunner()


def _config(path: Path, url: str, database: str) -> Path:
    path.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = 1883\n\n[keyring]\ndir = "keyring"\n\n'
        f'[state]\ndir = "state"\n\n[influxdb]\nurl = "{url}"\ndatabase = "{database}"\n'
        + access_section(ADMIN),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def influx(influxdb: InfluxServer, isolation: str) -> Iterator[InfluxV1]:
    client = InfluxV1(influxdb.url, isolation)
    client.create_database()
    yield client
    client.close()


@pytest.fixture
def config(tmp_path: Path, influxdb: InfluxServer, isolation: str) -> Path:
    return _config(tmp_path / "sink.toml", influxdb.url, isolation)


def _half_hour(influx: InfluxV1) -> None:
    """A calm patient: 30 minutes of normal vitals, alert, on air -- NEWS2 0."""
    now_ns = time.time_ns()
    lines = []
    for k in range(61):
        ts_ns = now_ns - (60 - k) * 30 * S
        for metric, value in (("heart_rate", 80.0), ("resp_rate", 16.0), ("spo2", 97.0),
                              ("body_temp", 37.0), ("bp_systolic", 120.0)):  # fmt: skip
            lines.append(vital_line(PATIENT, metric, MONITOR, value=value, quality=0, flags=0,
                                    ts_ns=ts_ns))  # fmt: skip
    influx.write(lines)
    for kind, entry in (("acvpu", "A"), ("oxygen", "air"), ("spo2_scale", "1")):
        record_observation(influx, PATIENT, kind, entry, now_ns)


def _breathing_fast(influx: InfluxV1) -> None:
    # Newer than every stored reading (newest wins): 26 /min scores 3, the red score.
    influx.write([vital_line(PATIENT, "resp_rate", MONITOR, value=26.0, quality=0, flags=0,
                             ts_ns=time.time_ns())])  # fmt: skip


def _watch_argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cloud_sink", "twin", "watch", "--config", str(config), *args]


_FOOTER = re.compile(r"^refresh (\d+) at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00)")


def _stamp_ns(footer: str) -> int:
    """The time a refresh began, from its footer `refresh N at <ISO time>...`."""
    found = _FOOTER.match(footer)
    assert found is not None, footer
    return round(datetime.fromisoformat(found[2]).timestamp() * 1000) * 1_000_000


def _ward_row(frame: str) -> str:
    (row,) = [line for line in frame.splitlines() if PATIENT[:12] in line]
    return row


def test_the_ward_table_follows_the_data_until_ctrl_c(config: Path, influx: InfluxV1) -> None:
    _half_hour(influx)
    env = {**os.environ, "COLUMNS": "220", "LINES": "100", **ADMIN.env}
    process = subprocess.Popen(
        _watch_argv(config, "--interval", "0.2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    guard = threading.Timer(HANG_GUARD_S, process.kill)
    guard.start()
    frames: list[tuple[int, str]] = []
    try:
        assert process.stdout is not None
        lines: list[str] = []
        changed_ns: int | None = None
        for line in process.stdout:  # into a pipe every refresh is printed in turn
            if not line.startswith("refresh "):
                lines.append(line)
                continue
            frames.append((_stamp_ns(line), "".join(lines)))
            lines = []
            if changed_ns is None:
                _breathing_fast(influx)
                changed_ns = time.time_ns()
            elif frames[-1][0] > changed_ns:
                break  # a refresh that began after the change was written
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, errors = process.communicate()
    finally:
        guard.cancel()
    assert process.returncode == 0, errors
    assert "Traceback" not in errors
    first, last = frames[0][1], frames[-1][1]
    assert "ward: 1 patients" in first
    assert "band if trends hold" in first
    assert "zero" in _ward_row(first)
    assert "low-medium" not in _ward_row(first)
    # NEWS2 3: respiration 26 /min is the red score (RCP 2017 Chart 1 and 2).
    assert "low-medium" in _ward_row(last)
    assert "│ 3 " in _ward_row(last)


def test_iterations_stop_the_watch_by_itself(config: Path, influx: InfluxV1) -> None:
    _half_hour(influx)
    result = runner.invoke(
        app,
        ["twin", "watch", "--config", str(config), "--interval", "0.01", "--iterations", "2"],
        env=ADMIN.env,
    )
    assert result.exit_code == 0, result.output
    footers = [line for line in result.output.splitlines() if line.startswith("refresh ")]
    assert [f.split(" at ")[0] for f in footers] == ["refresh 1", "refresh 2"]
    assert all("stops after 2" in f for f in footers)
    assert result.output.count("ward: 1 patients") == 2


class Terminal:
    """The master side of a pseudo-terminal: everything the watcher drew, raw and as text."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.raw = bytearray()

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def read_until(self, predicate: Callable[[str], bool]) -> None:
        """Read until `predicate(text so far)` holds; fail if the child ends first."""
        deadline = time.monotonic() + HANG_GUARD_S
        while not predicate(self.text):
            ready, _, _ = select.select(
                [self.master], [], [], max(0.0, deadline - time.monotonic())
            )
            if not ready or not self._read():
                pytest.fail(f"watch never showed it; screen so far:\n{self.text[-3000:]}")

    def drain(self) -> None:
        while self._read():
            pass

    def _read(self) -> bool:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        self.raw += chunk
        return bool(chunk)


def test_one_twin_redrawn_live_on_a_terminal_until_ctrl_c(config: Path, influx: InfluxV1) -> None:
    _half_hour(influx)
    master, slave = pty.openpty()
    # rich.live redraws in place only on a real terminal; give it 220 x 120 cells.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 120, 220, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        _watch_argv(config, "--patient", PATIENT, "--interval", "0.2"),
        stdin=slave, stdout=slave, stderr=slave,
        env={**env, "TERM": "xterm-256color", **ADMIN.env},
    )  # fmt: skip
    os.close(slave)
    guard = threading.Timer(HANG_GUARD_S, process.kill)
    guard.start()
    terminal = Terminal(master)
    try:
        terminal.read_until(lambda text: "refresh 1 at " in text)
        assert "NEWS2 0 (zero)" in terminal.text
        assert "Ctrl-C stops" in terminal.text
        _breathing_fast(influx)
        mark = len(terminal.text)
        terminal.read_until(lambda text: "NEWS2 3 (low-medium)" in text[mark:])
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait() == 0
        terminal.drain()
    finally:
        guard.cancel()
        os.close(master)
    assert "Traceback" not in terminal.text
    assert "Aborted" not in terminal.text
    # Redrawn in place: before each new refresh the cursor goes back up over the old one,
    # erasing line by line (ECMA-48 CUU "ESC [ 1 A" and EL "ESC [ 2 K").
    assert b"\x1b[1A\x1b[2K" in terminal.raw


def test_watch_refuses_what_it_cannot_watch(config: Path, influx: InfluxV1, tmp_path: Path) -> None:
    def watch(*args: str, cfg: Path = config) -> tuple[int, str]:
        result = runner.invoke(app, ["twin", "watch", "--config", str(cfg), *args], env=ADMIN.env)
        return result.exit_code, result.output

    code, output = watch("--interval", "0")
    assert (code, "--interval" in output) == (2, True)
    code, output = watch("--iterations", "0")
    assert (code, "--iterations" in output) == (2, True)
    code, output = watch("--patient", "not-a-token", "--iterations", "1")
    assert code == 2
    assert "not a patient token" in output
    code, output = watch("--patient", "f" * 32, "--iterations", "1")
    assert code == 2
    assert "no vitals stored" in output
    # Nothing listening: the first refresh fails with the reason, exit 2 (no empty table).
    dead = _config(tmp_path / "dead.toml", f"http://127.0.0.1:{free_port()}", "nothing")
    code, output = watch("--iterations", "1", cfg=dead)
    assert code == 2
    assert "influxdb unavailable" in output


def test_a_database_outage_keeps_the_last_table_up_and_the_watch_recovers(
    tmp_path: Path, isolation: str
) -> None:
    # Its own InfluxDB (it starts in a fraction of a second), to stop and start under the watch.
    with InfluxServer(tmp_path / "influxdb") as server:
        client = InfluxV1(server.url, isolation)
        client.create_database()
        _half_hour(client)
        config = _config(tmp_path / "sink.toml", server.url, isolation)
        process = subprocess.Popen(
            _watch_argv(config, "--interval", "0.1"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "220", **ADMIN.env},
        )  # fmt: skip
        guard = threading.Timer(HANG_GUARD_S, process.kill)
        guard.start()
        states: list[str] = []
        frames: list[str] = []
        lines: list[str] = []
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if not line.startswith("refresh "):
                    continue
                frames.append("".join(lines))
                lines = []
                state = "down" if "database unavailable" in line else "up"
                if not states:
                    server.stop()
                elif state == "down" and states[-1] == "up":
                    server.start()
                states.append(state)
                if states[-1] == "up" and "down" in states:
                    break  # a refresh from the database again, after the outage
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate()
        finally:
            guard.cancel()
            client.close()
    assert process.returncode == 0, errors
    assert states[0] == "up"
    assert states[-1] == "up"
    down = frames[states.index("down")]
    # The previous table stays up, the footer says why it is not fresh.
    assert "ward: 1 patients" in down
    assert "zero" in _ward_row(down)
    assert "showing the previous refresh" in down

"""Session fixtures: one real Mosquitto and one real InfluxDB 1.x on free loopback ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sims.services import InfluxServer, MosquittoServer, find_binary


def _require(binary: str, package: str) -> None:
    """Outside CI a missing server skips with the reason; in CI it fails, never hides."""
    if find_binary(binary) is not None:
        return
    reason = f"{binary} not installed (Debian package '{package}'; scripts/bootstrap installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run every integration test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    _require("mosquitto", "mosquitto")
    with MosquittoServer(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    _require("influxd", "influxdb")
    with InfluxServer(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


@pytest.fixture
def isolation() -> str:
    """A unique name: tests use it as database name and topic prefix on the shared servers."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent

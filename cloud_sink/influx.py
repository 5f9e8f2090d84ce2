"""A small InfluxDB 1.x HTTP client: /write (line protocol) and /query (InfluxQL), keep-alive.

Debian's InfluxDB 1.6 has no /api/v2/write (DESIGN §8), so influxdb-client's write API cannot
target it; the v1 endpoints also serve InfluxDB 3 through its compatibility API.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from cloud_sink.errors import ConfigError, DatabaseRejected, DatabaseUnavailable, QueryError

RETRY_AFTER_S: Final = 1.0


@dataclass(slots=True, frozen=True)
class Series:
    """One series of a query result."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


class InfluxV1:
    """Thread-safe (one request at a time) client for one database."""

    def __init__(
        self,
        url: str,
        database: str,
        timeout_s: float = 10.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = "(influxdb)"
            raise ConfigError(msg, "influxdb.url", f"{url!r} is not an http(s) URL")
        self.url = url
        self.database = database
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 8086)
        self._timeout_s = timeout_s
        self._headers = {"Connection": "keep-alive"}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            factory = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = factory(self._host, self._port, timeout=self._timeout_s)
        return self._conn

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        with self._lock:
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers={**self._headers, **headers})
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._conn = None
                msg = f"{type(exc).__name__}: {exc}"
                raise DatabaseUnavailable(msg, RETRY_AFTER_S) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def ping(self) -> bool:
        try:
            status, _ = self._request("GET", "/ping", None, {})
        except DatabaseUnavailable:
            return False
        return status == 204

    def write(self, lines: list[str]) -> None:
        """Write lines with ns precision; raise DatabaseRejected (4xx) or DatabaseUnavailable."""
        if not lines:
            return
        query = urlencode({"db": self.database, "precision": "ns"})
        body = ("\n".join(lines) + "\n").encode("utf-8")
        status, reply = self._request(
            "POST", f"/write?{query}", body, {"Content-Type": "text/plain; charset=utf-8"}
        )
        if status == 204:
            return
        reason = _error_text(reply)
        if 400 <= status < 500 and status not in (408, 429):
            raise DatabaseRejected(status, reason)
        msg = f"HTTP {status}: {reason}"
        raise DatabaseUnavailable(msg, RETRY_AFTER_S)

    def query(self, influxql: str, *, write: bool = False) -> list[Series]:
        """Run InfluxQL (POST when it changes state); return the first result's series."""
        params = {"db": self.database, "q": influxql, "epoch": "ns"}
        if write:
            status, reply = self._request(
                "POST",
                "/query",
                urlencode(params).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            status, reply = self._request("GET", f"/query?{urlencode(params)}", None, {})
        if status != 200:
            msg = f"HTTP {status}: {_error_text(reply)}"
            raise QueryError(msg)
        try:
            document = json.loads(reply)
            result = document["results"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            msg = f"unexpected reply: {reply[:200]!r}"
            raise QueryError(msg) from exc
        if "error" in result:
            raise QueryError(str(result["error"]))
        return [
            Series(
                name=str(series.get("name", "")),
                tags=dict(series.get("tags") or {}),
                # A series can come without values (SHOW on an empty database, some empty
                # selections); that is an empty answer, not a malformed one.
                columns=list(series.get("columns") or []),
                values=list(series.get("values") or []),
            )
            for series in result.get("series", [])
        ]

    def create_database(self) -> None:
        """Idempotent: CREATE DATABASE succeeds when the database already exists."""
        self.query(f'CREATE DATABASE "{self.database}"', write=True)


def _error_text(reply: bytes) -> str:
    try:
        return str(json.loads(reply).get("error", reply[:200]))
    except (ValueError, AttributeError):
        return reply[:200].decode("utf-8", "replace")

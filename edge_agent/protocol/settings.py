"""Strict TOML settings shared by both ends: every config error reads `file:line: key: reason`."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Final, TypeVar

from edge_agent.protocol.errors import WireError

_T = TypeVar("_T")
_MISSING: Final = object()


class SettingsError(WireError):
    """A configuration file or one of its keys is wrong; `location` is `file:line` when known."""

    def __init__(self, location: str, key: str, reason: str) -> None:
        super().__init__(f"{location}: {key}: {reason}")
        self.location = location
        self.key = key
        self.why = reason


class Document:
    """A parsed TOML file that remembers where each key was written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(str(path), "(file)", f"cannot read: {exc.strerror}") from exc
        try:
            self.data: dict[str, Any] = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(str(path), "(syntax)", str(exc)) from exc
        self._lines = self.text.splitlines()

    def line_of(self, dotted: str) -> int | None:
        """Best-effort line number of `section.key`: the key's line inside its [section] header."""
        *section, leaf = dotted.split(".")
        header = re.compile(r"^\s*\[\[?\s*" + re.escape(".".join(section)) + r"\s*\]\]?\s*(#.*)?$")
        assignment = re.compile(r"^\s*" + re.escape(leaf) + r"\s*=")
        in_section = not section
        for number, line in enumerate(self._lines, start=1):
            if line.lstrip().startswith("["):
                in_section = bool(section) and bool(header.match(line))
                if in_section and not leaf:
                    return number
                continue
            if in_section and assignment.match(line):
                return number
        return None

    def error(self, dotted: str, reason: str) -> SettingsError:
        line = self.line_of(dotted)
        location = f"{self.path}:{line}" if line is not None else str(self.path)
        return SettingsError(location, dotted, reason)

    def root(self) -> Table:
        return Table(self, "", self.data)


class Table:
    """One TOML table; each getter validates one key, and `finish` rejects keys nobody asked for."""

    def __init__(self, doc: Document, name: str, data: dict[str, Any]) -> None:
        self.doc = doc
        self.name = name
        self.data = data
        self._seen: set[str] = set()

    def _dotted(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def _get(self, key: str, default: object, kinds: tuple[type, ...], what: str) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.doc.error(self._dotted(key), f"missing (required {what})")
            return default
        value = self.data[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.doc.error(self._dotted(key), f"must be {what}, got {value!r}")
        return value

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: object = _MISSING, pattern: str | None = None) -> str:
        value: str = self._get(key, default, (str,), "a string")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise self.doc.error(self._dotted(key), f"{value!r} does not match {pattern}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: object = _MISSING) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.doc.error(self._dotted(key), f"must be one of {', '.join(choices)}")
        return value

    def integer(
        self, key: str, default: object = _MISSING, low: int = 0, high: int = 2**63 - 1
    ) -> int:
        value: int = self._get(key, default, (int,), "an integer")
        if not low <= value <= high:
            raise self.doc.error(self._dotted(key), f"{value} is outside {low}..{high}")
        return value

    def number(
        self, key: str, default: object = _MISSING, low: float = 0.0, high: float = float("inf")
    ) -> float:
        value = float(self._get(key, default, (int, float), "a number"))
        if not low <= value <= high:
            raise self.doc.error(self._dotted(key), f"{value} is outside {low}..{high}")
        return value

    def boolean(self, key: str, default: object = _MISSING) -> bool:
        value: bool = self._get(key, default, (bool,), "true or false")
        return value

    def path(self, key: str, default: object = _MISSING) -> Path:
        """A path; relative paths are relative to the config file's folder."""
        value = self.string(key, default)
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.doc.path.parent / path)

    def table(self, key: str) -> Table:
        """A required [section]."""
        found = self.optional_table(key)
        if found is None:
            raise self.doc.error(self._dotted(key), "missing section")
        return found

    def optional_table(self, key: str) -> Table | None:
        """An optional [section]; None when absent."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.doc.error(self._dotted(key), "must be a [section]")
        return Table(self.doc, self._dotted(key), value)

    def table_list(self, key: str) -> list[Table]:
        """An optional array of tables ([[key]] sections); empty when absent."""
        self._seen.add(key)
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.doc.error(self._dotted(key), "must be [[sections]]")
        return [Table(self.doc, f"{self._dotted(key)}[{n}]", item) for n, item in enumerate(value)]

    def finish(self) -> None:
        """Reject unknown keys: a typo must not silently fall back to a default."""
        for key in self.data:
            if key not in self._seen:
                raise self.doc.error(self._dotted(key), "unknown key")


def load(path: Path) -> Table:
    """Parse a TOML file into its root table."""
    return Document(path).root()


def read_secret_file(path: Path, expected_bytes: int) -> bytes:
    """Read a hex secret; refuse it when group or others can read it (keys live in 0600 files)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(str(path), "(secret)", f"cannot read secret file: {exc}") from exc
    if mode & 0o077:
        raise SettingsError(
            str(path), "(secret)", f"mode {mode & 0o777:04o} is too open; chmod 600 it"
        )
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise SettingsError(str(path), "(secret)", "must hold one hex string") from None
    if len(secret) != expected_bytes:
        raise SettingsError(
            str(path), "(secret)", f"must hold {expected_bytes} bytes, holds {len(secret)}"
        )
    return secret


def write_secret_file(path: Path, secret: bytes) -> None:
    """Create a secret file with mode 0600 from the start (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with open(fd, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")

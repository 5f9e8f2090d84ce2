"""Exception hierarchy of the edge agent: every error it raises derives from EdgeAgentError."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EdgeAgentError(Exception):
    """Root of every error the edge agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A configuration file is unreadable or a key in it is wrong; fix the file and restart."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


class SourceError(EdgeAgentError):
    """A device source failed; the pipeline logs it and the source retries."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"source {source}: {reason}")
        self.source = source
        self.reason = reason


class TransportError(EdgeAgentError):
    """The broker could not be reached or refused a publish; retry after the given delay."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(f"transport: {reason} (retry in {retry_after_s:.1f} s)")
        self.reason = reason
        self.retry_after_s = retry_after_s


def sole_error(exc: BaseException) -> BaseException:
    """The one error inside nested exception groups (TaskGroups wrap what their body raises);
    `exc` itself when it is not a group or holds several."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run_command(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run for a CLI command: an error of ours raised inside the (simulated) hardware's
    task groups surfaces as itself, so the command reports it in one line."""
    try:
        return asyncio.run(coro)
    except BaseExceptionGroup as group:
        error = sole_error(group)
        if isinstance(error, EdgeAgentError):
            raise error from None
        raise

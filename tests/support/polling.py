"""Polling helper for async tests: wait for a condition, fail with what never happened."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest


async def until(predicate: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
    """Yield until `predicate()` holds; the cap only turns a hang into a failure."""
    try:
        async with asyncio.timeout(timeout_s):
            for _ in itertools.count():
                if predicate():
                    return
                await asyncio.sleep(0.002)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")

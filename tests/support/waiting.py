"""Waiting for a state to be reached, instead of sleeping for as long as it usually takes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Check = Callable[[], bool | Awaitable[bool]]


async def wait_until(
    check: Check, *, timeout: float = 5.0, every: float = 0.05, what: str = "the condition"
) -> None:
    """Return as soon as `check()` holds; fail the test, naming `what`, if it does not
    within `timeout`."""
    deadline = time.monotonic() + timeout
    while not await _holds(check):
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:g}s"
        await asyncio.sleep(every)


async def _holds(check: Check) -> bool:
    result = check()
    return await result if inspect.isawaitable(result) else result


def wait_until_blocking(
    check: Callable[[], bool],
    *,
    timeout: float = 5.0,
    every: float = 0.05,
    message: str = "condition not reached",
) -> None:
    """`wait_until` for synchronous tests driving other processes."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{message} within {timeout:g}s"
        time.sleep(every)

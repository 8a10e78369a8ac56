"""Holding a lease while work runs: renew it in the background, a third of its term apart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger("filegate.leases")


@asynccontextmanager
async def renewing(
    renew: Callable[[], Awaitable[bool]], *, lease_seconds: float, what: str
) -> AsyncIterator[None]:
    """Call `renew` every lease/3 seconds while the block runs; it returns False once the
    lease is no longer ours (renewing stops). A failed renewal is retried at the next beat:
    the work goes on, and a lease that lapses meanwhile is taken over as it should be.

    When the block ends, a renewal in flight is let finish rather than cancelled: cancelled
    midway, its database connection would be dropped unreturned."""
    done = asyncio.Event()

    async def beat() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), lease_seconds / 3)
                return
            try:
                kept = await renew()
            except Exception as exc:
                log.warning("could not renew the lease of %s: %s", what, type(exc).__name__)
                continue
            if not kept:
                log.warning("the lease of %s was taken over while it ran", what)
                return

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        done.set()
        try:
            await task
        except asyncio.CancelledError:
            task.cancel()  # this block itself was cancelled while waiting: stop at once
            raise

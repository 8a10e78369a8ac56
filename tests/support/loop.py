"""Watching the event loop: how long it went without running other tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc


class Heartbeat:
    """Measures the longest time the event loop went without running a 10 ms ticker.

    What it is after is blocking I/O in the code under test, not the collector: the objects a
    long test session has piled up are frozen out of garbage collection meanwhile, so a full
    collection of them cannot pose as a stalled loop."""

    TICK = 0.01

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        gc.collect()
        gc.freeze()
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.unfreeze()

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.TICK)
            self.longest = max(self.longest, loop.time() - started - self.TICK)

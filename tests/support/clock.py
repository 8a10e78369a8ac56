"""A clock a test moves by hand, in place of the gateway's real one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.core.clock import Clock


class FakeClock(Clock):
    """Stands still until `advance`; monotonic seconds and the wall clock move together.

    The wall clock starts at the real time, so rows the database or the real clock wrote
    before the test moved it still compare sensibly."""

    def __init__(self, start: datetime | None = None) -> None:
        self._monotonic = 1000.0
        self._now = start or datetime.now(UTC)

    def __call__(self) -> float:
        """The monotonic reading, for components that take a bare `() -> float` clock."""
        return self._monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        """Wall-clock seconds, for components that read `time.time()` (object ages)."""
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._now += timedelta(seconds=seconds)

"""The time the gateway reads, in one object a test can replace."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Monotonic seconds for intervals and leases in process; the UTC wall clock for rows."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = Clock()

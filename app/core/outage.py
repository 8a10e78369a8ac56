"""Telling a dependency outage apart from a bug, and logging it once per change of state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import exc as sa_exc

log = logging.getLogger("filegate.outage")

DATABASE_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # refused, reset, server gone, SQLite locked or unopenable
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # no pooled connection within pool_timeout
    sa_exc.DisconnectionError,
    ConnectionError,
)


def is_database_outage(exc: BaseException) -> bool:
    """The registry database could not be reached (as opposed to a bug in a query)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, DATABASE_OUTAGE_ERRORS)


def _summary(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first[:200]}" if first else type(cause).__name__


class OutageLog:
    """One warning when a dependency becomes unreachable, one when it is back; none between."""

    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.down_since: float | None = None
        self.refused = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        self.refused += 1
        if self.down_since is None:
            self.down_since = self._now()
            log.warning(
                "%s unreachable (%s); answering 503 until it is back", self.name, _summary(exc)
            )

    def reached(self) -> None:
        if self.down_since is not None:
            log.warning(
                "%s reachable again after %.1f s (%d requests answered 503)",
                self.name,
                self._now() - self.down_since,
                self.refused,
            )
            self.down_since = None
            self.refused = 0

    def _now(self) -> float:
        return self._clock()

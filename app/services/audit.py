"""Recording audit events; callers add them inside the transaction they describe.

Every value is made safe to store before it reaches a column: control and format characters
become `?` and a value longer than its column is cut with a visible `…`, so a refusal is always
recorded, whatever path or reason it carries. Anonymous refusals are throttled per client
address: beyond a threshold a minute they are counted, and one summary row says how many.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.models import AuditEvent
from app.repositories.audit import AuditRepository

COLUMN_LIMITS = {
    "request_id": 64,
    "actor": 64,
    "tenant_id": 40,
    "action": 64,
    "resource": 200,
    "client_addr": 64,
    "detail": 500,
}


def bounded(value: str | None, limit: int) -> str | None:
    """`value` with control and format characters shown as `?`, cut to `limit` with `…`."""
    if value is None:
        return None
    safe = "".join("?" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in value)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def _event(**values: Any) -> AuditEvent:
    for name, limit in COLUMN_LIMITS.items():
        values[name] = bounded(values.get(name), limit)
    return AuditEvent(**values)


def record(
    *,
    session: AsyncSession,
    ctx: CallContext,
    action: str,
    resource: str | None,
    outcome: str = "success",
    status_code: int | None = 200,
    detail: str | None = None,
) -> None:
    """Add an audit row to the session's current unit of work."""
    AuditRepository(session).add(
        _event(
            request_id=ctx.request_id,
            actor=ctx.principal.actor,
            tenant_id=ctx.principal.tenant_id or None,  # the CLI acts under no tenant
            action=action,
            resource=resource,
            outcome=outcome,
            status_code=status_code,
            client_addr=ctx.client_addr,
            detail=detail,
        )
    )


def record_refusal(
    *,
    session: AsyncSession,
    actor: str,
    tenant_id: str | None,
    action: str,
    resource: str | None,
    status_code: int,
    reason: str,
    request_id: str | None,
    client_addr: str | None,
) -> None:
    """Add an audit row for a refused or failed request."""
    AuditRepository(session).add(
        _event(
            request_id=request_id,
            actor=actor,
            tenant_id=tenant_id,
            action=action,
            resource=resource,
            outcome="denied" if status_code in (401, 403) else "failed",
            status_code=status_code,
            client_addr=client_addr,
            detail=reason,
        )
    )


@dataclass
class _Window:
    started: float
    started_at: datetime
    recorded: int = 0
    suppressed: int = 0


@dataclass(frozen=True)
class Suppressed:
    """Anonymous refusals from one address that were counted instead of recorded."""

    client_addr: str
    count: int
    since: datetime


class RefusalThrottle:
    """Per client address, the first `per_minute` anonymous refusals of a minute are recorded;
    the rest are counted and reported in one summary row when that minute is over."""

    MAX_ADDRESSES = 10_000

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, client_addr: str | None) -> tuple[bool, Suppressed | None]:
        """Whether to record this refusal, and the summary of a finished minute to add."""
        addr = client_addr or "unknown"
        now = self._clock()
        window = self._windows.get(addr)
        summary = None
        if window is None or now - window.started >= 60:
            if window is not None and window.suppressed:
                summary = Suppressed(addr, window.suppressed, window.started_at)
            if window is None and len(self._windows) >= self.MAX_ADDRESSES:
                self._windows.clear()  # bounded memory; the next minute starts afresh
            window = self._windows[addr] = _Window(started=now, started_at=datetime.now(UTC))
        if window.recorded < self.per_minute:
            window.recorded += 1
            return True, summary
        window.suppressed += 1
        return False, summary

    def drain(self) -> list[Suppressed]:
        """Summaries of every minute with suppressed refusals (at shutdown)."""
        out = [
            Suppressed(addr, w.suppressed, w.started_at)
            for addr, w in self._windows.items()
            if w.suppressed
        ]
        self._windows.clear()
        return out


def record_suppressed(*, session: AsyncSession, summary: Suppressed) -> None:
    """The one row that stands for many throttled anonymous refusals from one address."""
    AuditRepository(session).add(
        _event(
            actor="anonymous",
            tenant_id=None,
            action="refusals.throttled",
            resource=None,
            outcome="denied",
            status_code=None,
            client_addr=summary.client_addr,
            detail=(
                f"{summary.count} more anonymous refusals from this address in the minute from "
                f"{summary.since.isoformat()} were counted, not recorded one by one"
            ),
        )
    )


async def page(
    *, session: AsyncSession, before_id: int | None, limit: int, **filters: Any
) -> Sequence[AuditEvent]:
    """A page of the trail, newest first."""
    return await AuditRepository(session).page(before_id=before_id, limit=limit, **filters)

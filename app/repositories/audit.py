"""SQL for the append-only audit trail (inserts and reads only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEvent


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, event: AuditEvent) -> None:
        self.session.add(event)

    async def page(
        self,
        *,
        tenant_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        """Newest first; `before_id` is the cursor (the last id of the previous page)."""
        stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        filters = {
            AuditEvent.tenant_id: tenant_id,
            AuditEvent.actor: actor,
            AuditEvent.action: action,
            AuditEvent.outcome: outcome,
        }
        for column, value in filters.items():
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(AuditEvent.created_at >= since)
        if until is not None:
            stmt = stmt.where(AuditEvent.created_at < until)
        if before_id is not None:
            stmt = stmt.where(AuditEvent.id < before_id)
        return (await self.session.execute(stmt)).scalars().all()

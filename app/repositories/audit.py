"""SQL for the append-only audit trail (inserts and reads only)."""

from __future__ import annotations

from collections.abc import Sequence

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
        action: str | None = None,
        outcome: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> Sequence[AuditEvent]:
        stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if tenant_id is not None:
            stmt = stmt.where(AuditEvent.tenant_id == tenant_id)
        if action is not None:
            stmt = stmt.where(AuditEvent.action == action)
        if outcome is not None:
            stmt = stmt.where(AuditEvent.outcome == outcome)
        if before_id is not None:
            stmt = stmt.where(AuditEvent.id < before_id)
        return (await self.session.execute(stmt)).scalars().all()

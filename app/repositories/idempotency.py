"""SQL for stored Idempotency-Key answers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import IdempotencyKey


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, *, tenant_id: str, key: str) -> IdempotencyKey | None:
        stmt = (
            select(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def add(self, row: IdempotencyKey) -> None:
        self.session.add(row)

    async def remove(self, *, tenant_id: str, key: str) -> None:
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key
            )
        )

    async def purge_expired(self, *, now: datetime) -> None:
        await self.session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))

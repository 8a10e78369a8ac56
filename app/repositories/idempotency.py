"""SQL for stored Idempotency-Key answers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
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

    async def take_over(self, row: IdempotencyKey) -> bool:
        """Remove a lapsed claim, unless its owner renewed it meanwhile (or a twin took it)."""
        stmt = delete(IdempotencyKey).where(
            IdempotencyKey.id == row.id,
            IdempotencyKey.state == row.state,
            IdempotencyKey.lease_until.is_(None)
            if row.lease_until is None
            else IdempotencyKey.lease_until == row.lease_until,
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def renew(self, *, tenant_id: str, key: str, until: datetime) -> bool:
        """Extend a running claim's lease; False once the claim is gone."""
        stmt = (
            update(IdempotencyKey)
            .where(
                IdempotencyKey.tenant_id == tenant_id,
                IdempotencyKey.key == key,
                IdempotencyKey.state == "running",
            )
            .values(lease_until=until)
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def remove(self, *, tenant_id: str, key: str) -> None:
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key
            )
        )

    async def purge_expired(self, *, now: datetime) -> None:
        await self.session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))

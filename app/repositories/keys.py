"""SQL for tenants and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, Tenant


class KeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_key(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def tenant_by_name(self, name: str) -> Tenant | None:
        stmt = select(Tenant).where(Tenant.name == name)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def tenant(self, tenant_id: str) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def list_keys(self, *, tenant_id: str | None = None) -> Sequence[ApiKey]:
        stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        return (await self.session.execute(stmt)).scalars().all()

    async def tenants(self) -> Sequence[Tenant]:
        stmt = select(Tenant).order_by(Tenant.name)
        return (await self.session.execute(stmt)).scalars().all()

    async def touch(self, key_id: str, when: datetime) -> None:
        await self.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when)
        )

    def add(self, row: Tenant | ApiKey) -> None:
        self.session.add(row)

"""SQL for this registry's deployment tag."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.models import Deployment

SELF = "self"


class DeploymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def tag(self) -> str | None:
        stmt = select(Deployment.tag).where(Deployment.key == SELF)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def claim(self, tag: str) -> str | None:
        """Store `tag` unless a tag is stored already; then read back the stored one."""
        dialect = self.session.bind.dialect.name if self.session.bind else "sqlite"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(Deployment).values(key=SELF, tag=tag, created_at=utcnow())
        await self.session.execute(stmt.on_conflict_do_nothing(index_elements=[Deployment.key]))
        return await self.tag()

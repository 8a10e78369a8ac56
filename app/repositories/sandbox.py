"""SQL for the sandbox instances a sandboxed gateway has seen."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.models import SandboxInstance


class SandboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def last_instance(self, sandbox: str) -> str | None:
        stmt = select(SandboxInstance.instance_id).where(SandboxInstance.sandbox == sandbox)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def remember(self, *, sandbox: str, instance_id: str) -> None:
        """Record the instance now seen at `sandbox` (insert or overwrite)."""
        values = {"sandbox": sandbox, "instance_id": instance_id, "seen_at": utcnow()}
        dialect = self.session.bind.dialect.name if self.session.bind else "sqlite"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(SandboxInstance).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[SandboxInstance.sandbox],
            set_={"instance_id": stmt.excluded.instance_id, "seen_at": stmt.excluded.seen_at},
        )
        await self.session.execute(stmt)

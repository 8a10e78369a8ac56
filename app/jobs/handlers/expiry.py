"""Expiry jobs: retire expired files, forget expired idempotency keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import system_context
from app.core.db import utcnow
from app.models import Job
from app.repositories.files import FileRepository
from app.repositories.idempotency import IdempotencyRepository
from app.services import files

if TYPE_CHECKING:
    from app.runtime import Runtime

EXPIRY_BATCH = 100


async def handle_expire(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Delete expired files at every provider (blobs go once unreferenced); forget old keys."""
    repo = FileRepository(session)
    for file in await repo.expired(now=utcnow(), limit=EXPIRY_BATCH):
        ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
        await files.expire_file(
            session=session,
            blob_store=rt.blob_store,
            providers=rt.providers,
            settings=rt.settings,
            ctx=ctx,
            file=file,
        )
    await IdempotencyRepository(session).purge_expired(now=utcnow())

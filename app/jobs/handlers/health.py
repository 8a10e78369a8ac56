"""Health jobs: check one file, and queue checks for the files checked least recently."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import system_context
from app.core.db import utcnow
from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import Job
from app.repositories.files import FileRepository
from app.services.health import check_file

if TYPE_CHECKING:
    from app.runtime import Runtime

HEALTH_SWEEP_BATCH = 100


async def handle_check_file(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    file = await FileRepository(session).refresh(str(payload["file_id"]))
    if file is None or file.deleted_at is not None:
        return
    ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
    await check_file(
        session=session,
        blob_store=rt.blob_store,
        providers=rt.providers,
        metrics=rt.metrics,
        max_attempts=rt.settings.job_max_attempts,
        ctx=ctx,
        file=file,
    )


async def handle_health_sweep(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Queue health checks for the live files checked least recently."""
    repo = FileRepository(session)
    cutoff = utcnow() - timedelta(seconds=rt.settings.health_check_interval_seconds)
    for file_id in await repo.due_for_check(before=cutoff, limit=HEALTH_SWEEP_BATCH):
        await queue.enqueue(
            session=session,
            kind=JobKind.CHECK_FILE,
            payload={"file_id": file_id},
            dedupe_key=f"check_file:{file_id}",
            max_attempts=3,
        )

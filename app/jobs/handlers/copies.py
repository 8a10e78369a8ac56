"""Copy removal jobs: retry deleting a provider copy whose delete failed earlier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import system_context
from app.jobs.queue import RetryLater
from app.models import Job, ProviderCopy, ProviderCopyStatus
from app.repositories.files import FileRepository
from app.services import audit, files

if TYPE_CHECKING:
    from app.runtime import Runtime


async def handle_delete_copy(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Retry removing a provider copy whose delete failed earlier."""
    copy = await session.get(ProviderCopy, int(payload["copy_id"]), populate_existing=True)
    if copy is None or copy.status == ProviderCopyStatus.DELETED:
        return
    file = await FileRepository(session).refresh(copy.file_id)
    ctx = system_context(tenant_id=file.tenant_id if file else "unknown", task=f"job-{job.id}")
    if not await files.remove_copy(
        session=session,
        providers=rt.providers,
        settings=rt.settings,
        ctx=ctx,
        copy=copy,
        reason="provider delete retried",
    ):
        raise RetryLater(copy.last_error or "provider delete failed")
    audit.record(
        session=session, ctx=ctx, action="copy.delete", resource=f"{copy.file_id}@{copy.provider}"
    )

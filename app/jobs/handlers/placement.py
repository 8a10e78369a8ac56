"""Placement jobs: finish placing a pending file (or an extra copy), or give up on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import system_context
from app.core.errors import UnsupportedPurpose
from app.jobs.queue import RetryLater
from app.models import FileStatus, Job, ProviderCopyStatus
from app.repositories.files import FileRepository
from app.services.files.settle import Attempt, Settled, give_up

if TYPE_CHECKING:
    from app.runtime import Runtime


async def handle_place(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Finish placing a pending file (or an extra copy) once a provider can take it."""
    repo = FileRepository(session)
    file = await repo.refresh(str(payload["file_id"]))
    if file is None or file.deleted_at is not None:
        return
    provider = str(payload.get("provider", "auto"))
    copies = (await repo.copies_for([file.id]))[file.id]
    live_on = {c.provider for c in copies if c.status == ProviderCopyStatus.ACTIVE}
    if (provider == "auto" and live_on) or provider in live_on:
        return
    ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
    try:
        targets = rt.providers.targets(
            purpose=file.purpose, filename=file.filename, size=file.bytes, requested=provider
        )
    except UnsupportedPurpose as exc:
        give_up(session=session, ctx=ctx, file=file, reason=exc.message)
        return
    outcome, settled = await rt.placer.place_and_settle(
        session=session,
        ctx=ctx,
        file=file,
        targets=targets,
        provider=provider,
        attempt=Attempt.JOB,
    )
    if settled is Settled.DEFERRED:
        if outcome.waiting_for_room and file.status == FileStatus.PENDING:
            file.status_details = f"Waiting for room on a provider: {outcome.reasons}"
        raise RetryLater(
            outcome.reasons, retry_after=outcome.retry_after, patient=outcome.waiting_for_room
        )


async def on_place_dead(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """A placement that exhausted its attempts leaves the file in error, blob kept."""
    file = await FileRepository(session).refresh(str(payload["file_id"]))
    if file is not None and file.deleted_at is None:
        ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
        give_up(
            session=session,
            ctx=ctx,
            file=file,
            reason=f"gave up after {job.attempts} attempts: {job.last_error or 'failures'}",
        )

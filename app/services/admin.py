"""Operator actions: job queue inspection and retry, on-demand file checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext, system_context
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.models import Job, JobState
from app.repositories.files import FileRepository
from app.repositories.jobs import JobRepository
from app.services import audit, health

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.metrics import GatewayMetrics
    from app.providers.breaker_board import BreakerBoard
    from app.providers.breakers import BreakerSnapshot
    from app.providers.hub import ProviderHub
    from app.services.capacity import Capacity
    from app.storage.blobs import BlobStore


@dataclass(frozen=True)
class JobQueueSummary:
    counts: dict[str, int]
    oldest_age: float | None
    dead: Sequence[Job]


async def job_summary(*, session: AsyncSession, dead_limit: int) -> JobQueueSummary:
    repo = JobRepository(session)
    counts = await repo.counts()
    oldest = await repo.oldest_queued()
    return JobQueueSummary(
        counts={state.value: counts.get(state.value, 0) for state in JobState},
        oldest_age=max(0.0, (utcnow() - oldest).total_seconds()) if oldest else None,
        dead=await repo.list(state=JobState.DEAD, limit=dead_limit),
    )


async def retry_job(*, session: AsyncSession, ctx: CallContext, job_id: int) -> Job:
    repo = JobRepository(session)
    job = await repo.get(job_id)
    if job is None:
        raise NotFound(f"No job with id {job_id}.", param="job_id")
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        return job
    if job.dedupe_key is not None and (twin := await repo.active_for(dedupe_key=job.dedupe_key)):
        raise Conflict(
            f"Job {twin.id} does the same work and is already {twin.state}; "
            f"job {job_id} stays {job.state}.",
            param="job_id",
        )
    previous = job.state
    try:
        async with session.begin_nested():  # a twin queued meanwhile trips the unique index
            requeued = await repo.requeue(job_id)
    except IntegrityError:
        raise Conflict(
            f"Another job doing the same work was queued meanwhile; job {job_id} stays {previous}.",
            param="job_id",
        ) from None
    assert requeued is not None
    job = requeued
    audit.record(session=session, ctx=ctx, action="job.retry", resource=f"job:{job_id}")
    return job


async def check_file(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    metrics: GatewayMetrics,
    settings: Settings,
    ctx: CallContext,
    file_id: str,
) -> dict[str, Any]:
    """Run a file's health check now, for any tenant's file (operators only)."""
    file = await FileRepository(session).refresh(file_id)
    if file is None or file.deleted_at is not None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    report = await health.check_file(
        session=session,
        blob_store=blob_store,
        providers=providers,
        metrics=metrics,
        max_attempts=settings.job_max_attempts,
        ctx=system_context(tenant_id=file.tenant_id, task=ctx.request_id or "admin-check"),
        file=file,
    )
    audit.record(session=session, ctx=ctx, action="file.check", resource=file.id)
    return report


async def provider_overview(
    *, session: AsyncSession, providers: ProviderHub, capacity: Capacity
) -> list[dict[str, Any]]:
    """Each provider's mode, breaker, and usage against its account caps."""
    repo = FileRepository(session)
    out = []
    for name in providers.order:
        adapter = providers.adapter(name)
        files, used = await repo.placed_on(name)
        usages = await capacity.overview(session, name)
        account = [u.cap for u in usages if u.cap.natives is None]
        out.append(
            {
                "provider": name,
                "mode": adapter.mode,
                "breaker": await adapter.breaker_snapshot(),
                "files": files,
                "bytes": used,
                "quota_files": account[0].max_files if account else None,
                "quota_bytes": account[0].max_bytes if account else None,
                "usage": [
                    {
                        "purpose_class": u.cap.purpose_class,
                        "files": u.files,
                        "bytes": u.bytes,
                        "max_files": u.cap.max_files,
                        "max_bytes": u.cap.max_bytes,
                        "foreign_files": u.foreign_files,
                    }
                    for u in usages
                ],
            }
        )
    return out


async def force_breaker(
    *,
    session: AsyncSession,
    providers: ProviderHub,
    breakers: BreakerBoard | None,
    ctx: CallContext,
    provider: str,
    action: str,
) -> BreakerSnapshot:
    """Open, close or reset a provider's circuit by hand (every process sees it via Redis)."""
    providers.adapter(provider)  # 400 for an unknown provider
    if breakers is None or breakers.get(provider) is None:
        raise InvalidRequest(f"{provider} has no circuit breaker.", param="provider")
    snapshot = await breakers.force(provider, action)  # type: ignore[arg-type]
    audit.record(
        session=session, ctx=ctx, action=f"breaker.{action}", resource=f"provider:{provider}"
    )
    return snapshot

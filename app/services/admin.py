"""Operator actions: jobs, files of any tenant, keys, checks and breakers (API and CLI alike)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import keys as key_service
from app.auth.keys import IssuedKey, checked_tenant_name
from app.auth.principal import CallContext, system_context
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.jobs import queue
from app.jobs.queue import payload_text
from app.models import ApiKey, File, Job, JobState, LifecycleEvent, ProviderCopy
from app.repositories.files import FileRepository
from app.repositories.jobs import JobRepository
from app.repositories.keys import KeyRepository
from app.services import audit, health
from app.services import files as file_service
from app.services.files import FileView, valid_file_id

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.metrics import GatewayMetrics
    from app.providers.breaker_board import BreakerBoard
    from app.providers.breakers import BreakerSnapshot
    from app.providers.hub import ProviderHub
    from app.services.capacity import Capacity
    from app.services.files.settle import Placer
    from app.storage.blobs import BlobStore

SHA256 = re.compile(r"[0-9a-f]{64}")


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


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a newest-first listing; `next_cursor` is passed back for the next page."""

    items: list[T]
    has_more: bool
    next_cursor: Any


def _paged(rows: Sequence[T], limit: int, cursor_of: Callable[[T], Any]) -> Page[T]:
    page = list(rows[:limit])
    more = len(rows) > limit
    return Page(page, more, cursor_of(page[-1]) if more else None)


def checked_file_id(file_id: str, *, param: str = "file_id") -> str:
    if not valid_file_id(file_id):
        raise InvalidRequest(
            f"'{file_id}' is not a file id (expected 'file-' and 24 letters or digits).",
            param=param,
            code="invalid_file_id",
        )
    return file_id


async def list_jobs(
    *,
    session: AsyncSession,
    state: str | None,
    kind: str | None,
    file_id: str | None,
    cursor: int | None,
    limit: int,
) -> Page[Job]:
    """Jobs newest first, by state, kind and the file they work on."""
    payloads = None
    if file_id is not None:
        checked_file_id(file_id)
        # Placements and checks name the file; copy removals name one of its copies.
        copies = (await FileRepository(session).copies_for([file_id]))[file_id]
        payloads = [
            f"%{payload_text({'file_id': file_id})[1:-1]}%",
            *(payload_text({"copy_id": c.id}) for c in copies),
        ]
    rows = await JobRepository(session).page(
        state=state, kind=kind, payloads_like=payloads, before_id=cursor, limit=limit + 1
    )
    return _paged(rows, limit, lambda job: job.id)


@dataclass(frozen=True)
class FileRecord:
    """A file of any tenant as operators see it: its tenant's name and every copy."""

    file: File
    tenant: str
    copies: list[ProviderCopy]


@dataclass(frozen=True)
class FileDetail(FileRecord):
    events: Sequence[LifecycleEvent] = ()


async def find_files(
    *,
    session: AsyncSession,
    tenant: str | None,
    file_id: str | None,
    sha256: str | None,
    filename: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> Page[FileRecord]:
    """Files of every tenant, newest first; an unknown tenant name finds nothing."""
    repo = FileRepository(session)
    if file_id is not None:
        checked_file_id(file_id, param="id")
    if sha256 is not None:
        sha256 = sha256.lower()  # stored in lowercase; a pasted hash may be in capitals
        if not SHA256.fullmatch(sha256):
            raise InvalidRequest("sha256 must be 64 hex digits.", param="sha256")
    before: tuple[datetime, str] | None = None
    if cursor is not None:
        before = await repo.position_of(checked_file_id(cursor, param="cursor"))
        if before is None:
            raise InvalidRequest(f"'cursor' names no file: {cursor}", param="cursor")
    tenant_id = None
    if tenant is not None:
        row = await KeyRepository(session).tenant_by_name(checked_tenant_name(tenant))
        if row is None:
            return Page([], False, None)
        tenant_id = row.id
    rows = await repo.find_page(
        tenant_id=tenant_id,
        file_id=file_id,
        sha256=sha256,
        filename=filename,
        status=status,
        before=before,
        limit=limit + 1,
    )
    page = _paged(rows, limit, lambda row: row[0].id)
    copies = await repo.copies_for([f.id for f, _ in page.items])
    records = [FileRecord(f, name, copies[f.id]) for f, name in page.items]
    return Page(records, page.has_more, page.next_cursor)


async def show_file(*, session: AsyncSession, file_id: str) -> FileDetail:
    """A file of any tenant (deleted ones too), its copies and its lifecycle events."""
    repo = FileRepository(session)
    found = await repo.with_tenant(checked_file_id(file_id))
    if found is None:
        raise NotFound(f"No file with id {file_id}.", param="file_id")
    file, tenant = found
    copies = (await repo.copies_for([file.id]))[file.id]
    return FileDetail(file, tenant, copies, events=await repo.events_for(file.id))


async def _acting_for(
    *, session: AsyncSession, ctx: CallContext, file_id: str
) -> tuple[CallContext, str]:
    """The operator's context scoped to the tenant owning a live file (and that tenant's name),
    so the tenant-facing services act on it exactly as for the tenant, audited as the operator."""
    found = await FileRepository(session).with_tenant(checked_file_id(file_id))
    if found is None or found[0].deleted_at is not None:
        raise NotFound(f"No file with id {file_id}.", param="file_id")
    file, tenant = found
    return replace(ctx, principal=replace(ctx.principal, tenant_id=file.tenant_id)), tenant


async def delete_file(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    settings: Settings,
    ctx: CallContext,
    file_id: str,
) -> str:
    """Delete any tenant's file as its owner's own delete does; audited as the operator."""
    acting, _ = await _acting_for(session=session, ctx=ctx, file_id=file_id)
    return await file_service.delete_file(
        session=session,
        blob_store=blob_store,
        providers=providers,
        settings=settings,
        ctx=acting,
        file_id=file_id,
    )


async def copy_file(
    *, session: AsyncSession, placer: Placer, ctx: CallContext, file_id: str, provider: str
) -> tuple[FileRecord, FileView]:
    """Ensure a copy of any tenant's file on `provider`, as the owner's own copy request does."""
    acting, tenant = await _acting_for(session=session, ctx=ctx, file_id=file_id)
    view = await file_service.replicate(
        session=session, placer=placer, ctx=acting, file_id=file_id, provider=provider
    )
    audit.record(session=session, ctx=acting, action="file.copy", resource=f"{file_id}@{provider}")
    return FileRecord(view.file, tenant, view.copies), view


async def create_key(
    *,
    session: AsyncSession,
    hmac_key: bytes,
    ctx: CallContext,
    tenant: str,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
) -> IssuedKey:
    """Issue a key (the tenant is created on first use), audited as the operator."""
    issued = await key_service.issue_key(
        session=session,
        hmac_key=hmac_key,
        tenant_name=tenant,
        name=name,
        scopes=scopes,
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    audit.record(session=session, ctx=ctx, action="key.create", resource=issued.key.id)
    return issued


async def rotate_key(
    *, session: AsyncSession, hmac_key: bytes, ctx: CallContext, key_id: str, overlap_seconds: int
) -> IssuedKey:
    """A successor key now; the old one ends after the overlap. Audited as the operator."""
    issued = await key_service.rotate_key(
        session=session, hmac_key=hmac_key, key_id=key_id, overlap_seconds=overlap_seconds
    )
    audit.record(
        session=session,
        ctx=ctx,
        action="key.rotate",
        resource=key_id,
        detail=f"successor {issued.key.id}",
    )
    return issued


async def revoke_key(*, session: AsyncSession, ctx: CallContext, key_id: str) -> ApiKey:
    row = await key_service.revoke_key(session=session, key_id=key_id)
    audit.record(session=session, ctx=ctx, action="key.revoke", resource=key_id)
    return row


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
            requeued = await queue.requeue(session=session, job_id=job_id)
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
    file = await FileRepository(session).refresh(checked_file_id(file_id))
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

"""Accepting an upload: reuse the tenant's identical file, or claim, store and place a new one."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.db import unit_of_work, utcnow
from app.core.errors import GatewayError, QuotaExceeded, UploadConflict
from app.core.purposes import canonical, spellings
from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import File, FileStatus, JobState, ProviderCopyStatus, Tenant
from app.providers.hub import Target
from app.repositories.files import FileRepository
from app.repositories.jobs import JobRepository
from app.services import audit, lifecycle
from app.services.capacity import mark_used
from app.services.files.retire import expire_file
from app.services.files.settle import Attempt, Placer
from app.services.files.views import CreateResult, FileView, IncomingUpload, new_file_id

SETTLE_POLL_SECONDS = 0.1


async def find_declared(
    *, session: AsyncSession, ctx: CallContext, sha256: str, purpose: str
) -> File | None:
    """The tenant's live, unexpired file of a declared digest and purpose, read only.

    Only the tenant's own rows are looked at, with the same query whoever else holds the
    bytes, so a miss is the same miss whether or not another tenant has them."""
    async with unit_of_work(session):
        existing = await FileRepository(session).find_duplicate(
            tenant_id=ctx.principal.tenant_id,
            sha256=sha256,
            purposes=spellings(canonical(purpose)),
        )
    if existing is None or (existing.expires_at and existing.expires_at <= utcnow()):
        return None  # an expired twin is expired by create_file, once the body is in
    return existing


async def reuse_declared(
    *,
    session: AsyncSession,
    placer: Placer,
    ctx: CallContext,
    file: File,
    provider: str,
    expires_at: datetime | None = None,
    pin: bool = False,
) -> CreateResult | None:
    """Answer with the file find_declared found before any byte of the body, as a dedup hit
    of create_file would; None when it is gone meanwhile (then the body is read)."""
    try:
        # The bytes are the existing file's, and so are its name and size.
        targets = placer.providers.targets(
            purpose=file.purpose, filename=file.filename, size=file.bytes, requested=provider
        )
    except GatewayError:
        return None  # the full upload gives the refusal, judged on what it sends
    view = await _deduplicated(
        session=session,
        placer=placer,
        ctx=ctx,
        file=file,
        provider=provider,
        targets=targets,
        expires_at=expires_at,
        pin=pin,
    )
    return CreateResult(view, created=False) if view is not None else None


async def create_file(
    *,
    session: AsyncSession,
    placer: Placer,
    ctx: CallContext,
    upload: IncomingUpload,
    purpose: str,
    provider: str,
    expires_at: datetime | None = None,
    pin: bool = False,
) -> CreateResult:
    """Accept an upload: reuse the tenant's identical live file or store and place a new one.

    The units of work read top to bottom: look for the tenant's identical file; then either
    answer with it, confirmed live under its row lock, or claim (blob, file row and the
    placement job this request runs itself), place and settle. A twin deleted meanwhile makes
    this a new file; a twin that wins the claim is judged against. An alias of a purpose is
    stored as the purpose it names."""
    purpose = canonical(purpose)
    try:
        targets = placer.providers.targets(
            purpose=purpose, filename=upload.filename, size=upload.size, requested=provider
        )
        repo = FileRepository(session)
        placer.metrics.upload_bytes.inc(upload.size)
        for _ in range(3):
            async with unit_of_work(session):  # does the tenant hold these bytes already?
                existing = await repo.find_duplicate(
                    tenant_id=ctx.principal.tenant_id,
                    sha256=upload.sha256,
                    purposes=spellings(purpose),
                )
            if existing is not None and existing.expires_at and existing.expires_at <= utcnow():
                await expire_file(
                    session=session,
                    blob_store=placer.blob_store,
                    providers=placer.providers,
                    settings=placer.settings,
                    ctx=ctx,
                    file=existing,
                )
                await session.commit()
                existing = None
            if existing is not None:
                # The existing file, confirmed live under its row lock (None: gone meanwhile).
                deduplicated = await _deduplicated(
                    session=session,
                    placer=placer,
                    ctx=ctx,
                    file=existing,
                    provider=provider,
                    targets=targets,
                    expires_at=expires_at,
                    pin=pin,
                )
                if deduplicated is not None:
                    return CreateResult(deduplicated, created=False)
                continue
            if not upload.spool.holds_bytes():
                break  # our bytes went into a twin's blob that its delete then collected
            if upload.head_start is not None:
                # A miss: the pipelined upload completes while the file is claimed (a claim
                # refused after all makes close() delete the copy it made).
                await upload.head_start.finish()
            if upload.durable is not None:
                await upload.durable  # the spool is durable before its blob is committed
            async with unit_of_work(session):  # the blob, the file row and the placement intent
                claimed = await _claim(
                    session=session,
                    placer=placer,
                    ctx=ctx,
                    upload=upload,
                    purpose=purpose,
                    provider=provider,
                    expires_at=expires_at,
                    pin=pin,
                )
            if claimed is None:
                continue  # a concurrent twin won the unique index: judge against it
            file, intent = claimed
            # Placement (its own units of work, the provider call outside any), then settled.
            view = await placer.place_and_answer(
                session=session,
                ctx=ctx,
                file=file,
                targets=targets,
                provider=provider,
                attempt=Attempt.UPLOAD,
                intent=intent,
                head_start=upload.head_start,
            )
            placer.metrics.uploads.labels(_placed_on(view), "created").inc()
            return CreateResult(view, created=True)
        raise UploadConflict(
            "The upload collided with concurrent uploads and deletes of the same bytes; retry it.",
            headers={"Retry-After": "1"},
        )
    except GatewayError:
        placer.metrics.uploads.labels(provider, "failed").inc()
        raise


def _placed_on(view: FileView) -> str:
    active = [c.provider for c in view.copies if c.status == ProviderCopyStatus.ACTIVE]
    return active[0] if active else "none"


async def _claim(
    *,
    session: AsyncSession,
    placer: Placer,
    ctx: CallContext,
    upload: IncomingUpload,
    purpose: str,
    provider: str,
    expires_at: datetime | None,
    pin: bool,
) -> tuple[File, queue.Intent] | None:
    """Blob, file row and the placement job this request now runs itself (should its process
    die, a worker takes the job over once its lease lapses); None if a concurrent twin won the
    unique index (then the transaction is rolled back)."""
    repo = FileRepository(session)
    key = placer.blob_store.key_for(upload.sha256)
    tenant = await repo.lock_tenant(ctx.principal.tenant_id)
    await repo.lock_blob(sha256=upload.sha256, size=upload.size, storage_key=key)
    if tenant is not None:
        await _check_quota(repo=repo, tenant=tenant, size=upload.size)
    await placer.blob_store.commit(upload.spool, sha256=upload.sha256)
    blob = await repo.blob(upload.sha256)
    if blob is not None:
        await session.refresh(blob)
    if blob is not None and blob.corrupt_at is not None:
        # commit() replaced the stored bytes with these, which hash right.
        blob.corrupt_at = None
        blob.corrupt_reason = None
    now = utcnow()
    if expires_at is None and placer.settings.default_retention_seconds:
        expires_at = now + timedelta(seconds=placer.settings.default_retention_seconds)
    file = File(
        # A pipelined provider upload already carries the id in its provider-side name.
        id=upload.head_start.file_id if upload.head_start is not None else new_file_id(),
        tenant_id=ctx.principal.tenant_id,
        sha256=upload.sha256,
        bytes=upload.size,
        filename=upload.filename,
        content_type=upload.content_type,
        purpose=purpose,
        requested_provider=provider,
        created_at=now,
        expires_at=expires_at,
        pinned=pin,
    )
    lifecycle.transition(
        session,
        file,
        FileStatus.UPLOADED,
        reason="upload accepted",
        request_id=ctx.request_id,
        new=True,
    )
    session.add(file)
    audit.record(session=session, ctx=ctx, action="file.create", resource=file.id)
    try:
        await session.flush()  # the unique index on live files settles a concurrent twin here
        intent = await queue.begin_intent(
            session=session,
            kind=JobKind.PLACE,
            payload={"file_id": file.id, "provider": provider},
            dedupe_key=f"place:{file.id}:{provider}",
            owner=_owner(ctx),
            lease_seconds=placer.settings.job_lease_seconds,
            max_attempts=placer.settings.job_max_attempts,
        )
    except IntegrityError:
        await session.rollback()
        return None
    return file, intent


def _owner(ctx: CallContext) -> str:
    """Who holds a request's intent lease: this process and the request."""
    return f"req:{os.getpid()}:{ctx.request_id or secrets.token_hex(8)}"[:64]


async def _check_quota(*, repo: FileRepository, tenant: Tenant, size: int) -> None:
    if tenant.max_files is None and tenant.max_bytes is None:
        return
    count, total = await repo.usage(tenant_id=tenant.id)
    if tenant.max_files is not None and count + 1 > tenant.max_files:
        raise QuotaExceeded(
            f"The tenant's quota of {tenant.max_files} files is reached; delete files first.",
            param="file",
        )
    if tenant.max_bytes is not None and total + size > tenant.max_bytes:
        raise QuotaExceeded(
            f"This file ({size} bytes) would take the tenant past its quota of "
            f"{tenant.max_bytes} bytes ({total} in use); delete files first.",
            param="file",
        )


async def _deduplicated(
    *,
    session: AsyncSession,
    placer: Placer,
    ctx: CallContext,
    file: File,
    provider: str,
    targets: Sequence[Target],
    expires_at: datetime | None,
    pin: bool,
) -> FileView | None:
    """Answer with the tenant's existing file, or None when it is gone (deleted or failed)
    meanwhile. An in-flight placement is awaited while its owner holds the placement job's
    lease, at most FILEGATE_DEDUP_WAIT_SECONDS; after that the answer is the file as it is
    (`uploaded`, answered 202) and whoever holds the job (a worker, once the lease of a dead
    owner lapses) finishes it."""
    repo = FileRepository(session)
    deadline = time.monotonic() + placer.settings.dedup_wait_seconds
    current: File | None = file
    while current is not None and current.status == FileStatus.UPLOADED:
        if time.monotonic() >= deadline or not await _placement_owned(session, current):
            break
        await session.commit()
        await asyncio.sleep(SETTLE_POLL_SECONDS)
        current = await repo.refresh(file.id)
    await session.commit()  # end the read snapshot; the lock below sees the latest commit
    current = await repo.lock_live(file.id)
    if current is None:
        return None
    placer.metrics.dedup_hits.inc()
    if expires_at is None and placer.settings.default_retention_seconds:
        expires_at = utcnow() + timedelta(seconds=placer.settings.default_retention_seconds)
    if (
        current.expires_at is not None
        and expires_at is not None
        and expires_at > current.expires_at
    ):
        # One file serves every upload of it: a hit may lengthen its life, never shorten or
        # clear it, and an upload that asks for no expiry leaves the file's as it is.
        current.expires_at = expires_at
    if pin and not current.pinned:
        current.pinned = True
        lifecycle.note(
            session,
            current,
            reason="pinned: its provider copies are never evicted",
            request_id=ctx.request_id,
        )
    copies = (await repo.copies_for([current.id]))[current.id]
    live = [c for c in copies if c.status == ProviderCopyStatus.ACTIVE]
    live_on = {c.provider for c in live}
    # An explicit provider is honoured; a file whose copies were all evicted is placed again.
    wanted = provider not in live_on if provider != "auto" else not live_on
    if current.status in (FileStatus.PROCESSED, FileStatus.ERROR) and (
        wanted or current.status == FileStatus.ERROR
    ):
        # An explicit provider is honoured, and a file that ended in error gets another try.
        await session.commit()
        view = await placer.place_and_answer(
            session=session,
            ctx=ctx,
            file=current,
            targets=targets,
            provider=provider,
            # A file in error gets another try of its own; a live one gets an extra copy.
            attempt=Attempt.UPLOAD if current.status == FileStatus.ERROR else Attempt.COPY,
            withdrawn=_joined_file_deleted(),
        )
        placer.metrics.uploads.labels(_placed_on(view), "created").inc()
        return view
    mark_used(live)  # their provider file ids are handed out again
    placer.metrics.uploads.labels(_placed_on(FileView(current, copies)), "deduplicated").inc()
    audit.record(
        session=session,
        ctx=ctx,
        action="file.create",
        resource=current.id,
        detail="deduplicated",
    )
    # The answer commits with the route's unit of work, under the row lock: a delete that
    # follows waits for it, one that came first was seen above.
    return FileView(current, copies)


async def _placement_owned(session: AsyncSession, file: File) -> bool:
    """Is someone alive placing this file: a placement job queued, or running under a lease?"""
    job = await JobRepository(session).active_for(
        dedupe_key=f"place:{file.id}:{file.requested_provider}"
    )
    if job is None:
        return False
    return job.state == JobState.QUEUED or (
        job.lease_until is not None and job.lease_until > utcnow()
    )


def _joined_file_deleted() -> UploadConflict:
    """The identical file a duplicate upload joined failed or was deleted meanwhile."""
    return UploadConflict(
        "An identical upload that was in progress failed or was deleted; retry the upload.",
        headers={"Retry-After": "1"},
    )

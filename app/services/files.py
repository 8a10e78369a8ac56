"""Files: accept (dedup + place), read, list, download, extract and delete."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from anyio import to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.db import utcnow
from app.core.errors import (
    BlobCorrupt,
    GatewayError,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderNotFound,
    ProviderUnavailable,
    QuotaExceeded,
)
from app.models import (
    File,
    FileStatus,
    JobState,
    LifecycleEvent,
    ProviderCopy,
    ProviderCopyStatus,
    Tenant,
)
from app.providers.hub import Target
from app.repositories.files import FileRepository
from app.repositories.jobs import JobRepository
from app.runtime import Runtime
from app.services import audit, jobs, lifecycle, placement
from app.services.intake import IncomingUpload

FILE_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
EXTRACTABLE = frozenset({"file-extract"})
SETTLE_POLL_SECONDS = 0.1


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(FILE_ID_ALPHABET) for _ in range(24))


def valid_file_id(file_id: str) -> bool:
    return (
        len(file_id) == 29
        and file_id.startswith("file-")
        and all(ch in FILE_ID_ALPHABET for ch in file_id[5:])
    )


@dataclass(frozen=True)
class FileView:
    """A file and its provider copies, as the API shows them."""

    file: File
    copies: list[ProviderCopy]
    retry_after: float | None = None  # a pending placement: the wait a provider asked for


@dataclass(frozen=True)
class CreateResult:
    view: FileView
    created: bool


def _not_found(file_id: str) -> NotFound:
    # Identical for a missing id and for another tenant's id.
    return NotFound("No such File object.", param="id")


async def get_file(*, session: AsyncSession, ctx: CallContext, file_id: str) -> FileView:
    _check_id(file_id)
    found = await FileRepository(session).get_live_with_copies(
        tenant_id=ctx.principal.tenant_id, file_id=file_id
    )
    if found is None:
        raise _not_found(file_id)
    return FileView(*found)


async def read_file(*, session: AsyncSession, ctx: CallContext, file_id: str) -> FileView:
    """get_file for callers that only read: the rows are not tracked by the session."""
    _check_id(file_id)
    found = await FileRepository(session).read_live_with_copies(
        tenant_id=ctx.principal.tenant_id, file_id=file_id
    )
    if found is None:
        raise _not_found(file_id)
    return FileView(*found)


def _check_id(file_id: str) -> None:
    if not valid_file_id(file_id):
        raise InvalidRequest(
            f"'{file_id}' is not a file id (expected 'file-' and 24 letters or digits).",
            param="id",
            code="invalid_file_id",
        )


@dataclass(frozen=True)
class FilePage:
    views: list[FileView]
    has_more: bool


async def list_files(
    *,
    session: AsyncSession,
    ctx: CallContext,
    limit: int,
    order: str,
    purpose: str | None,
    after: str | None,
) -> FilePage:
    repo = FileRepository(session)
    cursor = None
    if after is not None:
        cursor = await repo.cursor_of(tenant_id=ctx.principal.tenant_id, file_id=after)
        if cursor is None:
            raise InvalidRequest(f"'after' names no file of yours: {after}", param="after")
    rows = await repo.list_page(
        tenant_id=ctx.principal.tenant_id,
        limit=limit + 1,
        ascending=order == "asc",
        purpose=purpose,
        after=cursor,
    )
    page = list(rows[:limit])
    copies = await repo.copies_for([f.id for f in page])
    return FilePage([FileView(f, copies[f.id]) for f in page], has_more=len(rows) > limit)


async def create_file(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    upload: IncomingUpload,
    purpose: str,
    provider: str,
    expires_at: datetime | None = None,
) -> CreateResult:
    """Accept an upload: reuse the tenant's identical live file or store and place a new one.

    The units of work: claim (blob and file row, with the placement job this request runs
    itself), then placement; or, for bytes the tenant already holds, the answer is the existing
    file, confirmed live under its row lock. A twin deleted meanwhile makes this a new file."""
    try:
        targets = rt.providers.targets(
            purpose=purpose, filename=upload.filename, size=upload.size, requested=provider
        )
        repo = FileRepository(session)
        rt.metrics.upload_bytes.inc(upload.size)
        for _ in range(3):
            existing = await repo.find_duplicate(
                tenant_id=ctx.principal.tenant_id, sha256=upload.sha256, purpose=purpose
            )
            if existing is not None and existing.expires_at and existing.expires_at <= utcnow():
                await expire_file(session=session, rt=rt, ctx=ctx, file=existing)
                await session.commit()
                existing = None
            if existing is None:
                if not upload.spool.path.exists():
                    break  # our bytes went into a twin's blob that its delete then collected
                claimed = await _claim(
                    session=session,
                    rt=rt,
                    ctx=ctx,
                    upload=upload,
                    purpose=purpose,
                    provider=provider,
                    first=targets[0],
                    expires_at=expires_at,
                )
                if claimed is not None:
                    file, intent = claimed
                    view = await _place_new(
                        session=session,
                        rt=rt,
                        ctx=ctx,
                        file=file,
                        targets=targets,
                        provider=provider,
                        intent=intent,
                    )
                    rt.metrics.uploads.labels(_placed_on(view), "created").inc()
                    return CreateResult(view, created=True)
                continue  # a concurrent twin won the unique index: judge against it
            deduplicated = await _deduplicated(
                session=session,
                rt=rt,
                ctx=ctx,
                file=existing,
                provider=provider,
                targets=targets,
                expires_at=expires_at,
            )
            if deduplicated is not None:
                return CreateResult(deduplicated, created=False)
        raise ProviderUnavailable(
            "The upload collided with concurrent uploads and deletes of the same bytes; retry it.",
            provider="gateway",
            code="upload_conflict",
        )
    except GatewayError:
        rt.metrics.uploads.labels(provider, "failed").inc()
        raise
    finally:
        await to_thread.run_sync(upload.spool.discard)


def _placed_on(view: FileView) -> str:
    active = [c.provider for c in view.copies if c.status == ProviderCopyStatus.ACTIVE]
    return active[0] if active else "none"


async def _claim(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    upload: IncomingUpload,
    purpose: str,
    provider: str,
    first: Target,
    expires_at: datetime | None,
) -> tuple[File, jobs.Intent] | None:
    """Commit blob, file row and the placement job this request now runs itself (should its
    process die, a worker takes the job over once its lease lapses); None if a concurrent
    twin won the unique index."""
    repo = FileRepository(session)
    await session.commit()  # end any read snapshot so the write transaction starts fresh
    key = rt.blob_store.key_for(upload.sha256)
    tenant = await repo.lock_tenant(ctx.principal.tenant_id)
    await repo.lock_blob(sha256=upload.sha256, size=upload.size, storage_key=key)
    if tenant is not None:
        await _check_quota(repo=repo, tenant=tenant, size=upload.size)
    await rt.blob_store.commit(upload.spool, sha256=upload.sha256)
    blob = await repo.blob(upload.sha256)
    if blob is not None:
        await session.refresh(blob)
    if blob is not None and blob.corrupt_at is not None:
        # commit() verified the stored bytes and replaced them if they failed their hash.
        blob.corrupt_at = None
        blob.corrupt_reason = None
    now = utcnow()
    if expires_at is None and rt.settings.default_retention_seconds:
        expires_at = now + timedelta(seconds=rt.settings.default_retention_seconds)
    file = File(
        id=new_file_id(),
        tenant_id=ctx.principal.tenant_id,
        sha256=upload.sha256,
        bytes=upload.size,
        filename=upload.filename,
        content_type=upload.content_type,
        purpose=purpose,
        requested_provider=provider,
        created_at=now,
        expires_at=expires_at,
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
        intent = await jobs.begin_intent(
            session=session,
            kind=jobs.PLACE,
            payload={"file_id": file.id, "provider": provider},
            dedupe_key=f"place:{file.id}:{provider}",
            owner=_owner(ctx),
            lease_seconds=rt.settings.job_lease_seconds,
            max_attempts=rt.settings.job_max_attempts,
        )
        await session.commit()
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


async def _place_new(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    file: File,
    targets: Sequence[Target],
    provider: str,
    intent: jobs.Intent | None = None,
    withdrawn: GatewayError | None = None,
) -> FileView:
    """Place a file; keep it pending when providers are only failing for now. With `intent`
    (a just-claimed file) the request holds the placement job's lease meanwhile, and the job
    ends with the outcome (done, or itself the retry of a deferred placement). A delete that
    wins the race answers 404, or `withdrawn` when given."""
    repo = FileRepository(session)
    lease = rt.settings.job_lease_seconds
    async with jobs.holding(rt.sessionmaker, intent, lease_seconds=lease):
        outcome = await placement.place(session=session, rt=rt, ctx=ctx, file=file, targets=targets)
    if outcome.withdrawn:
        await jobs.end_intent(session=session, intent=intent)
        await session.commit()
        raise withdrawn or _not_found(file.id)
    if outcome.placed_on is None:
        error = outcome.first_error
        if outcome.deferred:
            retry_after = outcome.retry_after
            delay = retry_after or rt.settings.job_backoff_base
            # The intent becomes the retry, in the same unit of work that marks the file pending.
            await jobs.end_intent(
                session=session, intent=intent, retry_at=utcnow() + timedelta(seconds=delay)
            )
            await placement.defer(
                session=session,
                rt=rt,
                ctx=ctx,
                file=file,
                provider=provider,
                reason=outcome.reasons,
                retry_after=retry_after,
            )
            copies = (await repo.copies_for([file.id]))[file.id]
            return FileView(file, copies, retry_after=retry_after)
        await jobs.end_intent(session=session, intent=intent)
        if file.status == FileStatus.PROCESSED:
            await session.commit()  # an extra copy was refused: the file stays live where it is
            raise error
        await _fail_placement(
            session=session, rt=rt, ctx=ctx, file=file, error=error, reasons=outcome.reasons
        )
        raise error
    if intent is not None:
        await jobs.end_intent(session=session, intent=intent)
        await session.commit()
    copies = (await repo.copies_for([file.id]))[file.id]
    return FileView(file, copies)


async def _fail_placement(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    file: File,
    error: ProviderError,
    reasons: str,
) -> None:
    """Every provider refused a new file for good: retire it so nothing half-made stays live."""
    reason = f"placement refused: {reasons}"
    if file.status == FileStatus.ERROR:  # a re-upload's new try of a file in error
        lifecycle.note(session, file, reason=reason, request_id=ctx.request_id)
    else:
        lifecycle.transition(
            session, file, FileStatus.ERROR, reason=reason, request_id=ctx.request_id
        )
    file.status_details = reasons
    file.deleted_at = utcnow()
    audit.record(
        session=session,
        ctx=ctx,
        action="file.place",
        resource=file.id,
        outcome="failed",
        status_code=error.status_code,
        detail=reasons,
    )
    await session.commit()
    await collect_blob(session=session, rt=rt, sha256=file.sha256)
    await session.commit()


async def _deduplicated(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    file: File,
    provider: str,
    targets: Sequence[Target],
    expires_at: datetime | None,
) -> FileView | None:
    """Answer with the tenant's existing file, or None when it is gone (deleted or failed)
    meanwhile. An in-flight placement is awaited while its owner holds the placement job's
    lease, at most FILEGATE_DEDUP_WAIT_SECONDS; after that the answer is the file as it is
    (`uploaded`, answered 202) and whoever holds the job (a worker, once the lease of a dead
    owner lapses) finishes it."""
    repo = FileRepository(session)
    deadline = time.monotonic() + rt.settings.dedup_wait_seconds
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
    rt.metrics.dedup_hits.inc()
    if current.expires_at is not None and (expires_at is None or expires_at > current.expires_at):
        # One file serves every upload of it: it lives as long as the longest-lived request.
        current.expires_at = expires_at
    copies = (await repo.copies_for([current.id]))[current.id]
    live_on = {c.provider for c in copies if c.status == ProviderCopyStatus.ACTIVE}
    wanted = provider != "auto" and provider not in live_on
    if current.status in (FileStatus.PROCESSED, FileStatus.ERROR) and (
        wanted or current.status == FileStatus.ERROR
    ):
        # An explicit provider is honoured, and a file that ended in error gets another try.
        await session.commit()
        view = await _place_new(
            session=session,
            rt=rt,
            ctx=ctx,
            file=current,
            targets=targets,
            provider=provider,
            withdrawn=_joined_file_deleted(),
        )
        rt.metrics.uploads.labels(_placed_on(view), "created").inc()
        return view
    rt.metrics.uploads.labels(_placed_on(FileView(current, copies)), "deduplicated").inc()
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


def _joined_file_deleted() -> ProviderUnavailable:
    """The identical file a duplicate upload joined failed or was deleted meanwhile."""
    return ProviderUnavailable(
        "An identical upload that was in progress failed or was deleted; retry the upload.",
        provider="gateway",
        code="upload_conflict",
    )


async def collect_blob(*, session: AsyncSession, rt: Runtime, sha256: str) -> bool:
    """Remove a blob once no live file of any tenant references it; commits the session."""
    repo = FileRepository(session)
    blob = await repo.lock_blob_if_unreferenced(sha256)
    if blob is None:
        return False
    await repo.delete_blob_row(sha256)
    await session.flush()
    # Moved aside under the row lock (a concurrent upload of the same bytes waits), removed only
    # once the deletion commits: a failed commit puts it back, a crash leaves a spool to sweep.
    token = await rt.blob_store.set_aside(blob.storage_key)
    try:
        await session.commit()
    except BaseException:
        if token is not None:
            await rt.blob_store.put_back(blob.storage_key, token)
        raise
    if token is not None:
        await rt.blob_store.purge(token)
    return True


async def delete_file(*, session: AsyncSession, rt: Runtime, ctx: CallContext, file_id: str) -> str:
    """Delete a file now; provider copies that cannot be removed yet are retried by a job."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    await _retire(
        session=session, rt=rt, ctx=ctx, view=view, reason="deleted by caller", action="delete"
    )
    return view.file.id


async def expire_file(*, session: AsyncSession, rt: Runtime, ctx: CallContext, file: File) -> None:
    """Remove an expired file at every provider and retire it; the blob goes when unused."""
    copies = (await FileRepository(session).copies_for([file.id]))[file.id]
    await _retire(
        session=session,
        rt=rt,
        ctx=ctx,
        view=FileView(file, copies),
        reason="expired",
        action="expire",
    )


async def _retire(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    view: FileView,
    reason: str,
    action: str,
) -> None:
    """Mark the file deleted (committed at once: from then on no upload is merged into it),
    then remove every provider copy (or queue it), then collect its blob."""
    file = view.file
    repo = FileRepository(session)
    lifecycle.transition(
        session, file, FileStatus.DELETED, reason=reason, request_id=ctx.request_id
    )
    file.deleted_at = utcnow()
    audit.record(session=session, ctx=ctx, action=f"file.{action}", resource=file.id)
    held = [
        c
        for c in view.copies
        if c.status not in (ProviderCopyStatus.DELETED, ProviderCopyStatus.FAILED)
    ]
    for copy in held:
        # Durable with the tombstone: should this process die before the provider deletes
        # below, a worker removes the copies.
        await _queue_removal(session=session, rt=rt, copy=copy)
    await session.commit()
    for copy in held:
        await remove_copy(session=session, rt=rt, ctx=ctx, copy=copy, reason=f"file {reason}")
    # A placement finishing from now on sees the delete; one that went live while the copies
    # above were removed is removed here as well.
    await session.flush()
    removed = {c.id for c in held}
    for copy in (await repo.copies_for([file.id]))[file.id]:
        if copy.id not in removed and copy.status == ProviderCopyStatus.ACTIVE:
            await _queue_removal(session=session, rt=rt, copy=copy)
            await remove_copy(session=session, rt=rt, ctx=ctx, copy=copy, reason=f"file {reason}")
    await collect_blob(session=session, rt=rt, sha256=file.sha256)


async def _queue_removal(*, session: AsyncSession, rt: Runtime, copy: ProviderCopy) -> None:
    """The job that removes a copy unless this request does first (then it finds it done)."""
    await jobs.enqueue(
        session=session,
        kind=jobs.DELETE_COPY,
        payload={"copy_id": copy.id},
        dedupe_key=f"delete_copy:{copy.id}",
        delay_seconds=rt.settings.job_lease_seconds,
        max_attempts=rt.settings.job_max_attempts,
    )


async def replicate(
    *, session: AsyncSession, rt: Runtime, ctx: CallContext, file_id: str, provider: str
) -> FileView:
    """Place a copy of a file on another provider from the canonical blob."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    file = view.file
    if provider == "auto":
        raise InvalidRequest("Name the provider to copy the file to.", param="provider")
    if any(c.provider == provider and c.status == ProviderCopyStatus.ACTIVE for c in view.copies):
        return view
    targets = rt.providers.targets(
        purpose=file.purpose, filename=file.filename, size=file.bytes, requested=provider
    )
    outcome = await placement.place(session=session, rt=rt, ctx=ctx, file=file, targets=targets)
    if outcome.withdrawn:
        raise _not_found(file.id)
    if outcome.placed_on is None:
        error = outcome.first_error
        if not outcome.deferred:
            raise error
        await placement.defer(
            session=session,
            rt=rt,
            ctx=ctx,
            file=file,
            provider=provider,
            reason=outcome.reasons,
            retry_after=outcome.retry_after,
        )
        copies = (await FileRepository(session).copies_for([file.id]))[file.id]
        return FileView(file, copies, retry_after=outcome.retry_after)
    copies = (await FileRepository(session).copies_for([file.id]))[file.id]
    return FileView(file, copies)


async def events(
    *, session: AsyncSession, ctx: CallContext, file_id: str
) -> Sequence[LifecycleEvent]:
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    return await FileRepository(session).events_for(view.file.id)


async def remove_copy(
    *, session: AsyncSession, rt: Runtime, ctx: CallContext, copy: ProviderCopy, reason: str
) -> bool:
    """Delete one provider copy; on a provider fault mark it deleting and queue a retry."""
    if copy.provider_file_id:
        try:
            await rt.providers.adapter(copy.provider).delete(copy.provider_file_id)
        except ProviderNotFound:
            pass  # already gone at the provider: the goal is reached
        except ProviderError as exc:
            if copy.status != ProviderCopyStatus.DELETING:
                lifecycle.transition(
                    session,
                    copy,
                    ProviderCopyStatus.DELETING,
                    reason=f"{reason}; provider delete will be retried: {exc.message}",
                    request_id=ctx.request_id,
                )
            copy.last_error = exc.message
            await jobs.enqueue(
                session=session,
                kind=jobs.DELETE_COPY,
                payload={"copy_id": copy.id},
                dedupe_key=f"delete_copy:{copy.id}",
                delay_seconds=exc.retry_after or rt.settings.job_backoff_base,
                max_attempts=rt.settings.job_max_attempts,
                sooner=True,  # the removal queued with a delete runs at this backoff instead
            )
            return False
    lifecycle.transition(
        session, copy, ProviderCopyStatus.DELETED, reason=reason, request_id=ctx.request_id
    )
    copy.last_error = None
    return True


async def content_path(
    *, session: AsyncSession, rt: Runtime, ctx: CallContext, file_id: str
) -> tuple[FileView, Path]:
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    blob = await FileRepository(session).blob(view.file.sha256)
    if blob is None:
        raise NotFound(f"The content of {file_id} is no longer stored.", param="id")
    if blob.corrupt_at is not None:
        raise BlobCorrupt(
            f"The stored content of {file_id} failed its integrity check and is withheld."
        )
    return view, rt.blob_store.local_path(blob.storage_key)


async def extract(
    *, session: AsyncSession, rt: Runtime, ctx: CallContext, file_id: str
) -> tuple[str, dict[str, object]]:
    """The provider's extracted text for a file-extract file, fetched once then cached."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    if view.file.purpose not in EXTRACTABLE and view.file.purpose not in {
        "assistants",
        "user_data",
    }:
        raise InvalidRequest(
            f"Extraction is only available for files uploaded with purpose 'file-extract' "
            f"(this one is '{view.file.purpose}').",
            param="id",
            code="not_extractable",
        )
    active = [
        c
        for c in view.copies
        if c.status == ProviderCopyStatus.ACTIVE
        and c.provider_file_id
        and c.native_purpose in EXTRACTABLE
    ]
    if not active:
        raise InvalidRequest(
            f"{file_id} is not live on any provider yet (status '{view.file.status}').",
            param="id",
            code="not_ready",
        )
    # The provider knows the copy by its provider-side name; callers know their own.
    own_name = {"filename": view.file.filename}
    for copy in active:
        if copy.extracted is not None:
            return copy.provider, {**json.loads(copy.extracted), **own_name}
    copy = active[0]
    assert copy.provider_file_id is not None
    raw = await rt.providers.adapter(copy.provider).content(copy.provider_file_id)
    try:
        parsed = json.loads(raw)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("content"), str):
            raise ValueError("no content")
    except ValueError as exc:
        raise ProviderUnavailable(
            f"{copy.provider} returned extracted content the gateway cannot read.",
            provider=copy.provider,
        ) from exc
    copy.extracted = json.dumps(parsed, ensure_ascii=False)
    await session.flush()
    return copy.provider, {**parsed, **own_name}

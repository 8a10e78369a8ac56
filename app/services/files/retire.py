"""Retiring files: delete or expire one, remove its provider copies, collect its blob."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.config import Settings
from app.core.db import unit_of_work, utcnow
from app.core.errors import ProviderError, ProviderNotFound
from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import File, FileStatus, ProviderCopy, ProviderCopyStatus
from app.providers.hub import ProviderHub
from app.repositories.files import FileRepository
from app.services import audit, lifecycle
from app.services.files.queries import get_file
from app.services.files.views import FileView
from app.storage.blobs import BlobStore


async def delete_file(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    settings: Settings,
    ctx: CallContext,
    file_id: str,
) -> str:
    """Delete a file now; provider copies that cannot be removed yet are retried by a job."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    await _retire(
        session=session,
        blob_store=blob_store,
        providers=providers,
        settings=settings,
        ctx=ctx,
        view=view,
        reason="deleted by caller",
        action="delete",
    )
    return view.file.id


async def expire_file(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    settings: Settings,
    ctx: CallContext,
    file: File,
) -> None:
    """Remove an expired file at every provider and retire it; the blob goes when unused."""
    copies = (await FileRepository(session).copies_for([file.id]))[file.id]
    await _retire(
        session=session,
        blob_store=blob_store,
        providers=providers,
        settings=settings,
        ctx=ctx,
        view=FileView(file, copies),
        reason="expired",
        action="expire",
    )


async def _retire(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    settings: Settings,
    ctx: CallContext,
    view: FileView,
    reason: str,
    action: str,
) -> None:
    """Mark the file deleted (committed at once: from then on no upload is merged into it),
    then remove every provider copy (or queue it), then collect its blob."""
    file = view.file
    repo = FileRepository(session)
    held = [
        c
        for c in view.copies
        if c.status
        not in (ProviderCopyStatus.DELETED, ProviderCopyStatus.FAILED, ProviderCopyStatus.EVICTED)
    ]
    async with unit_of_work(session):  # the tombstone, and a removal job per copy held
        lifecycle.transition(
            session, file, FileStatus.DELETED, reason=reason, request_id=ctx.request_id
        )
        file.deleted_at = utcnow()
        audit.record(session=session, ctx=ctx, action=f"file.{action}", resource=file.id)
        for copy in held:
            # Should this process die before the provider deletes below, a worker does them.
            await _queue_removal(session=session, settings=settings, copy=copy)
    removed: set[int] = set()
    while held:
        for copy in held:  # each provider delete recorded in its own unit of work
            await remove_copy(
                session=session,
                providers=providers,
                settings=settings,
                ctx=ctx,
                copy=copy,
                reason=f"file {reason}",
            )
        removed |= {c.id for c in held}
        # A placement finishing from now on sees the delete; one that went live while the
        # copies above were removed is removed in the next round.
        async with unit_of_work(session):
            held = [
                c
                for c in (await repo.copies_for([file.id]))[file.id]
                if c.id not in removed and c.status == ProviderCopyStatus.ACTIVE
            ]
            for copy in held:
                await _queue_removal(session=session, settings=settings, copy=copy)
    await collect_blob(session=session, blob_store=blob_store, sha256=file.sha256)


async def _queue_removal(*, session: AsyncSession, settings: Settings, copy: ProviderCopy) -> None:
    """The job that removes a copy unless this request does first (then it finds it done)."""
    await queue.enqueue(
        session=session,
        kind=JobKind.DELETE_COPY,
        payload={"copy_id": copy.id},
        dedupe_key=f"delete_copy:{copy.id}",
        delay_seconds=settings.job_lease_seconds,
        max_attempts=settings.job_max_attempts,
    )


async def remove_copy(
    *,
    session: AsyncSession,
    providers: ProviderHub,
    settings: Settings,
    ctx: CallContext,
    copy: ProviderCopy,
    reason: str,
) -> bool:
    """Delete one provider copy, then record it deleted in a unit of work; on a provider fault
    record it deleting, with a retry queued."""
    failure: ProviderError | None = None
    if copy.provider_file_id:
        try:
            await providers.adapter(copy.provider).delete(copy.provider_file_id)
        except ProviderNotFound:
            pass  # already gone at the provider: the goal is reached
        except ProviderError as exc:
            failure = exc
    async with unit_of_work(session):
        if failure is None:
            lifecycle.transition(
                session, copy, ProviderCopyStatus.DELETED, reason=reason, request_id=ctx.request_id
            )
            copy.last_error = None
            # A slot came free: placements waiting for room on this provider may go now.
            await queue.expedite_placements(session=session, provider=copy.provider)
            return True
        if copy.status != ProviderCopyStatus.DELETING:
            lifecycle.transition(
                session,
                copy,
                ProviderCopyStatus.DELETING,
                reason=f"{reason}; provider delete will be retried: {failure.message}",
                request_id=ctx.request_id,
            )
        copy.last_error = failure.message
        await queue.enqueue(
            session=session,
            kind=JobKind.DELETE_COPY,
            payload={"copy_id": copy.id},
            dedupe_key=f"delete_copy:{copy.id}",
            delay_seconds=failure.retry_after or settings.job_backoff_base,
            max_attempts=settings.job_max_attempts,
            sooner=True,  # the removal queued with a delete runs at this backoff instead
        )
        return False


async def collect_blob(*, session: AsyncSession, blob_store: BlobStore, sha256: str) -> bool:
    """Remove a blob once no live file of any tenant references it, in a unit of work of its own:
    the row goes first, the bytes once that commits."""
    repo = FileRepository(session)
    blob = await repo.lock_blob_if_unreferenced(sha256)
    if blob is None:
        return False
    await repo.delete_blob_row(sha256)
    await session.flush()
    # Moved aside under the row lock (a concurrent upload of the same bytes waits), removed only
    # once the deletion commits: a failed commit puts it back, a crash leaves a spool to sweep.
    token = await blob_store.set_aside(blob.storage_key)
    try:
        await session.commit()
    except BaseException:
        if token is not None:
            await blob_store.put_back(blob.storage_key, token)
        raise
    if token is not None:
        await blob_store.purge(token)
    return True

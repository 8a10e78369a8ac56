"""Files: accept (dedup + place), read, list, download, extract and delete."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderNotFound,
    ProviderUnavailable,
)
from app.models import File, FileStatus, ProviderCopy, ProviderCopyStatus
from app.repositories.files import FileRepository
from app.runtime import Runtime
from app.services import audit
from app.services.context import CallContext
from app.services.intake import IncomingUpload
from app.services.placement import Target

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


@dataclass(frozen=True)
class CreateResult:
    view: FileView
    created: bool


def _not_found(file_id: str) -> NotFound:
    # Identical for a missing id and for another tenant's id.
    return NotFound(f"No such File object: {file_id}", param="id")


async def get_file(*, session: AsyncSession, ctx: CallContext, file_id: str) -> FileView:
    if not valid_file_id(file_id):
        raise InvalidRequest(
            f"'{file_id}' is not a file id (expected 'file-' and 24 letters or digits).",
            param="id",
            code="invalid_file_id",
        )
    repo = FileRepository(session)
    file = await repo.get_live(tenant_id=ctx.principal.tenant_id, file_id=file_id)
    if file is None:
        raise _not_found(file_id)
    copies = (await repo.copies_for([file.id]))[file.id]
    return FileView(file, copies)


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
) -> CreateResult:
    """Accept an upload: reuse the tenant's identical file or store and place a new one."""
    try:
        targets = rt.providers.targets(
            purpose=purpose, filename=upload.filename, size=upload.size, requested=provider
        )
        repo = FileRepository(session)
        rt.metrics.upload_bytes.inc(upload.size)
        existing = await repo.find_duplicate(
            tenant_id=ctx.principal.tenant_id, sha256=upload.sha256, purpose=purpose
        )
        if existing is None:
            claimed = await _claim(
                session=session,
                rt=rt,
                ctx=ctx,
                upload=upload,
                purpose=purpose,
                provider=provider,
                first=targets[0],
            )
            if claimed is not None:
                view = await _place(session=session, rt=rt, ctx=ctx, file=claimed, targets=targets)
                rt.metrics.uploads.labels(_placed_on(view), "created").inc()
                return CreateResult(view, created=True)
            existing = await repo.find_duplicate(
                tenant_id=ctx.principal.tenant_id, sha256=upload.sha256, purpose=purpose
            )
            if existing is None:
                raise ProviderUnavailable(
                    "The upload collided with a concurrent one that then failed; retry it.",
                    provider="gateway",
                    code="upload_conflict",
                )
        upload.spool.discard()
        view = await _deduplicated(
            session=session, rt=rt, ctx=ctx, file=existing, provider=provider, targets=targets
        )
        return CreateResult(view, created=False)
    except GatewayError:
        rt.metrics.uploads.labels(provider, "failed").inc()
        raise
    finally:
        upload.spool.discard()


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
) -> File | None:
    """Commit blob, file row and the first placement intent; None if a twin won the race."""
    repo = FileRepository(session)
    await session.commit()  # end any read snapshot so the write transaction starts fresh
    key = rt.blob_store.key_for(upload.sha256)
    await repo.lock_blob(sha256=upload.sha256, size=upload.size, storage_key=key)
    await rt.blob_store.commit(upload.spool, sha256=upload.sha256)
    file = File(
        id=new_file_id(),
        tenant_id=ctx.principal.tenant_id,
        sha256=upload.sha256,
        bytes=upload.size,
        filename=upload.filename,
        content_type=upload.content_type,
        purpose=purpose,
        status=FileStatus.UPLOADED,
        requested_provider=provider,
    )
    session.add(file)
    session.add(
        ProviderCopy(
            file_id=file.id,
            provider=first.provider,
            native_purpose=first.rule.native,
            status=ProviderCopyStatus.PLACING,
            attempts=0,
        )
    )
    repo.add_event(
        file_id=file.id,
        to_status=FileStatus.UPLOADED,
        reason="upload accepted",
        request_id=ctx.request_id,
    )
    repo.add_event(
        file_id=file.id,
        provider=first.provider,
        to_status=ProviderCopyStatus.PLACING,
        reason=f"placing as '{first.rule.native}'",
        request_id=ctx.request_id,
    )
    audit.record(session=session, ctx=ctx, action="file.create", resource=file.id)
    try:
        # The intent must be durable before the provider call, so a crash leaves a trail.
        await session.commit()
    except IntegrityError:
        await session.rollback()
        return None
    return file


async def _place(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    file: File,
    targets: Sequence[Target],
) -> FileView:
    """Upload the canonical blob to the first target that takes it; commit each step."""
    repo = FileRepository(session)
    blob_path = rt.blob_store.local_path(rt.blob_store.key_for(file.sha256))
    last_error: ProviderError | None = None
    for target in targets:
        copy = await repo.copy_for(file_id=file.id, provider=target.provider)
        if copy is None:
            copy = ProviderCopy(
                file_id=file.id,
                provider=target.provider,
                native_purpose=target.rule.native,
                status=ProviderCopyStatus.PLACING,
                attempts=0,
            )
            session.add(copy)
            repo.add_event(
                file_id=file.id,
                provider=target.provider,
                to_status=ProviderCopyStatus.PLACING,
                reason=f"placing as '{target.rule.native}'",
                request_id=ctx.request_id,
            )
        elif copy.status != ProviderCopyStatus.PLACING:
            repo.add_event(
                file_id=file.id,
                provider=target.provider,
                from_status=copy.status,
                to_status=ProviderCopyStatus.PLACING,
                reason="placing again",
                request_id=ctx.request_id,
            )
            copy.status = ProviderCopyStatus.PLACING
            copy.native_purpose = target.rule.native
        copy.attempts += 1
        await session.commit()
        try:
            placed = await _upload(rt, target.provider, blob_path, file, target.rule.native)
        except ProviderError as exc:
            last_error = exc
            copy.status = ProviderCopyStatus.FAILED
            copy.last_error = exc.message
            repo.add_event(
                file_id=file.id,
                provider=target.provider,
                from_status=ProviderCopyStatus.PLACING,
                to_status=ProviderCopyStatus.FAILED,
                reason=exc.message,
                request_id=ctx.request_id,
            )
            await session.commit()
            continue
        copy.status = ProviderCopyStatus.ACTIVE
        copy.provider_file_id = placed
        copy.last_error = None
        repo.add_event(
            file_id=file.id,
            provider=target.provider,
            from_status=ProviderCopyStatus.PLACING,
            to_status=ProviderCopyStatus.ACTIVE,
            reason=f"placed as {placed}",
            request_id=ctx.request_id,
        )
        if file.status != FileStatus.PROCESSED:
            repo.add_event(
                file_id=file.id,
                from_status=file.status,
                to_status=FileStatus.PROCESSED,
                reason=f"live on {target.provider}",
                request_id=ctx.request_id,
            )
            file.status = FileStatus.PROCESSED
            file.status_details = None
        audit.record(
            session=session,
            ctx=ctx,
            action="file.place",
            resource=f"{file.id}@{target.provider}",
        )
        await session.commit()
        copies = (await repo.copies_for([file.id]))[file.id]
        return FileView(file, copies)
    assert last_error is not None
    await _fail_placement(session=session, rt=rt, ctx=ctx, file=file, error=last_error)
    raise last_error


async def _upload(rt: Runtime, provider: str, path: Path, file: File, native: str) -> str:
    adapter = rt.providers.adapter(provider)
    result = await adapter.upload(
        path=path, filename=file.filename, purpose=native, content_type=file.content_type
    )
    return result.id


async def _fail_placement(
    *, session: AsyncSession, rt: Runtime, ctx: CallContext, file: File, error: ProviderError
) -> None:
    """No provider took a newly accepted file: retire it so nothing half-made stays live."""
    if file.status == FileStatus.PROCESSED:
        return  # an extra copy failed; the file itself is fine
    repo = FileRepository(session)
    repo.add_event(
        file_id=file.id,
        from_status=file.status,
        to_status=FileStatus.ERROR,
        reason=f"placement failed: {error.message}",
        request_id=ctx.request_id,
    )
    file.status = FileStatus.ERROR
    file.status_details = error.message
    file.deleted_at = utcnow()
    audit.record(
        session=session,
        ctx=ctx,
        action="file.place",
        resource=file.id,
        outcome="failed",
        status_code=error.status_code,
        detail=error.message,
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
) -> FileView:
    """Answer with the tenant's existing file once its placement has settled."""
    repo = FileRepository(session)
    deadline = time.monotonic() + rt.settings.dedup_wait_seconds
    current: File | None = file
    while current is not None and current.status == FileStatus.UPLOADED:
        if time.monotonic() >= deadline:
            break
        await session.commit()
        await asyncio.sleep(SETTLE_POLL_SECONDS)
        current = await repo.refresh(file.id)
    if current is None or current.deleted_at is not None:
        raise ProviderUnavailable(
            "An identical upload that was in progress failed; retry the upload.",
            provider="gateway",
            code="upload_conflict",
        )
    rt.metrics.dedup_hits.inc()
    copies = (await repo.copies_for([current.id]))[current.id]
    live_on = {c.provider for c in copies if c.status == ProviderCopyStatus.ACTIVE}
    if provider != "auto" and provider not in live_on and current.status != FileStatus.UPLOADED:
        # An explicit provider is honoured: add a copy there rather than answer elsewhere.
        view = await _place(session=session, rt=rt, ctx=ctx, file=current, targets=targets)
        rt.metrics.uploads.labels(provider, "created").inc()
        return view
    rt.metrics.uploads.labels(_placed_on(FileView(current, copies)), "deduplicated").inc()
    audit.record(
        session=session,
        ctx=ctx,
        action="file.create",
        resource=current.id,
        detail="deduplicated",
    )
    return FileView(current, copies)


async def collect_blob(*, session: AsyncSession, rt: Runtime, sha256: str) -> bool:
    """Remove a blob once no live file of any tenant references it."""
    repo = FileRepository(session)
    blob = await repo.lock_blob_if_unreferenced(sha256)
    if blob is None:
        return False
    await repo.delete_blob_row(sha256)
    await session.flush()
    # Unlinked while the row lock is held, so a concurrent upload of the same bytes waits.
    await rt.blob_store.delete(blob.storage_key)
    return True


async def delete_file(*, session: AsyncSession, rt: Runtime, ctx: CallContext, file_id: str) -> str:
    """Remove every provider copy, then the file; the blob goes when nothing else uses it."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    file = view.file
    repo = FileRepository(session)
    failure: ProviderError | None = None
    for copy in view.copies:
        if copy.status in (ProviderCopyStatus.DELETED, ProviderCopyStatus.FAILED):
            continue
        if copy.provider_file_id:
            try:
                await rt.providers.adapter(copy.provider).delete(copy.provider_file_id)
            except ProviderNotFound:
                pass  # already gone at the provider: the goal is reached
            except ProviderError as exc:
                failure = failure or exc
                copy.last_error = exc.message
                continue
        repo.add_event(
            file_id=file.id,
            provider=copy.provider,
            from_status=copy.status,
            to_status=ProviderCopyStatus.DELETED,
            reason="file deleted",
            request_id=ctx.request_id,
        )
        copy.status = ProviderCopyStatus.DELETED
    if failure is not None:
        # Keep what was removed; the file stays until every provider copy is gone.
        audit.record(
            session=session,
            ctx=ctx,
            action="file.delete",
            resource=file.id,
            outcome="failed",
            status_code=failure.status_code,
            detail=failure.message,
        )
        await session.commit()
        raise failure
    repo.add_event(
        file_id=file.id,
        from_status=file.status,
        to_status=FileStatus.DELETED,
        reason="deleted by caller",
        request_id=ctx.request_id,
    )
    file.status = FileStatus.DELETED
    file.deleted_at = utcnow()
    audit.record(session=session, ctx=ctx, action="file.delete", resource=file.id)
    await session.flush()
    await collect_blob(session=session, rt=rt, sha256=file.sha256)
    return file.id


async def content_path(
    *, session: AsyncSession, rt: Runtime, ctx: CallContext, file_id: str
) -> tuple[FileView, Path]:
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    blob = await FileRepository(session).blob(view.file.sha256)
    if blob is None:
        raise NotFound(f"The content of {file_id} is no longer stored.", param="id")
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
    for copy in active:
        if copy.extracted is not None:
            return copy.provider, json.loads(copy.extracted)
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
    return copy.provider, parsed

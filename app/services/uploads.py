"""Resumable uploads (OpenAI's Uploads API): parts kept in the blob store, then one file.

An upload is created with the file's name, purpose, type and size; its parts arrive one request
each (any replica, any order, a lost one sent again) and are kept in the blob store; completion
streams the chosen parts, in the order given, into a spool and hands it to the ordinary upload
path (`create_file`: dedup, quota, placement and events apply as to any upload). An upload lives
an hour; the parts of a finished one (completed, cancelled or expired) are removed at once or
by the periodic `expire_uploads` job."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext, system_context
from app.core.clock import Clock
from app.core.config import Settings
from app.core.db import unit_of_work
from app.core.errors import Conflict, GatewayError, InvalidRequest, NotFound, PayloadTooLarge
from app.models import Upload, UploadPart, UploadStatus
from app.providers.hub import ProviderHub
from app.repositories.uploads import UploadRepository
from app.services import audit, lifecycle
from app.services import files as file_service
from app.services.files import FileView, IncomingUpload
from app.services.files.settle import Placer
from app.storage.blobs import BlobMissing, BlobStore, Spool

log = logging.getLogger("filegate.uploads")

MiB = 1024 * 1024
PART_MAX_BYTES = 64 * MiB  # OpenAI's limit for one part
UPLOAD_LIFETIME = timedelta(hours=1)
MAX_PARTS = 2_000  # their ids must fit one completion's JSON body
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
COLLECT_BATCH = 100
JOIN_BLOCK_BYTES = 4 * MiB


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(24))


def valid_upload_id(upload_id: str) -> bool:
    body = upload_id.removeprefix("upload_")
    return body != upload_id and len(body) == 24 and all(ch in ID_ALPHABET for ch in body)


def not_found() -> NotFound:
    # Identical for a missing id and for another tenant's id.
    return NotFound("No such Upload object.", param="upload_id")


@dataclass(frozen=True)
class CompletedUpload:
    upload: Upload
    file: FileView


async def create_upload(
    *,
    session: AsyncSession,
    providers: ProviderHub,
    settings: Settings,
    clock: Clock,
    ctx: CallContext,
    filename: str,
    purpose: str,
    size: int,
    mime_type: str,
    file_expires_after_seconds: int | None,
) -> Upload:
    """A pending upload, refused now if no provider could ever take a file of this size."""
    if size > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"The upload declares {size} bytes; the gateway's limit is "
            f"{settings.max_upload_bytes} bytes.",
            param="bytes",
        )
    providers.targets(purpose=purpose, filename=filename, size=size, requested="auto")
    now = clock.now()
    upload = Upload(
        id=_new_id("upload_"),
        tenant_id=ctx.principal.tenant_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        mime_type=mime_type,
        file_expires_after_seconds=file_expires_after_seconds,
        created_at=now,
        expires_at=now + UPLOAD_LIFETIME,
    )
    lifecycle.transition(
        session, upload, UploadStatus.PENDING, reason="created", request_id=ctx.request_id, new=True
    )
    UploadRepository(session).add(upload)
    audit.record(session=session, ctx=ctx, action="upload.create", resource=upload.id)
    await session.flush()
    return upload


async def part_limit(
    *, session: AsyncSession, clock: Clock, ctx: CallContext, upload_id: str
) -> int:
    """The largest part the pending upload takes now (before its bytes are read); 4xx when
    it takes none. A read, no lock: the part is checked again under the lock once received."""
    repo = UploadRepository(session)
    async with unit_of_work(session):
        upload = await _readable(repo, ctx=ctx, upload_id=upload_id)
        if upload.status != UploadStatus.PENDING or upload.expires_at <= clock.now():
            upload = await _pending(session, repo, ctx=ctx, upload_id=upload_id, now=clock.now())
        count, stored = await repo.part_usage(upload.id)
    if count >= MAX_PARTS:
        raise InvalidRequest(
            f"The upload already holds {MAX_PARTS} parts, the most it may.",
            param="data",
            code="too_many_parts",
        )
    # Room for every part to be sent once more (lost answers), never without bound.
    if stored >= 2 * upload.bytes:
        raise InvalidRequest(
            f"The upload's parts already hold {stored} bytes, twice the {upload.bytes} "
            "declared: complete it with the parts it needs, or cancel it.",
            param="data",
            code="too_many_parts",
        )
    return min(PART_MAX_BYTES, upload.bytes)


async def add_part(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    clock: Clock,
    ctx: CallContext,
    upload_id: str,
    part: IncomingUpload,
) -> UploadPart:
    """Keep a received part: its bytes durable in the blob store, then its row."""
    part_id = _new_id("part_")
    if part.durable is not None:
        await part.durable  # the spool is finished in the background; a part keeps it as it is
    key = await blob_store.keep_part(part.spool, upload_id=upload_id, part_id=part_id)
    repo = UploadRepository(session)
    try:
        upload = await _pending(session, repo, ctx=ctx, upload_id=upload_id, now=clock.now())
    except GatewayError:
        # Finished meanwhile (completed, cancelled, expired): every part it has is garbage.
        with contextlib.suppress(GatewayError, OSError):
            await blob_store.delete_parts(upload_id)
        raise
    row = UploadPart(
        id=part_id,
        upload_id=upload.id,
        bytes=part.size,
        sha256=part.sha256,
        storage_key=key,
        created_at=clock.now(),
    )
    repo.add(row)
    await session.flush()
    return row


async def complete_upload(
    *,
    session: AsyncSession,
    placer: Placer,
    clock: Clock,
    ctx: CallContext,
    upload_id: str,
    part_ids: Sequence[str],
    md5: str | None,
) -> CompletedUpload:
    """Assemble the parts, in the order given, into an ordinary file.

    Units of work: check the upload and its parts under the upload's lock; stream the parts
    into a spool with no transaction open; accept it as any upload is (create_file, its own
    units of work); mark the upload completed; remove its parts."""
    repo = UploadRepository(session)
    async with unit_of_work(session):
        upload = await _pending(session, repo, ctx=ctx, upload_id=upload_id, now=clock.now())
        parts = await _chosen_parts(repo, upload=upload, part_ids=part_ids)
        plan = _Assembly.of(upload)
    blob_store = placer.blob_store
    spool = blob_store.new_spool()
    joined = _Joined(spool, md5=md5 is not None)
    try:
        for part in parts:
            try:
                async with await blob_store.open_part(part.storage_key) as reader:
                    async for chunk in reader.chunks():
                        await joined.add(chunk)
            except BlobMissing:
                raise await _part_gone(repo, ctx=ctx, upload_id=upload_id, part=part) from None
        md5_hex = await joined.finish()
        sha256 = await spool.finish()
        if md5 is not None and md5_hex != md5.lower():
            raise InvalidRequest(
                "The md5 given does not match the md5 of the parts, in the order given.",
                param="md5",
                code="md5_mismatch",
            )
        created = await file_service.create_file(
            session=session,
            placer=placer,
            ctx=ctx,
            upload=IncomingUpload(
                spool=spool,
                sha256=sha256,
                size=spool.size,
                filename=plan.filename,
                content_type=plan.mime_type,
            ),
            purpose=plan.purpose,
            provider="auto",
            expires_at=plan.file_expires_at(clock.now()),
        )
    finally:
        with contextlib.suppress(Exception):  # a write still in flight ends before the discard
            await joined.settle()
        await spool.discard()
    async with unit_of_work(session):
        upload = await _locked(repo, ctx=ctx, upload_id=upload_id)
        if upload.status != UploadStatus.PENDING:
            raise _not_pending(upload)  # a concurrent complete or cancel came first
        lifecycle.transition(
            session, upload, UploadStatus.COMPLETED, reason="completed", request_id=ctx.request_id
        )
        upload.file_id = created.view.file.id
        audit.record(
            session=session,
            ctx=ctx,
            action="upload.complete",
            resource=upload.id,
            detail=f"{len(parts)} parts into {upload.file_id}",
        )
    await _collect_quietly(session=session, blob_store=blob_store, clock=clock, upload=upload)
    return CompletedUpload(upload=upload, file=created.view)


async def cancel_upload(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    clock: Clock,
    ctx: CallContext,
    upload_id: str,
) -> Upload:
    """Cancel a pending upload; its parts are removed and no part is accepted after."""
    repo = UploadRepository(session)
    async with unit_of_work(session):
        upload = await _pending(session, repo, ctx=ctx, upload_id=upload_id, now=clock.now())
        lifecycle.transition(
            session, upload, UploadStatus.CANCELLED, reason="cancelled", request_id=ctx.request_id
        )
        audit.record(session=session, ctx=ctx, action="upload.cancel", resource=upload.id)
    await _collect_quietly(session=session, blob_store=blob_store, clock=clock, upload=upload)
    return upload


async def expire_and_collect(
    *, session: AsyncSession, blob_store: BlobStore, clock: Clock, task: str
) -> tuple[int, int]:
    """Expire the pending uploads past their hour, then remove the parts of every finished
    upload still holding some; returns (expired, collected)."""
    repo = UploadRepository(session)
    now = clock.now()
    async with unit_of_work(session):
        expired = await repo.expired_pending(now=now, limit=COLLECT_BATCH)
        for upload in expired:
            _expire(session, upload, ctx=_system(upload, task))
    collected = 0
    for upload in await repo.uncollected(limit=COLLECT_BATCH):
        await collect_parts(session=session, blob_store=blob_store, clock=clock, upload=upload)
        collected += 1
    return len(expired), collected


async def collect_parts(
    *, session: AsyncSession, blob_store: BlobStore, clock: Clock, upload: Upload
) -> int:
    """Remove a finished upload's parts from the blob store, then their rows."""
    removed = await blob_store.delete_parts(upload.id)
    async with unit_of_work(session):
        await UploadRepository(session).forget_parts(upload_id=upload.id, collected_at=clock.now())
    return removed


async def _collect_quietly(
    *, session: AsyncSession, blob_store: BlobStore, clock: Clock, upload: Upload
) -> None:
    """Collect now if the store answers; otherwise the periodic job does it later."""
    try:
        await collect_parts(session=session, blob_store=blob_store, clock=clock, upload=upload)
    except (GatewayError, OSError) as exc:
        log.warning("parts of %s left for the collection job: %s", upload.id, type(exc).__name__)


class _Joined:
    """The parts' bytes on their way into the spool: gathered into large writes, one in flight
    while the next is read (memory: two blocks), md5 taken in the writer's thread."""

    def __init__(self, spool: Spool, *, md5: bool) -> None:
        self._spool = spool
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._block: list[bytes] = []
        self._block_bytes = 0
        self._writing: asyncio.Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        self._block.append(chunk)
        self._block_bytes += len(chunk)
        if self._block_bytes >= JOIN_BLOCK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        await self.settle()
        if self._block:
            block = b"".join(self._block)
            self._block.clear()
            self._block_bytes = 0
            self._writing = asyncio.ensure_future(self._write(block))

    async def _write(self, block: bytes) -> None:
        if self._md5 is not None:
            await to_thread.run_sync(self._md5.update, block)
        await self._spool.write(block)

    async def settle(self) -> None:
        """Wait for the write in flight (errors included: the caller is failing already)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def finish(self) -> str | None:
        """Write what is left; the md5 of everything, if asked for."""
        await self._flush()
        await self.settle()
        return self._md5.hexdigest() if self._md5 is not None else None


@dataclass(frozen=True)
class _Assembly:
    """What completion needs of the upload once its lock is released."""

    filename: str
    purpose: str
    mime_type: str
    file_expires_after_seconds: int | None

    @classmethod
    def of(cls, upload: Upload) -> _Assembly:
        return cls(
            filename=upload.filename,
            purpose=upload.purpose,
            mime_type=upload.mime_type,
            file_expires_after_seconds=upload.file_expires_after_seconds,
        )

    def file_expires_at(self, now: datetime) -> datetime | None:
        if self.file_expires_after_seconds is None:
            return None
        return now + timedelta(seconds=self.file_expires_after_seconds)


async def _chosen_parts(
    repo: UploadRepository, *, upload: Upload, part_ids: Sequence[str]
) -> list[UploadPart]:
    """The parts named, in order: each known, of this upload, once; together `bytes` long."""
    if not part_ids:
        raise InvalidRequest("part_ids must name at least one part.", param="part_ids")
    if len(set(part_ids)) != len(part_ids):
        raise InvalidRequest(
            "part_ids names a part more than once.", param="part_ids", code="duplicate_part"
        )
    found = await repo.parts(tenant_id=upload.tenant_id, part_ids=part_ids)
    chosen: list[UploadPart] = []
    for part_id in part_ids:
        part = found.get(part_id)
        if part is None:
            raise InvalidRequest(
                f"No part '{part_id[:64]}' was added to this upload.",
                param="part_ids",
                code="unknown_part",
            )
        if part.upload_id != upload.id:
            raise InvalidRequest(
                f"Part '{part_id}' belongs to another upload.",
                param="part_ids",
                code="part_of_another_upload",
            )
        chosen.append(part)
    total = sum(part.bytes for part in chosen)
    if total != upload.bytes:
        raise InvalidRequest(
            f"The parts given hold {total} bytes; the upload was created for {upload.bytes}.",
            param="part_ids",
            code="upload_size_mismatch",
        )
    return chosen


async def _readable(
    repo: UploadRepository, *, ctx: CallContext, upload_id: str, lock: bool = False
) -> Upload:
    if not valid_upload_id(upload_id):
        raise not_found()
    upload = await repo.get(tenant_id=ctx.principal.tenant_id, upload_id=upload_id, lock=lock)
    if upload is None:
        raise not_found()
    return upload


async def _locked(repo: UploadRepository, *, ctx: CallContext, upload_id: str) -> Upload:
    return await _readable(repo, ctx=ctx, upload_id=upload_id, lock=True)


async def _pending(
    session: AsyncSession,
    repo: UploadRepository,
    *,
    ctx: CallContext,
    upload_id: str,
    now: datetime,
) -> Upload:
    """The tenant's upload, locked, if it still takes parts; an hour after its creation it is
    expired here (committed) even before the periodic job gets to it."""
    upload = await _locked(repo, ctx=ctx, upload_id=upload_id)
    if upload.status == UploadStatus.PENDING and upload.expires_at <= now:
        _expire(session, upload, ctx=ctx)
        await session.commit()
    if upload.status != UploadStatus.PENDING:
        raise _not_pending(upload)
    return upload


async def _part_gone(
    repo: UploadRepository, *, ctx: CallContext, upload_id: str, part: UploadPart
) -> GatewayError:
    """Why a part's bytes were not found: the upload finished meanwhile, or they were lost."""
    upload = await _readable(repo, ctx=ctx, upload_id=upload_id)
    if upload.status != UploadStatus.PENDING:
        return _not_pending(upload)
    return Conflict(
        f"Part '{part.id}' is no longer stored: send that part again and complete the upload "
        "with the new part's id.",
        param="part_ids",
        code="part_missing",
    )


def _expire(session: AsyncSession, upload: Upload, *, ctx: CallContext) -> None:
    lifecycle.transition(
        session, upload, UploadStatus.EXPIRED, reason="expired", request_id=ctx.request_id
    )
    audit.record(session=session, ctx=ctx, action="upload.expire", resource=upload.id)


def _not_pending(upload: Upload) -> Conflict:
    return Conflict(
        f"The upload is {upload.status}: it takes no more parts and cannot be completed or "
        "cancelled.",
        param="upload_id",
        code=f"upload_{upload.status}",
    )


def _system(upload: Upload, task: str) -> CallContext:
    return system_context(tenant_id=upload.tenant_id, task=task)

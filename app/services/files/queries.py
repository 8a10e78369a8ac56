"""Reading a tenant's files: one file, a page of them, their events and stored content."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core import purposes
from app.core.errors import BlobCorrupt, InvalidRequest, NotFound
from app.models import LifecycleEvent
from app.repositories.files import FileRepository
from app.services.files.views import FilePage, FileView, check_id, not_found
from app.storage.blobs import BlobMissing, BlobReader, BlobStore


async def get_file(*, session: AsyncSession, ctx: CallContext, file_id: str) -> FileView:
    check_id(file_id)
    found = await FileRepository(session).get_live_with_copies(
        tenant_id=ctx.principal.tenant_id, file_id=file_id
    )
    if found is None:
        raise not_found()
    return FileView(*found)


async def read_file(*, session: AsyncSession, ctx: CallContext, file_id: str) -> FileView:
    """get_file for callers that only read: the rows are not tracked by the session."""
    check_id(file_id)
    found = await FileRepository(session).read_live_with_copies(
        tenant_id=ctx.principal.tenant_id, file_id=file_id
    )
    if found is None:
        raise not_found()
    return FileView(*found)


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
        purposes=purposes.spellings(purpose) if purpose is not None else None,
        after=cursor,
    )
    page = list(rows[:limit])
    copies = await repo.copies_for([f.id for f in page])
    return FilePage([FileView(f, copies[f.id]) for f in page], has_more=len(rows) > limit)


async def events(
    *, session: AsyncSession, ctx: CallContext, file_id: str
) -> Sequence[LifecycleEvent]:
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    return await FileRepository(session).events_for(view.file.id)


async def open_content(
    *, session: AsyncSession, blob_store: BlobStore, ctx: CallContext, file_id: str
) -> tuple[FileView, BlobReader]:
    """The file and its stored bytes, opened for reading; the caller closes the reader."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    blob = await FileRepository(session).blob(view.file.sha256)
    if blob is None:
        raise NotFound(f"The content of {file_id} is no longer stored.", param="id")
    if blob.corrupt_at is not None:
        raise BlobCorrupt(
            f"The stored content of {file_id} failed its integrity check and is withheld."
        )
    try:
        reader = await blob_store.open(blob.storage_key)
    except BlobMissing:
        raise BlobCorrupt(f"The stored content of {file_id} is missing.") from None
    return view, reader

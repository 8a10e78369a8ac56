"""Pinning: a pinned file's provider copies are never evicted to make room."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.jobs import queue
from app.services import audit, lifecycle
from app.services.files.queries import get_file
from app.services.files.views import FileView


async def set_pinned(
    *, session: AsyncSession, ctx: CallContext, file_id: str, pinned: bool
) -> FileView:
    """Pin or unpin a file's provider copies against eviction; recorded in its events."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    file = view.file
    if file.pinned == pinned:
        return view
    file.pinned = pinned
    lifecycle.note(
        session,
        file,
        reason="pinned: its provider copies are never evicted"
        if pinned
        else "unpinned: its provider copies may be evicted to make room",
        request_id=ctx.request_id,
    )
    audit.record(
        session=session, ctx=ctx, action="file.pin" if pinned else "file.unpin", resource=file.id
    )
    if not pinned:
        # Copies that may now be evicted can make room for placements waiting for it.
        for provider in sorted({c.provider for c in view.copies}):
            await queue.expedite_placements(session=session, provider=provider)
    return view

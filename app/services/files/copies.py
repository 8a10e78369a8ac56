"""Provider copies on demand: ensure one (re-placing an evicted copy) or add one elsewhere."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.models import ProviderCopyStatus
from app.services.capacity import mark_used
from app.services.files.queries import get_file
from app.services.files.settle import Attempt, Placer
from app.services.files.views import FileView


async def replicate(
    *, session: AsyncSession, placer: Placer, ctx: CallContext, file_id: str, provider: str
) -> FileView:
    """Ensure a live copy of a file on `provider` (`auto`: on any provider), placed from the
    canonical blob when there is none: new, lost or evicted to make room."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    file = view.file
    live = [
        c
        for c in view.copies
        if c.status == ProviderCopyStatus.ACTIVE and provider in ("auto", c.provider)
    ]
    if live:
        mark_used(live[:1])  # its provider file id is handed out
        return view
    targets = placer.providers.targets(
        purpose=file.purpose, filename=file.filename, size=file.bytes, requested=provider
    )
    # An evicted copy's provider first: it is where the caller's copy used to be.
    evicted = {c.provider for c in view.copies if c.status == ProviderCopyStatus.EVICTED}
    targets.sort(key=lambda t: t.provider not in evicted)
    return await placer.place_and_answer(
        session=session,
        ctx=ctx,
        file=file,
        targets=targets,
        provider=provider,
        attempt=Attempt.COPY,
    )

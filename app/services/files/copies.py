"""Extra copies: put a file on another provider from its canonical blob."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.errors import InvalidRequest
from app.models import ProviderCopyStatus
from app.services.files.queries import get_file
from app.services.files.settle import Attempt, Placer
from app.services.files.views import FileView


async def replicate(
    *, session: AsyncSession, placer: Placer, ctx: CallContext, file_id: str, provider: str
) -> FileView:
    """Place a copy of a file on another provider from the canonical blob."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    file = view.file
    if provider == "auto":
        raise InvalidRequest("Name the provider to copy the file to.", param="provider")
    if any(c.provider == provider and c.status == ProviderCopyStatus.ACTIVE for c in view.copies):
        return view
    targets = placer.providers.targets(
        purpose=file.purpose, filename=file.filename, size=file.bytes, requested=provider
    )
    return await placer.place_and_answer(
        session=session,
        ctx=ctx,
        file=file,
        targets=targets,
        provider=provider,
        attempt=Attempt.COPY,
    )

"""Extra copies: put a file on another provider from its canonical blob."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.errors import InvalidRequest
from app.models import ProviderCopyStatus
from app.runtime import Runtime
from app.services import placement
from app.services.files.queries import get_file
from app.services.files.settle import Attempt, answer, settle
from app.services.files.views import FileView


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
    outcome = await placement.place(
        session=session,
        blob_store=rt.blob_store,
        providers=rt.providers,
        deployment=rt.deployment,
        metrics=rt.metrics,
        ctx=ctx,
        file=file,
        targets=targets,
    )
    settled = await settle(
        session=session,
        settings=rt.settings,
        blob_store=rt.blob_store,
        ctx=ctx,
        file=file,
        provider=provider,
        outcome=outcome,
        attempt=Attempt.COPY,
    )
    return await answer(session=session, file=file, outcome=outcome, settled=settled)

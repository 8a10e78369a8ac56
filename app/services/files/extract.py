"""Extracted text: fetched once from the provider that holds a file-extract copy, then cached."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core import purposes
from app.core.errors import InvalidRequest, ProviderUnavailable
from app.models import FileStatus, ProviderCopy, ProviderCopyStatus
from app.services.capacity import mark_used
from app.services.files.copies import replicate
from app.services.files.queries import get_file
from app.services.files.settle import Placer

EXTRACTABLE = frozenset(purposes.spellings(purposes.FILE_EXTRACT))


async def extract(
    *, session: AsyncSession, placer: Placer, ctx: CallContext, file_id: str
) -> tuple[str, dict[str, object]]:
    """The provider's extracted text for a file-extract file, fetched once then cached; a
    file whose copies were evicted is placed again first."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    if view.file.purpose not in EXTRACTABLE:
        raise InvalidRequest(
            f"Extraction is only available for files uploaded with purpose 'file-extract' "
            f"(this one is '{view.file.purpose}').",
            param="id",
            code="not_extractable",
        )
    # The provider knows the copy by its provider-side name; callers know their own.
    own_name = {"filename": view.file.filename}
    for cached in view.copies:
        if cached.extracted is not None:  # kept when its copy was evicted
            return cached.provider, {**json.loads(cached.extracted), **own_name}
    active = _extractable(view.copies)
    if not active and view.file.status == FileStatus.PROCESSED:
        view = await replicate(
            session=session, placer=placer, ctx=ctx, file_id=file_id, provider="auto"
        )
        active = _extractable(view.copies)
    if not active:
        detail = f": {view.file.status_details}" if view.file.status_details else ""
        raise InvalidRequest(
            f"{file_id} is not live on any provider yet (status '{view.file.status}'){detail}",
            param="id",
            code="not_ready",
        )
    copy = active[0]
    assert copy.provider_file_id is not None
    mark_used([copy])
    raw = await placer.providers.adapter(copy.provider).content(copy.provider_file_id)
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


def _extractable(copies: list[ProviderCopy]) -> list[ProviderCopy]:
    return [
        c
        for c in copies
        if c.status == ProviderCopyStatus.ACTIVE
        and c.provider_file_id
        and c.native_purpose in EXTRACTABLE
    ]

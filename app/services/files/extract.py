"""Extracted text: fetched once from the provider that holds a file-extract copy, then cached."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core import purposes
from app.core.errors import InvalidRequest, ProviderUnavailable
from app.models import ProviderCopyStatus
from app.providers.hub import ProviderHub
from app.services.files.queries import get_file

EXTRACTABLE = frozenset(purposes.spellings(purposes.FILE_EXTRACT))


async def extract(
    *, session: AsyncSession, providers: ProviderHub, ctx: CallContext, file_id: str
) -> tuple[str, dict[str, object]]:
    """The provider's extracted text for a file-extract file, fetched once then cached."""
    view = await get_file(session=session, ctx=ctx, file_id=file_id)
    if view.file.purpose not in EXTRACTABLE:
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
    raw = await providers.adapter(copy.provider).content(copy.provider_file_id)
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

"""Storage sweep jobs: remove what crashed uploads and collections left in the blob store."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job
from app.repositories.files import FileRepository
from app.storage.blobs import leftover_kind

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("filegate.recovery")


async def handle_sweep_storage(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Remove the leftovers of crashed uploads and collections once they are old enough."""
    repo = FileRepository(session)
    removed = await rt.blob_store.sweep(
        max_age_seconds=rt.settings.storage_leftover_max_age_seconds,
        referenced=repo.blobs_with_rows,
    )
    for where in removed:
        rt.metrics.storage_swept.labels(leftover_kind(where)).inc()
    if removed:
        log.info("storage sweep removed %d leftovers", len(removed))

"""Upload expiry jobs: expire resumable uploads past their hour, remove finished ones' parts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job
from app.services import uploads

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("filegate.uploads")


async def handle_expire_uploads(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Expire pending uploads created over an hour ago; collect the parts of finished ones."""
    expired, collected = await uploads.expire_and_collect(
        session=session, blob_store=rt.blob_store, clock=rt.clock, task=f"job-{job.id}"
    )
    if expired or collected:
        log.info("uploads: %d expired, parts of %d removed", expired, collected)

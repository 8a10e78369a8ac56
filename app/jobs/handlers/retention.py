"""Retention jobs: delete finished jobs once they are past any use."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import unit_of_work, utcnow
from app.core.metrics import GatewayMetrics
from app.models import Job, JobState
from app.repositories.jobs import JobRepository

if TYPE_CHECKING:
    from app.runtime import Runtime

PURGE_BATCH = 500
# Per state and run: a backlog (a first run on an old registry) goes over a few hourly runs.
PURGE_MAX_BATCHES = 20


async def handle_purge_jobs(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Delete the done and dead jobs past their retention settings."""
    s = rt.settings
    await purge_finished_jobs(
        session=session,
        metrics=rt.metrics,
        now=utcnow(),
        done_retention=timedelta(seconds=s.job_done_retention_seconds),
        dead_retention=timedelta(seconds=s.job_dead_retention_seconds),
    )


async def purge_finished_jobs(
    *,
    session: AsyncSession,
    metrics: GatewayMetrics,
    now: datetime,
    done_retention: timedelta,
    dead_retention: timedelta,
    batch: int = PURGE_BATCH,
    max_batches: int = PURGE_MAX_BATCHES,
) -> dict[str, int]:
    """Delete done and dead jobs older than their retention, one bounded batch per unit of
    work; queued and running jobs are never touched. Returns the count deleted per state."""
    repo = JobRepository(session)
    deleted: dict[str, int] = {}
    for state, retention in ((JobState.DONE, done_retention), (JobState.DEAD, dead_retention)):
        deleted[state.value] = 0
        for _ in range(max_batches):
            async with unit_of_work(session):
                count = await repo.purge_finished(
                    state=state, finished_before=now - retention, limit=batch
                )
            deleted[state.value] += count
            metrics.jobs_purged.labels(state.value).inc(count)
            if count < batch:
                break
    return deleted

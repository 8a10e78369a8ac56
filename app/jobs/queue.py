"""The durable job queue as services see it: enqueue work, and errors that ask for a retry."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import RetryCallState, Retrying
from tenacity.wait import wait_random_exponential

from app.core.db import utcnow
from app.core.leases import renewing
from app.jobs.wakeup import wake_after_commit
from app.models import Job, JobState
from app.repositories.jobs import JobRepository

log = logging.getLogger("filegate.jobs")


class JobKind(StrEnum):
    PLACE = "place"
    DELETE_COPY = "delete_copy"
    CHECK_FILE = "check_file"
    RECONCILE = "reconcile"
    EXPIRE = "expire"
    HEALTH_SWEEP = "health_sweep"
    SWEEP_STORAGE = "sweep_storage"
    PURGE_JOBS = "purge_jobs"
    EXPIRE_UPLOADS = "expire_uploads"


KINDS = frozenset(JobKind)


class RetryLater(Exception):
    """Raised by a job handler when the work should be tried again after a backoff."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, patient: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # Waiting, not failing (a full provider account): the run costs none of its attempts.
        self.patient = patient


def payload_text(payload: dict[str, Any]) -> str:
    """How a job's payload is stored: JSON with sorted keys (what a payload filter matches)."""
    return json.dumps(payload, sort_keys=True)


async def enqueue(
    *,
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
    delay_seconds: float = 0.0,
    max_attempts: int = 8,
    sooner: bool = False,
) -> bool:
    """Add a job in the caller's unit of work; False when an equal active job already exists
    (with `sooner`, a queued equal job due later is brought forward to this one's time)."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    repo = JobRepository(session)
    run_after = utcnow() + timedelta(seconds=delay_seconds)
    added = await repo.enqueue(
        kind=kind,
        payload=payload_text(payload),
        dedupe_key=dedupe_key,
        run_after=run_after,
        max_attempts=max_attempts,
    )
    if not added and sooner and dedupe_key is not None:
        await repo.advance(dedupe_key=dedupe_key, run_after=run_after)
    if added and delay_seconds <= 0:
        await _announce(session, kind=kind)
    return added


async def _announce(session: AsyncSession, *, kind: str) -> None:
    """Idle workers wake when the caller commits: other processes' by NOTIFY, ours directly."""
    await JobRepository(session).announce_due(kind=kind)
    wake_after_commit(session)


async def requeue(*, session: AsyncSession, job_id: int) -> Job | None:
    """Put a finished job back in the queue with fresh attempts, due now: like a new job, it
    wakes idle workers when the caller commits."""
    job = await JobRepository(session).requeue(job_id)
    if job is not None:
        await _announce(session, kind=job.kind)
    return job


async def expedite_placements(*, session: AsyncSession, provider: str) -> int:
    """Make every queued placement that may go to `provider` due now (its circuit closed)."""
    count = await JobRepository(session).expedite(
        kind=JobKind.PLACE, dedupe_patterns=[f"place:%:{provider}", "place:%:auto"]
    )
    if count:
        await _announce(session, kind=JobKind.PLACE)
    return count


@dataclass(frozen=True)
class Intent:
    """Work a request does itself under a job's lease, so a crash hands it to a worker."""

    job_id: int
    attempts: int
    owner: str

    @property
    def job(self) -> Job:
        """A detached stand-in for the row: what the lease fences on (id, attempt, owner)
        stays readable whatever became of the request's session."""
        return Job(id=self.job_id, attempts=self.attempts)


async def begin_intent(
    *,
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    dedupe_key: str,
    owner: str,
    lease_seconds: float,
    max_attempts: int,
) -> Intent:
    """Record, in the caller's unit of work, the job the caller is about to run itself."""
    job = await JobRepository(session).add_claimed(
        kind=kind,
        payload=payload_text(payload),
        dedupe_key=dedupe_key,
        owner=owner,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
    )
    return Intent(job_id=job.id, attempts=job.attempts, owner=owner)


@asynccontextmanager
async def holding(
    sessionmaker: async_sessionmaker[AsyncSession], intent: Intent | None, *, lease_seconds: float
) -> AsyncIterator[None]:
    """Renew the intent's lease (a third of it apart) while the caller works on it."""
    if intent is None:
        yield
        return

    async def renew() -> bool:
        async with sessionmaker() as session:
            kept = await JobRepository(session).extend_lease(
                job=intent.job, worker_id=intent.owner, lease_seconds=lease_seconds
            )
            await session.commit()
        return kept

    try:
        async with renewing(renew, lease_seconds=lease_seconds, what=f"job {intent.job_id}"):
            yield
    except Exception:
        # The request failed mid-way (the database went away, most likely): hand the job to
        # the workers as soon as the database takes the word, not when the lease lapses.
        task = asyncio.ensure_future(_release(sessionmaker, intent, lease_seconds=lease_seconds))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)
        raise


_releasing: set[asyncio.Future[None]] = set()


async def _release(
    sessionmaker: async_sessionmaker[AsyncSession], intent: Intent, *, lease_seconds: float
) -> None:
    deadline = asyncio.get_running_loop().time() + lease_seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with sessionmaker() as session:
                await JobRepository(session).release_lease(job=intent.job, worker_id=intent.owner)
                await session.commit()
            return
        except Exception:
            await asyncio.sleep(min(1.0, lease_seconds / 10))


async def end_intent(
    *, session: AsyncSession, intent: Intent | None, retry_at: datetime | None = None
) -> None:
    """In the caller's unit of work: the intent is done, or (retry_at) becomes its own retry."""
    if intent is None:
        return
    await JobRepository(session).finish(
        job=intent.job,
        worker_id=intent.owner,
        state=JobState.QUEUED if retry_at is not None else JobState.DONE,
        run_after=retry_at,
    )


def backoff_at(*, attempts: int, base: float, cap: float, retry_after: float | None) -> datetime:
    """When to run again: tenacity's full-jitter exponential, never sooner than retry_after."""
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempts)
    delay = wait_random_exponential(multiplier=base, max=cap)(state)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return utcnow() + timedelta(seconds=delay)

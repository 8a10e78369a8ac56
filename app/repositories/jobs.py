"""SQL for the durable job queue: enqueue, claim under a lease, finish, retry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Update, delete, false, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.models import Job, JobState

ACTIVE = (JobState.QUEUED, JobState.RUNNING)
# The PostgreSQL channel on which a committed job that is due now is announced.
JOBS_CHANNEL = "filegate_jobs"


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _dialect(self) -> str:
        return self.session.bind.dialect.name if self.session.bind else "sqlite"

    async def enqueue(
        self,
        *,
        kind: str,
        payload: str,
        dedupe_key: str | None,
        run_after: datetime,
        max_attempts: int,
    ) -> bool:
        """Insert a job; with a dedupe key, nothing happens while an equal job is active."""
        values = {
            "kind": kind,
            "payload": payload,
            "dedupe_key": dedupe_key,
            "run_after": run_after,
            "max_attempts": max_attempts,
            "state": JobState.QUEUED,
            "attempts": 0,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        where = text("state IN ('queued', 'running')")
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(Job)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["dedupe_key"], index_where=where)
            .returning(Job.id)
        )
        # RETURNING, not rowcount: psycopg reports -1 (unknown) for an insert that did nothing.
        result = await self.session.execute(stmt)
        return result.scalar_one_or_none() is not None

    async def announce_due(self, *, kind: str) -> None:
        """On PostgreSQL, NOTIFY listening workers that a job is due; sent at commit."""
        if self._dialect == "postgresql":
            await self.session.execute(select(func.pg_notify(JOBS_CHANNEL, kind)))

    async def release_lease(self, *, job: Job, worker_id: str) -> bool:
        """Give up our lease now (our run failed): any worker may claim the job at once."""
        stmt = _ours(job, worker_id).values(lease_until=utcnow())
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def advance(self, *, dedupe_key: str, run_after: datetime) -> None:
        """Bring a queued job with this dedupe key forward to `run_after`, if it is later."""
        await self.session.execute(
            update(Job)
            .where(
                Job.dedupe_key == dedupe_key,
                Job.state == JobState.QUEUED,
                Job.run_after > run_after,
            )
            .values(run_after=run_after, updated_at=utcnow())
        )

    async def add_claimed(
        self,
        *,
        kind: str,
        payload: str,
        dedupe_key: str,
        owner: str,
        lease_seconds: float,
        max_attempts: int,
    ) -> Job:
        """Insert a job already running under `owner`'s lease (the caller does its first run);
        should the owner die, any worker claims it once the lease lapses."""
        now = utcnow()
        job = Job(
            kind=kind,
            payload=payload,
            dedupe_key=dedupe_key,
            state=JobState.RUNNING,
            attempts=1,
            max_attempts=max_attempts,
            run_after=now,
            lease_until=now + timedelta(seconds=lease_seconds),
            locked_by=owner,
            created_at=now,
            updated_at=now,
        )
        self.session.add(job)
        await self.session.flush()
        return job

    async def claim(self, *, worker_id: str, lease_seconds: float) -> Job | None:
        """Take the next due job (or one whose lease expired) and lease it to `worker_id`."""
        now = utcnow()
        due = (
            select(Job.id)
            .where(
                ((Job.state == JobState.QUEUED) & (Job.run_after <= now))
                | ((Job.state == JobState.RUNNING) & (Job.lease_until < now))
            )
            .order_by(Job.run_after, Job.id)
            .limit(1)
        )
        if self._dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(Job)
            .where(Job.id == due.scalar_subquery())
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                locked_by=worker_id,
                updated_at=now,
            )
            .returning(Job)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def extend_lease(self, *, job: Job, worker_id: str, lease_seconds: float) -> bool:
        """Renew our lease; False when another worker has taken the job over."""
        stmt = _ours(job, worker_id).values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def finish(
        self,
        *,
        job: Job,
        worker_id: str,
        state: str,
        error: str | None = None,
        run_after: datetime | None = None,
        refund_attempt: bool = False,
    ) -> bool:
        """Record the outcome of our run, fenced by lease owner and attempt number;
        `refund_attempt`: this run does not count against the job's attempts."""
        now = utcnow()
        values: dict[str, object] = {
            "state": state,
            "last_error": error,
            "lease_until": None,
            "locked_by": None,
            "updated_at": now,
        }
        if state in (JobState.DONE, JobState.DEAD):
            values["finished_at"] = now
        if run_after is not None:
            values["run_after"] = run_after
        if refund_attempt:
            values["attempts"] = Job.attempts - 1
        stmt = _ours(job, worker_id).values(**values)
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def expedite(self, *, kind: str, dedupe_patterns: Sequence[str]) -> int:
        """Make queued jobs of `kind` whose dedupe key matches a LIKE pattern due now."""
        now = utcnow()
        stmt = (
            update(Job)
            .where(
                Job.kind == kind,
                Job.state == JobState.QUEUED,
                Job.run_after > now,
                or_(*(Job.dedupe_key.like(pattern) for pattern in dedupe_patterns)),
            )
            .values(run_after=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0))

    async def requeue(self, job_id: int) -> Job | None:
        """Put a dead (or finished) job back in the queue with fresh attempts."""
        job = await self.session.get(Job, job_id)
        if job is None:
            return None
        job.state = JobState.QUEUED
        job.attempts = 0
        job.run_after = utcnow()
        job.finished_at = None
        job.lease_until = None
        job.locked_by = None
        await self.session.flush()
        return job

    async def purge_finished(self, *, state: str, finished_before: datetime, limit: int) -> int:
        """Delete at most `limit` jobs in `state` (done or dead) that finished before a time."""
        if state not in (JobState.DONE, JobState.DEAD):
            raise ValueError(f"only finished jobs are purged, not {state!r}")
        old = (Job.state == state) & (Job.finished_at < finished_before)
        batch = select(Job.id).where(old).order_by(Job.finished_at, Job.id).limit(limit)
        # The outer filter is checked again on each row: a job requeued meanwhile is kept.
        stmt = (
            delete(Job)
            .where(Job.id.in_(batch.scalar_subquery()), old)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0))

    async def get(self, job_id: int) -> Job | None:
        return await self.session.get(Job, job_id)

    async def counts(self) -> dict[str, int]:
        stmt = select(Job.state, func.count()).group_by(Job.state)
        return {state: int(n) for state, n in (await self.session.execute(stmt)).all()}

    async def oldest_queued(self) -> datetime | None:
        stmt = select(func.min(Job.run_after)).where(Job.state == JobState.QUEUED)
        value = await self.session.scalar(stmt)
        return value if isinstance(value, datetime) else None

    async def list(self, *, state: str | None, limit: int) -> Sequence[Job]:
        stmt = select(Job).order_by(Job.id.desc()).limit(limit)
        if state is not None:
            stmt = stmt.where(Job.state == state)
        return (await self.session.execute(stmt)).scalars().all()

    async def page(
        self,
        *,
        state: str | None,
        kind: str | None,
        payloads_like: Sequence[str] | None,
        before_id: int | None,
        limit: int,
    ) -> Sequence[Job]:
        """Jobs newest first, below `before_id`; `payloads_like` keeps those whose payload text
        matches one of its LIKE patterns (an empty list matches nothing)."""
        stmt = select(Job).order_by(Job.id.desc()).limit(limit)
        if state is not None:
            stmt = stmt.where(Job.state == state)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        if payloads_like is not None:
            stmt = stmt.where(or_(false(), *(Job.payload.like(p) for p in payloads_like)))
        if before_id is not None:
            stmt = stmt.where(Job.id < before_id)
        return (await self.session.execute(stmt)).scalars().all()

    async def active_for(self, *, dedupe_key: str) -> Job | None:
        stmt = select(Job).where(Job.dedupe_key == dedupe_key, Job.state.in_(ACTIVE))
        return (await self.session.execute(stmt)).scalar_one_or_none()


def _ours(job: Job, worker_id: str) -> Update:
    """An update of `job` fenced by its lease: still running, under our name, this attempt."""
    return update(Job).where(
        Job.id == job.id,
        Job.locked_by == worker_id,
        Job.attempts == job.attempts,
        Job.state == JobState.RUNNING,
    )

"""Job retention: old done and dead jobs go in bounded batches; active jobs always stay."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from app.core.db import utcnow
from app.jobs import queue
from app.jobs.handlers.retention import purge_finished_jobs
from app.jobs.queue import JobKind
from app.jobs.worker import Worker
from app.models import Job, JobState
from app.repositories.jobs import JobRepository
from tests.conftest import Gateway

DAY = timedelta(days=1)


async def add_job(gateway: Gateway, *, state: str, finished_at: datetime | None, name: str) -> int:
    """A job row as the worker leaves it, its times put in the past explicitly."""
    created = (finished_at or utcnow()) - timedelta(minutes=1)
    async with gateway.runtime.sessionmaker() as session:
        job = Job(
            kind="probe",
            payload="{}",
            dedupe_key=name,
            state=state,
            attempts=1,
            max_attempts=3,
            # A queued one is not due: the worker runs only the purge.
            run_after=utcnow() + DAY if state == JobState.QUEUED else created,
            created_at=created,
            updated_at=finished_at or created,
            finished_at=finished_at,
            lease_until=utcnow() + timedelta(minutes=5) if state == JobState.RUNNING else None,
            locked_by="elsewhere" if state == JobState.RUNNING else None,
        )
        session.add(job)
        await session.commit()
        return job.id


async def queue_purge(gateway: Gateway) -> None:
    async with gateway.runtime.sessionmaker() as session:
        await queue.enqueue(
            session=session, kind=JobKind.PURGE_JOBS, payload={}, dedupe_key="purge"
        )
        await session.commit()


async def remaining(gateway: Gateway) -> set[str]:
    async with gateway.runtime.sessionmaker() as session:
        keys = (await session.execute(select(Job.dedupe_key))).scalars().all()
    return {key for key in keys if key is not None}


def purged(gateway: Gateway, state: str) -> float:
    value = gateway.runtime.metrics.registry.get_sample_value(
        "filegate_jobs_purged_total", {"state": state}
    )
    return value or 0.0


async def test_the_periodic_job_deletes_only_old_done_and_dead_jobs(gateway: Gateway) -> None:
    now = utcnow()
    for name, state, age in (
        ("done-8d", JobState.DONE, 8 * DAY),
        ("done-6d", JobState.DONE, 6 * DAY),
        ("dead-31d", JobState.DEAD, 31 * DAY),
        ("dead-29d", JobState.DEAD, 29 * DAY),
        ("dead-8d", JobState.DEAD, 8 * DAY),
    ):
        await add_job(gateway, state=state, finished_at=now - age, name=name)
    # Active jobs with old timestamps (a requeued job, a long run) are never retention's.
    await add_job(gateway, state=JobState.QUEUED, finished_at=now - 90 * DAY, name="queued-old")
    await add_job(gateway, state=JobState.RUNNING, finished_at=now - 90 * DAY, name="running-old")
    await queue_purge(gateway)

    assert await Worker(gateway.runtime).drain() == 1

    assert await remaining(gateway) == {"done-6d", "dead-29d", "dead-8d", "purge"} | {
        "queued-old",
        "running-old",
    }
    assert (purged(gateway, "done"), purged(gateway, "dead")) == (1.0, 1.0)


async def test_purging_goes_in_bounded_batches(gateway: Gateway) -> None:
    now = utcnow()
    for i in range(5):
        await add_job(gateway, state=JobState.DONE, finished_at=now - (10 + i) * DAY, name=f"d{i}")
    await add_job(gateway, state=JobState.DEAD, finished_at=now - 40 * DAY, name="dead")
    async with gateway.runtime.sessionmaker() as session:
        repo = JobRepository(session)
        sizes = [
            await repo.purge_finished(state=JobState.DONE, finished_before=now - DAY, limit=2)
            for _ in range(4)
        ]
        await session.commit()
    assert sizes == [2, 2, 1, 0]
    assert await remaining(gateway) == {"dead"}


async def test_one_run_stops_at_its_batch_cap_and_the_next_run_goes_on(gateway: Gateway) -> None:
    now = utcnow()
    for i in range(5):
        await add_job(gateway, state=JobState.DONE, finished_at=now - 10 * DAY, name=f"d{i}")
    rt = gateway.runtime
    runs = []
    for _ in range(2):
        async with rt.sessionmaker() as session:
            runs.append(
                await purge_finished_jobs(
                    session=session,
                    metrics=rt.metrics,
                    now=now,
                    done_retention=7 * DAY,
                    dead_retention=30 * DAY,
                    batch=2,
                    max_batches=2,
                )
            )
    assert runs == [{"done": 4, "dead": 0}, {"done": 1, "dead": 0}]
    assert await remaining(gateway) == set()
    assert purged(gateway, "done") == 5.0


async def test_retention_follows_the_settings(gateway: Gateway) -> None:
    now = utcnow()
    await add_job(gateway, state=JobState.DONE, finished_at=now - 2 * DAY, name="done-2d")
    await add_job(gateway, state=JobState.DEAD, finished_at=now - 2 * DAY, name="dead-2d")
    await add_job(gateway, state=JobState.DEAD, finished_at=now - 4 * DAY, name="dead-4d")
    rt = gateway.runtime
    rt.settings.job_done_retention_seconds = DAY.total_seconds()
    rt.settings.job_dead_retention_seconds = 3 * DAY.total_seconds()
    await queue_purge(gateway)
    assert await Worker(rt).drain() == 1
    assert await remaining(gateway) == {"dead-2d", "purge"}

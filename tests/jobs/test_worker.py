"""The job queue: claims are exclusive, leases fence stale workers, backoff and dead letters."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from app.core.db import utcnow
from app.core.errors import NotFound
from app.core.logging import configure_logging
from app.jobs import queue
from app.jobs.handlers import REGISTRY
from app.jobs.queue import JobKind, RetryLater
from app.jobs.worker import Worker
from app.models import Job
from app.repositories.jobs import JobRepository
from tests.conftest import Gateway, settings_with
from tests.support.waiting import wait_until


async def add_jobs(gateway: Gateway, kind: str, n: int) -> None:
    async with gateway.runtime.sessionmaker() as session:
        for i in range(n):
            await JobRepository(session).enqueue(
                kind=kind,
                payload=json.dumps({"n": i}),
                dedupe_key=None,
                run_after=utcnow(),
                max_attempts=3,
            )
        await session.commit()


async def job_states(gateway: Gateway, *where: Any) -> list[str]:
    async with gateway.runtime.sessionmaker() as session:
        return list((await session.execute(select(Job.state).where(*where))).scalars())


async def test_two_workers_never_run_one_job_twice(gateway: Gateway) -> None:
    running: set[int] = set()
    overlaps: list[int] = []
    runs: Counter[int] = Counter()

    async def probe(session: Any, rt: Any, job: Job, payload: dict[str, Any]) -> None:
        if job.id in running:
            overlaps.append(job.id)
        running.add(job.id)
        runs[job.id] += 1
        await asyncio.sleep(0.02)
        running.discard(job.id)

    registry = REGISTRY.with_handlers(probe=probe)
    await add_jobs(gateway, "probe", 30)
    first, second = (
        Worker(gateway.runtime, registry=registry),
        Worker(gateway.runtime, registry=registry),
    )
    done = await asyncio.gather(*(w.drain() for w in (first, second, first, second)))
    assert sum(done) == 30
    assert overlaps == []
    assert len(runs) == 30 and set(runs.values()) == {1}
    async with gateway.runtime.sessionmaker() as session:
        states = (await session.execute(select(Job.state))).scalars().all()
    assert set(states) == {"done"}


async def test_expired_lease_is_taken_over_and_the_stale_worker_is_fenced(gateway: Gateway) -> None:
    async def probe(session: Any, rt: Any, job: Job, payload: dict[str, Any]) -> None:
        return None

    registry = REGISTRY.with_handlers(probe=probe)
    await add_jobs(gateway, "probe", 1)
    rt = gateway.runtime
    async with rt.sessionmaker() as session:
        stale = await JobRepository(session).claim(worker_id="stale", lease_seconds=60)
        await session.commit()
    assert stale is not None
    async with rt.sessionmaker() as session:
        assert await JobRepository(session).claim(worker_id="other", lease_seconds=60) is None
        await session.execute(update(Job).values(lease_until=utcnow() - timedelta(seconds=1)))
        await session.commit()
    assert await Worker(rt, worker_id="fresh", registry=registry).drain() == 1
    async with rt.sessionmaker() as session:
        repo = JobRepository(session)
        assert not await repo.finish(job=stale, worker_id="stale", state="done")
        assert not await repo.extend_lease(job=stale, worker_id="stale", lease_seconds=60)
        job = await repo.get(stale.id)
        assert job is not None and job.state == "done" and job.attempts == 2


async def test_retry_backoff_then_dead_letter(gateway: Gateway) -> None:
    calls = 0

    async def flaky(session: Any, rt: Any, job: Job, payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise RetryLater("provider still down")

    registry = REGISTRY.with_handlers(probe=flaky)
    await add_jobs(gateway, "probe", 1)

    async def dead() -> bool:
        await Worker(gateway.runtime, registry=registry).drain()
        return await job_states(gateway) == ["dead"]

    await wait_until(dead)  # each retry comes due after its backoff on the real clock
    await Worker(gateway.runtime, registry=registry).drain()  # a dead letter is not run again
    async with gateway.runtime.sessionmaker() as session:
        [job] = (await session.execute(select(Job))).scalars().all()
    assert calls == 3
    assert job.state == "dead" and job.attempts == 3
    assert job.last_error == "provider still down"


async def test_periodic_jobs_are_scheduled_once_across_workers(gateway: Gateway) -> None:
    workers = [Worker(gateway.runtime) for _ in range(3)]
    await asyncio.gather(*(w.schedule_periodic() for w in workers))
    await asyncio.gather(*(w.schedule_periodic() for w in workers))
    async with gateway.runtime.sessionmaker() as session:
        keys = (await session.execute(select(Job.dedupe_key))).scalars().all()
    named = [key for key in keys if key is not None]
    assert len(named) == len(keys)
    assert sorted(named) == [
        "expire",
        "expire_uploads",
        "health_sweep",
        "purge_jobs",
        "reconcile:moonshot",
        "reconcile:zai",
        "sweep_storage",
    ]


async def test_unknown_kinds_are_refused_at_enqueue(gateway: Gateway) -> None:
    async with gateway.runtime.sessionmaker() as session:
        with pytest.raises(ValueError, match="unknown job kind"):
            await queue.enqueue(session=session, kind="nope", payload={})


@pytest.mark.settings(workers_in_process=2, job_poll_seconds=0.05)
async def test_in_process_workers_run_with_the_server(gateway: Gateway) -> None:
    rt = gateway.runtime
    async with rt.sessionmaker() as session:
        await queue.enqueue(session=session, kind=JobKind.EXPIRE, payload={})
        await session.commit()

    async def done() -> bool:
        return await job_states(gateway, Job.dedupe_key.is_(None)) == ["done"]

    await wait_until(done)
    assert await job_states(gateway, Job.dedupe_key.is_(None)) == ["done"]


@pytest.mark.usefixtures("restore_logging")
async def test_job_failures_are_logged_with_the_job_context(gateway: Gateway) -> None:
    async def refused(session: Any, rt: Any, job: Job, payload: dict[str, Any]) -> None:
        raise NotFound("No such File object.")

    async def broken(session: Any, rt: Any, job: Job, payload: dict[str, Any]) -> None:
        raise RuntimeError("bug in a handler")

    registry = REGISTRY.with_handlers(refused=refused, broken=broken)
    async with gateway.runtime.sessionmaker() as session:
        for kind in ("refused", "broken"):
            await JobRepository(session).enqueue(
                kind=kind,
                payload=json.dumps({"file_id": f"file-{kind}"}),
                dedupe_key=None,
                run_after=utcnow(),
                max_attempts=1,
            )
        await session.commit()
    buf = io.StringIO()
    as_json = settings_with(gateway.runtime.settings, log_format="json")
    configure_logging(as_json, stream=buf)
    assert await Worker(gateway.runtime, registry=registry).drain() == 2

    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    kinds = ("refused", "broken")
    by_kind = {kind: [x for x in lines if x.get("job_kind") == kind] for kind in kinds}
    for kind, found in by_kind.items():
        assert {x["file_id"] for x in found} == {f"file-{kind}"}
        assert len({x["job_id"] for x in found}) == 1
        assert any("gave up" in x["message"] and x["level"] == "WARNING" for x in found)
    # an expected, worded failure is one line; a bug keeps its traceback
    [refusal] = [x for x in by_kind["refused"] if "failed" in x["message"]]
    assert refusal["level"] == "WARNING" and "exc_info" not in refusal
    assert refusal["message"].endswith("failed: No such File object.")
    [crash] = [x for x in by_kind["broken"] if "failed" in x["message"]]
    assert crash["level"] == "ERROR" and "RuntimeError: bug in a handler" in crash["exc_info"]

"""Waking idle workers: a queued job runs long before the next poll, from this process or
(PostgreSQL, LISTEN/NOTIFY) another; a lost listener connection stops nothing and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import CallContext, Principal
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.jobs import queue
from app.jobs.queue import JobKind
from app.main import create_app
from app.models import Job
from app.runtime import Runtime
from app.services import admin

OPERATOR = CallContext(principal=Principal(key_id="ops", tenant_id="", kind="cli"))

# Far beyond DEADLINE_SECONDS: a job that runs did not wait for a poll.
POLL_SECONDS = 60.0
DEADLINE_SECONDS = 10.0


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A server whose one job loop polls only every POLL_SECONDS."""
    settings.workers_in_process = 1
    settings.job_poll_seconds = POLL_SECONDS
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        rt: Runtime = app.state.runtime
        yield rt


@pytest.fixture
async def other_process(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on an engine of their own, as another gateway process would have."""
    engine = create_engine(settings.resolved_database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {DEADLINE_SECONDS:g} s: {what}")
        await asyncio.sleep(0.02)


async def enqueue_expiry(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Queue an expiry run (a real job kind that needs no provider) due now; its id."""
    async with sessionmaker() as session:
        assert await queue.enqueue(session=session, kind=JobKind.EXPIRE, payload={})
        job_id = await session.scalar(
            select(Job.id).where(Job.dedupe_key.is_(None)).order_by(Job.id.desc()).limit(1)
        )
        await session.commit()
    assert job_id is not None
    return job_id


def state_of(rt: Runtime, job_id: int) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        async with rt.sessionmaker() as session:
            return await session.scalar(select(Job.state).where(Job.id == job_id)) == "done"

    return done


async def idle(rt: Runtime) -> None:
    """Wait until the start-up work is done and the job loop waits for the next poll."""

    async def waiting() -> bool:
        async with rt.sessionmaker() as session:
            running = await session.scalar(select(Job.id).where(Job.state == "running").limit(1))
        return running is None and rt.wakeup.waiting == rt.settings.workers_in_process

    await eventually(waiting, "the job loop went idle")


async def listening(rt: Runtime) -> int:
    assert rt.listener is not None

    async def connected() -> bool:
        return rt.listener is not None and rt.listener.backend_pid is not None

    await eventually(connected, "the job listener connected")
    pid = rt.listener.backend_pid
    assert pid is not None
    return pid


async def test_a_job_queued_in_this_process_wakes_its_workers(runtime: Runtime) -> None:
    await idle(runtime)
    job_id = await enqueue_expiry(runtime.sessionmaker)
    await eventually(state_of(runtime, job_id), "the job ran")


async def test_a_retried_job_wakes_the_workers(
    runtime: Runtime, other_process: async_sessionmaker[AsyncSession]
) -> None:
    await idle(runtime)
    job_id = await enqueue_expiry(runtime.sessionmaker)
    await eventually(state_of(runtime, job_id), "the job ran")
    await idle(runtime)
    # Retried by an operator elsewhere (the CLI), or in this process (the admin API).
    for sessions in ([other_process] if not runtime.settings.is_sqlite else []) + [
        runtime.sessionmaker
    ]:
        async with sessions() as session:
            retried = await admin.retry_job(session=session, ctx=OPERATOR, job_id=job_id)
            assert retried.state == "queued"
            await session.commit()
        await eventually(state_of(runtime, job_id), "the retried job ran")
        await idle(runtime)


async def test_a_job_queued_by_another_process_wakes_the_workers(
    runtime: Runtime, other_process: async_sessionmaker[AsyncSession]
) -> None:
    if runtime.settings.is_sqlite:
        pytest.skip("only PostgreSQL tells other processes (LISTEN/NOTIFY)")
    await listening(runtime)
    await idle(runtime)
    job_id = await enqueue_expiry(other_process)
    await eventually(state_of(runtime, job_id), "the job queued elsewhere ran")


async def test_a_killed_listener_connection_stops_no_job_and_comes_back(
    runtime: Runtime, other_process: async_sessionmaker[AsyncSession]
) -> None:
    if runtime.settings.is_sqlite:
        pytest.skip("only PostgreSQL has a listener connection")
    assert runtime.listener is not None
    first = await listening(runtime)
    made = runtime.listener.connections
    async with other_process() as session:
        assert await session.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        await session.commit()

    # Queued while the listener is down or reconnecting: the reconnect's wake-up finds it.
    during = await enqueue_expiry(other_process)
    await eventually(state_of(runtime, during), "the job queued during the outage ran")
    again = await listening(runtime)
    assert again != first and runtime.listener.connections > made

    await idle(runtime)
    after = await enqueue_expiry(other_process)
    await eventually(state_of(runtime, after), "the job queued after the reconnect ran")


async def test_polling_only_when_listening_is_off(settings: Settings) -> None:
    settings.job_listen = False
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        rt: Runtime = app.state.runtime
        assert rt.listener is None

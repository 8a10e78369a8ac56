"""Workers: claim durable jobs under a lease, run their handlers, keep periodic jobs queued."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from app.core.db import utcnow
from app.core.logging import log_context, log_failure
from app.core.outage import is_database_outage
from app.jobs import queue
from app.jobs.handlers import REGISTRY, Registry
from app.jobs.queue import JobKind, RetryLater, backoff_at
from app.models import Job, JobState
from app.repositories.jobs import JobRepository

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("filegate.worker")
SCHEDULE_EVERY_SECONDS = 5.0
PURGE_JOBS_EVERY_SECONDS = 3600.0


class LeaseLost(Exception):
    """Another worker took the job over (our lease expired); our run must stop."""


class Worker:
    """Runs jobs from the shared queue; any number of these may run on any number of hosts."""

    def __init__(
        self,
        rt: Runtime,
        *,
        concurrency: int = 2,
        worker_id: str | None = None,
        registry: Registry = REGISTRY,
    ) -> None:
        self.rt = rt
        self.registry = registry
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until `stop` is set; also keeps periodic jobs scheduled."""
        loops = [self._loop(stop) for _ in range(self.concurrency)]
        await asyncio.gather(self._scheduler(stop), *loops)

    async def _loop(self, stop: asyncio.Event) -> None:
        wakeup = self.rt.wakeup
        while not stop.is_set():
            wakeup.arm()
            try:
                ran = await self.run_once()
            except Exception as exc:  # a broken database must not kill the worker loop
                self._failed("job loop error", exc)
                ran = False
            else:
                self.rt.database.reached()
            if not ran:
                await wakeup.wait(stop, poll_seconds=self.rt.settings.job_poll_seconds)

    def _failed(self, what: str, exc: Exception) -> None:
        """An outage is told once per change of state (by the runtime's outage log), not once
        per poll; anything else is logged as it comes."""
        if is_database_outage(exc):
            self.rt.database.failed(exc)
        else:
            log_failure(log, what, exc=exc)

    async def _scheduler(self, stop: asyncio.Event) -> None:
        try:
            await self.schedule_startup()
        except Exception as exc:
            self._failed("job scheduler error at start-up", exc)
        while not stop.is_set():
            try:
                await self.schedule_periodic()
                await self.publish_metrics()
            except Exception as exc:
                self._failed("job scheduler error", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SCHEDULE_EVERY_SECONDS)

    async def schedule_startup(self) -> None:
        """Work due once whenever a worker starts: sweep what a crash may have left on disk."""
        async with self.rt.sessionmaker() as session:
            await queue.enqueue(
                session=session,
                kind=JobKind.SWEEP_STORAGE,
                payload={},
                dedupe_key="sweep_storage:startup",
                max_attempts=3,
            )
            await session.commit()

    async def schedule_periodic(self) -> None:
        """Keep one queued instance of each periodic job (dedupe keys settle races)."""
        s = self.rt.settings
        periodic: list[tuple[str, dict[str, object], str, float]] = [
            (JobKind.EXPIRE, {}, "expire", s.expiry_interval_seconds),
            (JobKind.EXPIRE_UPLOADS, {}, "expire_uploads", s.expiry_interval_seconds),
            (JobKind.HEALTH_SWEEP, {}, "health_sweep", s.health_check_interval_seconds),
            (JobKind.SWEEP_STORAGE, {}, "sweep_storage", s.storage_sweep_interval_seconds),
            (JobKind.PURGE_JOBS, {}, "purge_jobs", PURGE_JOBS_EVERY_SECONDS),
        ] + [
            (
                JobKind.RECONCILE,
                {"provider": name},
                f"reconcile:{name}",
                s.reconcile_interval_seconds,
            )
            for name in self.rt.providers.order
        ]
        async with self.rt.sessionmaker() as session:
            for kind, payload, key, every in periodic:
                await queue.enqueue(
                    session=session,
                    kind=kind,
                    payload=payload,
                    dedupe_key=key,
                    delay_seconds=every,
                    max_attempts=3,
                )
            await session.commit()

    async def publish_metrics(self) -> None:
        async with self.rt.sessionmaker() as session:
            repo = JobRepository(session)
            counts = await repo.counts()
            oldest = await repo.oldest_queued()
        for state in JobState:
            self.rt.metrics.jobs.labels(state.value).set(counts.get(state.value, 0))
        age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0
        self.rt.metrics.oldest_job_age.set(age)

    async def run_once(self) -> bool:
        """Claim one due job and run it; False when nothing was due."""
        async with self.rt.sessionmaker() as session:
            job = await JobRepository(session).claim(
                worker_id=self.worker_id, lease_seconds=self.rt.settings.job_lease_seconds
            )
            await session.commit()
        if job is None:
            return False
        await self.execute(job)
        return True

    async def drain(self, *, max_jobs: int = 1000) -> int:
        """Run due jobs until none is left (tests and `filegate worker --once`)."""
        done = 0
        while done < max_jobs and await self.run_once():
            done += 1
        return done

    async def execute(self, job: Job) -> None:
        payload = json.loads(job.payload or "{}")
        with log_context.bound(job_id=job.id, job_kind=job.kind, file_id=payload.get("file_id")):
            await self._execute(job, payload)

    async def _execute(self, job: Job, payload: dict[str, object]) -> None:
        handler = self.registry.handlers.get(job.kind)
        run = asyncio.ensure_future(self._run_handler(job, payload))
        beat = asyncio.ensure_future(self._heartbeat(job, run))
        try:
            error = await run
        except asyncio.CancelledError:
            if not beat.done() or beat.exception() is None:
                raise
            error = LeaseLost("lease lost")
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
        if isinstance(error, LeaseLost):
            self.rt.metrics.job_runs.labels(job.kind, "lost").inc()
            return
        await self._finish(job, payload, error, unknown=handler is None)

    async def _run_handler(self, job: Job, payload: dict[str, object]) -> BaseException | None:
        handler = self.registry.handlers.get(job.kind)
        if handler is None:
            return ValueError(f"no handler for job kind {job.kind!r}")
        async with self.rt.sessionmaker() as session:
            try:
                await handler(session, self.rt, job, payload)
                await session.commit()
            except RetryLater as exc:
                await session.commit()  # keep what the handler recorded about the failure
                return exc
            except Exception as exc:
                await session.rollback()
                log_failure(log, "job %s (%s) failed", job.id, job.kind, exc=exc)
                return exc
        return None

    async def _heartbeat(self, job: Job, run: asyncio.Future[BaseException | None]) -> None:
        lease = self.rt.settings.job_lease_seconds
        while not run.done():
            await asyncio.sleep(lease / 3)
            async with self.rt.sessionmaker() as session:
                kept = await JobRepository(session).extend_lease(
                    job=job, worker_id=self.worker_id, lease_seconds=lease
                )
                await session.commit()
            if not kept:
                run.cancel()
                raise LeaseLost(f"job {job.id} was taken over")

    async def _finish(
        self, job: Job, payload: dict[str, object], error: BaseException | None, *, unknown: bool
    ) -> None:
        s = self.rt.settings
        async with self.rt.sessionmaker() as session:
            repo = JobRepository(session)
            if error is None:
                outcome = JobState.DONE.value
                kept = await repo.finish(job=job, worker_id=self.worker_id, state=JobState.DONE)
            elif unknown or (job.attempts >= job.max_attempts and not _patient(error)):
                outcome = JobState.DEAD.value
                job.last_error = _describe(error)
                kept = await repo.finish(
                    job=job, worker_id=self.worker_id, state=JobState.DEAD, error=job.last_error
                )
                dead = self.registry.on_dead.get(job.kind)
                if kept and dead is not None:
                    await dead(session, self.rt, job, payload)
            else:
                outcome = "retry"
                retry_after = error.retry_after if isinstance(error, RetryLater) else None
                kept = await repo.finish(
                    job=job,
                    worker_id=self.worker_id,
                    state=JobState.QUEUED,
                    error=_describe(error),
                    run_after=backoff_at(
                        attempts=job.attempts,
                        base=s.job_backoff_base,
                        cap=s.job_backoff_max,
                        retry_after=retry_after,
                    ),
                    refund_attempt=_patient(error),
                )
            await session.commit()
        if kept and error is not None:
            if outcome == JobState.DEAD.value:
                log.warning("job %s (%s) gave up: %s", job.id, job.kind, job.last_error)
            else:
                log.info("job %s (%s) will be retried: %s", job.id, job.kind, _describe(error))
        self.rt.metrics.job_runs.labels(job.kind, outcome if kept else "lost").inc()


def _patient(error: BaseException) -> bool:
    return isinstance(error, RetryLater) and error.patient


def _describe(error: BaseException) -> str:
    message = str(error) or type(error).__name__
    return message[:500]


@contextlib.asynccontextmanager
async def running_workers(rt: Runtime, *, count: int) -> AsyncIterator[Worker | None]:
    """Run `count` in-process worker loops while the context is open (the server lifespan)."""
    if count <= 0:
        yield None
        return
    stop = asyncio.Event()
    worker = Worker(rt, concurrency=count)
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

"""Waking idle job loops when work is queued: directly within a process, by LISTEN/NOTIFY
across processes on PostgreSQL; polling every FILEGATE_JOB_POLL_SECONDS stays the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.repositories.jobs import JOBS_CHANNEL

log = logging.getLogger("filegate.jobs")

# The session.info key under which a sessionmaker carries its process's wake-up.
WAKE_ON_COMMIT = "filegate.wake_on_commit"
_ARMED = "filegate.wake_armed"
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 30.0
# How long the listener may hear nothing before it checks its connection is still alive.
HEARTBEAT_SECONDS = 30.0
HEARTBEAT_TIMEOUT_SECONDS = 10.0


class JobWakeup:
    """What an idle job loop waits on: set when a job may have become due."""

    def __init__(self) -> None:
        self._due = asyncio.Event()
        self.waiting = 0  # job loops idle right now

    def wake(self) -> None:
        self._due.set()

    def arm(self) -> None:
        """Forget earlier wake-ups: called before looking for due jobs, so that a job queued
        after the look (and its wake-up) is never missed."""
        self._due.clear()

    async def wait(self, stop: asyncio.Event, *, poll_seconds: float) -> None:
        """Until woken, `stop` is set, or `poll_seconds` have passed."""
        if self._due.is_set() or stop.is_set():
            return
        waits = {asyncio.ensure_future(self._due.wait()), asyncio.ensure_future(stop.wait())}
        self.waiting += 1
        try:
            await asyncio.wait(waits, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting -= 1
            for waiting in waits:
                waiting.cancel()


def wake_after_commit(session: AsyncSession) -> None:
    """Wake this process's job loops once the session's transaction commits (a job it queued
    is visible then); a session of a sessionmaker without a wake-up does nothing."""
    wake: Callable[[], None] | None = session.info.get(WAKE_ON_COMMIT)
    if wake is None or session.info.get(_ARMED):
        return
    session.info[_ARMED] = True

    def committed(_session: object) -> None:
        session.info.pop(_ARMED, None)
        wake()

    event.listen(session.sync_session, "after_commit", committed, once=True)


class NotifyListener:
    """One autocommit connection per process LISTENing for queued jobs; it wakes the job
    loops on each notification. A lost connection is retried with backoff meanwhile the
    loops poll; each new connection wakes them once, for what was queued while it was down."""

    def __init__(self, wakeup: JobWakeup, *, conninfo: str, connect_timeout: int) -> None:
        self.wakeup = wakeup
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.connection: psycopg.AsyncConnection[object] | None = None
        self.connections = 0  # made so far: a reconnect counts up
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self.connection is not None and not self.connection.closed

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend of the current connection (None while there is none)."""
        return self.connection.info.backend_pid if self.listening and self.connection else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-notify-listener")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        lost = False
        while True:
            try:
                async with await self._connect() as conn:
                    await conn.execute(f"LISTEN {JOBS_CHANNEL}")
                    self.connection = conn
                    self.connections += 1
                    delay = RECONNECT_FIRST_SECONDS
                    if lost:
                        log.info("job listener connected again; workers wake on NOTIFY")
                        lost = False
                    self.wakeup.wake()
                    await self._listen(conn)
            except Exception as exc:  # whatever broke the connection, try another later
                if not lost:
                    log.warning(
                        "job listener down (%s); workers poll until it reconnects",
                        type(exc).__name__,
                    )
                    lost = True
            finally:
                self.connection = None
            # Jittered, so that processes cut off together do not all come back at once.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _connect(self) -> psycopg.AsyncConnection[object]:
        """A new connection; cancelled meanwhile (at shutdown), the attempt is let finish and
        what it made is closed, so no connection is left to the garbage collector."""
        attempt = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=self.connect_timeout
            )
        )
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await (await attempt).close()
            raise

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        while True:
            async for _ in conn.notifies(timeout=HEARTBEAT_SECONDS):
                self.wakeup.wake()
            # Quiet for a while: a connection cut without a word (a network fault) shows here.
            await asyncio.wait_for(conn.execute("SELECT 1"), HEARTBEAT_TIMEOUT_SECONDS)


def build_listener(settings: Settings, wakeup: JobWakeup) -> NotifyListener | None:
    """The listener this process needs: on PostgreSQL unless FILEGATE_JOB_LISTEN is false."""
    if settings.is_sqlite or not settings.job_listen:
        return None
    url = make_url(settings.resolved_database_url).set(drivername="postgresql")
    return NotifyListener(
        wakeup,
        conninfo=url.render_as_string(hide_password=False),
        connect_timeout=max(2, round(settings.database_connect_timeout)),
    )

"""A sandboxed gateway's view of its sandbox: a new instance holds nothing, so re-check copies."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs import queue
from app.jobs.queue import JobKind
from app.repositories.files import FileRepository
from app.repositories.sandbox import SandboxRepository

log = logging.getLogger("filegate.sandbox")
INSTANCE_ID_MAX = 64


class SandboxUnreadable(Exception):
    """The sandbox did not tell its instance id."""


async def instance_of(*, http: httpx.AsyncClient, sandbox_url: str) -> str:
    """The id the sandbox at `sandbox_url` drew when it started."""
    try:
        resp = await http.get(f"{sandbox_url}/_instance")
        resp.raise_for_status()
        instance = resp.json().get("instance")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        raise SandboxUnreadable(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(instance, str) or not 0 < len(instance) <= INSTANCE_ID_MAX:
        raise SandboxUnreadable("no usable instance id in its answer")
    return instance


async def recheck_if_new(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    sandbox: str,
    instance: str,
    providers: Sequence[str],
) -> int | None:
    """Queue a health check of every live copy on `providers` when `instance` is new.

    Returns how many checks were queued, or None when the sandbox is the one last seen.
    """
    async with sessionmaker() as session:
        repo = SandboxRepository(session)
        if await repo.last_instance(sandbox) == instance:
            return None
        queued = 0
        for file_id in await FileRepository(session).with_active_copy_on(providers):
            queued += await queue.enqueue(
                session=session,
                kind=JobKind.CHECK_FILE,
                payload={"file_id": file_id},
                dedupe_key=f"check_file:{file_id}",
                max_attempts=3,
            )
        await repo.remember(sandbox=sandbox, instance_id=instance)
        await session.commit()
    return queued


async def recheck_on_start(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    sandbox_url: str,
    sandbox: str,
    providers: Sequence[str],
) -> int | None:
    """Start-up: learn the sandbox's instance and queue re-checks if it is new; never raises."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            instance = await instance_of(http=http, sandbox_url=sandbox_url)
        queued = await recheck_if_new(
            sessionmaker=sessionmaker, sandbox=sandbox, instance=instance, providers=providers
        )
    except SandboxUnreadable as exc:
        log.warning("sandbox at %s: instance unknown (%s); copies not re-checked", sandbox_url, exc)
        return None
    except SQLAlchemyError as exc:
        log.warning("sandbox re-check skipped: database error %s", type(exc).__name__)
        return None
    if queued is not None:
        log.info("sandbox %s is new: %d health checks queued", sandbox, queued)
    return queued

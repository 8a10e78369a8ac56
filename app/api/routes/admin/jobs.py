"""The job queue: a filtered listing, a summary with dead letters, and retrying a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from app.api.deps import ReadSessionDep, SessionDep
from app.api.errors import responses
from app.api.idempotency import Idempotent
from app.api.routes.admin.common import ADMIN_ERRORS, MAX_ID, PREFIX
from app.api.schemas import JobList, JobOut, JobSummary
from app.auth.guards import AdminCtx
from app.core.errors import Conflict, NotFound
from app.jobs.queue import JobKind
from app.models import JobState
from app.services import admin as admin_service
from app.services.idempotency import request_digest

router = APIRouter(prefix=PREFIX)


@router.get(
    "/jobs",
    response_model=JobList,
    summary="List jobs, newest first, by state, kind and file",
    description="Cursor pagination: pass `next_cursor` back as `cursor`. `file_id` finds the "
    "jobs that place, check or remove copies of that file.",
    responses=responses(*ADMIN_ERRORS),
)
async def list_jobs(
    session: ReadSessionDep,
    state: Annotated[JobState | None, Query()] = None,
    kind: Annotated[JobKind | None, Query()] = None,
    file_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    page = await admin_service.list_jobs(
        session=session, state=state, kind=kind, file_id=file_id, cursor=cursor, limit=limit
    )
    return JobList(
        data=[JobOut.model_validate(job) for job in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/jobs/summary",
    response_model=JobSummary,
    summary="Job queue: counts by state, oldest due job, dead letters",
    responses=responses(*ADMIN_ERRORS),
)
async def job_summary(
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobSummary:
    summary = await admin_service.job_summary(session=session, dead_limit=limit)
    return JobSummary(
        counts=summary.counts,
        oldest_queued_age_seconds=summary.oldest_age,
        dead_letters=[JobOut.model_validate(job) for job in summary.dead],
    )


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    summary="Queue a dead (or finished) job again with fresh attempts",
    responses=responses(*ADMIN_ERRORS, NotFound, Conflict),
)
async def retry_job(
    job_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    ctx: AdminCtx,
    idem: Idempotent,
    session: SessionDep,
) -> JSONResponse:
    fingerprint = request_digest(route="POST /admin/jobs/retry", id=job_id)
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    job = await admin_service.retry_job(session=session, ctx=ctx, job_id=job_id)
    return await idem.answer(200, JobOut.model_validate(job))

"""The job queue: a summary with dead letters, and retrying a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from app.api.deps import SessionDep
from app.api.errors import responses
from app.api.idempotency import Idempotent
from app.api.routes.admin.common import ADMIN_ERRORS, MAX_ID, PREFIX
from app.api.schemas import JobOut, JobSummary
from app.auth.guards import AdminCtx
from app.core.errors import Conflict, NotFound
from app.services import admin as admin_service
from app.services.idempotency import request_digest

router = APIRouter(prefix=PREFIX)


@router.get(
    "/jobs",
    response_model=JobSummary,
    summary="Job queue: counts by state, oldest due job, dead letters",
    responses=responses(*ADMIN_ERRORS),
)
async def job_summary(
    session: SessionDep,
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

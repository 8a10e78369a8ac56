"""Operator API: API keys and the audit trail."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import AdminCtx, RuntimeDep, SessionDep
from app.api.errors import responses
from app.api.schemas import CheckReport, JobOut, JobSummary, KeyCreate, KeyCreated, KeyList, KeyOut
from app.core.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from app.models import ApiKey, Job
from app.services import admin as admin_service
from app.services import audit
from app.services import keys as key_service

router = APIRouter(prefix="/admin", tags=["admin"])
ADMIN_ERRORS = (InvalidRequest, AuthenticationFailed, PermissionDenied)


def _key_out(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scopes=row.scopes.split(),
        created_at=int(row.created_at.timestamp()),
        expires_at=int(row.expires_at.timestamp()) if row.expires_at else None,
        revoked_at=int(row.revoked_at.timestamp()) if row.revoked_at else None,
    )


@router.post(
    "/keys",
    response_model=KeyCreated,
    status_code=201,
    summary="Issue an API key (the secret is shown once)",
    responses=responses(*ADMIN_ERRORS),
)
async def create_key(
    body: KeyCreate, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep
) -> KeyCreated:
    issued = await key_service.issue_key(
        session=session,
        hmac_key=rt.hmac_key,
        tenant_name=body.tenant,
        name=body.name,
        scopes=body.scopes,
    )
    audit.record(session=session, ctx=ctx, action="key.create", resource=issued.key.id)
    return KeyCreated(**_key_out(issued.key).model_dump(), key=issued.token)


@router.get(
    "/keys",
    response_model=KeyList,
    summary="List API keys (never their secrets)",
    responses=responses(*ADMIN_ERRORS),
)
async def list_keys(
    ctx: AdminCtx,
    session: SessionDep,
    tenant_id: Annotated[str | None, Query(max_length=40)] = None,
) -> KeyList:
    rows = await key_service.list_keys(session=session, tenant_id=tenant_id)
    return KeyList(data=[_key_out(row) for row in rows])


@router.delete(
    "/keys/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def revoke_key(key_id: str, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep) -> KeyOut:
    row = await key_service.revoke_key(session=session, key_id=key_id)
    rt.key_cache.pop(key_id, None)
    audit.record(session=session, ctx=ctx, action="key.revoke", resource=key_id)
    return _key_out(row)


def _job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        state=job.state,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        payload=json.loads(job.payload or "{}"),
        last_error=job.last_error,
        run_after=int(job.run_after.timestamp()),
        created_at=int(job.created_at.timestamp()),
    )


@router.get(
    "/jobs",
    response_model=JobSummary,
    summary="Job queue: counts by state, oldest due job, dead letters",
    responses=responses(*ADMIN_ERRORS),
)
async def job_summary(
    ctx: AdminCtx,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobSummary:
    summary = await admin_service.job_summary(session=session, dead_limit=limit)
    return JobSummary(
        counts=summary.counts,
        oldest_queued_age_seconds=summary.oldest_age,
        dead_letters=[_job_out(job) for job in summary.dead],
    )


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    summary="Queue a dead (or finished) job again with fresh attempts",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def retry_job(job_id: int, ctx: AdminCtx, session: SessionDep) -> JobOut:
    job = await admin_service.retry_job(session=session, ctx=ctx, job_id=job_id)
    return _job_out(job)


@router.post(
    "/files/{file_id}/check",
    response_model=CheckReport,
    summary="Check a file now: re-hash its blob and confirm every provider copy exists",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def check_file(
    file_id: str, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep
) -> CheckReport:
    report = await admin_service.check_file(session=session, rt=rt, ctx=ctx, file_id=file_id)
    return CheckReport(**report)

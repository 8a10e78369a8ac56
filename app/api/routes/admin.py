"""Operator API: API keys and the audit trail."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import FileId, RuntimeDep, SessionDep
from app.api.errors import responses
from app.api.idempotency import respond
from app.api.schemas import (
    AuditList,
    AuditOut,
    BreakerAction,
    BreakerOut,
    CheckReport,
    JobOut,
    JobSummary,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    KeyRotate,
    ProviderList,
    ProviderOut,
    QuotaUpdate,
    TenantList,
    TenantOut,
)
from app.auth import keys as key_service
from app.auth.guards import AdminCtx
from app.core.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from app.models import ApiKey, AuditEvent, Job
from app.providers.breakers import BreakerSnapshot
from app.runtime import Runtime
from app.services import admin as admin_service
from app.services import audit
from app.services import tenants as tenant_service
from app.services.idempotency import request_digest
from app.services.tenants import TenantUsage

router = APIRouter(prefix="/admin", tags=["admin"])
ADMIN_ERRORS = (InvalidRequest, AuthenticationFailed, PermissionDenied)
JSONL_PAGE = 500
MAX_ID = 2**31 - 1  # row ids are 32-bit integers


def _key_out(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scopes=row.scopes.split(),
        created_at=int(row.created_at.timestamp()),
        expires_at=int(row.expires_at.timestamp()) if row.expires_at else None,
        revoked_at=int(row.revoked_at.timestamp()) if row.revoked_at else None,
        last_used_at=int(row.last_used_at.timestamp()) if row.last_used_at else None,
        rate_limit_per_minute=row.rate_limit_per_minute,
        rotated_from=row.rotated_from,
    )


def _without_secret(body: dict[str, Any]) -> dict[str, Any]:
    # Secrets are never stored: a replayed key answer carries no token.
    return {**body, "key": None}


@router.post(
    "/keys",
    response_model=KeyCreated,
    status_code=201,
    summary="Issue an API key (the secret is shown once)",
    responses=responses(*ADMIN_ERRORS),
)
async def create_key(
    body: KeyCreate, request: Request, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    async def issue() -> tuple[int, KeyCreated]:
        issued = await key_service.issue_key(
            session=session,
            hmac_key=rt.hmac_key,
            tenant_name=body.tenant,
            name=body.name,
            scopes=body.scopes,
            expires_at=body.expires_at,
            rate_limit_per_minute=body.rate_limit_per_minute,
        )
        audit.record(session=session, ctx=ctx, action="key.create", resource=issued.key.id)
        return 201, KeyCreated(**_key_out(issued.key).model_dump(), key=issued.token)

    return await respond(
        request=request,
        rt=rt,
        ctx=ctx,
        session=session,
        request_fingerprint=request_digest(route="POST /admin/keys", body=body.model_dump()),
        action=issue,
        redact=_without_secret,
    )


@router.post(
    "/keys/{key_id}/rotate",
    response_model=KeyCreated,
    status_code=201,
    summary="Rotate a key: a successor now, the old key ends after the overlap",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def rotate_key(
    key_id: str,
    request: Request,
    ctx: AdminCtx,
    session: SessionDep,
    rt: RuntimeDep,
    body: KeyRotate | None = None,
) -> JSONResponse:
    body = body or KeyRotate()

    async def rotate() -> tuple[int, KeyCreated]:
        issued = await key_service.rotate_key(
            session=session,
            hmac_key=rt.hmac_key,
            key_id=key_id,
            overlap_seconds=body.overlap_seconds,
        )
        rt.key_cache.pop(key_id, None)
        audit.record(
            session=session,
            ctx=ctx,
            action="key.rotate",
            resource=key_id,
            detail=f"successor {issued.key.id}",
        )
        return 201, KeyCreated(**_key_out(issued.key).model_dump(), key=issued.token)

    return await respond(
        request=request,
        rt=rt,
        ctx=ctx,
        session=session,
        request_fingerprint=request_digest(
            route="POST /admin/keys/rotate", id=key_id, body=body.model_dump()
        ),
        action=rotate,
        redact=_without_secret,
    )


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
    tenant: Annotated[str | None, Query(description="The tenant's name")] = None,
) -> KeyList:
    rows = await key_service.list_keys(session=session, tenant_id=tenant_id, tenant=tenant)
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
    responses=responses(*ADMIN_ERRORS, NotFound, Conflict),
)
async def retry_job(
    job_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    request: Request,
    ctx: AdminCtx,
    session: SessionDep,
    rt: RuntimeDep,
) -> JSONResponse:
    async def retry() -> tuple[int, JobOut]:
        job = await admin_service.retry_job(session=session, ctx=ctx, job_id=job_id)
        return 200, _job_out(job)

    return await respond(
        request=request,
        rt=rt,
        ctx=ctx,
        session=session,
        request_fingerprint=request_digest(route="POST /admin/jobs/retry", id=job_id),
        action=retry,
    )


@router.post(
    "/files/{file_id}/check",
    response_model=CheckReport,
    summary="Check a file now: re-hash its blob and confirm every provider copy exists",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def check_file(
    file_id: FileId, request: Request, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    async def check() -> tuple[int, CheckReport]:
        report = await admin_service.check_file(session=session, rt=rt, ctx=ctx, file_id=file_id)
        return 200, CheckReport(**report)

    return await respond(
        request=request,
        rt=rt,
        ctx=ctx,
        session=session,
        request_fingerprint=request_digest(route="POST /admin/files/check", id=file_id),
        action=check,
    )


def _tenant_out(usage: TenantUsage) -> TenantOut:
    return TenantOut(
        id=usage.tenant.id,
        name=usage.tenant.name,
        max_bytes=usage.tenant.max_bytes,
        max_files=usage.tenant.max_files,
        used_bytes=usage.bytes,
        used_files=usage.files,
    )


@router.get(
    "/tenants",
    response_model=TenantList,
    summary="Tenants with their usage and quotas",
    responses=responses(*ADMIN_ERRORS),
)
async def list_tenants(ctx: AdminCtx, session: SessionDep) -> TenantList:
    return TenantList(
        data=[_tenant_out(u) for u in await tenant_service.list_usage(session=session)]
    )


@router.put(
    "/tenants/{tenant}/quota",
    response_model=TenantOut,
    summary="Set a tenant's quotas on stored bytes and file count (null clears one)",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def set_quota(
    tenant: str, body: QuotaUpdate, ctx: AdminCtx, session: SessionDep
) -> TenantOut:
    usage = await tenant_service.set_quota(
        session=session, ctx=ctx, name=tenant, max_bytes=body.max_bytes, max_files=body.max_files
    )
    return _tenant_out(usage)


def _audit_out(row: AuditEvent) -> AuditOut:
    return AuditOut(
        id=row.id,
        created_at=row.created_at.isoformat(),
        request_id=row.request_id,
        actor=row.actor,
        tenant_id=row.tenant_id,
        action=row.action,
        resource=row.resource,
        outcome=row.outcome,
        status_code=row.status_code,
        client_addr=row.client_addr,
        detail=row.detail,
    )


@router.get(
    "/audit",
    response_model=AuditList,
    summary="The audit trail, newest first, filtered; JSON Lines with format=jsonl",
    description="Cursor pagination: pass `next_cursor` back as `cursor`. With `format=jsonl` the "
    "whole filtered trail streams as JSON Lines (one event per line).",
    responses={
        200: {"content": {"application/x-ndjson": {}}},
        **responses(*ADMIN_ERRORS),
    },
)
async def audit_trail(
    ctx: AdminCtx,
    session: SessionDep,
    rt: RuntimeDep,
    tenant_id: Annotated[str | None, Query(max_length=40)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[Literal["success", "denied", "failed"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="RFC 3339, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="RFC 3339, exclusive")] = None,
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[Literal["json", "jsonl"], Query()] = "json",
) -> Response:
    filters = {
        "tenant_id": tenant_id,
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "since": _aware(since, "since"),
        "until": _aware(until, "until"),
    }
    if format == "jsonl":
        return StreamingResponse(_jsonl(rt, filters, cursor), media_type="application/x-ndjson")
    rows = await audit.page(session=session, before_id=cursor, limit=limit + 1, **filters)
    page = list(rows[:limit])
    return JSONResponse(
        AuditList(
            data=[_audit_out(r) for r in page],
            has_more=len(rows) > limit,
            next_cursor=page[-1].id if len(rows) > limit else None,
        ).model_dump(mode="json")
    )


def _aware(value: datetime | None, name: str) -> datetime | None:
    """An aware time in UTC; naive times and times that leave the calendar in UTC are a 400."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest(f"'{name}' needs a time zone (e.g. 'Z').", param=name)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(
            f"'{name}' lies outside the years 1 to 9999 once converted to UTC.", param=name
        ) from None


async def _jsonl(rt: Runtime, filters: dict[str, Any], cursor: int | None) -> AsyncIterator[bytes]:
    """Stream the filtered trail in pages, each read in its own short transaction."""
    before = cursor
    while True:
        async with rt.sessionmaker() as session:
            rows = await audit.page(session=session, before_id=before, limit=JSONL_PAGE, **filters)
        for row in rows:
            yield (_audit_out(row).model_dump_json() + "\n").encode()
        if len(rows) < JSONL_PAGE:
            return
        before = rows[-1].id


def _breaker_out(snapshot: BreakerSnapshot) -> BreakerOut:
    return BreakerOut(
        state=snapshot.state,
        failure_count=snapshot.failures,
        last_error=snapshot.last_error,
        storage=snapshot.storage,
        degraded=snapshot.degraded,
        retry_after=snapshot.retry_after,
    )


@router.get(
    "/providers",
    response_model=ProviderList,
    summary="Providers: mode, circuit breaker, files and bytes placed against the quota",
    responses=responses(*ADMIN_ERRORS),
)
async def providers(ctx: AdminCtx, session: SessionDep, rt: RuntimeDep) -> ProviderList:
    rows = await admin_service.provider_overview(session=session, rt=rt)
    return ProviderList(
        data=[ProviderOut(**{**row, "breaker": _breaker_out(row["breaker"])}) for row in rows]
    )


@router.post(
    "/providers/{provider}/breaker",
    response_model=BreakerOut,
    summary="Open, close or reset a provider's circuit breaker",
    responses=responses(*ADMIN_ERRORS),
)
async def force_breaker(
    provider: str,
    body: BreakerAction,
    request: Request,
    ctx: AdminCtx,
    session: SessionDep,
    rt: RuntimeDep,
) -> JSONResponse:
    async def force() -> tuple[int, BreakerOut]:
        snapshot = await admin_service.force_breaker(
            session=session, rt=rt, ctx=ctx, provider=provider, action=body.action
        )
        return 200, _breaker_out(snapshot)

    return await respond(
        request=request,
        rt=rt,
        ctx=ctx,
        session=session,
        request_fingerprint=request_digest(
            route="POST /admin/providers/breaker", provider=provider, body=body.model_dump()
        ),
        action=force,
    )

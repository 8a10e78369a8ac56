"""Files of every tenant: find, show, check, copy and delete."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.api.deps import FileId, ReadSessionDep, RuntimeDep, SessionDep
from app.api.errors import responses
from app.api.idempotency import Idempotent
from app.api.routes.admin.common import ADMIN_ERRORS, PREFIX
from app.api.schemas import (
    AdminFileDetail,
    AdminFileList,
    AdminFileOut,
    CheckReport,
    FileDeleted,
    ReplicateRequest,
)
from app.auth.guards import AdminCtx
from app.core.errors import (
    NotFound,
    ProviderAuthFailed,
    ProviderFileTooLarge,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderUnavailable,
)
from app.models import FileStatus, ProviderCopyStatus
from app.services import admin as admin_service
from app.services.idempotency import request_digest

router = APIRouter(prefix=PREFIX)
PROVIDER_ERRORS = (
    ProviderAuthFailed,
    ProviderRateLimited,
    ProviderFileTooLarge,
    ProviderQuotaExceeded,
    ProviderUnavailable,
)


@router.get(
    "/files",
    response_model=AdminFileList,
    summary="Find files across tenants, newest first",
    description="Filters combine: `tenant` (name), `id`, `sha256` (64 hex digits), `filename` "
    "(case-insensitive substring) and `status`; deleted files appear only with "
    "`status=deleted`. Cursor pagination: pass `next_cursor` (a file id) back as `cursor`.",
    responses=responses(*ADMIN_ERRORS),
)
async def find_files(
    session: ReadSessionDep,
    tenant: Annotated[str | None, Query(max_length=100, description="The tenant's name")] = None,
    id: Annotated[str | None, Query(max_length=64)] = None,
    sha256: Annotated[str | None, Query(max_length=64)] = None,
    filename: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    status: Annotated[FileStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=64, description="A file id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AdminFileList:
    page = await admin_service.find_files(
        session=session,
        tenant=tenant,
        file_id=id,
        sha256=sha256,
        filename=filename,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return AdminFileList(
        data=[AdminFileOut.of(record) for record in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/files/{file_id}",
    response_model=AdminFileDetail,
    summary="A file of any tenant (deleted ones too), its copies and its lifecycle events",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def show_file(file_id: FileId, session: ReadSessionDep) -> AdminFileDetail:
    detail = await admin_service.show_file(session=session, file_id=file_id)
    return AdminFileDetail.of_detail(detail)


@router.delete(
    "/files/{file_id}",
    response_model=FileDeleted,
    summary="Delete a file of any tenant, as the tenant's own delete does",
    responses=responses(*ADMIN_ERRORS, NotFound, *PROVIDER_ERRORS),
)
async def delete_file(
    file_id: FileId, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep
) -> FileDeleted:
    deleted = await admin_service.delete_file(
        session=session,
        blob_store=rt.blob_store,
        providers=rt.providers,
        settings=rt.settings,
        ctx=ctx,
        file_id=file_id,
    )
    return FileDeleted(id=deleted)


@router.post(
    "/files/{file_id}/providers",
    response_model=AdminFileOut,
    summary="Ensure a copy of any tenant's file on a provider",
    description="As the tenant's own POST /v1/files/{id}/providers: 202 when the provider "
    "cannot take it now and the gateway finishes the copy by itself.",
    responses={
        202: {"model": AdminFileOut, "description": "Accepted; the copy is placed later"},
        **responses(*ADMIN_ERRORS, NotFound, *PROVIDER_ERRORS),
    },
)
async def copy_file(
    file_id: FileId,
    body: ReplicateRequest,
    ctx: AdminCtx,
    idem: Idempotent,
    session: SessionDep,
    rt: RuntimeDep,
) -> JSONResponse:
    fingerprint = request_digest(
        route="POST /admin/files/{id}/providers", id=file_id, body=body.model_dump()
    )
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    record, view = await admin_service.copy_file(
        session=session, placer=rt.placer, ctx=ctx, file_id=file_id, provider=body.provider
    )
    live = any(
        c.provider == body.provider and c.status == ProviderCopyStatus.ACTIVE for c in view.copies
    )
    response = await idem.answer(200 if live else 202, AdminFileOut.of(record))
    if response.status_code == 202 and view.retry_after:
        response.headers["Retry-After"] = str(max(1, math.ceil(view.retry_after)))
    return response


@router.post(
    "/files/{file_id}/check",
    response_model=CheckReport,
    summary="Check a file now: re-hash its blob and confirm every provider copy exists",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def check_file(
    file_id: FileId, ctx: AdminCtx, idem: Idempotent, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    fingerprint = request_digest(route="POST /admin/files/check", id=file_id)
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    report = await admin_service.check_file(
        session=session,
        blob_store=rt.blob_store,
        providers=rt.providers,
        metrics=rt.metrics,
        settings=rt.settings,
        ctx=ctx,
        file_id=file_id,
    )
    return await idem.answer(200, CheckReport(**report))

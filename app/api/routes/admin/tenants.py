"""Tenants: usage against quotas, and setting the quotas."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import SessionDep
from app.api.errors import responses
from app.api.routes.admin.common import ADMIN_ERRORS, PREFIX
from app.api.schemas import QuotaUpdate, TenantList, TenantOut
from app.auth.guards import AdminCtx
from app.core.errors import NotFound
from app.services import tenants as tenant_service

router = APIRouter(prefix=PREFIX)


@router.get(
    "/tenants",
    response_model=TenantList,
    summary="Tenants with their usage and quotas",
    responses=responses(*ADMIN_ERRORS),
)
async def list_tenants(session: SessionDep) -> TenantList:
    return TenantList(
        data=[TenantOut.of(u) for u in await tenant_service.list_usage(session=session)]
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
    return TenantOut.of(usage)

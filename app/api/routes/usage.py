"""A tenant's own usage: what it stores against its quotas, and its key's rate limit."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ReadSessionDep, RuntimeDep
from app.api.errors import responses
from app.api.schemas import Usage
from app.auth.guards import ReadCtx
from app.core.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from app.services import tenants as tenant_service

router = APIRouter(prefix="/v1", tags=["usage"])


@router.get(
    "/usage",
    response_model=Usage,
    summary="The calling key's tenant: files and bytes stored, quotas, and the rate limit",
    description="Any key with `files:read` may read its own tenant's numbers, never another's.",
    responses=responses(InvalidRequest, AuthenticationFailed, PermissionDenied),
)
async def usage(ctx: ReadCtx, session: ReadSessionDep, rt: RuntimeDep) -> Usage:
    own = await tenant_service.own_usage(session=session, ctx=ctx)
    limit = ctx.principal.rate_limit_per_minute or rt.settings.default_rate_limit_per_minute
    return Usage(
        tenant=own.tenant.name,
        tenant_id=own.tenant.id,
        files=own.files,
        bytes=own.bytes,
        max_files=own.tenant.max_files,
        max_bytes=own.tenant.max_bytes,
        rate_limit_per_minute=limit or None,
    )

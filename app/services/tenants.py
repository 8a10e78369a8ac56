"""Tenants as operators see them: usage against quotas, and setting those quotas."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.keys import checked_tenant_name
from app.auth.principal import CallContext
from app.core.errors import InvalidRequest, NotFound
from app.models import Tenant
from app.repositories.files import FileRepository
from app.repositories.keys import KeyRepository
from app.services import audit

# The widest values the columns hold (BIGINT and INTEGER on both databases).
QUOTA_MAX = {"max_bytes": 2**63 - 1, "max_files": 2**31 - 1}


@dataclass(frozen=True)
class TenantUsage:
    tenant: Tenant
    files: int
    bytes: int


async def list_usage(*, session: AsyncSession) -> list[TenantUsage]:
    files = FileRepository(session)
    out = []
    for tenant in await KeyRepository(session).tenants():
        count, total = await files.usage(tenant_id=tenant.id)
        out.append(TenantUsage(tenant, count, total))
    return out


async def own_usage(*, session: AsyncSession, ctx: CallContext) -> TenantUsage:
    """The calling credential's own tenant: what it stores and its quotas."""
    tenant = await KeyRepository(session).tenant(ctx.principal.tenant_id)
    if tenant is None:  # the credential outlived its tenant row: nothing to show
        raise NotFound("No tenant for this credential.", param=None)
    count, total = await FileRepository(session).usage(tenant_id=tenant.id)
    return TenantUsage(tenant, count, total)


async def set_quota(
    *,
    session: AsyncSession,
    ctx: CallContext,
    name: str,
    max_bytes: int | None,
    max_files: int | None,
) -> TenantUsage:
    """Set (or clear, with None) a tenant's quotas on stored bytes and file count."""
    for label, value in (("max_bytes", max_bytes), ("max_files", max_files)):
        if value is not None and not 0 <= value <= QUOTA_MAX[label]:
            raise InvalidRequest(f"{label} must be between 0 and {QUOTA_MAX[label]}.", param=label)
    tenant = await KeyRepository(session).tenant_by_name(checked_tenant_name(name))
    if tenant is None:
        raise NotFound("No tenant with that name.", param="tenant")
    tenant.max_bytes = max_bytes
    tenant.max_files = max_files
    audit.record(
        session=session,
        ctx=ctx,
        action="tenant.quota",
        resource=f"tenant:{tenant.id}",
        detail=f"max_bytes={max_bytes} max_files={max_files}",
    )
    await session.flush()
    count, total = await FileRepository(session).usage(tenant_id=tenant.id)
    return TenantUsage(tenant, count, total)

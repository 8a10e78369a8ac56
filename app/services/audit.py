"""Recording audit events; callers add them inside the transaction they describe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEvent
from app.repositories.audit import AuditRepository
from app.services.context import CallContext


def record(
    *,
    session: AsyncSession,
    ctx: CallContext,
    action: str,
    resource: str | None,
    outcome: str = "success",
    status_code: int | None = 200,
    detail: str | None = None,
) -> None:
    """Add an audit row to the session's current unit of work."""
    AuditRepository(session).add(
        AuditEvent(
            request_id=ctx.request_id,
            actor=ctx.principal.actor,
            tenant_id=ctx.principal.tenant_id,
            action=action,
            resource=resource,
            outcome=outcome,
            status_code=status_code,
            client_addr=ctx.client_addr,
            detail=detail,
        )
    )


def record_refusal(
    *,
    session: AsyncSession,
    actor: str,
    tenant_id: str | None,
    action: str,
    resource: str | None,
    status_code: int,
    reason: str,
    request_id: str | None,
    client_addr: str | None,
) -> None:
    """Add an audit row for a refused or failed request."""
    AuditRepository(session).add(
        AuditEvent(
            request_id=request_id,
            actor=actor,
            tenant_id=tenant_id,
            action=action,
            resource=resource,
            outcome="denied" if status_code in (401, 403) else "failed",
            status_code=status_code,
            client_addr=client_addr,
            detail=reason[:500],
        )
    )


async def page(
    *, session: AsyncSession, before_id: int | None, limit: int, **filters: Any
) -> Sequence[AuditEvent]:
    """A page of the trail, newest first."""
    return await AuditRepository(session).page(before_id=before_id, limit=limit, **filters)

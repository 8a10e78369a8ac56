"""Route glue for Idempotency-Key: claim, run, store or replay."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.errors import GatewayError
from app.runtime import Runtime
from app.services import idempotency

HEADER = "Idempotency-Key"
Action = Callable[[], Awaitable[tuple[int, BaseModel]]]


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    return idempotency.check_key(key) if key is not None else None


async def respond(
    *,
    request: Request,
    rt: Runtime,
    ctx: CallContext,
    session: AsyncSession,
    request_fingerprint: str,
    action: Action,
    redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> JSONResponse:
    """Run `action` once per (tenant, key); repeats of the same request replay its answer.

    `redact` marks an answer that carries a secret: the stored replay drops it, and no cache
    may keep either (`Cache-Control: no-store`)."""
    headers = {"Cache-Control": "no-store"} if redact is not None else {}
    key = idempotency_key(request)
    if key is None:
        status, model = await action()
        return JSONResponse(model.model_dump(mode="json"), status_code=status, headers=headers)
    tenant = ctx.principal.tenant_id
    lease = rt.settings.idempotency_lease_seconds
    stored = await idempotency.begin(
        sessionmaker=rt.sessionmaker,
        tenant_id=tenant,
        key=key,
        request_fingerprint=request_fingerprint,
        lease_seconds=lease,
    )
    if stored is not None:
        return JSONResponse(
            stored.body,
            status_code=stored.status_code,
            headers={**headers, "Idempotent-Replayed": "true"},
        )
    try:
        async with idempotency.held(
            sessionmaker=rt.sessionmaker, tenant_id=tenant, key=key, lease_seconds=lease
        ):
            status, model = await action()
            # The change must be durable before its answer is stored for replay.
            await session.commit()
    except GatewayError as exc:
        if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
            await idempotency.finish(
                sessionmaker=rt.sessionmaker,
                tenant_id=tenant,
                key=key,
                status_code=exc.status_code,
                body=exc.body(),
            )
        else:
            await idempotency.release(sessionmaker=rt.sessionmaker, tenant_id=tenant, key=key)
        raise
    except BaseException:
        await idempotency.release(sessionmaker=rt.sessionmaker, tenant_id=tenant, key=key)
        raise
    body = model.model_dump(mode="json")
    await idempotency.finish(
        sessionmaker=rt.sessionmaker,
        tenant_id=tenant,
        key=key,
        status_code=status,
        body=redact(dict(body)) if redact else body,
    )
    return JSONResponse(body, status_code=status, headers=headers)

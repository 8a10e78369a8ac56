"""Dependencies: the runtime, the request's unit of work, and authorization."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import session_scope
from app.core.errors import AuthenticationFailed, PermissionDenied, RateLimited
from app.core.logging import log_context
from app.core.ratelimit import rate_limit_headers
from app.runtime import Runtime
from app.services.context import CallContext, Principal


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed when the route returns, rolled back on error."""
    runtime: Runtime = request.app.state.runtime
    async with session_scope(runtime.sessionmaker) as session:
        yield session
    runtime.database.reached()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for routes that only read: nothing to commit, closed (rolled back) after."""
    runtime: Runtime = request.app.state.runtime
    async with runtime.sessionmaker() as session:
        yield session
    runtime.database.reached()


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


async def file_id_param(file_id: Annotated[str, Path()]) -> str:
    """The path's file id, bound to the request's log lines (async: same context as the route)."""
    log_context.bind(file_id=file_id)  # undone with the request's context by the middleware
    return file_id


FileId = Annotated[str, Depends(file_id_param)]


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None


def authorize(scope: str) -> Callable[[Request], Awaitable[CallContext]]:
    """A dependency that demands an authenticated caller holding `scope`, within its rate."""

    async def dependency(request: Request) -> CallContext:
        principal: Principal | None = request.state.principal
        if principal is None:
            if request.state.credential_presented:
                raise AuthenticationFailed(
                    request.state.auth_problem or "The API key is invalid, expired or revoked."
                )
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer fg_...' or 'X-API-Key'."
            )
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise PermissionDenied(f"This credential lacks the '{scope}' scope.")
        runtime: Runtime = request.app.state.runtime
        limit = principal.rate_limit_per_minute or runtime.settings.default_rate_limit_per_minute
        if limit:
            decision = await runtime.rate_limiter.hit(
                f"{principal.kind}:{principal.key_id}", limit_per_minute=limit
            )
            headers = rate_limit_headers(decision)
            request.state.rate_limit_headers = headers
            if not decision.allowed:
                raise RateLimited(
                    f"Rate limit of {limit} requests per minute reached; retry after "
                    f"{headers['Retry-After']} s.",
                    headers=headers,
                )
        return CallContext(
            principal=principal,
            request_id=request.state.request_id,
            client_addr=client_addr(request),
        )

    return dependency


ReadCtx = Annotated[CallContext, Depends(authorize("files:read"))]
WriteCtx = Annotated[CallContext, Depends(authorize("files:write"))]
AdminCtx = Annotated[CallContext, Depends(authorize("admin"))]

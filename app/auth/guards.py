"""Authorization dependencies: an identified caller holding the route's scope, within its rate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from app.api.deps import client_addr
from app.auth.principal import CallContext, Principal
from app.auth.scopes import Scope
from app.core.errors import AuthenticationFailed, CsrfRefused, PermissionDenied, RateLimited
from app.core.ratelimit import rate_limit_headers
from app.runtime import Runtime


def authorize(scope: Scope) -> Callable[[Request], Awaitable[CallContext]]:
    """A dependency that demands an authenticated caller holding `scope`, within its rate."""

    async def dependency(request: Request) -> CallContext:
        principal: Principal | None = request.state.principal
        runtime: Runtime = request.app.state.runtime
        if principal is None:
            if request.state.csrf_refused:
                raise CsrfRefused(
                    "The console session's CSRF token is missing or wrong: reload the console."
                )
            presented = request.state.credential_presented
            runtime.metrics.auth_refusals.labels("invalid" if presented else "missing").inc()
            if presented:
                raise AuthenticationFailed(
                    request.state.auth_problem or "The API key is invalid, expired or revoked."
                )
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer fg_...' or 'X-API-Key'."
            )
        if scope not in principal.scopes and Scope.ADMIN not in principal.scopes:
            raise PermissionDenied(f"This credential lacks the '{scope}' scope.")
        limit = principal.rate_limit_per_minute or runtime.settings.default_rate_limit_per_minute
        if limit:
            decision = await runtime.rate_limiter.hit(principal.rate_bucket, limit_per_minute=limit)
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


ReadCtx = Annotated[CallContext, Depends(authorize(Scope.FILES_READ))]
WriteCtx = Annotated[CallContext, Depends(authorize(Scope.FILES_WRITE))]
# One callable, so a router guarded by it and a route reading AdminCtx resolve it once.
ADMIN_ONLY = Depends(authorize(Scope.ADMIN))
AdminCtx = Annotated[CallContext, ADMIN_ONLY]

"""Identifying (never rejecting) the caller: an API key or JWT becomes a Principal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.jwt import JWTRejected, JWTVerifier, looks_like_jwt
from app.auth.keys import (
    KeyRecord,
    ensure_tenant,
    load_key_record,
    principal_for,
    touch_key,
)
from app.auth.principal import Principal
from app.auth.tokens import parse_key
from app.core.logging import log_context

if TYPE_CHECKING:
    from app.runtime import Runtime

IDENTIFIED_PREFIXES = ("/v1", "/admin")


def presented_token(headers: Headers) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else auth
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key else None


class IdentifyMiddleware:
    """Resolves an API key to a Principal in scope state; authorization happens in routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal: Principal | None = None
        if scope["type"] == "http" and scope["path"].startswith(IDENTIFIED_PREFIXES):
            state = scope.setdefault("state", {})
            token = presented_token(Headers(scope=scope))
            state["credential_presented"] = token is not None
            state["principal"] = None
            state["auth_problem"] = None
            if token is not None:
                runtime: Runtime = scope["app"].state.runtime
                principal, state["auth_problem"] = await identify(runtime, token)
                state["principal"] = principal
        with log_context.bound(tenant_id=principal.tenant_id if principal else None):
            await self.app(scope, receive, send)


async def identify(runtime: Runtime, token: str) -> tuple[Principal | None, str | None]:
    """The principal behind an API key or JWT, or None with a reason safe to show."""
    if runtime.jwt is not None and looks_like_jwt(token):
        return await _identify_jwt(runtime, runtime.jwt, token)
    parsed = parse_key(token)
    if parsed is None:
        return None, None
    cached = runtime.identity.key(parsed.key_id)
    if isinstance(cached, KeyRecord) or cached is None:
        record = cached
    else:
        async with runtime.sessionmaker() as session:
            record = await load_key_record(session=session, key_id=parsed.key_id)
        runtime.identity.remember_key(parsed.key_id, record)
    principal = principal_for(token, record, hmac_key=runtime.hmac_key, now=runtime.clock.now())
    if principal is not None and runtime.identity.due_for_touch(principal.key_id):
        # last_used_at is written at most once a minute per key and process.
        async with runtime.sessionmaker() as session:
            await touch_key(session=session, key_id=principal.key_id)
            await session.commit()
    return principal, None


async def _identify_jwt(
    runtime: Runtime, verifier: JWTVerifier, token: str
) -> tuple[Principal | None, str | None]:
    try:
        identity = verifier.verify(token)
    except JWTRejected as exc:
        return None, f"JWT refused: {exc.reason}."
    tenant_id = runtime.identity.tenant_id(identity.tenant)
    if tenant_id is None:
        # The issuer is trusted to name tenants; the first token of a tenant creates it.
        for _ in range(2):
            try:
                async with runtime.sessionmaker() as session:
                    tenant = await ensure_tenant(session=session, name=identity.tenant)
                    await session.commit()
                break
            except IntegrityError:
                continue  # a concurrent first request created the tenant; look it up again
        tenant_id = tenant.id
        runtime.identity.remember_tenant(identity.tenant, tenant_id)
    return (
        Principal(
            key_id=identity.subject,
            tenant_id=tenant_id,
            scopes=identity.scopes,
            kind="jwt",
        ),
        None,
    )

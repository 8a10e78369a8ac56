"""Identifying (never rejecting) the caller: an API key or JWT becomes a Principal."""

from __future__ import annotations

import time
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

KEY_CACHE_SECONDS = 2.0
KEY_CACHE_MAX = 10_000
LAST_USED_EVERY_SECONDS = 60.0
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
    now = time.monotonic()
    cached = runtime.key_cache.get(parsed.key_id)
    record: KeyRecord | None
    if cached is not None and cached[0] > now:
        record = cached[1]
    else:
        async with runtime.sessionmaker() as session:
            record = await load_key_record(session=session, key_id=parsed.key_id)
        if len(runtime.key_cache) >= KEY_CACHE_MAX:
            runtime.key_cache.clear()
        runtime.key_cache[parsed.key_id] = (now + KEY_CACHE_SECONDS, record)
    principal = principal_for(token, record, hmac_key=runtime.hmac_key)
    if principal is not None:
        await _note_use(runtime, principal.key_id, now)
    return principal, None


async def _identify_jwt(
    runtime: Runtime, verifier: JWTVerifier, token: str
) -> tuple[Principal | None, str | None]:
    try:
        identity = verifier.verify(token)
    except JWTRejected as exc:
        return None, f"JWT refused: {exc.reason}."
    tenant_id = runtime.tenant_ids.get(identity.tenant)
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
        tenant_id = runtime.tenant_ids[identity.tenant] = tenant.id
    return (
        Principal(
            key_id=identity.subject,
            tenant_id=tenant_id,
            scopes=identity.scopes,
            kind="jwt",
        ),
        None,
    )


async def _note_use(runtime: Runtime, key_id: str, now: float) -> None:
    """Write last_used_at at most once a minute per key and process (writes are throttled)."""
    if runtime.key_touched.get(key_id, -LAST_USED_EVERY_SECONDS) + LAST_USED_EVERY_SECONDS > now:
        return
    runtime.key_touched[key_id] = now
    if len(runtime.key_touched) > KEY_CACHE_MAX:
        runtime.key_touched.clear()
    async with runtime.sessionmaker() as session:
        await touch_key(session=session, key_id=key_id)
        await session.commit()

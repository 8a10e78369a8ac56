"""Identifying (never rejecting) the caller: an API key or JWT becomes a Principal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import sessions
from app.auth.jwt import JWTRejected, JWTVerifier, looks_like_jwt
from app.auth.keys import (
    KeyRecord,
    ensure_tenant,
    live_principal,
    load_key_record,
    principal_for,
    touch_key,
)
from app.auth.principal import Principal
from app.auth.scopes import Scope as Grant
from app.auth.tokens import parse_key
from app.core.logging import log_context

if TYPE_CHECKING:
    from app.runtime import Runtime

IDENTIFIED_PREFIXES = ("/v1", "/admin")
# Where a console session cookie stands in for a key: the admin API and the session itself
# (whose sign-in is open to anonymous bodies, unlike the identified prefixes).
SESSION_PREFIXES = ("/admin", "/console/session")


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
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith((*IDENTIFIED_PREFIXES, *SESSION_PREFIXES)):
            state = scope.setdefault("state", {})
            headers = Headers(scope=scope)
            token = presented_token(headers)
            cookie = None
            if token is None and path.startswith(SESSION_PREFIXES):
                cookie = session_cookie(headers)
            state["credential_presented"] = token is not None or cookie is not None
            state["principal"] = None
            state["auth_problem"] = None
            state["csrf_refused"] = False
            runtime: Runtime = scope["app"].state.runtime
            if token is not None:
                principal, state["auth_problem"] = await identify(runtime, token)
            elif cookie is not None:
                principal, state["auth_problem"], state["csrf_refused"] = await identify_session(
                    runtime,
                    cookie,
                    change=scope["method"] not in sessions.SAFE_METHODS,
                    csrf=headers.get(sessions.CSRF_HEADER),
                )
            state["principal"] = principal
        with log_context.bound(tenant_id=principal.tenant_id if principal else None):
            await self.app(scope, receive, send)


def session_cookie(headers: Headers) -> str | None:
    """The console session cookie's value, if the request carries one."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == sessions.COOKIE and value:
            return value
    return None


async def _key_record(runtime: Runtime, key_id: str) -> KeyRecord | None:
    cached = runtime.identity.key(key_id)
    if isinstance(cached, KeyRecord) or cached is None:
        return cached
    async with runtime.sessionmaker() as session:
        record = await load_key_record(session=session, key_id=key_id)
    runtime.identity.remember_key(key_id, record)
    return record


async def identify_session(
    runtime: Runtime, cookie: str, *, change: bool, csrf: str | None
) -> tuple[Principal | None, str | None, bool]:
    """The operator behind a console session cookie (its admin key, while that key is live),
    a reason when there is none, and whether a change was refused for a wrong CSRF token.

    A cookie rides along on any request the browser sends, so a `change` (a state-changing
    method) also needs the session's CSRF token, which only the console's page knows."""
    now = runtime.clock.now()
    session = sessions.read_session(cookie, hmac_key=runtime.hmac_key, now=now.timestamp())
    if session is None or await runtime.signouts.ended(session):
        return None, "The console session has expired or is invalid; sign in again.", False
    record = await _key_record(runtime, session.key_id)
    principal = None if record is None else live_principal(record, now=now, kind="console")
    if principal is None or Grant.ADMIN not in principal.scopes:
        return None, "The console session's key is no longer valid; sign in again.", False
    if change and not sessions.csrf_matches(session, csrf, hmac_key=runtime.hmac_key):
        return None, None, True
    return principal, None, False


async def identify(runtime: Runtime, token: str) -> tuple[Principal | None, str | None]:
    """The principal behind an API key or JWT, or None with a reason safe to show."""
    if runtime.jwt is not None and looks_like_jwt(token):
        return await _identify_jwt(runtime, runtime.jwt, token)
    parsed = parse_key(token)
    if parsed is None:
        return None, None
    record = await _key_record(runtime, parsed.key_id)
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

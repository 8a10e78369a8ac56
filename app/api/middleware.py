"""Pure-ASGI middleware: request ids, and identifying (never rejecting) the caller."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import unexpected_response
from app.core.jwt import JWTRejected, JWTVerifier, looks_like_jwt
from app.core.logging import is_expected, log_context
from app.core.security import parse_key
from app.services.context import Principal
from app.services.keys import (
    KeyRecord,
    ensure_tenant,
    load_key_record,
    principal_for,
    touch_key,
)

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("filegate.errors")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
KEY_CACHE_SECONDS = 2.0
KEY_CACHE_MAX = 10_000
LAST_USED_EVERY_SECONDS = 60.0
IDENTIFIED_PREFIXES = ("/v1", "/admin")


class RequestContextMiddleware:
    """Gives every request an id (the caller's X-Request-ID when sane) and echoes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                for name, value in (scope["state"].get("rate_limit_headers") or {}).items():
                    headers.setdefault(name, value)
            await send(message)

        with log_context.bound(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                # Answered here, inside this middleware, so the answer carries the request id
                # and the exception goes no further (the server would drop the connection).
                if started:  # too late for an answer: the server closes the unfinished response
                    _log_late_failure(scope, exc)
                    return
                response = await unexpected_response(Request(scope), exc)
                await response(scope, receive, send_with_id)


def _log_late_failure(scope: Scope, exc: Exception) -> None:
    # Starlette wraps an error handled after the response started in a RuntimeError.
    cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ else exc
    if isinstance(cause, ClientDisconnect) or is_expected(cause):
        log.info("%s ended after the response started: %r", scope["path"], cause)
    else:
        log.error("error after the response started on %s", scope["path"], exc_info=exc)


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

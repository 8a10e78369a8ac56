"""The operator console: its page and assets, and signing in and out.

The console's script calls the admin API itself, authenticated by the session cookie issued
here, so every console action runs the admin route (and its audit) an API caller would.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import RuntimeDep, SessionDep, client_addr
from app.auth import sessions
from app.auth.guards import AdminCtx
from app.auth.identify import identify, session_cookie
from app.auth.principal import CallContext, Principal
from app.auth.scopes import Scope as Grant
from app.auth.tokens import parse_key
from app.core.errors import AuthenticationFailed, PermissionDenied
from app.services import audit

PREFIX = "/console"
ASSETS = "app.console"
# Everything the console needs comes from the gateway; nothing inline, no frames.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix=PREFIX, include_in_schema=False)


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=200)
    model_config = {"extra": "forbid"}


class ConsoleHeadersMiddleware:
    """Adds the console's security headers to every answer under /console."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (
            scope["path"] == PREFIX or scope["path"].startswith(f"{PREFIX}/")
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in CONSOLE_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    """Serve the console at /console: its page, assets and session routes."""
    page = resources.files(ASSETS).joinpath("static/index.html").read_bytes()

    @app.get(PREFIX, include_in_schema=False)
    async def console_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    app.mount(f"{PREFIX}/assets", StaticFiles(packages=[(ASSETS, "static")]), name="console-assets")
    app.include_router(router)
    app.add_middleware(ConsoleHeadersMiddleware)


def _answer(
    principal: Principal, session: sessions.ConsoleSession, *, hmac_key: bytes
) -> dict[str, object]:
    return {
        "object": "console.session",
        "operator": principal.actor,
        "key_id": principal.key_id,
        "tenant_id": principal.tenant_id,
        "expires_at": session.expires_at,
        "csrf_token": sessions.csrf_token(session, hmac_key=hmac_key),
    }


@router.post("/session")
async def sign_in(
    request: Request,
    body: Annotated[SignIn, Body()],
    session: SessionDep,
    rt: RuntimeDep,
) -> JSONResponse:
    """Exchange an admin key for a session cookie (HttpOnly, SameSite=Strict)."""
    if parse_key(body.key) is None:
        raise AuthenticationFailed("Sign in with an API key (fg_...).", param="key")
    principal, _ = await identify(rt, body.key)
    if principal is None:
        raise AuthenticationFailed("The key is invalid, expired or revoked.", param="key")
    request.state.principal = principal  # a refusal below is audited under the key
    if Grant.ADMIN not in principal.scopes:
        raise PermissionDenied("Only a key with the admin scope can sign in.", param="key")
    now = rt.clock.now().timestamp()
    lifetime = rt.settings.console_session_seconds
    token = sessions.issue_session(
        hmac_key=rt.hmac_key, key_id=principal.key_id, now=now, lifetime=lifetime
    )
    opened = sessions.read_session(token, hmac_key=rt.hmac_key, now=now)
    assert opened is not None
    operator = Principal(
        key_id=principal.key_id,
        tenant_id=principal.tenant_id,
        scopes=principal.scopes,
        kind="console",
        rate_limit_per_minute=principal.rate_limit_per_minute,
    )
    ctx = CallContext(
        principal=operator, request_id=request.state.request_id, client_addr=client_addr(request)
    )
    audit.record(
        session=session, ctx=ctx, action="console.sign_in", resource=f"key:{principal.key_id}"
    )
    response = JSONResponse(_answer(operator, opened, hmac_key=rt.hmac_key))
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request, rt),
    )
    return response


def _secure(request: Request, rt: RuntimeDep) -> bool:
    # Production runs behind TLS (the gateway itself speaks HTTP and trusts no forwarding
    # headers), so its cookies are Secure even though the request looks like plain HTTP.
    return request.url.scheme == "https" or rt.settings.env == "production"


def _current(request: Request, ctx: CallContext, rt: RuntimeDep) -> sessions.ConsoleSession:
    cookie = session_cookie(request.headers) if ctx.principal.kind == "console" else None
    opened = cookie and sessions.read_session(
        cookie, hmac_key=rt.hmac_key, now=rt.clock.now().timestamp()
    )
    if not opened:
        raise AuthenticationFailed("No console session: sign in first.")
    return opened


@router.get("/session")
async def current_session(request: Request, ctx: AdminCtx, rt: RuntimeDep) -> JSONResponse:
    """Who is signed in, until when, and the session's CSRF token (for a reloaded page)."""
    opened = _current(request, ctx, rt)
    return JSONResponse(_answer(ctx.principal, opened, hmac_key=rt.hmac_key))


@router.delete("/session")
async def sign_out(
    request: Request, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    """End the session: refused from now on, and its cookie cleared (a state change, so it
    needs the CSRF token)."""
    await rt.signouts.end(_current(request, ctx, rt))
    audit.record(
        session=session, ctx=ctx, action="console.sign_out", resource=f"key:{ctx.principal.key_id}"
    )
    response = JSONResponse({"object": "console.session", "signed_out": True})
    response.delete_cookie(
        sessions.COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request, rt),
    )
    return response

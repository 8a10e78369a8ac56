"""Pure-ASGI middleware: request ids, echoed on every answer; answers that spare an
`Expect: 100-continue` client its body say the connection closes."""

from __future__ import annotations

import logging
import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import unexpected_response
from app.core.logging import is_expected, log_context

log = logging.getLogger("filegate.errors")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


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


class ExpectContinueMiddleware:
    """An answer given before the body of an `Expect: 100-continue` request was asked for
    (a dedup hit from a declared digest, a refusal from the headers) says `Connection: close`:
    the client then need not send the body at all, where a connection kept open would have
    to read it, or take it for the next request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or b"100-continue" not in _expectations(scope):
            await self.app(scope, receive, send)
            return
        asked = False

        async def receive_noted() -> Message:
            nonlocal asked
            asked = True  # the server sends 100 Continue on the first receive
            return await receive()

        async def send_noted(message: Message) -> None:
            if message["type"] == "http.response.start" and not asked:
                MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        await self.app(scope, receive_noted, send_noted)


def _expectations(scope: Scope) -> list[bytes]:
    return [value.strip().lower() for name, value in scope["headers"] if name == b"expect"]


def _log_late_failure(scope: Scope, exc: Exception) -> None:
    # Starlette wraps an error handled after the response started in a RuntimeError.
    cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ else exc
    if isinstance(cause, ClientDisconnect) or is_expected(cause):
        log.info("%s ended after the response started: %r", scope["path"], cause)
    else:
        log.error("error after the response started on %s", scope["path"], exc_info=exc)

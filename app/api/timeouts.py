"""Pure-ASGI middleware: a request body that stalls is answered 408 and its connection closed."""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import RequestTimeout


class BodyIdleTimeoutMiddleware:
    """Raises RequestTimeout into the app when no body bytes arrive for `idle_seconds`.

    Only waits for body bytes are timed: the app's own pauses between reads are not the
    client's, and once the body is complete `receive` (awaited for a disconnect) is untimed.
    """

    def __init__(self, app: ASGIApp, *, idle_seconds: float) -> None:
        self.app = app
        self.idle_seconds = idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout(self.idle_seconds):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"No request body bytes arrived for {self.idle_seconds:g} seconds.",
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except RequestTimeout as exc:
            # Normally the error handler answers; this covers a read outside any route.
            if response_started:
                raise
            response = JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)
            await response(scope, receive, send)

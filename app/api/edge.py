"""The edge: what no route should ever see is refused here, before any route runs.

- Control characters (NUL included) in the path or the query string: 400.
- Bodies are bounded: an upload by the upload limit, an upload's part by the part limit, every
  other body by the small JSON limit, declared (Content-Length) or counted as it arrives: 413.
- A caller that did not identify itself on an authenticated prefix never has its body read: the
  route answers 401 from the headers alone. The server discards what the client still sends
  (in bounded memory) and keeps the connection, so the client reads a clean answer rather than
  a reset.
- JSON bodies (read whole, within the limit) must not repeat a key, nest without bound or carry
  control characters in any string: 400.

Every refusal is rendered by the one error handler, so it carries the envelope and request id.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.auth.identify import IDENTIFIED_PREFIXES
from app.core.errors import GatewayError, InvalidRequest, PayloadTooLarge

JSON_TEXT_CONTROLS = frozenset("\t\n\r")
# A resumable upload's part is streamed like an upload, within the part limit.
UPLOAD_PART_PATH = re.compile(r"/v1/uploads/[^/]+/parts")
MAX_JSON_DEPTH = 32


def has_control(text: str, allowed: frozenset[str] = frozenset()) -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _json_problem(value: Any, path: tuple[str, ...] = ()) -> tuple[str, str | None] | None:
    """Why a parsed JSON document is refused (and where, as a dotted param), or None."""
    param = ".".join(path)[:64] or None
    if len(path) > MAX_JSON_DEPTH:
        return f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.", None
    if isinstance(value, str):
        if has_control(value, JSON_TEXT_CONTROLS):
            return "JSON strings must not contain control characters (NUL included).", param
        return None
    children: list[tuple[str, Any]]
    if isinstance(value, dict):
        for key in value:
            if has_control(key, JSON_TEXT_CONTROLS):
                return "JSON keys must not contain control characters (NUL included).", param
        children = list(value.items())
    elif isinstance(value, list):
        children = [(str(index), item) for index, item in enumerate(value)]
    else:
        return None
    for key, item in children:
        if (problem := _json_problem(item, (*path, key))) is not None:
            return problem
    return None


def check_json(body: bytes) -> None:
    """Refuse duplicate keys, runaway nesting and control characters; leave syntax to routes."""
    try:
        document = json.loads(body, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as exc:
        raise InvalidRequest(
            f"The JSON body repeats the key '{exc.key[:64]}'.", param=exc.key[:64]
        ) from None
    except RecursionError:
        raise InvalidRequest(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError:  # not JSON (or not UTF-8): the route's own validation answers
        return
    if (problem := _json_problem(document)) is not None:
        message, param = problem
        raise InvalidRequest(message, param=param)


def check_target(scope: Scope) -> None:
    """Refuse control characters anywhere in the decoded path or query string."""
    if has_control(scope["path"]):
        raise InvalidRequest("The request path must not contain control characters.")
    query = scope.get("query_string", b"").decode("latin-1")
    if not query:
        return
    for name, value in parse_qsl(query, keep_blank_values=True):
        if has_control(name) or has_control(value):
            raise InvalidRequest(
                f"The query parameter '{name[:64]}' must not contain control characters.",
                param=name[:64] if not has_control(name) else None,
            )


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        upload_limit: int,
        body_limit: int,
        upload_paths: frozenset[str] = frozenset({"/v1/files"}),
        part_limit: int | None = None,
    ) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.body_limit = body_limit
        self.upload_paths = upload_paths
        self.part_limit = part_limit or upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        has_body = _declares_body(headers)
        try:
            check_target(scope)
            if not has_body:
                await self.app(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            if scope["path"].startswith(IDENTIFIED_PREFIXES) and state.get("principal") is None:
                # Nobody to answer for this body: the route refuses from the headers alone.
                await self.app(scope, _empty_body, send)
                return
            upload = scope["method"] == "POST" and scope["path"] in self.upload_paths
            limit = self.upload_limit if upload else self.body_limit
            if scope["method"] == "POST" and UPLOAD_PART_PATH.fullmatch(scope["path"]):
                upload, limit = True, self.part_limit
            declared = _content_length(headers)
            if declared is not None and declared > limit:
                raise _too_large(limit, upload)
            if upload:  # streamed by the route, which counts what arrives against the limit
                await self.app(scope, receive, send)
                return
            body = await _read_body(receive, limit)
        except GatewayError as exc:
            await self._refuse(scope, exc, send)
            return
        if body is None:
            return  # the client went away before its body was complete
        try:
            check_json(body)
        except GatewayError as exc:
            await self._refuse(scope, exc, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, exc: GatewayError, send: Send) -> None:
        response = await error_response(Request(scope), exc)
        await response(scope, _empty_body, send)


def _declares_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isascii() or not value.strip().isdigit():
        return None
    return int(value.strip())


def _too_large(limit: int, upload: bool) -> PayloadTooLarge:
    if upload:
        return PayloadTooLarge(
            f"The request body exceeds the gateway's upload limit of {limit} bytes."
        )
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes for this route.",
        code="request_too_large",
    )


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, upload=False)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

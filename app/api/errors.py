"""The single handler that renders every error as {"error": {message, type, code, param}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match

from app.api.schemas import ErrorBody
from app.core.errors import (
    AuthenticationFailed,
    BlobCorrupt,
    GatewayError,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
    StorageUnavailable,
    UnsupportedMediaType,
)
from app.core.logging import log_context
from app.core.outage import is_database_outage
from app.services import audit

log = logging.getLogger("filegate.errors")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HTTP_ERRORS: dict[int, type[GatewayError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
}


# What any authenticated route may answer before its own work: a bad request, no or a bad
# credential, a missing scope.
AUTH_ERRORS = (InvalidRequest, AuthenticationFailed, PermissionDenied)


def responses(*errors: type[GatewayError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries, with an example body for each error a route can answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        entry = out.setdefault(
            err.status_code,
            {
                "model": ErrorBody,
                "description": (err.__doc__ or err.__name__).strip().splitlines()[0],
                "content": {"application/json": {"examples": {}}},
            },
        )
        entry["content"]["application/json"]["examples"][err.__name__] = {
            "summary": err.__name__,
            "value": {
                "error": {
                    "message": EXAMPLE_MESSAGES.get(err.__name__, "See the message for details."),
                    "type": err.type,
                    "code": err.code,
                    "param": None,
                }
            },
        }
    return out


EXAMPLE_MESSAGES = {
    "InvalidRequest": "The 'purpose' field is required.",
    "UnsupportedPurpose": "zai does not accept purpose 'vision'.",
    "AuthenticationFailed": "Missing API key: send 'Authorization: Bearer fg_...' or 'X-API-Key'.",
    "PermissionDenied": "This API key lacks the 'files:write' scope.",
    "NotFound": "No such File object.",
    "PayloadTooLarge": "The file is larger than the gateway's limit of 104857600 bytes.",
    "UnsupportedMediaType": "Uploads must be sent as multipart/form-data.",
    "ProviderAuthFailed": "moonshot refused the gateway's credentials.",
    "ProviderRateLimited": "moonshot is rate limiting the gateway; retry after 5 seconds.",
    "ProviderFileTooLarge": "zai refused the file as too large.",
    "ProviderQuotaExceeded": "moonshot's file quota for the gateway's account is full.",
    "ProviderUnavailable": "zai could not be reached; try again later.",
}


async def _audit_refusal(request: Request, exc: GatewayError) -> None:
    if exc.status_code not in (401, 403) and request.method not in MUTATING:
        return
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or not request.url.path.startswith(("/v1", "/admin", "/console/session")):
        return
    principal = getattr(request.state, "principal", None)
    client = request.client.host if request.client else None
    summary = None
    admitted = True
    if principal is None:
        admitted, summary = runtime.refusals.admit(client)
        if not admitted and summary is None:
            return
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    try:
        async with runtime.sessionmaker() as session:
            if summary is not None:
                audit.record_suppressed(session=session, summary=summary)
            if admitted:
                audit.record_refusal(
                    session=session,
                    actor=principal.actor if principal else "anonymous",
                    tenant_id=principal.tenant_id if principal else None,
                    action=f"{request.method} {path}",
                    resource=request.path_params.get("file_id")
                    or request.path_params.get("key_id"),
                    status_code=exc.status_code,
                    reason=exc.message,
                    request_id=getattr(request.state, "request_id", None),
                    client_addr=client,
                )
            await session.commit()
    except Exception as failure:  # the refusal itself must still be answered
        if is_database_outage(failure):
            runtime.database.failed(failure)
        else:
            log.error("could not record audit event for a refused request", exc_info=failure)


async def error_response(request: Request, exc: GatewayError) -> JSONResponse:
    """The one rendering of an error: its envelope and headers, after auditing a refusal."""
    if isinstance(exc, ProviderError):
        log.warning("provider error: %s (%s)", exc.error_code, exc.provider)
    if isinstance(exc, InsufficientStorage | StorageUnavailable | BlobCorrupt):
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            runtime.metrics.blob_store_errors.labels(exc.error_code).inc()
    await _audit_refusal(request, exc)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def gateway_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return await error_response(request, exc)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, GatewayError):
        # FastAPI wraps what fails while it reads a body (e.g. RequestTimeout) in a plain 400.
        return await gateway_error_handler(request, exc.__cause__)
    cls = _HTTP_ERRORS.get(exc.status_code, GatewayError)
    message = str(exc.detail) if exc.detail else "Request failed."
    if exc.status_code == 404:
        message = f"No route {request.method} {request.url.path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    elif exc.status_code == 413:
        message = "The request body exceeds the gateway's upload limit."
    error = cls(message)
    body = error.body()
    if cls is GatewayError:
        body["error"]["type"] = "invalid_request_error"
        body["error"]["code"] = f"http_{exc.status_code}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    await _audit_refusal(request, error)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path (the framework names one route's only)."""
    routes: list[BaseRoute] = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    message = (
        f"Invalid '{param}': {first.get('msg', 'invalid value')}"
        if param
        else str(first.get("msg", "Invalid request."))
    )
    return await gateway_error_handler(request, InvalidRequest(message, param=param))


async def client_disconnect_handler(request: Request, exc: Exception) -> JSONResponse:
    """The caller hung up mid-request (nothing was kept); nobody is left to read the answer."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    error = InvalidRequest("The client disconnected before the request body was complete.")
    await _audit_refusal(request, error)
    return JSONResponse(error.body(), status_code=error.status_code)


async def unexpected_response(request: Request, exc: BaseException) -> JSONResponse:
    """The answer to an exception no handler owns: 503 while the database is unreachable
    (logged once per outage), else a logged 500. Both in the envelope."""
    runtime = getattr(request.app.state, "runtime", None)
    if is_database_outage(exc):
        if runtime is not None:
            runtime.database.failed(exc)
        retry = runtime.settings.database_retry_after_seconds if runtime is not None else 5
        error: GatewayError = ServiceUnavailable(
            "The gateway's database is unreachable right now; retry shortly.",
            headers={"Retry-After": str(retry)},
        )
    else:
        # The inner middleware and routes that bound these have unwound by now.
        principal = getattr(request.state, "principal", None)
        with log_context.bound(
            request_id=getattr(request.state, "request_id", None),
            tenant_id=principal.tenant_id if principal else None,
            file_id=request.path_params.get("file_id"),
        ):
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        error = GatewayError("The gateway hit an unexpected error; it has been logged.")
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return await unexpected_response(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, gateway_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(ClientDisconnect, client_disconnect_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)

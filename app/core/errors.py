"""The gateway's one error hierarchy and the single JSON shape it renders to.

GatewayError
├── InvalidRequest (400)             bad fields, bad multipart, bad ids
│   └── UnsupportedPurpose (400)     purpose a provider cannot take
├── AuthenticationFailed (401)
├── PermissionDenied (403)
│   └── QuotaExceeded (403)          the tenant's stored bytes or file count is at its quota
├── NotFound (404)
├── Conflict (409)
├── RequestTimeout (408)             request head or body stalled; the connection is closed
├── PayloadTooLarge (413)
├── UnsupportedMediaType (415)
├── Unprocessable (422)
├── RangeNotSatisfiable (416)
├── RateLimited (429)
├── HeaderFieldsTooLarge (431)       request line and headers over the size or count cap
├── TooManyConnections (503)         the server's connection cap is reached
├── InsufficientStorage (507)        the gateway's own disk is full
├── ServiceUnavailable (503)         the registry database cannot be reached right now
├── BlobCorrupt (500)                stored content failed its integrity check
└── ProviderError (502/503/504, or the status a provider fault maps to)
    ├── ProviderAuthFailed (502)     our key was refused by the provider
    ├── ProviderRateLimited (429)    provider throttled us; carries retry_after
    ├── ProviderNotFound (404)       provider lost the file
    ├── ProviderFileTooLarge (413)
    ├── ProviderQuotaExceeded (507)  provider account full (file count, bytes, balance)
    │   └── ProviderAccountFull      its file count or bytes cap: eviction can make room
    ├── ProviderRejected (400)       provider refused the request's content
    └── ProviderUnavailable (503)    provider down, 5xx, timeout, connection error
        ├── CircuitOpen (503)        calls are paused while the provider keeps failing
        └── DeadlineExceeded (503)   the call's overall deadline ran out
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error the gateway renders; never carries secrets."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code_override = code

    @property
    def error_code(self) -> str:
        return getattr(self, "code_override", None) or self.code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.error_code,
                "param": self.param,
            }
        }


class InvalidRequest(GatewayError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class UnsupportedPurpose(InvalidRequest):
    code = "unsupported_purpose"


class AuthenticationFailed(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str = "Invalid or missing API key.", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="filegate"'})
        super().__init__(message, **kw)


class PermissionDenied(GatewayError):
    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class CsrfRefused(PermissionDenied):
    """A console session's state-changing request without its CSRF token."""

    code = "csrf_failed"


class QuotaExceeded(PermissionDenied):
    """The tenant's quota on stored bytes or file count would be exceeded."""

    type = "insufficient_quota"
    code = "quota_exceeded"


class NotFound(GatewayError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class RequestTimeout(GatewayError):
    """The client stalled sending its request; the connection is closed after this answer."""

    status_code = 408
    type = "invalid_request_error"
    code = "request_timeout"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("headers", {"Connection": "close"})
        super().__init__(message, **kw)


class PayloadTooLarge(GatewayError):
    status_code = 413
    type = "invalid_request_error"
    code = "file_too_large"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RangeNotSatisfiable(GatewayError):
    status_code = 416
    type = "invalid_request_error"
    code = "range_not_satisfiable"


class Unprocessable(GatewayError):
    status_code = 422
    type = "invalid_request_error"
    code = "unprocessable"


class RateLimited(GatewayError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limited"


class ServiceUnavailable(GatewayError):
    """A dependency the request needs (the registry database) is unreachable; retry later."""

    status_code = 503
    type = "server_error"
    code = "database_unavailable"


class HeaderFieldsTooLarge(GatewayError):
    """The request line and headers exceed the server's size or count cap."""

    status_code = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("headers", {"Connection": "close"})
        super().__init__(message, **kw)


class TooManyConnections(GatewayError):
    """The server holds as many connections as it is allowed; retry shortly."""

    status_code = 503
    type = "server_error"
    code = "too_many_connections"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("headers", {"Connection": "close", "Retry-After": "1"})
        super().__init__(message, **kw)


class InsufficientStorage(GatewayError):
    """The gateway's blob store has no room; nothing half-written is kept."""

    status_code = 507
    type = "server_error"
    code = "insufficient_storage"


class StorageUnavailable(GatewayError):
    """The object store holding the blobs cannot be reached or refused; retry later."""

    status_code = 503
    type = "server_error"
    code = "storage_unavailable"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kw)


class BlobCorrupt(GatewayError):
    """The canonical copy failed its integrity check; it is withheld until repaired."""

    status_code = 500
    type = "server_error"
    code = "blob_corrupt"


class IllegalTransition(GatewayError):
    """A status change the lifecycle tables do not allow: a bug in the gateway, never input."""

    status_code = 500
    type = "server_error"
    code = "internal_error"


class UploadConflict(GatewayError):
    """The upload raced concurrent uploads and deletes of the same bytes too often; retry it."""

    status_code = 503
    type = "server_error"
    code = "upload_conflict"


class ProviderError(GatewayError):
    """A provider call failed; `provider` names which one, `retryable` says if a retry may help."""

    status_code = 502
    type = "provider_error"
    code = "provider_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retry_after: float | None = None,
        **kw: Any,
    ) -> None:
        self.provider = provider
        self.retry_after = retry_after
        headers = dict(kw.pop("headers", None) or {})
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
        super().__init__(message, headers=headers, **kw)


class ProviderAuthFailed(ProviderError):
    status_code = 502
    code = "provider_auth_failed"


class ProviderRateLimited(ProviderError):
    status_code = 429
    type = "rate_limit_error"
    code = "provider_rate_limited"
    retryable = True


class ProviderNotFound(ProviderError):
    status_code = 404
    code = "provider_file_not_found"


class ProviderFileTooLarge(ProviderError):
    status_code = 413
    type = "invalid_request_error"
    code = "provider_file_too_large"


class ProviderQuotaExceeded(ProviderError):
    status_code = 507
    code = "provider_quota_exceeded"


class ProviderAccountFull(ProviderQuotaExceeded):
    """The account holds as many files (or bytes) as the provider allows: room can be made."""


class ProviderRejected(ProviderError):
    status_code = 400
    type = "invalid_request_error"
    code = "provider_rejected"


class ProviderUnavailable(ProviderError):
    status_code = 503
    code = "provider_unavailable"
    retryable = True


class CircuitOpen(ProviderUnavailable):
    """The provider's circuit is open: calls fail fast until a probe is due."""

    code = "provider_circuit_open"


class ProviderBusy(ProviderUnavailable):
    """The gateway already has as many calls of this kind in flight to the provider as allowed."""

    code = "provider_busy"


class DeadlineExceeded(ProviderUnavailable):
    """The logical call (all its tries) ran out of its overall deadline."""

    code = "provider_deadline"

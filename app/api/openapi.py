"""The published API description, adjusted to what the gateway really answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.errors import responses
from app.core.errors import Conflict, InvalidRequest, Unprocessable

IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Repeat a request safely: the same key and request replay the first "
    "answer (with `Idempotent-Replayed: true`) for 24 hours; per tenant.",
}

# Both ways of presenting a credential, so the docs' Authorize button can send either.
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`fg_<id>_<secret>`) or, when configured, a JWT.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key (`fg_<id>_<secret>`).",
    },
}
SECURED_PREFIXES = ("/v1", "/admin")
DOWNLOAD_PARAMETERS = [
    {
        "name": "Range",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "example": "bytes=0-1023"},
        "description": "One or more byte ranges (RFC 9110): 206 with the parts, or 416 when "
        "none can be satisfied.",
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "ETags (the quoted sha256) or `*`: 304 when one matches the content.",
    },
    {
        "name": "If-Range",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Honour Range only while the ETag is still this one.",
    },
]
PENDING_FILE_EXAMPLE = {
    "id": "file-3Zk9qLmN2xYb7cVd1eFg4hJp",
    "object": "file",
    "bytes": 505444,
    "created_at": 1764075600,
    "filename": "report.pdf",
    "purpose": "file-extract",
    "status": "pending",
    "status_details": "Waiting for a provider: moonshot is unavailable (HTTP 503).",
    "expires_at": None,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "providers": [],
}


def install(app: FastAPI) -> None:
    """Serve an OpenAPI document whose error responses all use the one error shape."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _adjust(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def _adjust(schema: dict[str, Any]) -> None:
    error_entries = {
        str(status): entry
        for status, entry in responses(InvalidRequest, Conflict, Unprocessable).items()
    }
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            answers = operation.setdefault("responses", {})
            if path.startswith(SECURED_PREFIXES):
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            if method == "get" and path == "/v1/files/{file_id}/content":
                operation.setdefault("parameters", []).extend(DOWNLOAD_PARAMETERS)
            if method == "post" and path == "/v1/files" and "202" in answers:
                answers["202"]["content"]["application/json"]["example"] = PENDING_FILE_EXAMPLE
            # Validation errors are rendered as 400 in the error shape, never FastAPI's 422.
            if _is_default_validation(answers.get("422")):
                del answers["422"]
            if method == "post" and path.startswith(("/v1", "/admin")):
                operation.setdefault("parameters", []).append(IDEMPOTENCY_PARAMETER)
                for status in ("409", "422"):
                    answers.setdefault(status, _as_schema_ref(error_entries[status]))
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _is_default_validation(entry: dict[str, Any] | None) -> bool:
    if entry is None:
        return False
    ref = entry.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    return bool(ref.endswith("/HTTPValidationError"))


def _as_schema_ref(entry: dict[str, Any]) -> dict[str, Any]:
    content = dict(entry["content"]["application/json"])
    content["schema"] = {"$ref": "#/components/schemas/ErrorBody"}
    return {"description": entry["description"], "content": {"application/json": content}}

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
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            answers = operation.setdefault("responses", {})
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

"""Z.ai / Zhipu `/api/paas/v4/files` emulation (international, English messages)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from app.sandbox.core import (
    Operation,
    ProviderSandbox,
    StoredFile,
    dumps,
    extension,
    extract_text,
    guess_mime,
    read_upload,
    size_label,
)

JSON_TYPE = "application/json; charset=UTF-8"
_IMAGES = frozenset({"png", "jpg", "jpeg"})
_FAULTS: dict[int, tuple[str, str]] = {
    400: ("1210", "Invalid API parameter, please check the documentation."),
    401: ("1002", "Authorization Token is invalid, please check it was passed correctly."),
    403: ("1220", "You do not have permission to access this API."),
    404: ("1222", "The API does not exist."),
    429: (
        "1302",
        "High concurrency usage of this API, please reduce concurrency or contact customer "
        "service to increase limits",
    ),
    434: ("1220", "You do not have permission to access the file API."),
    435: ("1210", "File size exceeds 100MB"),
    500: ("500", "Internal Error"),
    503: ("1305", "The service may be temporarily overloaded, please try again later"),
}


class ZaiSandbox(ProviderSandbox):
    """In-memory Z.ai files API."""

    name = "zai"
    prefix = "/zai/api/paas/v4/files"

    def respond(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        """JSON with Z.ai's content type."""
        return Response(dumps(payload), status, headers, JSON_TYPE)

    def error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        """Z.ai's envelope: string business code, message, and a top-level request_id."""
        request_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(9)
        body = {"error": {"code": code, "message": message}, "request_id": request_id}
        return self.respond(body, status, headers)

    def not_found(self, file_id: str) -> Response:
        """Unknown file id; status is configurable since the real one is undocumented."""
        message = f"The file does not exist or has been deleted: {file_id}"
        return self.error(self.options.zai_not_found_status, "1214", message)

    def check_auth(self, request: Request) -> Response | None:
        """Any non-empty bearer (raw `id.secret` key or JWT) passes."""
        header = request.headers.get("authorization", "").strip()
        scheme, _, token = header.partition(" ")
        if not header or (scheme.lower() == "bearer" and not token.strip()):
            message = "Authentication parameter not received in Header, unable to authenticate"
            return self.error(401, "1001", message)
        if scheme.lower() != "bearer":
            return self.error(401, "1002", _FAULTS[401][1])
        return None

    def bad_request(self, detail: str) -> Response:
        """Malformed request body."""
        return self.error(400, "1210", f"Invalid API parameter: {detail}")

    def fault_response(self, status: int, retry_after: int | None) -> Response:
        """Injected error in Z.ai's envelope."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if status == 429:
            headers["x-should-retry"] = "false"
        default = ("1210" if status < 500 else "500", f"Injected fault: HTTP {status}")
        code, message = _FAULTS.get(status, default)
        return self.error(status, code, message, headers)

    def quota_response(self, op: Operation) -> Response:
        """Arrears: HTTP 429 with business code 1113, for every operation."""
        message = "Insufficient balance or no resource package. Please recharge."
        return self.error(429, "1113", message, {"x-should-retry": "false"})

    def route_not_found(self, status: int) -> Response:
        """Unknown path or method: 'API does not exist'."""
        return self.error(status, "1222", "The API does not exist.")

    def file_object(self, f: StoredFile) -> dict[str, Any]:
        """Exactly the six documented fields."""
        return {
            "id": f.id,
            "object": "file",
            "bytes": len(f.data),
            "created_at": f.created_at,
            "filename": f.filename,
            "purpose": f.purpose,
        }

    async def upload(self, request: Request, form: FormData) -> Response:
        """POST /files with per-purpose format, size and count rules."""
        opts = self.options
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return self.error(400, "1213", "Missing required parameter: file")
        data, too_large = await read_upload(upload, opts.zai_max_file_bytes)
        if too_large:
            # Blanket limit enforced before purpose rules; body code is undocumented.
            return self.error(
                435, "1210", f"File size exceeds {size_label(opts.zai_max_file_bytes)}"
            )
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            return self.error(400, "1213", "Missing required parameter: purpose")
        rule = opts.zai_rule(purpose)
        if rule is None:
            supported = ", ".join(opts.zai_purpose_rules)
            return self.error(400, "1214", f"Invalid purpose: {purpose}. Supported: {supported}")
        if not data:
            return self.error(400, "1214", "File cannot be empty")
        filename = upload.filename or ""
        ext = extension(filename)
        if rule.extensions is not None and ext not in rule.extensions:
            supported = ", ".join(sorted(rule.extensions))
            message = f"Unsupported file format for purpose {purpose}: {filename!r}"
            message += f". Supported: {supported}"
            return self.error(400, "1214", message)
        limit = rule.max_bytes
        if ext in _IMAGES and rule.image_max_bytes is not None:
            limit = rule.image_max_bytes
        if len(data) > limit:
            message = f"File size exceeds the {size_label(limit)} limit for purpose {purpose}"
            return self.error(400, "1210", message)
        if rule.needs_knowledge_id and not form.get("knowledge_id"):
            return self.error(400, "1213", "Missing required parameter: knowledge_id")
        if rule.max_files is not None:
            used = sum(1 for f in self.files.values() if f.purpose == purpose)
            if used >= rule.max_files:
                message = (
                    f"The number of files for purpose {purpose} has reached the limit of "
                    f"{rule.max_files}; please delete unused files and try again"
                )
                return self.error(400, "1210", message)
        created_at = int(time.time())
        file_id = f"{created_at}_{secrets.token_hex(16)}"
        stored = StoredFile(file_id, created_at, filename, purpose, data)
        self.store(stored)
        return self.respond(self.file_object(stored))

    async def list_files(self, request: Request, form: FormData) -> Response:
        """GET /files?purpose&limit&after&order, newest first, with has_more."""
        query = request.query_params
        raw_limit = query.get("limit", "20")
        limit = int(raw_limit) if raw_limit.strip().isdigit() else 0
        if not 1 <= limit <= 100:
            return self.error(400, "1214", f"Invalid limit: {raw_limit}. Must be between 1 and 100")
        order = query.get("order")
        if order is not None and order != "created_at":
            return self.error(400, "1214", f"Invalid order: {order}. Only created_at is supported")
        files = self.newest_first()
        if purpose := query.get("purpose"):
            files = [f for f in files if f.purpose == purpose]
        if after := query.get("after"):
            ids = [f.id for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        page = files[:limit]
        return self.respond(
            {
                "object": "list",
                "data": [self.file_object(f) for f in page],
                "has_more": len(files) > limit,
            }
        )

    async def content(self, request: Request, form: FormData) -> Response:
        """GET /files/{id}/content: raw bytes for batch, extracted-text JSON for file-extract."""
        file_id = request.path_params["file_id"]
        f = self.lookup(file_id)
        if f is None:
            return self.not_found(file_id)
        if f.purpose == "batch":
            return Response(f.data, 200, None, "application/octet-stream")
        if f.purpose == "file-extract":
            text = extract_text(f.data)
            if text is None:
                return self.error(400, "1214", "Failed to extract text from the file")
            body = {
                "content": text,
                "file_type": guess_mime(f.filename),
                "filename": f.filename,
                "title": "",
                "type": "file",
            }
            return self.respond(body)
        # Undocumented for other purposes: treat as an invalid-field parameter error.
        message = f"File content is not available for purpose {f.purpose}"
        return self.error(400, "1214", message)

    async def delete(self, request: Request, form: FormData) -> Response:
        """DELETE /files/{id}."""
        file_id = request.path_params["file_id"]
        if self.files.pop(file_id, None) is None:
            return self.not_found(file_id)
        return self.respond({"id": file_id, "object": "file", "deleted": True})

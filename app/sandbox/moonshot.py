"""Moonshot (Kimi) `/v1/files` emulation, quirks included."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from app.sandbox.core import (
    Operation,
    ProviderSandbox,
    StoredFile,
    bearer_token,
    dumps,
    extract_text,
    guess_mime,
    read_upload,
    size_label,
)

JSON_TYPE = "application/json; charset=utf-8"
_IRE = "invalid_request_error"
_XID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
_FAULTS: dict[int, tuple[str, str]] = {
    400: (_IRE, "Invalid request: the request could not be processed"),
    401: ("invalid_authentication_error", "Invalid Authentication"),
    403: ("permission_denied_error", "The API you are accessing is not open"),
    404: ("resource_not_found_error", "Not found the model or Permission denied"),
    500: ("server_error", "Internal server error, please try again later"),
    503: ("engine_overloaded_error", "The engine is currently overloaded, please try again later"),
}


def _oxford(items: list[str]) -> str:
    """'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


class MoonshotSandbox(ProviderSandbox):
    """In-memory Moonshot files API."""

    name = "moonshot"
    prefix = "/moonshot/v1/files"

    def reset(self) -> None:
        """Forget everything, including the xid counter."""
        super().reset()
        self._xid_counter = secrets.randbelow(1 << 24)

    def new_id(self, created_at: int) -> str:
        """An xid: 4-byte time, 5 random bytes, 3-byte counter, base32hex, 20 chars."""
        self._xid_counter = (self._xid_counter + 1) % (1 << 24)
        raw = (
            created_at.to_bytes(4, "big")
            + secrets.token_bytes(5)
            + self._xid_counter.to_bytes(3, "big")
        )
        n = int.from_bytes(raw, "big") << 4
        chars = [_XID_ALPHABET[(n >> (5 * i)) & 31] for i in range(19, -1, -1)]
        return self.options.moonshot_id_prefix + "".join(chars)

    def respond(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        """JSON with Moonshot's content type and request-id headers."""
        return Response(dumps(payload), status, self._headers(headers), JSON_TYPE)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The per-response headers Moonshot sends."""
        return {
            "msh-request-id": uuid.uuid4().hex,
            "x-msh-trace-id": uuid.uuid4().hex,
            **(extra or {}),
        }

    def error(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        """Moonshot's envelope: message and type only, no code."""
        return self.respond({"error": {"message": message, "type": type_}}, status, headers)

    def not_found(self, file_id: str) -> Response:
        """Unknown file id (the real message is undocumented)."""
        return self.error(404, "resource_not_found_error", f"file not found: {file_id}")

    def check_auth(self, request: Request) -> Response | None:
        """Any non-empty bearer key passes."""
        if bearer_token(request) is None:
            return self.error(401, "invalid_authentication_error", "Invalid Authentication")
        return None

    def bad_request(self, detail: str) -> Response:
        """Malformed request body."""
        return self.error(400, _IRE, f"Invalid request: {detail}")

    def fault_response(self, status: int, retry_after: int | None) -> Response:
        """Injected error in Moonshot's envelope."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if status == 429:
            wait = retry_after if retry_after is not None else 1
            headers["x-should-retry"] = "false"
            message = (
                "Your account org-sandbox<ak-sandbox> request reached max request: 3, "
                f"please try again after {wait} seconds"
            )
            return self.error(429, "rate_limit_reached_error", message, headers)
        default = (_IRE if status < 500 else "server_error", f"Injected fault: HTTP {status}")
        type_, message = _FAULTS.get(status, default)
        return self.error(status, type_, message, headers)

    def quota_response(self, op: Operation) -> Response:
        """Uploads hit the file-count cap; everything else sees the billing 429."""
        if op == "upload":
            return self._count_exceeded()
        message = (
            "Your account is suspended due to insufficient balance, please recharge your "
            "account or check your plan and billing details"
        )
        return self.error(429, "exceeded_current_quota_error", message, {"x-should-retry": "false"})

    def route_not_found(self, status: int) -> Response:
        """Unknown path or method."""
        return self.error(status, "resource_not_found_error", "Not found")

    def _count_exceeded(self) -> Response:
        """The documented max-file-count 400."""
        message = (
            "The number of files you have uploaded exceeded the max file count "
            f"{self.options.moonshot_max_files}, please delete previous uploaded files"
        )
        return self.error(400, _IRE, message)

    def file_object(self, f: StoredFile) -> dict[str, Any]:
        """Exactly the 8 documented fields."""
        return {
            "id": f.id,
            "object": "file",
            "bytes": len(f.data),
            "created_at": f.created_at,
            "filename": f.filename,
            "purpose": f.purpose,
            "status": "ok",
            "status_details": "",
        }

    async def upload(self, request: Request, form: FormData) -> Response:
        """POST /v1/files."""
        opts = self.options
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return self.bad_request("file is required")
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            if opts.moonshot_default_purpose is None:
                return self.bad_request("purpose is required")
            purpose = opts.moonshot_default_purpose
        if purpose not in opts.moonshot_purposes:
            accepted = _oxford(list(opts.moonshot_purposes))
            return self.error(400, _IRE, f"Invalid purpose: {purpose}, only {accepted} accepted")
        data, too_large = await read_upload(upload, opts.moonshot_max_file_bytes)
        if too_large:
            limit = size_label(opts.moonshot_max_file_bytes)
            message = (
                f"File size is too large, max file size is {limit}, "
                "please confirm and re-upload the file"
            )
            return self.error(400, _IRE, message)
        if not data:
            return self.error(400, _IRE, "File size is zero, please confirm and re-upload the file")
        filename = upload.filename or ""
        if purpose == "batch" and not filename.lower().endswith(".jsonl"):
            return self.bad_request("batch files must be .jsonl files")
        if len(self.files) >= opts.moonshot_max_files:
            return self._count_exceeded()
        if self.stored_bytes + len(data) > opts.moonshot_max_total_bytes:
            # The total-size message is undocumented; this follows the file-count pattern.
            message = (
                "The total size of files you have uploaded exceeded the max total size "
                f"{size_label(opts.moonshot_max_total_bytes)}, "
                "please delete previous uploaded files"
            )
            return self.error(400, _IRE, message)
        created_at = int(time.time())
        stored = StoredFile(self.new_id(created_at), created_at, filename, purpose, data)
        self.store(stored)
        return self.respond(self.file_object(stored))

    async def list_files(self, request: Request, form: FormData) -> Response:
        """GET /v1/files: no pagination fields, but `after` is honoured."""
        files = self.newest_first()
        after = request.query_params.get("after")
        if after:
            ids = [f.id for f in files]
            # An unknown cursor yields an empty page so SDK auto-pagination stops.
            files = files[ids.index(after) + 1 :] if after in ids else []
        return self.respond({"object": "list", "data": [self.file_object(f) for f in files]})

    async def content(self, request: Request, form: FormData) -> Response:
        """GET /v1/files/{id}/content: extracted-text JSON for file-extract, raw bytes otherwise."""
        file_id = request.path_params["file_id"]
        f = self.lookup(file_id)
        if f is None:
            return self.not_found(file_id)
        if f.purpose == "file-extract":
            text = extract_text(f.data)
            if text is None:
                return self.error(400, _IRE, "text extract error: 没有解析出内容")
            body = {
                "content": text,
                "file_type": guess_mime(f.filename),
                "filename": f.filename,
                "title": "",
                "type": "file",
            }
            return self.respond(body)
        if f.purpose in ("image", "video"):
            # Content of vision files is reportedly unavailable; answer a plain 400.
            return self.bad_request(f"content is not available for files with purpose {f.purpose}")
        return Response(f.data, 200, self._headers(), "application/octet-stream")

    async def delete(self, request: Request, form: FormData) -> Response:
        """DELETE /v1/files/{id}."""
        file_id = request.path_params["file_id"]
        if self.files.pop(file_id, None) is None:
            return self.not_found(file_id)
        return self.respond({"id": file_id, "object": "file", "deleted": True})

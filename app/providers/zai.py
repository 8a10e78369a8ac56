"""Z.ai / Zhipu BigModel (GLM) file API adapter (`/api/paas/v4/files`)."""

from __future__ import annotations

import builtins
import logging
import re
from typing import Any

import httpx

from app.core.errors import (
    ProviderAccountFull,
    ProviderAuthFailed,
    ProviderError,
    ProviderFileTooLarge,
    ProviderNotFound,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from app.core.provider_names import Provider
from app.providers.base import (
    MiB,
    ProviderAdapter,
    ProviderFile,
    PurposeRule,
    error_envelope,
    retry_after_header,
)

logger = logging.getLogger("filegate.providers")

PAGE_LIMIT = 100
MAX_PAGES = 100

_EXTRACT_TYPES = frozenset(
    {"pdf", "docx", "doc", "xls", "xlsx", "ppt", "pptx", "png", "jpg", "jpeg", "csv"}
)
_FILE_EXTRACT = PurposeRule(
    native="file-extract",
    max_bytes=50 * MiB,
    extensions=_EXTRACT_TYPES,
    image_max_bytes=5 * MiB,
    max_files=100,
    notes="Content is the extracted text as JSON, not the original bytes.",
)
_JSONL = frozenset({"jsonl"})

# Business codes (doc 2.8) that decide the error class whatever the HTTP status.
_AUTH_CODES = range(1000, 1005)
_ACCOUNT_CODES = range(1110, 1122)
_PARAM_CODES = range(1210, 1216)
_NO_ACCESS_CODE = 1220
_NETWORK_CODE = 1234
_CONTENT_POLICY_CODE = 1301
_EXTRACT_FAILED = re.compile(r"failed to extract|extract(?:ion)? (?:error|failed)")


class ZaiAdapter(ProviderAdapter):
    """Z.ai `/files`: multipart upload, `after`-paginated list, raw-bytes content."""

    name = Provider.ZAI
    purposes = {
        "file-extract": _FILE_EXTRACT,
        "assistants": _FILE_EXTRACT,
        "user_data": _FILE_EXTRACT,
        "batch": PurposeRule(
            native="batch",
            max_bytes=100 * MiB,
            extensions=_JSONL,
            max_files=1000,
            notes="JSONL input for /batches (at most 50,000 requests); deleted after the run.",
        ),
        "code-interpreter": PurposeRule(
            native="code-interpreter",
            max_bytes=20 * MiB,
            extensions=frozenset(
                {"pdf", "docx", "doc", "xls", "xlsx", "txt", "png", "jpg", "jpeg", "csv"}
            ),
            image_max_bytes=5 * MiB,
            max_files=100,
        ),
        "agent": PurposeRule(
            native="agent",
            max_bytes=100 * MiB,
            extensions=frozenset({"pdf", "doc", "xlsx", "ppt", "txt", "jpg", "png"}),
            max_files=100,
            notes="Z.ai international agent files; kept for 180 days.",
        ),
        "fine-tune": PurposeRule(
            native="fine-tune", max_bytes=100 * MiB, extensions=_JSONL, notes="JSONL training data."
        ),
    }

    async def retrieve(self, file_id: str) -> ProviderFile:
        """`GET files/{id}`, falling back to a list scan where that route is missing (doc 2.2)."""
        try:
            return await self.request_file("retrieve", "GET", self.file_path(file_id))
        except (ProviderNotFound, ProviderRejected):
            # Only the Java SDK knows this route, so a 404/405 may mean "no route", not "no file".
            for item in await self.list():
                if item.id == file_id:
                    return item
            raise ProviderNotFound(
                f"{self.name} has no such file; it may have been deleted.", provider=self.name
            ) from None

    async def list(self, *, purpose: str | None = None) -> builtins.list[ProviderFile]:
        """Every page of `GET files` (`limit`=100, `after`=last id) while `has_more`, capped."""
        native = self.native_purpose(purpose) if purpose is not None else None
        files: builtins.list[ProviderFile] = []
        seen: set[str] = set()
        after: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {"limit": PAGE_LIMIT}
            if native is not None:
                params["purpose"] = native
            if after is not None:
                params["after"] = after
            with self.observe("list"):
                payload = self.json_object(await self._send("list", "GET", "files", params=params))
                data = payload.get("data")
                if not isinstance(data, builtins.list):
                    raise self.unexpected_response()
                page = [self.file_object(item) for item in data]
            fresh = [f for f in page if f.id not in seen]
            seen.update(f.id for f in fresh)
            files.extend(fresh)
            # A server that ignores `after` would repeat a page forever; stop on no progress.
            if payload.get("has_more") is not True or not fresh:
                break
            after = page[-1].id
        else:
            logger.warning("%s list stopped after %d pages", self.name, MAX_PAGES)
        if native is None:
            return files
        return [f for f in files if f.purpose == native]

    def raise_for_error(self, response: httpx.Response) -> None:
        """Map a Z.ai HTTP status and business code onto the gateway's provider errors."""
        status = response.status_code
        if status < 400:
            return
        envelope = error_envelope(response)
        message = envelope.get("message")
        lowered = message.lower() if isinstance(message, str) else ""
        raise self._error_for(status, _business_code(envelope), lowered, response)

    def _error_for(
        self, status: int, code: int | None, message: str, response: httpx.Response
    ) -> ProviderError:
        name = self.name
        detail = f", provider code {code}" if code is not None else ""
        if status == 401 or code in _AUTH_CODES:
            return ProviderAuthFailed(
                f"{name} refused the gateway's API key (authentication failed{detail}); "
                "check the configured zai key and site (z.ai vs bigmodel.cn).",
                provider=name,
            )
        if status in (403, 434) or code == _NO_ACCESS_CODE:
            return ProviderAuthFailed(
                f"{name} has not enabled the files API for the gateway's account "
                f"(permission denied{detail}); enable file management for the account.",
                provider=name,
                code="provider_permission_denied",
            )
        if status in (413, 435):
            return ProviderFileTooLarge(
                f"{name} refused the file as too large (its limit is 100 MiB per file).",
                provider=name,
                param="file",
            )
        if code in _ACCOUNT_CODES:
            return ProviderQuotaExceeded(
                f"{name} account has no remaining balance or is restricted "
                f"(account problem{detail}); recharge or check the zai account.",
                provider=name,
            )
        if status == 429:
            return ProviderRateLimited(
                f"{name} is throttling the gateway (rate limit{detail}); retry later.",
                provider=name,
                retry_after=retry_after_header(response),
            )
        if status == 404:
            return ProviderNotFound(
                f"{name} has no such file; it may have been deleted.", provider=name
            )
        if status >= 500 or status == 408 or code == _NETWORK_CODE:
            return ProviderUnavailable(
                f"{name} is unavailable (HTTP {status}{detail}); try again later.",
                provider=name,
                retry_after=retry_after_header(response),
            )
        # Messages are undocumented (and Chinese on bigmodel.cn); these are best-effort hints.
        if "number of files" in message:
            return ProviderAccountFull(
                f"{name} file storage is full (file count limit{detail}); "
                "delete old zai files and retry.",
                provider=name,
            )
        if _EXTRACT_FAILED.search(message):
            return ProviderRejected(
                f"{name} could not extract text from the file{detail}; "
                "check that it is a readable document.",
                provider=name,
                code="extraction_failed",
                param="file",
            )
        if code == _CONTENT_POLICY_CODE:
            reason = "content policy"
        elif code in _PARAM_CODES:
            reason = "invalid parameters"
        else:
            reason = "invalid request"
        return ProviderRejected(f"{name} rejected the request ({reason}{detail}).", provider=name)


def _business_code(envelope: dict[str, Any]) -> int | None:
    value = envelope.get("code")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None

"""Moonshot AI (Kimi) file API adapter (OpenAI-compatible `/v1/files`)."""

from __future__ import annotations

import builtins
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
    IMAGE_EXTENSIONS,
    MiB,
    ProviderAdapter,
    ProviderFile,
    PurposeRule,
    error_envelope,
    retry_after_header,
)

# The Kimi app's list (provider doc 1.3) plus common source/text types it reads as plain text.
_DOCUMENTS = frozenset(
    {
        "pdf", "txt", "csv", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "md", "markdown",
        "epub", "mobi", "html", "htm", "json", "log", "yaml", "yml", "ini", "conf", "dot",
        "xml", "toml", "tsv", "rtf",
    }
)  # fmt: skip
_IMAGES = IMAGE_EXTENSIONS | frozenset({"svgz", "xbm", "dib", "pjp", "pjpeg", "jfif", "apng"})
_CODE = frozenset(
    {
        "go", "h", "hpp", "hh", "c", "cc", "cpp", "cxx", "cs", "java", "js", "mjs", "cjs",
        "jsx", "ts", "tsx", "css", "scss", "less", "php", "py", "py3", "pyi", "asp", "aspx",
        "jsp", "rb", "rs", "swift", "kt", "kts", "scala", "sh", "bash", "zsh", "ps1", "bat",
        "sql", "lua", "pl", "r", "m", "mm", "dart", "vue", "svelte", "groovy", "gradle",
        "ipynb", "proto", "graphql", "tex", "properties", "cfg",
    }
)  # fmt: skip

_FILE_EXTRACT = PurposeRule(
    native="file-extract",
    max_bytes=100 * MiB,
    extensions=_DOCUMENTS | _IMAGES | _CODE,
    max_files=1000,
    notes="Content is the extracted text as JSON, not the original bytes.",
)

_TRY_AGAIN_AFTER = re.compile(r"try again after\s+(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


class MoonshotAdapter(ProviderAdapter):
    """Moonshot `/v1/files`: multipart upload, single-page list, extracted-text content."""

    name = Provider.MOONSHOT
    purposes = {
        "file-extract": _FILE_EXTRACT,
        "assistants": _FILE_EXTRACT,
        "user_data": _FILE_EXTRACT,
        "batch": PurposeRule(
            native="batch",
            max_bytes=100 * MiB,
            extensions=frozenset({"jsonl"}),
            max_files=1000,
            notes="JSONL input for the Batch API.",
        ),
        "vision": PurposeRule(
            native="image",
            max_bytes=100 * MiB,
            extensions=_IMAGES,
            max_files=1000,
            notes="Image input for vision models; content may be unavailable.",
        ),
    }

    async def retrieve(self, file_id: str) -> ProviderFile:
        """`GET files/{id}`."""
        return await self.request_file("retrieve", "GET", self.file_path(file_id))

    async def list(self, *, purpose: str | None = None) -> builtins.list[ProviderFile]:
        """The first page of `GET files` only: Moonshot documents no pagination (doc 1.5)."""
        with self.observe("list"):
            data = self.json_object(await self._send("list", "GET", "files")).get("data")
            if not isinstance(data, builtins.list):
                raise self.unexpected_response()
            files = [self.file_object(item) for item in data]
        if purpose is None:
            return files
        native = self.native_purpose(purpose)
        return [f for f in files if f.purpose == native]

    def raise_for_error(self, response: httpx.Response) -> None:
        """Map a Moonshot error status/type/message onto the gateway's provider errors."""
        status = response.status_code
        if status < 400:
            return
        envelope = error_envelope(response)
        message = _text(envelope.get("message")).lower()
        kind = _text(envelope.get("type")).lower()
        raise self._error_for(status, kind, message, response)

    def _error_for(
        self, status: int, kind: str, message: str, response: httpx.Response
    ) -> ProviderError:
        name = self.name
        if status == 400:
            return self._bad_request(message)
        if status == 401:
            return ProviderAuthFailed(
                f"{name} refused the gateway's API key (authentication failed); "
                "check the configured moonshot key and platform (.cn vs .ai).",
                provider=name,
            )
        if status == 403:
            return ProviderAuthFailed(
                f"{name} denied the gateway's API key access to the files API "
                "(permission denied); check the account's permissions and balance.",
                provider=name,
                code="provider_permission_denied",
            )
        if status == 404:
            return ProviderNotFound(
                f"{name} has no such file; it may have been deleted.", provider=name
            )
        if status == 413:
            return _too_large(name)
        if status == 429:
            if kind == "exceeded_current_quota_error" or _is_billing(message):
                return ProviderQuotaExceeded(
                    f"{name} account has no remaining balance or quota; "
                    "recharge the moonshot account.",
                    provider=name,
                )
            retry_after = retry_after_header(response)
            if retry_after is None:
                match = _TRY_AGAIN_AFTER.search(message)
                retry_after = float(match.group(1)) if match else None
            reason = "engine overloaded" if kind == "engine_overloaded_error" else "rate limit"
            return ProviderRateLimited(
                f"{name} is throttling the gateway ({reason}); retry later.",
                provider=name,
                retry_after=retry_after,
            )
        if status >= 500 and _is_extraction_failure(message):
            return ProviderRejected(
                f"{name} could not extract text from the file; "
                "check that it is a readable document.",
                provider=name,
                code="extraction_failed",
                param="file",
            )
        if status >= 500 or status == 408:
            return ProviderUnavailable(
                f"{name} is unavailable (HTTP {status}); try again later.",
                provider=name,
                retry_after=retry_after_header(response),
            )
        return ProviderRejected(f"{name} rejected the request (HTTP {status}).", provider=name)

    def _bad_request(self, message: str) -> ProviderError:
        name = self.name
        if "text extract error" in message:
            return ProviderRejected(
                f"{name} could not extract any text from the file; "
                "check that it is a readable document.",
                provider=name,
                code="extraction_failed",
                param="file",
            )
        if "max file count" in message or "number of files" in message:
            return ProviderAccountFull(
                f"{name} file storage is full (file count limit); "
                "delete old moonshot files and retry.",
                provider=name,
            )
        if "total" in message and ("size" in message or "storage" in message):
            return ProviderAccountFull(
                f"{name} file storage is full (total size limit); "
                "delete old moonshot files and retry.",
                provider=name,
            )
        if "too large" in message or "max file size" in message:
            return _too_large(name)
        if "size is zero" in message or "empty" in message:
            return ProviderRejected(
                f"{name} rejected the file: empty file.", provider=name, param="file"
            )
        if "purpose" in message:
            return ProviderRejected(
                f"{name} rejected the file: unsupported purpose.",
                provider=name,
                param="purpose",
            )
        return ProviderRejected(f"{name} rejected the file: invalid request.", provider=name)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _is_billing(message: str) -> bool:
    return "quota" in message or "balance" in message or "suspended" in message


def _is_extraction_failure(message: str) -> bool:
    return "failed to extract" in message or "extract task failed" in message


def _too_large(name: str) -> ProviderFileTooLarge:
    return ProviderFileTooLarge(
        f"{name} refused the file as too large (its limit is 100 MiB per file).",
        provider=name,
        param="file",
    )

"""The interface every provider adapter implements, and the wire mapping the adapters share."""

from __future__ import annotations

import re
from abc import abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from app.core.errors import ProviderNotFound, ProviderUnavailable
from app.providers.form import UploadBody, UploadForm
from app.providers.pipeline import CallPipeline


@dataclass(frozen=True)
class ProviderFile:
    """A file object as a provider reports it, normalised."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str | None = None
    status_details: str | None = None


@dataclass(frozen=True)
class PurposeRule:
    """How a gateway purpose maps onto one provider, and that provider's limits for it."""

    native: str
    max_bytes: int
    extensions: frozenset[str] | None = None  # None: any extension
    image_max_bytes: int | None = None
    max_files: int | None = None
    notes: str = ""


IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "bmp", "gif", "svg", "webp", "tif", "tiff", "avif", "ico"}
)
MiB = 1024 * 1024

_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait per a Retry-After value (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after_header(response: httpx.Response) -> float | None:
    """Seconds to wait per `retry-after-ms` (as the OpenAI SDK honours) or `Retry-After`."""
    millis = response.headers.get("retry-after-ms")
    if millis is not None and _SECONDS.fullmatch(millis.strip()):
        return float(millis) / 1000
    return parse_retry_after(response.headers.get("retry-after"))


def error_envelope(response: httpx.Response) -> dict[str, Any]:
    """The provider's `error` object (or the top-level object), or {} if the body is not JSON."""
    try:
        payload = response.json()
    except ValueError:
        return {}
    if not isinstance(payload, dict):
        return {}
    inner = payload.get("error")
    return inner if isinstance(inner, dict) else payload


class ProviderAdapter(CallPipeline):
    """upload / retrieve / list / content / delete against one provider's file API."""

    name: str
    purposes: dict[str, PurposeRule]

    async def upload(
        self, *, body: UploadBody, filename: str, purpose: str, content_type: str
    ) -> ProviderFile:
        """Stream `body` to `POST files`, purpose field first (as the SDKs); a retried try
        sends it again from its first byte."""
        form = UploadForm(
            fields={"purpose": self.native_purpose(purpose)},
            file_field="file",
            filename=filename,
            content_type=content_type,
            body=body,
        )

        async def attempt() -> ProviderFile:
            response = await self._exchange(
                "POST", "files", headers=form.headers, content=form.stream()
            )
            return self.file_object(self.json_object(response))

        return await self._call("upload", attempt)

    async def upload_once(
        self, *, body: UploadBody, filename: str, purpose: str, content_type: str
    ) -> ProviderFile:
        """Stream `body` to `POST files` in one try, behind the breaker and within the upload
        deadline: a body read as it arrives cannot be sent again, so nothing retries it."""
        form = UploadForm(
            fields={"purpose": self.native_purpose(purpose)},
            file_field="file",
            filename=filename,
            content_type=content_type,
            body=body,
        )

        async def attempt() -> ProviderFile:
            response = await self._exchange(
                "POST", "files", headers=form.headers, content=form.stream()
            )
            return self.file_object(self.json_object(response))

        return await self._once("upload", attempt)

    @abstractmethod
    async def retrieve(self, file_id: str) -> ProviderFile: ...

    @abstractmethod
    async def list(self, *, purpose: str | None = None) -> list[ProviderFile]: ...

    async def content(self, file_id: str) -> bytes:
        """`GET files/{id}/content`: extracted-text JSON for file-extract, raw JSONL for batch."""
        response = await self.request("content", "GET", self.file_path(file_id, "content"))
        return response.content

    async def delete(self, file_id: str) -> None:
        """`DELETE files/{id}`; the provider must confirm `deleted: true` (or answer 204)."""

        async def attempt() -> None:
            response = await self._exchange("DELETE", self.file_path(file_id))
            if response.status_code == 204:
                return
            if self.json_object(response).get("deleted") is not True:
                raise ProviderUnavailable(
                    f"{self.name} did not confirm the deletion; try again later.",
                    provider=self.name,
                    code="provider_bad_response",
                )

        await self._call("delete", attempt)

    async def request(self, operation: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One logical call: retries, then per try the breaker, observation and error mapping."""
        return await self._call(operation, lambda: self._exchange(method, url, **kwargs))

    async def request_file(
        self, operation: str, method: str, url: str, **kwargs: Any
    ) -> ProviderFile:
        """Like request(), but also parse one file object inside each observed try."""

        async def attempt() -> ProviderFile:
            return self.file_object(self.json_object(await self._exchange(method, url, **kwargs)))

        return await self._call(operation, attempt)

    def native_purpose(self, purpose: str) -> str:
        """The provider-native purpose for a gateway purpose; native names pass through."""
        rule = self.purposes.get(purpose)
        return rule.native if rule is not None else purpose

    def file_path(self, file_id: str, *suffix: str) -> str:
        """The relative `files/{id}[/suffix]` path, with the id quoted as one path segment."""
        segment = quote(file_id, safe="")
        # "" would hit the list endpoint and "."/".." would be resolved away by URL joining.
        if segment.strip(".") == "":
            raise ProviderNotFound(f"{self.name} has no such file.", provider=self.name)
        return "/".join(("files", segment, *suffix))

    def unexpected_response(self) -> ProviderUnavailable:
        """The error for a success status whose body is not what the provider documents."""
        return ProviderUnavailable(
            f"{self.name} returned an unexpected response; try again later.",
            provider=self.name,
            code="provider_bad_response",
        )

    def json_object(self, response: httpx.Response) -> dict[str, Any]:
        """The response body as a JSON object, or ProviderUnavailable if it is anything else."""
        try:
            payload = response.json()
        except ValueError as exc:
            raise self.unexpected_response() from exc
        if not isinstance(payload, dict):
            raise self.unexpected_response()
        return payload

    def file_object(self, payload: Any) -> ProviderFile:
        """Normalise one provider file object; ProviderUnavailable if a required field is off."""
        if not isinstance(payload, dict):
            raise self.unexpected_response()
        file_id = payload.get("id")
        size = _as_int(payload.get("bytes"))
        created_at = _as_int(payload.get("created_at"))
        filename = payload.get("filename")
        purpose = payload.get("purpose")
        status = payload.get("status")
        details = payload.get("status_details")
        if (
            not isinstance(file_id, str)
            or not file_id
            or size is None
            or created_at is None
            or not isinstance(filename, str)
            or not isinstance(purpose, str)
        ):
            raise self.unexpected_response()
        return ProviderFile(
            id=file_id,
            bytes=size,
            created_at=created_at,
            filename=filename,
            purpose=purpose,
            status=status if isinstance(status, str) else None,
            status_details=details if isinstance(details, str) else None,
        )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None

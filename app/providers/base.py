"""The one async interface every provider adapter implements, and what they share."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.core.errors import ProviderError, ProviderUnavailable

# (provider, operation, outcome, seconds) -> None; outcome is "ok" or an error code.
CallObserver = Callable[[str, str, str, float], None]


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


@dataclass
class ProviderConfig:
    name: str
    base_url: str
    api_key: str
    sandbox: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    write_timeout: float = 60.0
    pool_timeout: float = 10.0
    max_connections: int = 20
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderAdapter(ABC):
    """upload / retrieve / list / content / delete against one provider's file API."""

    name: str
    purposes: dict[str, PurposeRule]

    def __init__(self, config: ProviderConfig, *, observer: CallObserver | None = None) -> None:
        self.config = config
        self._observer = observer
        self.client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {config.api_key}"},
            timeout=httpx.Timeout(
                connect=config.connect_timeout,
                read=config.read_timeout,
                write=config.write_timeout,
                pool=config.pool_timeout,
            ),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            ),
            follow_redirects=False,
        )

    @property
    def mode(self) -> str:
        return "sandbox" if self.config.sandbox else "live"

    async def aclose(self) -> None:
        await self.client.aclose()

    @abstractmethod
    async def upload(
        self, *, path: Path, filename: str, purpose: str, content_type: str
    ) -> ProviderFile:
        """Upload the file at `path` under the provider-native `purpose`."""

    @abstractmethod
    async def retrieve(self, file_id: str) -> ProviderFile: ...

    @abstractmethod
    async def list(self, *, purpose: str | None = None) -> list[ProviderFile]: ...

    @abstractmethod
    async def content(self, file_id: str) -> bytes: ...

    @abstractmethod
    async def delete(self, file_id: str) -> None: ...

    @abstractmethod
    def raise_for_error(self, response: httpx.Response) -> None:
        """Turn a non-2xx provider response into a typed ProviderError (never echo the body)."""

    async def request(self, operation: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one call, map transport failures and error statuses, and report the outcome."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                raise ProviderUnavailable(
                    f"{self.name} did not answer in time; try again later.",
                    provider=self.name,
                    code="provider_timeout",
                ) from exc
            except httpx.TransportError as exc:
                raise ProviderUnavailable(
                    f"{self.name} could not be reached; try again later.",
                    provider=self.name,
                ) from exc
            if response.status_code >= 400:
                self.raise_for_error(response)
            return response
        except ProviderError as exc:
            outcome = exc.error_code
            raise
        finally:
            if self._observer is not None:
                self._observer(self.name, operation, outcome, time.perf_counter() - started)

"""The one async interface every provider adapter implements, and what they share."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx

from app.core.errors import ProviderError, ProviderNotFound, ProviderUnavailable

if TYPE_CHECKING:
    from app.providers.breakers import ProviderBreaker
    from app.providers.retry import RetryPolicy

logger = logging.getLogger("filegate.providers")

_T = TypeVar("_T")

# (provider, operation, outcome, seconds) -> None; outcome is "ok" or an error code.
CallObserver = Callable[[str, str, str, float], None]
# (provider, operation) -> None; called before each retry of a failed try.
RetryObserver = Callable[[str, str], None]

# The operation of the enclosing observe() block, for _send() calls made inside one.
_OPERATION: ContextVar[str | None] = ContextVar("filegate_provider_operation", default=None)


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


@dataclass
class ProviderConfig:
    """Where one provider is and how long its calls may wait, in seconds.

    `first_byte_timeout` runs from the request's last byte sent to the response headers;
    `idle_timeout` is the longest gap with no bytes moving either way while sending or
    reading; a transfer that keeps moving runs until the retry policy's overall deadline.
    """

    name: str
    base_url: str
    api_key: str
    sandbox: bool = False
    connect_timeout: float = 5.0
    first_byte_timeout: float = 10.0
    idle_timeout: float = 10.0
    pool_timeout: float = 1.0  # waiting for a free connection slot
    max_connections: int = 20  # uploads and content downloads
    background_connections: int = 4  # list, retrieve and delete
    extra: dict[str, Any] = field(default_factory=dict)


# Keep little unsent data queued in the kernel, so a chunk handed to the socket means the
# wire is moving (the idle timeout sees progress) without capping the in-flight window.
_NOTSENT_LOWAT = 128 * 1024
_SOCKET_OPTIONS = (
    [(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)]
    if hasattr(socket, "TCP_NOTSENT_LOWAT")
    else []
)

# Calls that move file bytes for a caller; the rest (list, retrieve, delete) mostly serve
# background jobs and get a lane of their own, so neither kind can starve the other.
TRANSFER_OPERATIONS = frozenset({"upload", "content"})


class _Lane:
    """A bounded number of concurrent calls; waiting for a slot is short and then fails."""

    def __init__(self, name: str, size: int, *, wait: float) -> None:
        self.name = name
        self.size = size
        self.wait = wait
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def slot(self, provider: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.wait):
                await self._slots.acquire()
        except TimeoutError:
            raise ProviderUnavailable(
                f"{provider} already has {self.size} {self.name} calls in flight; try again later.",
                provider=provider,
                code="provider_busy",
            ) from None
        try:
            yield
        finally:
            self._slots.release()


class _Tapped(httpx.AsyncByteStream):
    """A byte stream that reports each chunk it passes on, and its end."""

    def __init__(
        self, stream: httpx.AsyncByteStream, moved: Callable[[], None], done: Callable[[], None]
    ) -> None:
        self._stream = stream
        self._moved = moved
        self._done = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._moved()
        async for chunk in self._stream:
            # Asked for another chunk: the one before it has been written (or just arrived).
            self._moved()
            yield chunk
        self._done()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Watchdog:
    """Moves one exchange's timer: idle while bytes flow, first-byte once the request is sent."""

    def __init__(self, timer: asyncio.Timeout, *, first_byte: float, idle: float) -> None:
        self.timer = timer
        self.first_byte = first_byte
        self.idle = idle
        self.waiting_for_answer = False
        self._loop = asyncio.get_running_loop()

    def moved(self) -> None:
        self.waiting_for_answer = False
        self.timer.reschedule(self._loop.time() + self.idle)

    def sent(self) -> None:
        self.waiting_for_answer = True
        self.timer.reschedule(self._loop.time() + self.first_byte)

    def finished(self) -> None:
        self.timer.reschedule(None)


class ProviderAdapter(ABC):
    """upload / retrieve / list / content / delete against one provider's file API."""

    name: str
    purposes: dict[str, PurposeRule]
    # The provider's per-account limits, where it documents them.
    account_max_files: int | None = None
    account_max_bytes: int | None = None

    def __init__(
        self,
        config: ProviderConfig,
        *,
        observer: CallObserver | None = None,
        breaker: ProviderBreaker | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_observer: RetryObserver | None = None,
    ) -> None:
        self.config = config
        self._observer = observer
        self.breaker = breaker
        self.retry_policy = retry_policy
        self._retry_observer = retry_observer
        self.client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {config.api_key}"},
            # Only backstops: _exchange's watchdog enforces first-byte and idle itself.
            timeout=httpx.Timeout(
                connect=config.connect_timeout,
                read=max(config.first_byte_timeout, config.idle_timeout),
                write=config.idle_timeout,
                pool=config.pool_timeout,
            ),
            transport=httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=config.max_connections + config.background_connections,
                    max_keepalive_connections=config.max_connections,
                ),
                socket_options=_SOCKET_OPTIONS,
            ),
            follow_redirects=False,
        )
        self._lanes = {
            "transfer": _Lane("transfer", config.max_connections, wait=config.pool_timeout),
            "background": _Lane(
                "background", config.background_connections, wait=config.pool_timeout
            ),
        }

    @property
    def mode(self) -> str:
        return "sandbox" if self.config.sandbox else "live"

    async def aclose(self) -> None:
        await self.client.aclose()

    async def available(self) -> bool:
        """False while the circuit is open and not due for a probe (or a probe is in flight)."""
        return self.breaker is None or await self.breaker.available()

    async def paused_for(self) -> float | None:
        """Seconds calls would still fail fast on an open circuit; None when one would go."""
        return None if self.breaker is None else await self.breaker.paused_for()

    async def breaker_snapshot(self) -> dict[str, Any]:
        """The circuit's state, counters and last counted error (storage "none" without one)."""
        if self.breaker is not None:
            return await self.breaker.snapshot()
        return {
            "provider": self.name,
            "state": "closed",
            "failure_count": 0,
            "opened_at": None,
            "last_error": None,
            "storage": "none",
            "degraded": False,
        }

    @abstractmethod
    async def upload(
        self, *, path: Path, filename: str, purpose: str, content_type: str
    ) -> ProviderFile:
        """Upload the file at `path` under the provider-native `purpose`."""

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

    @abstractmethod
    def raise_for_error(self, response: httpx.Response) -> None:
        """Turn a non-2xx provider response into a typed ProviderError (never echo the body)."""

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

    async def _call(
        self, operation: str, attempt: Callable[[], Awaitable[_T]], *, observed: bool = True
    ) -> _T:
        """Run `attempt` until it succeeds, the policy gives up, or the deadline passes."""
        policy = self.retry_policy
        loop = asyncio.get_running_loop()
        deadline = None
        budget = policy.deadline_for(operation) if policy is not None else None
        if budget is not None:
            deadline = loop.time() + budget
        tries = 0
        while True:
            tries += 1
            try:
                return await self._attempt(operation, attempt, deadline, observed=observed)
            except ProviderError as exc:
                if policy is None:
                    raise
                remaining = None if deadline is None else deadline - loop.time()
                delay = policy.next_delay(operation, exc, tries, remaining)
                # Never retry into an open circuit: that try would only fail fast.
                if delay is None or not await self.available():
                    raise
                code = exc.error_code
            logger.info(
                "%s %s failed (%s); retry %d in %.2fs", self.name, operation, code, tries, delay
            )
            if self._retry_observer is not None:
                try:
                    self._retry_observer(self.name, operation)
                except Exception:
                    logger.exception("provider retry observer failed")
            await asyncio.sleep(delay)

    async def _attempt(
        self,
        operation: str,
        attempt: Callable[[], Awaitable[_T]],
        deadline: float | None,
        *,
        observed: bool,
    ) -> _T:
        """One try: the breaker admits it (or fails fast), then it is observed and timed."""
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            # No budget left for a real try; failing here keeps it off the breaker's count.
            raise self._deadline_error()
        guard: AbstractAsyncContextManager[None] = (
            self.breaker.guard() if self.breaker is not None else nullcontext()
        )
        observation = self.observe(operation) if observed else nullcontext()
        lane = self._lanes["transfer" if operation in TRANSFER_OPERATIONS else "background"]
        # A full lane is the gateway's own limit, not a provider fault: outside the breaker.
        with observation:
            async with lane.slot(self.name), guard:
                if deadline is None:
                    return await attempt()
                timer = asyncio.timeout_at(deadline)
                try:
                    async with timer:
                        return await attempt()
                except TimeoutError as exc:
                    if not timer.expired():
                        raise
                    raise self._deadline_error() from exc

    def _deadline_error(self) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"{self.name} did not complete the call within the gateway's deadline; "
            "try again later.",
            provider=self.name,
            code="provider_deadline",
        )

    @contextmanager
    def observe(self, operation: str) -> Iterator[None]:
        """Time the enclosed provider call and report its outcome to the observer."""
        started = time.perf_counter()
        outcome = "ok"
        token = _OPERATION.set(operation)
        try:
            yield
        except ProviderError as exc:
            outcome = exc.error_code
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = "internal_error"
            raise
        finally:
            _OPERATION.reset(token)
            if self._observer is not None:
                try:
                    self._observer(self.name, operation, outcome, time.perf_counter() - started)
                except Exception:
                    # Metrics must never turn a provider result into a failure.
                    logger.exception("provider call observer failed")

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One call from a subclass's own observe() block, behind the breaker and retries."""
        operation = _OPERATION.get() or method.lower()
        return await self._call(
            operation, lambda: self._exchange(method, url, **kwargs), observed=False
        )

    async def _exchange(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP exchange, cut when it stalls, with transport failures and statuses mapped."""
        request = self.client.build_request(method, url, **kwargs)
        timer = asyncio.timeout(None)
        try:
            async with timer:
                watchdog = _Watchdog(
                    timer, first_byte=self.config.first_byte_timeout, idle=self.config.idle_timeout
                )
                response = await self._send_watched(request, watchdog)
        except TimeoutError as exc:
            if not timer.expired():
                raise
            raise self._stalled(watchdog) from exc
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"{self.name} did not answer in time; try again later.",
                provider=self.name,
                code="provider_timeout",
            ) from exc
        except httpx.RequestError as exc:
            # RequestError also covers broken content decoding, not only TransportError.
            raise ProviderUnavailable(
                f"{self.name} could not be reached; try again later.",
                provider=self.name,
            ) from exc
        if response.status_code >= 400:
            self.raise_for_error(response)
            # A raise_for_error that returns must not let an error status pass as success.
            raise ProviderUnavailable(
                f"{self.name} failed with HTTP {response.status_code}; try again later.",
                provider=self.name,
            )
        return response

    async def _send_watched(self, request: httpx.Request, watchdog: _Watchdog) -> httpx.Response:
        """Send `request` and read the whole response, reporting every chunk to `watchdog`."""
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("provider requests need an async body stream")
        request.stream = _Tapped(request.stream, watchdog.moved, watchdog.sent)
        response = await self.client.send(request, stream=True)
        watchdog.moved()
        try:
            if not isinstance(response.stream, httpx.AsyncByteStream):
                raise TypeError("provider responses need an async body stream")
            response.stream = _Tapped(response.stream, watchdog.moved, watchdog.finished)
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _stalled(self, watchdog: _Watchdog) -> ProviderUnavailable:
        if watchdog.waiting_for_answer:
            what = f"did not start answering within {watchdog.first_byte:g}s"
        else:
            what = f"moved no data for {watchdog.idle:g}s"
        return ProviderUnavailable(
            f"{self.name} {what}; try again later.",
            provider=self.name,
            code="provider_timeout",
        )

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

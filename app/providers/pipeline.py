"""The call pipeline every provider call runs through: deadline, retries, breaker, lanes, watchdog.

One logical call is retried per the RetryPolicy within its deadline; each try waits for a
lane slot, is admitted by the breaker, observed for metrics and cut when the exchange stalls.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from tenacity import RetryCallState

from app.core.errors import DeadlineExceeded, ProviderBusy, ProviderError, ProviderUnavailable
from app.providers.breakers import BreakerSnapshot

if TYPE_CHECKING:
    from app.providers.breakers import ProviderBreaker
    from app.providers.retry import RetryPolicy

logger = logging.getLogger("filegate.providers")

_T = TypeVar("_T")

# (provider, operation, outcome, seconds) -> None; outcome is "ok" or an error code.
CallObserver = Callable[[str, str, str, float], None]
# (provider, operation) -> None; called before each retry of a failed try.
RetryObserver = Callable[[str, str], None]


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
            raise ProviderBusy(
                f"{provider} already has {self.size} {self.name} calls in flight; try again later.",
                provider=provider,
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


class CallPipeline(ABC):
    """One provider's HTTP client, lanes, breaker and retries, and how a call goes through them."""

    name: str

    def __init__(
        self,
        config: ProviderConfig,
        *,
        observer: CallObserver | None = None,
        breaker: ProviderBreaker | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_observer: RetryObserver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport` replaces the pooled network transport (a test's MockTransport, say)."""
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
            transport=transport
            or httpx.AsyncHTTPTransport(
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

    async def breaker_snapshot(self) -> BreakerSnapshot:
        """The circuit's state, counters and last counted error (storage "none" without one)."""
        if self.breaker is not None:
            return await self.breaker.snapshot()
        return BreakerSnapshot(provider=self.name)

    @abstractmethod
    def raise_for_error(self, response: httpx.Response) -> None:
        """Turn a non-2xx provider response into a typed ProviderError (never echo the body)."""

    async def _call(
        self, operation: str, attempt: Callable[[], Awaitable[_T]], *, observed: bool = True
    ) -> _T:
        """Run `attempt` until it succeeds, the policy gives up, or the deadline passes."""
        policy = self.retry_policy
        if policy is None:
            return await self._attempt(operation, attempt, None, observed=observed)
        loop = asyncio.get_running_loop()
        budget = policy.deadline_for(operation)
        deadline = None if budget is None else loop.time() + budget

        def retrying(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            code = error.error_code if isinstance(error, ProviderError) else "internal_error"
            logger.info(
                "%s %s failed (%s); retry %d in %.2fs",
                self.name,
                operation,
                code,
                state.attempt_number,
                state.upcoming_sleep,
            )
            if self._retry_observer is not None:
                try:
                    self._retry_observer(self.name, operation)
                except Exception:
                    logger.exception("provider retry observer failed")

        retrier = policy.retrying(
            operation,
            deadline=deadline,
            clock=loop.time,
            # Never retry into an open circuit: that try would only fail fast.
            may_retry=self.available,
            before_sleep=retrying,
        )
        return await retrier(self._attempt, operation, attempt, deadline, observed=observed)

    async def _once(self, operation: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """One observed try of `attempt`, never retried, within the operation's deadline."""
        budget = None if self.retry_policy is None else self.retry_policy.deadline_for(operation)
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        return await self._attempt(operation, attempt, deadline, observed=True)

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

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{self.name} did not complete the call within the gateway's deadline; "
            "try again later.",
            provider=self.name,
        )

    @contextmanager
    def observe(self, operation: str) -> Iterator[None]:
        """Time the enclosed provider call and report its outcome to the observer."""
        started = time.perf_counter()
        outcome = "ok"
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
            if self._observer is not None:
                try:
                    self._observer(self.name, operation, outcome, time.perf_counter() - started)
                except Exception:
                    # Metrics must never turn a provider result into a failure.
                    logger.exception("provider call observer failed")

    async def _send(self, operation: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One call from a subclass's own observe(operation) block, behind breaker and retries."""
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

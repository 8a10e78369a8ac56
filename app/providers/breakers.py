"""Per-provider circuit breakers: pybreaker on in-process state, shared through redis.asyncio."""

from __future__ import annotations

import asyncio
import calendar
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import pybreaker
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.core.errors import (
    CircuitOpen,
    GatewayError,
    ProviderAuthFailed,
    ProviderError,
    ProviderFileTooLarge,
    ProviderNotFound,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.metrics import GatewayMetrics

logger = logging.getLogger("filegate.breakers")

_T = TypeVar("_T")

DEFAULT_NAMESPACE = "filegate:breaker"
DEFAULT_PROVIDERS = ("moonshot", "zai")
REDIS_TIMEOUT_SECONDS = 0.5
RECONNECT_SECONDS = 5.0

STATE_CLOSED = pybreaker.STATE_CLOSED
STATE_OPEN = pybreaker.STATE_OPEN
STATE_HALF_OPEN = pybreaker.STATE_HALF_OPEN
STATES = (STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN)
# Gauge values of filegate_breaker_state.
STATE_VALUES = {STATE_CLOSED: 0, STATE_HALF_OPEN: 1, STATE_OPEN: 2}

# The provider is at fault: these count towards opening the circuit.
PROVIDER_FAULTS: tuple[type[ProviderError], ...] = (ProviderUnavailable, ProviderRateLimited)
# The request is at fault: the provider answered, so these never count (pybreaker `exclude`).
REQUEST_FAULTS: tuple[type[ProviderError], ...] = (
    ProviderRejected,
    ProviderNotFound,
    ProviderFileTooLarge,
    ProviderAuthFailed,
    ProviderQuotaExceeded,
)

Action = Literal["open", "close", "reset"]
ACTIONS: tuple[Action, ...] = ("open", "close", "reset")

# Called (in the background) with the provider's name when this process closes its circuit.
CloseHook = Callable[[str], Awaitable[object]]

# Deletes the probe gate only if it still holds this caller's token.
_RELEASE_PROBE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# pybreaker's CircuitRedisStorage semantics for opened_at: only ever moves forward.
_SET_IF_GREATER = """
local current = redis.call('get', KEYS[1])
if not current or tonumber(ARGV[1]) > tonumber(current) then redis.call('set', KEYS[1], ARGV[1]) end
return 0
"""
_FIELDS = ("state", "fail_counter", "success_counter", "opened_at")


def _not_a_provider_fault(exc: BaseException) -> bool:
    """True for anything but ProviderUnavailable/ProviderRateLimited (an `exclude` predicate)."""
    return not isinstance(exc, PROVIDER_FAULTS)


def redis_client(url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> Redis:
    """The breakers' own async client: bytes replies, short timeouts, no retries."""
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # redis-py retries with backoff by default; a call would then wait several timeouts.
        retry=Retry(NoBackoff(), 0),
    )


class _Down(enum.Enum):
    TOKEN = 0


_DOWN = _Down.TOKEN


@dataclass(frozen=True)
class _Shared:
    """The circuit as Redis holds it."""

    state: str | None
    failures: int
    successes: int
    opened_at: datetime | None


class _LocalState(pybreaker.CircuitMemoryStorage):
    """pybreaker's in-process storage, journaling each write so it can be published to Redis."""

    def __init__(self) -> None:
        super().__init__(STATE_CLOSED)
        self.journal: list[tuple[str, Any]] = []

    @property
    def state(self) -> str:
        """The circuit state (closed, open, half-open)."""
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state
        self.journal.append(("state", state))

    def increment_counter(self) -> None:
        """Count one more consecutive failure."""
        self._fail_counter += 1
        self.journal.append(("incr", "fail_counter"))

    def reset_counter(self) -> None:
        """Zero the failure counter."""
        self._fail_counter = 0
        self.journal.append(("set", "fail_counter"))

    def increment_success_counter(self) -> None:
        """Count one more half-open success."""
        self._success_counter += 1
        self.journal.append(("incr", "success_counter"))

    def reset_success_counter(self) -> None:
        """Zero the half-open success counter."""
        self._success_counter = 0
        self.journal.append(("set", "success_counter"))

    @property
    def opened_at(self) -> datetime | None:
        """When the circuit last opened."""
        return self._opened_at

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._opened_at = now
        self.journal.append(("opened_at", int(calendar.timegm(now.timetuple()))))

    def adopt(self, shared: _Shared) -> None:
        """Take over the state read from Redis (nothing is journaled)."""
        if shared.state is not None:
            self._state = shared.state
        self._fail_counter = shared.failures
        self._success_counter = shared.successes
        self._opened_at = shared.opened_at

    def forget(self) -> None:
        """Zero the counters and forget opened_at (nothing is journaled)."""
        self._fail_counter = self._success_counter = 0
        self._opened_at = None

    def take_journal(self) -> list[tuple[str, Any]]:
        """The writes since the last call, oldest first."""
        ops, self.journal = self.journal, []
        return ops


class _MemoryGate:
    """The in-process half-open probe gate: one token at a time, with an expiry."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._expires = 0.0

    def acquire(self, token: str, ttl: float) -> bool:
        """Take the gate for `ttl` seconds unless another live token holds it."""
        now = time.monotonic()
        if self._token is not None and now < self._expires:
            return False
        self._token, self._expires = token, now + ttl
        return True

    def release(self, token: str | None = None) -> None:
        """Free the gate if `token` holds it (any holder when token is None)."""
        if token is None or token == self._token:
            self._token = None

    def remaining(self) -> float:
        """Seconds until the current holder's claim expires (0 when free)."""
        if self._token is None:
            return 0.0
        return max(0.0, self._expires - time.monotonic())


class BreakerStore:
    """One circuit's state: in process for pybreaker, shared through Redis when reachable.

    Every wait on Redis is bounded by `timeout` (twice that for a whole operation); a failure
    switches to the in-process state (degraded) until `reconnect_seconds` have passed, so no
    call waits on a Redis known to be down, and one that just went down costs one timeout.
    """

    def __init__(
        self,
        namespace: str,
        *,
        client: Redis | None = None,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> None:
        self.namespace = namespace
        self.probe_key = f"{namespace}:probe"
        # pybreaker's CircuitRedisStorage layout, so state written by either one is read back.
        self._keys = {
            field: f"{namespace}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:{field}"
            for field in _FIELDS
        }
        self.client = client
        self.timeout = timeout
        self.reconnect_seconds = reconnect_seconds
        self.degraded = False
        self.last_storage_error: str | None = None
        self.local = _LocalState()
        self._gate = _MemoryGate()
        self._retry_at = 0.0
        # Bumped by every publish: a read that overlapped one may predate it and is not adopted.
        self._writes = 0
        self._writing = 0

    @property
    def kind(self) -> Literal["redis", "memory"]:
        """Where the state lives right now."""
        return "redis" if self.client is not None and not self.degraded else "memory"

    @property
    def state(self) -> str:
        """The circuit state as this process last saw it."""
        return self.local.state

    # -- Redis with fallback -------------------------------------------------------------

    async def _redis(self, op: Callable[[Redis], Awaitable[_T]]) -> _T | Literal[_Down.TOKEN]:
        """Run `op` against Redis within the timeout; _DOWN (and degraded) when it fails."""
        if self.client is None:
            return _DOWN
        if self.degraded and time.monotonic() < self._retry_at:
            return _DOWN
        try:
            # The socket timeouts bound each wait on Redis; this bounds the whole operation
            # (connect and command) even when the loop itself is slow to get back to it.
            async with asyncio.timeout(2 * self.timeout):
                result = await op(self.client)
        except Exception as exc:
            self._down(exc)
            return _DOWN
        if self.degraded:
            self._up()
        return result

    def _down(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + self.reconnect_seconds
        self.last_storage_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if not self.degraded:
            self.degraded = True
            logger.warning(
                "breaker %s: Redis failed (%s); using in-process state, retrying in %gs",
                self.namespace,
                self.last_storage_error,
                self.reconnect_seconds,
            )

    def _up(self) -> None:
        self.degraded = False
        logger.warning("breaker %s: Redis is back; state is shared again", self.namespace)

    async def pull(self) -> _Shared | None:
        """The shared state; None while Redis is down or a write of ours overlapped the read."""

        async def read(client: Redis) -> list[bytes | None]:
            return cast(list[bytes | None], await client.mget(list(self._keys.values())))

        writes = self._writes
        values = await self._redis(read)
        if values is _DOWN or self._writing or self._writes != writes:
            return None
        state, failures, successes, opened = (v.decode() if v else None for v in values)
        if state is not None and state not in STATES:
            logger.warning("breaker %s: ignoring unknown state %r", self.namespace, state)
            state = self.local.state
        return _Shared(
            state=state or STATE_CLOSED,
            failures=int(failures or 0),
            successes=int(successes or 0),
            opened_at=(datetime(*time.gmtime(int(opened))[:6], tzinfo=UTC) if opened else None),
        )

    async def push(self) -> None:
        """Publish the writes pybreaker made since the last push (dropped while degraded)."""
        ops = self.local.take_journal()  # taken before the first await: no other call's writes
        if not ops or self.client is None:
            return

        async def write(client: Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                for op, value in ops:
                    if op == "state":
                        pipe.set(self._keys["state"], value)
                    elif op == "incr":
                        pipe.incr(self._keys[value])
                    elif op == "set":
                        pipe.set(self._keys[value], 0)
                    else:
                        pipe.eval(_SET_IF_GREATER, 1, self._keys["opened_at"], value)
                await pipe.execute()

        self._writes += 1
        self._writing += 1
        try:
            await self._redis(write)
        finally:
            self._writing -= 1

    async def clear(self) -> None:
        """Zero both counters and forget opened_at and any probe claim."""
        self.local.take_journal()
        self.local.forget()
        self._gate.release()

        async def wipe(client: Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(self._keys["fail_counter"], 0)
                pipe.set(self._keys["success_counter"], 0)
                pipe.delete(self._keys["opened_at"], self.probe_key)
                await pipe.execute()

        self._writes += 1
        self._writing += 1
        try:
            await self._redis(wipe)
        finally:
            self._writing -= 1

    # -- the half-open probe gate --------------------------------------------------------

    async def acquire_probe(self, token: str, ttl: float) -> bool:
        """Claim the single half-open probe for `ttl` seconds (SET NX PX across processes)."""
        ttl_ms = max(1, int(ttl * 1000))

        async def claim(client: Redis) -> bool:
            return bool(await client.set(self.probe_key, token, nx=True, px=ttl_ms))

        taken = await self._redis(claim)
        if taken is _DOWN:
            return self._gate.acquire(token, ttl)
        return taken

    async def release_probe(self, token: str | None = None) -> None:
        """Give up the probe claim held by `token` (any claim when token is None)."""
        self._gate.release(token)

        async def release(client: Redis) -> None:
            if token is None:
                await client.delete(self.probe_key)
            else:
                await client.eval(_RELEASE_PROBE, 1, self.probe_key, token)

        await self._redis(release)

    async def probe_remaining(self) -> float:
        """Seconds until the current probe claim expires (0 when no probe is in flight)."""

        async def ttl(client: Redis) -> int:
            return int(await client.pttl(self.probe_key))

        millis = await self._redis(ttl)
        if millis is _DOWN:
            return self._gate.remaining()
        return max(0.0, millis / 1000)


class _Listener(pybreaker.CircuitBreakerListener):
    """Keeps the last counted error and feeds state changes to the metrics."""

    def __init__(self, provider: str, metrics: GatewayMetrics | None) -> None:
        self.provider = provider
        self.metrics = metrics
        self.last_error: str | None = None

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        """Remember our typed message (never a provider body) of a counted failure."""
        if isinstance(exc, GatewayError):
            self.last_error = f"{exc.error_code}: {exc.message}"
        else:
            self.last_error = type(exc).__name__

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        """Count a transition this process made or noticed, and update the state gauge."""
        old = old_state.name if old_state is not None else None
        if old == new_state.name:
            return
        logger.info("circuit %s: %s -> %s", self.provider, old or "none", new_state.name)
        if self.metrics is None:
            return
        try:
            self.metrics.breaker_transitions.labels(
                self.provider, old or "none", new_state.name
            ).inc()
            self.metrics.breaker_state.labels(self.provider).set(STATE_VALUES[new_state.name])
        except Exception:
            logger.exception("breaker metrics failed")


def _replay(outcome: ProviderError | None) -> None:
    if outcome is not None:
        raise outcome


class ProviderBreaker:
    """One provider's circuit: pybreaker bookkeeping plus a cross-process single-probe gate.

    pybreaker runs on in-process state only (no I/O); the shared state is read before and
    published after each decision with awaited, time-bounded Redis calls.
    """

    def __init__(
        self,
        provider: str,
        store: BreakerStore,
        *,
        fail_max: int = 5,
        reset_seconds: float = 30.0,
        probe_seconds: float = 60.0,
        metrics: GatewayMetrics | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.store = store
        self.reset_seconds = reset_seconds
        self.probe_seconds = probe_seconds
        self.metrics = metrics
        self.on_close = on_close
        self._listener = _Listener(provider, metrics)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_seconds,
            # pybreaker's annotation cannot express "exception classes or predicates".
            exclude=cast(Any, [*REQUEST_FAULTS, _not_a_provider_fault]),
            listeners=[self._listener],
            state_storage=store.local,
            name=provider,
            # Let the provider error itself propagate when the call trips the circuit.
            throw_new_error_on_trip=False,
        )
        self._gauge(self.breaker.current_state)

    @property
    def fail_max(self) -> int:
        """Consecutive provider faults that open the circuit."""
        return self.breaker.fail_max

    async def refresh(self) -> str:
        """Adopt the shared state (when Redis is reachable); the current state."""
        shared = await self.store.pull()
        if shared is not None:
            self.store.local.adopt(shared)
        # Let pybreaker notice a change made elsewhere (listeners count it); the counter
        # resets it does on noticing echo that change and are not published again.
        self.breaker.state  # noqa: B018
        if shared is not None:
            self.store.local.adopt(shared)
        self.store.local.take_journal()
        state = self.store.state
        self._gauge(state)
        return state

    # -- guarding a call -----------------------------------------------------------------

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Admit one call (or fail fast with provider_circuit_open) and record its outcome."""
        probe = await self._admit()
        try:
            yield
        except ProviderError as exc:
            await self._record(exc, probe)
            raise
        else:
            await self._record(None, probe)
        finally:
            # Cancellation and non-provider errors are neutral: only the probe claim goes.
            if probe is not None:
                await self.store.release_probe(probe)

    async def _admit(self) -> str | None:
        """None to run a normal call, a probe token to run the half-open probe; else raise."""
        state = await self.refresh()
        if state == STATE_CLOSED:
            return None
        if state == STATE_OPEN and (wait := self.seconds_until_half_open()) > 0:
            raise self._open_error(wait)
        token = uuid.uuid4().hex
        if not await self.store.acquire_probe(token, self.probe_seconds):
            raise self._open_error(await self._probe_wait())
        # Re-read: a probe that finished in between may have closed or re-opened it.
        state = await self.refresh()
        if state == STATE_CLOSED:
            await self.store.release_probe(token)
            return None
        if state == STATE_OPEN:
            if (wait := self.seconds_until_half_open()) > 0:
                await self.store.release_probe(token)
                raise self._open_error(wait)
            self.breaker.half_open()
            await self.store.push()
        return token

    async def _record(self, outcome: ProviderError | None, probe: str | None) -> None:
        """Replay the outcome through pybreaker so it counts failures and moves the state."""
        before = await self.refresh()
        if probe is None and before != STATE_CLOSED:
            # Admitted while closed, finished after the circuit moved on: a stale outcome.
            return
        traceback = outcome.__traceback__ if outcome is not None else None
        try:
            self.breaker.call(_replay, outcome)
        except (pybreaker.CircuitBreakerError, ProviderError):
            pass
        except Exception:
            logger.exception("circuit %s: recording the outcome failed", self.provider)
        finally:
            if outcome is not None:
                outcome.__traceback__ = traceback
        await self.store.push()
        self._closed(before)

    def _closed(self, before: str) -> None:
        """Tell the owner when this process just closed the circuit (pending work may go)."""
        if before == STATE_CLOSED or self.store.state != STATE_CLOSED or self.on_close is None:
            return
        try:
            self.on_close(self.provider)
        except Exception:
            logger.exception("circuit %s: the close hook failed", self.provider)

    async def _probe_wait(self) -> float:
        """How long a caller that lost the probe race should wait before trying again."""
        # A claim lasts as long as a probe may; a probe that closes the circuit frees the
        # waiters at once (on_close), and one that fails re-opens it for reset_seconds.
        return min(await self.store.probe_remaining(), self.reset_seconds)

    def _open_error(self, wait: float) -> CircuitOpen:
        return CircuitOpen(
            f"{self.provider} is failing and calls to it are paused (circuit open); "
            "try again later.",
            provider=self.provider,
            retry_after=max(wait, 0.001),
        )

    # -- read-only views -----------------------------------------------------------------

    def seconds_until_half_open(self) -> float:
        """Seconds the open circuit still rejects calls, per the state last read (0 if due)."""
        opened_at = self.store.local.opened_at
        if opened_at is None:
            return 0.0
        due = opened_at + timedelta(seconds=self.reset_seconds)
        return max(0.0, (due - datetime.now(UTC)).total_seconds())

    async def paused_for(self) -> float | None:
        """Seconds a call would still fail fast (open, or a probe in flight); None if it goes."""
        state = await self.refresh()
        if state == STATE_CLOSED:
            return None
        if state == STATE_OPEN and (wait := self.seconds_until_half_open()) > 0:
            return wait
        if await self.store.probe_remaining() > 0:
            return max(await self._probe_wait(), 0.001)
        return None

    async def available(self) -> bool:
        """False while a call would fail fast: open and not due, or a probe in flight."""
        return await self.paused_for() is None

    async def snapshot(self) -> dict[str, Any]:
        """State, counters, last counted error and where the state is kept."""
        state = await self.refresh()
        opened_at = self.store.local.opened_at
        probing = state != STATE_CLOSED and await self.store.probe_remaining() > 0
        return {
            "provider": self.provider,
            "state": state,
            "failure_count": self.store.local.counter,
            "fail_max": self.fail_max,
            "reset_seconds": self.reset_seconds,
            "opened_at": opened_at.isoformat() if opened_at is not None else None,
            "retry_after": (
                round(self.seconds_until_half_open(), 3) if state == STATE_OPEN else None
            ),
            "probe_in_flight": probing,
            "last_error": self._listener.last_error,
            "storage": self.store.kind,
            "degraded": self.store.degraded,
        }

    # -- operator actions ----------------------------------------------------------------

    async def force(self, action: Action) -> dict[str, Any]:
        """Open, close, or reset (close and zero the counters) the circuit; the new snapshot."""
        if action not in ACTIONS:
            raise ValueError(f"unknown breaker action {action!r}; use one of {ACTIONS}")
        before = await self.refresh()
        if action == "open":
            self.breaker.open()
            await self.store.push()
        elif action == "close":
            self.breaker.close()
            await self.store.push()
            await self.store.release_probe()
        else:
            self.breaker.close()
            await self.store.push()
            await self.store.clear()
            self._listener.last_error = None
        logger.warning("circuit %s: forced %s by an operator", self.provider, action)
        self._closed(before)
        return await self.snapshot()

    def _gauge(self, state: str) -> None:
        if self.metrics is not None and state in STATE_VALUES:
            self.metrics.breaker_state.labels(self.provider).set(STATE_VALUES[state])


class BreakerBoard:
    """One breaker per provider, sharing state through Redis when a URL is configured.

    Building a board does no I/O; the first call on each breaker reads the shared state.
    """

    def __init__(
        self,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        *,
        redis_url: str | None = None,
        fail_max: int = 5,
        reset_seconds: float = 30.0,
        probe_seconds: float = 60.0,
        namespace: str = DEFAULT_NAMESPACE,
        metrics: GatewayMetrics | None = None,
        redis_timeout: float = REDIS_TIMEOUT_SECONDS,
        reconnect_seconds: float = RECONNECT_SECONDS,
        on_close: CloseHook | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.on_close = on_close
        self.client = redis_client(redis_url, timeout=redis_timeout) if redis_url else None
        self._hooks: set[asyncio.Task[object]] = set()
        self.breakers: dict[str, ProviderBreaker] = {}
        for provider in providers:
            store = BreakerStore(
                f"{namespace}:{provider}",
                client=self.client,
                timeout=redis_timeout,
                reconnect_seconds=reconnect_seconds,
            )
            self.breakers[provider] = ProviderBreaker(
                provider,
                store,
                fail_max=fail_max,
                reset_seconds=reset_seconds,
                probe_seconds=probe_seconds,
                metrics=metrics,
                on_close=self._closed,
            )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        metrics: GatewayMetrics | None = None,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        namespace: str | None = None,
        on_close: CloseHook | None = None,
    ) -> BreakerBoard:
        """The board for these settings (no I/O)."""
        return cls(
            providers,
            redis_url=settings.redis_url,
            fail_max=settings.breaker_fail_max,
            reset_seconds=settings.breaker_reset_seconds,
            # A probe cannot outlive one logical call; a crashed prober's claim expires then.
            probe_seconds=settings.provider_deadline_seconds,
            namespace=namespace or settings.breaker_namespace,
            metrics=metrics,
            redis_timeout=settings.breaker_redis_timeout_seconds,
            on_close=on_close,
        )

    def _closed(self, provider: str) -> None:
        """Run the close hook in the background: the call that closed the circuit goes on."""
        if self.on_close is None:
            return
        task = asyncio.ensure_future(self.on_close(provider))
        self._hooks.add(task)
        task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Task[object]) -> None:
        self._hooks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("breaker close hook failed: %s: %s", type(exc).__name__, exc)

    def __getitem__(self, provider: str) -> ProviderBreaker:
        return self.breakers[provider]

    def get(self, provider: str) -> ProviderBreaker | None:
        """The provider's breaker, or None if the board has none for it."""
        return self.breakers.get(provider)

    @property
    def degraded(self) -> bool:
        """True when Redis is configured but some breaker runs on in-process state."""
        return any(b.store.degraded for b in self.breakers.values())

    async def force(self, provider: str, action: Action) -> dict[str, Any]:
        """Apply an operator action (open, close, reset) to one provider's circuit."""
        return await self.breakers[provider].force(action)

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every provider's snapshot."""
        return {name: await breaker.snapshot() for name, breaker in self.breakers.items()}

    async def aclose(self) -> None:
        """Let running close hooks finish (briefly), then dispose of the Redis client."""
        if self._hooks:
            await asyncio.wait(list(self._hooks), timeout=5)
            for task in list(self._hooks):
                task.cancel()
        if self.client is not None:
            await self.client.aclose()

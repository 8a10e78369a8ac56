"""Per-provider circuit breakers: pybreaker state shared through Redis, one half-open probe."""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import pybreaker
import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from app.core.errors import (
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

# Deletes the probe gate only if it still holds this caller's token.
_RELEASE_PROBE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _not_a_provider_fault(exc: BaseException) -> bool:
    """True for anything but ProviderUnavailable/ProviderRateLimited (an `exclude` predicate)."""
    return not isinstance(exc, PROVIDER_FAULTS)


class StoreUnavailable(Exception):
    """Redis failed under a breaker; deliberately not a RedisError, so pybreaker cannot hide it."""


class _StrictRedis(redis.Redis):
    """A sync Redis client whose errors surface as StoreUnavailable."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command, turning any RedisError into StoreUnavailable."""
        try:
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def transaction(self, func: Callable[..., Any], *watches: Any, **kwargs: Any) -> Any:
        """Run a WATCH/MULTI transaction, turning any RedisError into StoreUnavailable."""
        try:
            return super().transaction(func, *watches, **kwargs)
        except RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


def redis_client(url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> redis.Redis:
    """The breaker's own sync client: bytes replies, short timeouts, one immediate retry."""
    return _StrictRedis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # redis-py retries 10 times with backoff by default; that would stall the event loop.
        retry=Retry(NoBackoff(), 1),
    )


class _Down(enum.Enum):
    TOKEN = 0


_DOWN = _Down.TOKEN


class _Mirror(pybreaker.CircuitMemoryStorage):
    """In-process breaker state that mirrors Redis and takes over while Redis is down."""

    def load_counters(self, *, failures: int | None = None, successes: int | None = None) -> None:
        """Adopt counter values read from Redis."""
        if failures is not None:
            self._fail_counter = failures
        if successes is not None:
            self._success_counter = successes

    def clear_opened_at(self) -> None:
        """Forget when the circuit last opened."""
        self._opened_at = None


class _MemoryGate:
    """The in-process half-open probe gate: one token at a time, with an expiry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0

    def acquire(self, token: str, ttl: float) -> bool:
        """Take the gate for `ttl` seconds unless another live token holds it."""
        with self._lock:
            now = time.monotonic()
            if self._token is not None and now < self._expires:
                return False
            self._token, self._expires = token, now + ttl
            return True

    def release(self, token: str | None = None) -> None:
        """Free the gate if `token` holds it (any holder when token is None)."""
        with self._lock:
            if token is None or token == self._token:
                self._token = None

    def remaining(self) -> float:
        """Seconds until the current holder's claim expires (0 when free)."""
        with self._lock:
            if self._token is None:
                return 0.0
            return max(0.0, self._expires - time.monotonic())


class BreakerStore(pybreaker.CircuitBreakerStorage):
    """pybreaker storage kept in Redis when reachable, else in an in-process mirror."""

    def __init__(
        self,
        namespace: str,
        *,
        client: redis.Redis | None = None,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> None:
        super().__init__("redis" if client is not None else "memory")
        self.namespace = namespace
        self.probe_key = f"{namespace}:probe"
        self.reconnect_seconds = reconnect_seconds
        self.client = client
        self.degraded = False
        self.last_storage_error: str | None = None
        self._memory = _Mirror(STATE_CLOSED)
        self._gate = _MemoryGate()
        self._remote: pybreaker.CircuitRedisStorage | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()
        if client is not None:
            self._live()

    @property
    def kind(self) -> Literal["redis", "memory"]:
        """Where the state lives right now."""
        return "redis" if self.client is not None and not self.degraded else "memory"

    def close(self) -> None:
        """Dispose of the Redis client."""
        if self.client is not None:
            self.client.close()

    # -- Redis with fallback -------------------------------------------------------------

    def _live(self) -> pybreaker.CircuitRedisStorage | None:
        """The Redis storage, or None while Redis is down and not yet due for a reconnect."""
        if self.client is None:
            return None
        if self.degraded and time.monotonic() < self._retry_at:
            return None
        if self._remote is None:
            try:
                # Raises if Redis is down: it SETNXes the initial state.
                self._remote = pybreaker.CircuitRedisStorage(
                    STATE_CLOSED, self.client, namespace=self.namespace
                )
            except Exception as exc:
                self._down(exc)
                return None
        return self._remote

    def _redis(
        self, op: Callable[[pybreaker.CircuitRedisStorage, redis.Redis], _T]
    ) -> _T | Literal[_Down.TOKEN]:
        """Run `op` against Redis; _DOWN (and degraded mode) when Redis fails or is down."""
        remote = self._live()
        if remote is None or self.client is None:
            return _DOWN
        try:
            result = op(remote, self.client)
        except Exception as exc:
            self._down(exc)
            return _DOWN
        if self.degraded:
            self._up()
        return result

    def _down(self, exc: Exception) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + self.reconnect_seconds
            self.last_storage_error = f"{type(exc).__name__}: {exc}"
            if not self.degraded:
                self.degraded = True
                logger.warning(
                    "breaker %s: Redis failed (%s); using in-process state, retrying in %gs",
                    self.namespace,
                    self.last_storage_error,
                    self.reconnect_seconds,
                )

    def _up(self) -> None:
        with self._lock:
            if self.degraded:
                self.degraded = False
                logger.warning("breaker %s: Redis is back; state is shared again", self.namespace)

    # -- pybreaker storage interface -----------------------------------------------------

    @property
    def state(self) -> str:
        """The circuit state (closed, open, half-open)."""
        value = self._redis(lambda remote, _: remote.state)
        if value is _DOWN:
            return self._memory.state
        if value not in STATES:
            logger.warning("breaker %s: ignoring unknown state %r", self.namespace, value)
            return self._memory.state
        self._memory.state = value
        return value

    @state.setter
    def state(self, state: str) -> None:
        self._memory.state = state

        def write(remote: pybreaker.CircuitRedisStorage, _: redis.Redis) -> None:
            remote.state = state

        self._redis(write)

    def increment_counter(self) -> None:
        """Count one more consecutive failure."""
        self._memory.increment_counter()
        self._redis(lambda remote, _: remote.increment_counter())

    def reset_counter(self) -> None:
        """Zero the failure counter."""
        self._memory.reset_counter()
        self._redis(lambda remote, _: remote.reset_counter())

    def increment_success_counter(self) -> None:
        """Count one more half-open success."""
        self._memory.increment_success_counter()
        self._redis(lambda remote, _: remote.increment_success_counter())

    def reset_success_counter(self) -> None:
        """Zero the half-open success counter."""
        self._memory.reset_success_counter()
        self._redis(lambda remote, _: remote.reset_success_counter())

    @property
    def counter(self) -> int:
        """Consecutive failures."""
        value = self._redis(lambda remote, _: remote.counter)
        if value is _DOWN:
            return self._memory.counter
        self._memory.load_counters(failures=value)
        return value

    @property
    def success_counter(self) -> int:
        """Consecutive half-open successes."""
        value = self._redis(lambda remote, _: remote.success_counter)
        if value is _DOWN:
            return self._memory.success_counter
        self._memory.load_counters(successes=value)
        return value

    @property
    def opened_at(self) -> datetime | None:
        """When the circuit last opened (whole seconds when kept in Redis)."""
        value = self._redis(lambda remote, _: remote.opened_at)
        if value is _DOWN:
            return self._memory.opened_at
        if value is not None:
            self._memory.opened_at = value
        return value

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._memory.opened_at = now

        def write(remote: pybreaker.CircuitRedisStorage, _: redis.Redis) -> None:
            remote.opened_at = now

        self._redis(write)

    def clear(self) -> None:
        """Zero both counters and forget opened_at and any probe claim."""
        self.reset_counter()
        self.reset_success_counter()
        self._memory.clear_opened_at()
        self._gate.release()
        # pybreaker keeps its keys under "{namespace}:pybreaker:".
        opened_key = f"{self.namespace}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:opened_at"
        self._redis(lambda _, client: client.delete(opened_key, self.probe_key))

    # -- the half-open probe gate --------------------------------------------------------

    def acquire_probe(self, token: str, ttl: float) -> bool:
        """Claim the single half-open probe for `ttl` seconds (SET NX PX across processes)."""
        ttl_ms = max(1, int(ttl * 1000))
        taken = self._redis(lambda _, client: client.set(self.probe_key, token, nx=True, px=ttl_ms))
        if taken is _DOWN:
            return self._gate.acquire(token, ttl)
        return bool(taken)

    def release_probe(self, token: str | None = None) -> None:
        """Give up the probe claim held by `token` (any claim when token is None)."""
        self._gate.release(token)
        if token is None:
            self._redis(lambda _, client: client.delete(self.probe_key))
        else:
            self._redis(lambda _, client: client.eval(_RELEASE_PROBE, 1, self.probe_key, token))

    def probe_remaining(self) -> float:
        """Seconds until the current probe claim expires (0 when no probe is in flight)."""
        millis = self._redis(lambda _, client: client.pttl(self.probe_key))
        if millis is _DOWN:
            return self._gate.remaining()
        return max(0.0, int(millis) / 1000)


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
    """One provider's circuit: pybreaker bookkeeping plus a cross-process single-probe gate."""

    def __init__(
        self,
        provider: str,
        store: BreakerStore,
        *,
        fail_max: int = 5,
        reset_seconds: float = 30.0,
        probe_seconds: float = 60.0,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.provider = provider
        self.store = store
        self.reset_seconds = reset_seconds
        self.probe_seconds = probe_seconds
        self.metrics = metrics
        self._listener = _Listener(provider, metrics)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_seconds,
            # pybreaker's annotation cannot express "exception classes or predicates".
            exclude=cast(Any, [*REQUEST_FAULTS, _not_a_provider_fault]),
            listeners=[self._listener],
            state_storage=store,
            name=provider,
            # Let the provider error itself propagate when the call trips the circuit.
            throw_new_error_on_trip=False,
        )
        self._gauge(self.breaker.current_state)

    @property
    def fail_max(self) -> int:
        """Consecutive provider faults that open the circuit."""
        return self.breaker.fail_max

    # -- guarding a call -----------------------------------------------------------------

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Admit one call (or fail fast with provider_circuit_open) and record its outcome."""
        probe = self._admit()
        try:
            yield
        except ProviderError as exc:
            self._record(exc, probe)
            raise
        else:
            self._record(None, probe)
        finally:
            # Cancellation and non-provider errors are neutral: only the probe claim goes.
            if probe is not None:
                self.store.release_probe(probe)

    def _admit(self) -> str | None:
        """None to run a normal call, a probe token to run the half-open probe; else raise."""
        state = self.store.state
        self._gauge(state)
        if state == STATE_CLOSED:
            return None
        if state == STATE_OPEN and (wait := self.seconds_until_half_open()) > 0:
            raise self._open_error(wait)
        token = uuid.uuid4().hex
        if not self.store.acquire_probe(token, self.probe_seconds):
            raise self._open_error(self.store.probe_remaining())
        # Re-read: a probe that finished in between may have closed or re-opened it.
        state = self.store.state
        if state == STATE_CLOSED:
            self.store.release_probe(token)
            return None
        if state == STATE_OPEN:
            if (wait := self.seconds_until_half_open()) > 0:
                self.store.release_probe(token)
                raise self._open_error(wait)
            self.breaker.half_open()
        return token

    def _record(self, outcome: ProviderError | None, probe: str | None) -> None:
        """Replay the outcome through pybreaker so it counts failures and moves the state."""
        if probe is None and self.store.state != STATE_CLOSED:
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

    def _open_error(self, wait: float) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"{self.provider} is failing and calls to it are paused (circuit open); "
            "try again later.",
            provider=self.provider,
            code="provider_circuit_open",
            retry_after=max(wait, 0.001),
        )

    # -- read-only views -----------------------------------------------------------------

    def seconds_until_half_open(self) -> float:
        """Seconds the open circuit still rejects calls (0 when due for a probe)."""
        opened_at = self.store.opened_at
        if opened_at is None:
            return 0.0
        due = opened_at + timedelta(seconds=self.reset_seconds)
        return max(0.0, (due - datetime.now(UTC)).total_seconds())

    def available(self) -> bool:
        """False while a call would fail fast: open and not due, or a probe in flight."""
        state = self.store.state
        if state == STATE_CLOSED:
            return True
        if state == STATE_OPEN and self.seconds_until_half_open() > 0:
            return False
        return self.store.probe_remaining() <= 0

    def snapshot(self) -> dict[str, Any]:
        """State, counters, last counted error and where the state is kept."""
        state = self.store.state
        self._gauge(state)
        opened_at = self.store.opened_at
        return {
            "provider": self.provider,
            "state": state,
            "failure_count": self.store.counter,
            "fail_max": self.fail_max,
            "reset_seconds": self.reset_seconds,
            "opened_at": opened_at.isoformat() if opened_at is not None else None,
            "retry_after": (
                round(self.seconds_until_half_open(), 3) if state == STATE_OPEN else None
            ),
            "probe_in_flight": state != STATE_CLOSED and self.store.probe_remaining() > 0,
            "last_error": self._listener.last_error,
            "storage": self.store.kind,
            "degraded": self.store.degraded,
        }

    # -- operator actions ----------------------------------------------------------------

    def force(self, action: Action) -> dict[str, Any]:
        """Open, close, or reset (close and zero the counters) the circuit; the new snapshot."""
        if action == "open":
            self.breaker.open()
        elif action == "close":
            self.breaker.close()
            self.store.release_probe()
        elif action == "reset":
            self.breaker.close()
            self.store.clear()
            self._listener.last_error = None
        else:
            raise ValueError(f"unknown breaker action {action!r}; use one of {ACTIONS}")
        logger.warning("circuit %s: forced %s by an operator", self.provider, action)
        return self.snapshot()

    def _gauge(self, state: str) -> None:
        if self.metrics is not None and state in STATE_VALUES:
            self.metrics.breaker_state.labels(self.provider).set(STATE_VALUES[state])


class BreakerBoard:
    """One breaker per provider, sharing state through Redis when a URL is configured."""

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
    ) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.breakers: dict[str, ProviderBreaker] = {}
        for provider in providers:
            client = redis_client(redis_url, timeout=redis_timeout) if redis_url else None
            store = BreakerStore(
                f"{namespace}:{provider}", client=client, reconnect_seconds=reconnect_seconds
            )
            self.breakers[provider] = ProviderBreaker(
                provider,
                store,
                fail_max=fail_max,
                reset_seconds=reset_seconds,
                probe_seconds=probe_seconds,
                metrics=metrics,
            )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        metrics: GatewayMetrics | None = None,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        namespace: str | None = None,
    ) -> BreakerBoard:
        """The board for these settings (blocking: it talks to Redis once per provider)."""
        return cls(
            providers,
            redis_url=settings.redis_url,
            fail_max=settings.breaker_fail_max,
            reset_seconds=settings.breaker_reset_seconds,
            # A probe cannot outlive one logical call; a crashed prober's claim expires then.
            probe_seconds=settings.provider_deadline_seconds,
            namespace=namespace or settings.breaker_namespace,
            metrics=metrics,
        )

    def __getitem__(self, provider: str) -> ProviderBreaker:
        return self.breakers[provider]

    def get(self, provider: str) -> ProviderBreaker | None:
        """The provider's breaker, or None if the board has none for it."""
        return self.breakers.get(provider)

    @property
    def degraded(self) -> bool:
        """True when Redis is configured but some breaker runs on in-process state."""
        return any(b.store.degraded for b in self.breakers.values())

    def force(self, provider: str, action: Action) -> dict[str, Any]:
        """Apply an operator action (open, close, reset) to one provider's circuit."""
        return self.breakers[provider].force(action)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every provider's snapshot."""
        return {name: breaker.snapshot() for name, breaker in self.breakers.items()}

    def close(self) -> None:
        """Dispose of the sync Redis clients."""
        for breaker in self.breakers.values():
            breaker.store.close()

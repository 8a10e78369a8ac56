"""What the breakers share through redis.asyncio: one hash per provider and a single-probe gate."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pybreaker
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

logger = logging.getLogger("filegate.breakers")

REDIS_TIMEOUT_SECONDS = 0.5
RECONNECT_SECONDS = 5.0
# A closed state read from Redis is trusted this long; any other is read again every time.
CLOSED_CACHE_SECONDS = 1.0
# Deletes the probe gate only if it still holds this caller's token.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end"


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


class BreakerStore:
    """The breakers' Redis: each wait bounded by the socket timeout, a whole operation by twice
    that; after a failure it is left alone for `reconnect_seconds` (degraded, state in process)."""

    def __init__(
        self,
        namespace: str,
        redis_url: str | None = None,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        reconnect_seconds: float = RECONNECT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace, self.timeout = namespace, timeout
        self.reconnect_seconds = reconnect_seconds
        self._clock = clock  # what the reconnect wait is measured on
        self.client = None if redis_url is None else redis_client(redis_url, timeout=timeout)
        self.degraded = False
        self._retry_at = 0.0

    @property
    def kind(self) -> Literal["redis", "memory"]:
        """Where the state lives right now."""
        return "redis" if self.client is not None and not self.degraded else "memory"

    async def call(self, op: Callable[[Redis], Awaitable[Any]]) -> Any:
        """`op`'s result, or None (and degraded) when Redis fails or is being left alone."""
        if self.client is None or (self.degraded and self._clock() < self._retry_at):
            return None
        try:
            async with asyncio.timeout(2 * self.timeout):
                result = await op(self.client)
        except Exception as exc:
            self._retry_at = self._clock() + self.reconnect_seconds
            if not self.degraded:
                self.degraded = True
                logger.warning(
                    "breakers: Redis failed (%s: %s); using in-process state, retrying every %gs",
                    type(exc).__name__,
                    exc,
                    self.reconnect_seconds,
                )
            return None
        if self.degraded:
            self.degraded = False
            logger.warning("breakers: Redis is back; breaker state is shared again")
        return result

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


@dataclass(frozen=True)
class Shared:
    """What every process must agree on about one circuit."""

    state: str = pybreaker.STATE_CLOSED
    opened_at: float | None = None  # epoch seconds of the last opening
    failures: int = 0  # the consecutive provider faults that opened it
    forced: str | None = None  # the operator action behind the state, if one is


class SharedCircuit:
    """Keeps one pybreaker in step with its shared state; holds the single-probe gate."""

    def __init__(self, store: BreakerStore, provider: str) -> None:
        self.store, self.key = store, f"{store.namespace}:{provider}"
        self.probe_key = f"{self.key}:probe"
        self.view = Shared()  # what this process last read or made
        self.adopting = False  # pybreaker is being moved to a state read from Redis
        self._dirty = False
        self._trusted_until = 0.0
        self._changes = 0  # local transitions and finished writes: a read overlapping one is stale
        self._writing = 0
        self._gate: tuple[str, float] | None = None  # in-process probe: (token, monotonic expiry)

    def changed(self, view: Shared) -> None:
        """A transition made here: published by the next push, and no read in flight undoes it."""
        self.view, self._changes, self._dirty = view, self._changes + 1, True

    async def sync(self, breaker: pybreaker.CircuitBreaker, *, fresh: bool = False) -> None:
        """Read the shared state (a closed one is trusted for a while) and move `breaker` to it."""
        trusted = breaker.current_state == "closed" and time.monotonic() < self._trusted_until
        if trusted and not fresh:
            return
        changes = self._changes
        raw = await self.store.call(lambda client: client.hgetall(self.key))
        if raw is None or changes != self._changes or self._writing:
            return
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        opened, forced = fields.get("opened_at"), fields.get("forced") or None
        self.view = Shared(
            fields.get("state", "closed"),
            float(opened) if opened else None,
            int(fields.get("failures") or 0),
            forced,
        )
        self._trusted_until = time.monotonic() + CLOSED_CACHE_SECONDS
        moves = {"open": breaker.open, "half-open": breaker.half_open, "closed": breaker.close}
        if self.view.state != breaker.current_state and self.view.state in moves:
            self.adopting = True
            try:
                moves[self.view.state]()
            finally:
                self.adopting = False

    async def push(self) -> None:
        """Publish the transitions made here since the last push (dropped while Redis is down)."""
        if not self._dirty:
            return
        view, self._dirty = self.view, False
        opened = "" if view.opened_at is None else repr(view.opened_at)
        fields: list[str | int] = ["state", view.state, "opened_at", opened]
        fields += ["failures", view.failures, "forced", view.forced or ""]
        self._writing += 1
        try:
            await self.store.call(lambda client: client.hset(self.key, items=fields))
        finally:
            self._writing, self._changes = self._writing - 1, self._changes + 1

    async def claim_probe(self, token: str, ttl: float) -> bool:
        """Take the single half-open probe for `ttl` seconds unless someone holds it."""
        millis = max(1, int(ttl * 1000))
        taken = await self.store.call(
            lambda client: client.set(self.probe_key, token, nx=True, px=millis)
        )
        if self.store.kind == "redis":  # answered: None means someone else holds it
            return bool(taken)
        if self._gate is not None and time.monotonic() < self._gate[1]:
            return False
        self._gate = (token, time.monotonic() + ttl)
        return True

    async def release_probe(self, token: str | None = None) -> None:
        """Give up the probe held by `token` (whoever holds it when token is None)."""
        if token is None or (self._gate is not None and self._gate[0] == token):
            self._gate = None
        if token is None:
            await self.store.call(lambda client: client.delete(self.probe_key))
        else:
            await self.store.call(lambda client: client.eval(_RELEASE, 1, self.probe_key, token))

    async def probe_left(self) -> float:
        """Seconds until the probe claim expires (0 when no probe is in flight)."""
        millis = await self.store.call(lambda client: client.pttl(self.probe_key))
        if millis is not None:
            return max(0, int(millis)) / 1000
        return 0.0 if self._gate is None else max(0.0, self._gate[1] - time.monotonic())

"""Per-key request rate limiting (GCRA) shared through Redis, in-process without it."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("filegate.ratelimit")

WINDOW_SECONDS = 60.0
_WINDOW_US = 60_000_000

Clock = Callable[[], float]


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one hit: whether it is allowed and the state of the key's budget."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the bucket is full again (the full burst is available)
    retry_after: float | None = None  # until a request would be allowed; only when refused


class RateLimiter(ABC):
    """A per-key limiter of requests per minute with a burst of the full limit."""

    @abstractmethod
    async def hit(self, key: str, *, limit_per_minute: int) -> RateDecision:
        """Count one request against `key` and say whether it is allowed."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the limiter holds."""

    @property
    def degraded(self) -> bool:
        """Whether the limiter runs without its shared backend (for readiness)."""
        return False


def _check_limit(limit_per_minute: int) -> None:
    """Reject limits the algorithm cannot express."""
    if limit_per_minute < 1:
        raise ValueError("limit_per_minute must be at least 1")


class MemoryRateLimiter(RateLimiter):
    """GCRA in process memory, keyed by string, bounded by LRU and stale-key sweeps."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = 100_000,
        sweep_interval: float = 60.0,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        self._sweep_interval = sweep_interval
        self._tat: OrderedDict[str, float] = OrderedDict()  # key -> theoretical arrival time
        self._last_sweep = clock()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The number of keys currently tracked."""
        return len(self._tat)

    async def hit(self, key: str, *, limit_per_minute: int) -> RateDecision:
        """Count one request against `key` and say whether it is allowed."""
        _check_limit(limit_per_minute)
        interval = WINDOW_SECONDS / limit_per_minute
        with self._lock:
            now = self._clock()
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)
            stored = self._tat.get(key)
            tat = stored if stored is not None and stored > now else now
            new_tat = tat + interval
            allow_at = new_tat - WINDOW_SECONDS
            if now < allow_at:
                if stored is not None:
                    self._tat.move_to_end(key)
                return RateDecision(
                    allowed=False,
                    limit=limit_per_minute,
                    remaining=0,
                    reset_seconds=tat - now,
                    retry_after=allow_at - now,
                )
            self._tat[key] = new_tat
            self._tat.move_to_end(key)
            while len(self._tat) > self._max_keys:
                self._tat.popitem(last=False)
            return RateDecision(
                allowed=True,
                limit=limit_per_minute,
                remaining=_remaining(now - allow_at, interval, limit_per_minute),
                reset_seconds=new_tat - now,
            )

    def _sweep(self, now: float) -> None:
        """Forget keys whose bucket is full again: they behave exactly like unknown keys."""
        stale = [key for key, tat in self._tat.items() if tat <= now]
        for key in stale:
            del self._tat[key]
        self._last_sweep = now

    async def aclose(self) -> None:
        """Forget all keys."""
        with self._lock:
            self._tat.clear()


def _remaining(slack: float, interval: float, limit: int) -> int:
    """Whole requests still allowed right now, tolerant of float noise."""
    return max(0, min(limit - 1, math.floor(slack / interval + 1e-9)))


# KEYS[1]: the key; ARGV[1]: emission interval in microseconds; ARGV[2]: the limit (burst).
# Returns {allowed, remaining, reset_us, retry_after_us}; the time is the server's TIME.
_GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = now
local stored = tonumber(redis.call('GET', KEYS[1]) or '')
if stored and stored > now then tat = stored end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local remaining = math.floor((now - allow_at) / interval)
if remaining > burst - 1 then remaining = burst - 1 end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, remaining, new_tat - now, 0}
"""


class RedisRateLimiter(RateLimiter):
    """GCRA in one atomic Lua script on Redis server time, shared by all processes."""

    def __init__(self, redis_client: Redis, prefix: str = "filegate:rl:") -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._script = redis_client.register_script(_GCRA_LUA)

    @property
    def prefix(self) -> str:
        """The prefix of every Redis key this limiter writes."""
        return self._prefix

    async def hit(self, key: str, *, limit_per_minute: int) -> RateDecision:
        """Count one request against `key` atomically in Redis (EVALSHA, loading on a miss)."""
        _check_limit(limit_per_minute)
        interval_us = max(1, round(_WINDOW_US / limit_per_minute))
        raw = await self._script(keys=[self._prefix + key], args=[interval_us, limit_per_minute])
        allowed, remaining, reset_us, retry_us = (int(v) for v in raw)
        return RateDecision(
            allowed=bool(allowed),
            limit=limit_per_minute,
            remaining=remaining,
            reset_seconds=reset_us / 1_000_000,
            retry_after=None if allowed else retry_us / 1_000_000,
        )

    async def aclose(self) -> None:
        """Nothing to release: the Redis client belongs to the caller."""


_REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class FallbackRateLimiter(RateLimiter):
    """Redis first; in memory (and `degraded`) while Redis fails, retried after a cool-down."""

    def __init__(
        self,
        primary: RedisRateLimiter,
        fallback: MemoryRateLimiter,
        *,
        cooldown: float = 5.0,
        timeout: float | None = 0.5,
        clock: Clock = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._cooldown = cooldown
        self._timeout = timeout
        self._clock = clock
        self._retry_at: float | None = None  # set while degraded: when to try Redis again

    @property
    def degraded(self) -> bool:
        """True while Redis is failing and decisions are made in this process only."""
        return self._retry_at is not None

    async def hit(self, key: str, *, limit_per_minute: int) -> RateDecision:
        """Count one request against `key` in Redis, or in memory when Redis is unavailable."""
        _check_limit(limit_per_minute)
        if self._retry_at is not None and self._clock() < self._retry_at:
            return await self._fallback.hit(key, limit_per_minute=limit_per_minute)
        try:
            async with asyncio.timeout(self._timeout):
                decision = await self._primary.hit(key, limit_per_minute=limit_per_minute)
        except _REDIS_DOWN_ERRORS as exc:
            if self._retry_at is None:
                log.warning("rate limiter: Redis unavailable, limiting in memory: %r", exc)
            self._retry_at = self._clock() + self._cooldown
            return await self._fallback.hit(key, limit_per_minute=limit_per_minute)
        if self._retry_at is not None:
            log.warning("rate limiter: Redis is back, limiting through Redis again")
            self._retry_at = None
        return decision

    async def aclose(self) -> None:
        """Close both limiters (the Redis client itself belongs to the caller)."""
        await self._primary.aclose()
        await self._fallback.aclose()


def build_rate_limiter(redis_client: Redis | None, *, prefix: str = "filegate:rl:") -> RateLimiter:
    """Redis with an in-memory fallback when a client is given, else in memory only."""
    if redis_client is None:
        return MemoryRateLimiter()
    return FallbackRateLimiter(RedisRateLimiter(redis_client, prefix=prefix), MemoryRateLimiter())


def _ceil_seconds(value: float) -> int:
    """Whole seconds rounding up, ignoring sub-millisecond float noise."""
    return max(0, math.ceil(round(value, 3)))


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """The IETF draft RateLimit-* headers, plus Retry-After when the request is refused."""
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(max(0, decision.remaining)),
        "RateLimit-Reset": str(_ceil_seconds(decision.reset_seconds)),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, _ceil_seconds(decision.retry_after or 0.0)))
    return headers

"""Rate limiting: GCRA in memory and in Redis, the shared budget, the fallback and the headers."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from app.core.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
    rate_limit_headers,
)
from tests.support.clock import FakeClock
from tests.support.proxy import TcpProxy

REDIS_URL = os.environ.get("FILEGATE_TEST_REDIS_URL")
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
ROOT = Path(__file__).resolve().parents[2]

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="FILEGATE_TEST_REDIS_URL is not set")


async def hits(limiter: RateLimiter, key: str, n: int, limit: int) -> list[RateDecision]:
    """`n` hits one after another."""
    return [await limiter.hit(key, limit_per_minute=limit) for _ in range(n)]


# --- in memory ---------------------------------------------------------------------------------


async def test_memory_allows_the_limit_then_refuses() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    decisions = await hits(limiter, "k", 5, 5)
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.retry_after is None for d in decisions)
    assert [d.limit for d in decisions] == [5] * 5
    assert decisions[0].reset_seconds == pytest.approx(12)
    assert decisions[-1].reset_seconds == pytest.approx(60)

    refused = await limiter.hit("k", limit_per_minute=5)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(60 / 5)
    assert refused.reset_seconds == pytest.approx(60)
    # A refusal spends nothing.
    again = await limiter.hit("k", limit_per_minute=5)
    assert again.retry_after == pytest.approx(12)


async def test_memory_tokens_come_back_over_time() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    await hits(limiter, "k", 5, 5)
    clock.advance(6)
    refused = await limiter.hit("k", limit_per_minute=5)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6)

    clock.advance(6)
    one = await limiter.hit("k", limit_per_minute=5)
    assert one.allowed and one.remaining == 0
    assert not (await limiter.hit("k", limit_per_minute=5)).allowed

    clock.advance(60)  # the bucket is full again: the whole burst is back
    decisions = await hits(limiter, "k", 6, 5)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[0].remaining == 4


async def test_memory_keys_are_independent() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    await hits(limiter, "a", 3, 3)
    assert not (await limiter.hit("a", limit_per_minute=3)).allowed
    b = await limiter.hit("b", limit_per_minute=3)
    assert b.allowed and b.remaining == 2


async def test_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=3, sweep_interval=10)
    for i in range(10):
        await limiter.hit(f"k{i}", limit_per_minute=60)
    assert len(limiter) == 3  # least recently used keys are evicted

    limiter = MemoryRateLimiter(clock=clock, sweep_interval=10)
    await limiter.hit("idle", limit_per_minute=60)  # full again after 1 s
    await hits(limiter, "busy", 60, 60)  # full again after 60 s
    clock.advance(11)
    await limiter.hit("other", limit_per_minute=60)  # triggers the sweep
    assert len(limiter) == 2  # "idle" was stale and is gone; "busy" still owes time
    assert (await limiter.hit("busy", limit_per_minute=60)).remaining == 10  # its state was kept
    await limiter.aclose()
    assert len(limiter) == 0


async def test_memory_rejects_nonpositive_limits() -> None:
    limiter = MemoryRateLimiter()
    with pytest.raises(ValueError):
        await limiter.hit("k", limit_per_minute=0)


async def test_memory_concurrent_hits_allow_exactly_the_limit() -> None:
    limiter = MemoryRateLimiter()
    decisions = await asyncio.gather(*(limiter.hit("k", limit_per_minute=20) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 20


# --- Redis -------------------------------------------------------------------------------------


def redis_client(url: str | None = None, **kwargs: Any) -> Redis:
    assert url or REDIS_URL
    return Redis.from_url(url or REDIS_URL or "", **kwargs)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    value = f"filegate:test:rl:{uuid.uuid4().hex}:"
    yield value
    if REDIS_URL:
        client = redis_client()
        try:
            keys = [key async for key in client.scan_iter(match=f"{value}*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Redis]]:
    """A factory of Redis clients that are all closed afterwards."""
    made: list[Redis] = []

    def make(url: str | None = None, **kwargs: Any) -> Redis:
        client = redis_client(url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
async def redis(clients: Callable[..., Redis]) -> Redis:
    if not REDIS_URL:
        pytest.skip("FILEGATE_TEST_REDIS_URL is not set")
    return clients()


@needs_redis
async def test_redis_allows_the_limit_then_refuses(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, prefix=prefix)
    decisions = await hits(limiter, "k", 5, 5)
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert decisions[0].reset_seconds == pytest.approx(12, abs=0.5)
    assert decisions[-1].reset_seconds == pytest.approx(60, abs=0.5)

    refused = await limiter.hit("k", limit_per_minute=5)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(60 / 5, abs=0.5)
    assert refused.reset_seconds == pytest.approx(60, abs=0.5)


@needs_redis
async def test_redis_tokens_come_back_over_time(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, prefix=prefix)
    decisions = await asyncio.gather(*(limiter.hit("k", limit_per_minute=60) for _ in range(60)))
    assert all(d.allowed for d in decisions)
    refused = await limiter.hit("k", limit_per_minute=60)
    assert not refused.allowed
    assert refused.retry_after is not None and 0.5 < refused.retry_after <= 1.0

    await asyncio.sleep(1.1)
    back = await limiter.hit("k", limit_per_minute=60)
    assert back.allowed and back.remaining == 0
    assert not (await limiter.hit("k", limit_per_minute=60)).allowed


@needs_redis
async def test_redis_keys_are_independent(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, prefix=prefix)
    await hits(limiter, "a", 3, 3)
    assert not (await limiter.hit("a", limit_per_minute=3)).allowed
    b = await limiter.hit("b", limit_per_minute=3)
    assert b.allowed and b.remaining == 2
    other_prefix = RedisRateLimiter(redis, prefix=prefix + "other:")
    assert (await other_prefix.hit("a", limit_per_minute=3)).allowed


@needs_redis
async def test_two_instances_share_one_budget(clients: Callable[..., Redis], prefix: str) -> None:
    first = RedisRateLimiter(clients(), prefix=prefix)
    second = RedisRateLimiter(clients(), prefix=prefix)
    assert all(d.allowed for d in await hits(first, "shared", 5, 10))
    tail = await hits(second, "shared", 5, 10)
    assert all(d.allowed for d in tail)
    assert tail[-1].remaining == 0
    assert not (await first.hit("shared", limit_per_minute=10)).allowed
    assert not (await second.hit("shared", limit_per_minute=10)).allowed


@needs_redis
async def test_concurrent_hits_allow_exactly_the_limit(
    clients: Callable[..., Redis], prefix: str
) -> None:
    limiters = [RedisRateLimiter(clients(), prefix=prefix) for _ in range(5)]
    decisions = await asyncio.gather(
        *(limiters[i % 5].hit("hot", limit_per_minute=20) for i in range(50))
    )
    assert sum(d.allowed for d in decisions) == 20
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(20))


_WORKER = """
import asyncio, sys
from redis.asyncio import Redis
from app.core.ratelimit import RedisRateLimiter

async def main() -> None:
    url, prefix, n, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    client = Redis.from_url(url)
    limiter = RedisRateLimiter(client, prefix=prefix)
    hits = [limiter.hit("proc", limit_per_minute=limit) for _ in range(n)]
    decisions = await asyncio.gather(*hits)
    await client.aclose()
    print(sum(d.allowed for d in decisions))

asyncio.run(main())
"""


@needs_redis
@pytest.mark.slow
async def test_processes_share_one_budget(prefix: str) -> None:
    assert REDIS_URL
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            REDIS_URL,
            prefix,
            "10",
            "10",  # one token every 6 s: start-up skew cannot refill the bucket
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    assert sum(int(out) for out, _ in outputs) == 10


@needs_redis
async def test_idle_keys_get_a_ttl_and_expire(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, prefix=prefix)
    await hits(limiter, "k", 3, 60)
    ttl = await redis.pttl(f"{prefix}k")
    assert 2000 < ttl <= 3000  # until the bucket is full again

    await limiter.hit("fast", limit_per_minute=600)  # full again after 0.1 s
    assert 0 < await redis.pttl(f"{prefix}fast") <= 100
    await asyncio.sleep(0.25)
    assert await redis.exists(f"{prefix}fast") == 0


@needs_redis
async def test_redis_reloads_a_missing_script(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, prefix=prefix)
    limiter._script.sha = "0" * 40  # as if the server lost its script cache
    assert (await limiter.hit("k", limit_per_minute=5)).remaining == 4
    assert (await limiter.hit("k", limit_per_minute=5)).remaining == 3


# --- fallback ----------------------------------------------------------------------------------


async def test_fallback_limits_in_memory_when_redis_is_down(
    clients: Callable[..., Redis],
) -> None:
    clock = FakeClock()
    dead = clients(DEAD_REDIS_URL, socket_connect_timeout=0.2)
    limiter = FallbackRateLimiter(
        RedisRateLimiter(dead), MemoryRateLimiter(clock=clock), clock=clock
    )
    assert not limiter.degraded
    started = time.monotonic()
    decisions = await hits(limiter, "k", 4, 3)
    assert time.monotonic() - started < 2
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].retry_after == pytest.approx(20)
    assert limiter.degraded

    clock.advance(10)  # past the cool-down: Redis is tried again, still down, no exception
    assert (await limiter.hit("other", limit_per_minute=3)).allowed
    assert limiter.degraded
    await limiter.aclose()


async def test_fallback_times_out_a_hanging_redis(clients: Callable[..., Redis]) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept the connection and never answer
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        hanging = clients(f"redis://127.0.0.1:{port}/0", socket_timeout=30)
        limiter = FallbackRateLimiter(
            RedisRateLimiter(hanging), MemoryRateLimiter(), timeout=0.2, cooldown=60
        )
        started = time.monotonic()
        decision = await limiter.hit("k", limit_per_minute=5)
        assert time.monotonic() - started < 1
        assert decision.allowed and decision.remaining == 4
        assert limiter.degraded
        await hanging.aclose()
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    if not REDIS_URL:
        pytest.skip("FILEGATE_TEST_REDIS_URL is not set")
    url = urlsplit(REDIS_URL)
    server = TcpProxy(url.hostname or "127.0.0.1", url.port or 6379)
    server.start()
    yield server
    server.stop()


@needs_redis
async def test_fallback_recovers_when_redis_comes_back(
    proxy: TcpProxy,
    clients: Callable[..., Redis],
    redis: Redis,
    prefix: str,
) -> None:
    assert REDIS_URL
    db = urlsplit(REDIS_URL).path.lstrip("/") or "0"
    through_proxy = clients(
        f"redis://127.0.0.1:{proxy.port}/{db}", socket_connect_timeout=0.2, socket_timeout=0.5
    )
    clock = FakeClock()
    limiter = FallbackRateLimiter(
        RedisRateLimiter(through_proxy, prefix=prefix),
        MemoryRateLimiter(clock=clock),
        cooldown=5,
        clock=clock,
    )
    assert (await limiter.hit("k", limit_per_minute=10)).remaining == 9
    assert not limiter.degraded
    assert await redis.exists(f"{prefix}k") == 1

    proxy.stop()
    started = time.monotonic()
    down = await limiter.hit("k", limit_per_minute=10)
    assert time.monotonic() - started < 2  # bounded by the limiter's timeout
    assert down.allowed and down.remaining == 9  # the in-memory budget
    assert limiter.degraded

    proxy.start()  # Redis is reachable again, on the same port
    await limiter.hit("k", limit_per_minute=10)
    assert limiter.degraded  # still within the cool-down: Redis is not tried yet
    clock.advance(5)
    back = await limiter.hit("k", limit_per_minute=10)
    assert not limiter.degraded
    assert back.remaining == 8  # the shared budget in Redis again
    await limiter.aclose()


async def test_build_rate_limiter(clients: Callable[..., Redis]) -> None:
    assert isinstance(build_rate_limiter(None), MemoryRateLimiter)
    limiter = build_rate_limiter(clients(DEAD_REDIS_URL, socket_connect_timeout=0.2))
    assert isinstance(limiter, FallbackRateLimiter)
    assert (await limiter.hit("k", limit_per_minute=1)).allowed
    assert limiter.degraded
    assert not MemoryRateLimiter().degraded
    await limiter.aclose()


# --- headers -----------------------------------------------------------------------------------


def test_headers_when_allowed() -> None:
    decision = RateDecision(allowed=True, limit=60, remaining=59, reset_seconds=1.0)
    assert rate_limit_headers(decision) == {
        "RateLimit-Limit": "60",
        "RateLimit-Remaining": "59",
        "RateLimit-Reset": "1",
    }
    partial = RateDecision(allowed=True, limit=5, remaining=0, reset_seconds=59.2)
    assert rate_limit_headers(partial)["RateLimit-Reset"] == "60"


def test_headers_when_refused() -> None:
    decision = RateDecision(
        allowed=False, limit=5, remaining=0, reset_seconds=59.99, retry_after=11.2
    )
    assert rate_limit_headers(decision) == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
        "Retry-After": "12",
    }
    tiny = RateDecision(allowed=False, limit=600, remaining=0, reset_seconds=0.05, retry_after=0.01)
    assert rate_limit_headers(tiny)["Retry-After"] == "1"
    noisy = RateDecision(
        allowed=False, limit=5, remaining=0, reset_seconds=60.0000001, retry_after=12.0000001
    )
    assert rate_limit_headers(noisy)["Retry-After"] == "12"
    assert rate_limit_headers(noisy)["RateLimit-Reset"] == "60"

"""Retry policy units, and retries against the sandbox: safe calls only, Retry-After, deadline."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.core.errors import (
    CircuitOpen,
    DeadlineExceeded,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from app.providers import MoonshotAdapter, ZaiAdapter
from app.providers.base import ProviderAdapter
from app.providers.breaker_board import BreakerBoard
from app.providers.pipeline import ProviderConfig
from app.providers.retry import SAFE_OPERATIONS, RetryPolicy, is_retryable
from tests.providers import Recorder, control, fault
from tests.support.bodies import FileBody

PROVIDERS = {"moonshot": MoonshotAdapter, "zai": ZaiAdapter}
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, deadline=10)


def unavailable(**kw: Any) -> ProviderUnavailable:
    return ProviderUnavailable("down", provider="moonshot", **kw)


# --- the backoff helper ------------------------------------------------------------------


def backoff(attempt: int, *, rng: Callable[[], float], retry_after: float | None = None) -> float:
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0, rng=rng)
    return policy.backoff(attempt, retry_after=retry_after)


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff(n, rng=lambda: 1.0) for n in range(1, 8)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_backoff_is_full_jitter_within_bounds() -> None:
    rng = random.Random(7).random
    for attempt in range(1, 7):
        ceiling = min(5.0, 0.2 * 2 ** (attempt - 1))
        samples = [backoff(attempt, rng=rng) for _ in range(300)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # Full jitter spreads over the whole [0, ceiling) range rather than clustering.
        assert min(samples) < 0.1 * ceiling and max(samples) > 0.9 * ceiling
        assert len(set(samples)) > 250
    assert backoff(3, rng=lambda: 0.0) == 0.0


def test_retry_after_is_a_floor_not_capped() -> None:
    assert backoff(1, retry_after=1.5, rng=lambda: 0.0) == 1.5
    assert backoff(1, retry_after=1.5, rng=lambda: 1.0) == 1.5
    # A smaller hint does not shorten the jittered delay.
    assert backoff(5, retry_after=0.1, rng=lambda: 1.0) == pytest.approx(3.2)
    # The provider's hint wins over our cap.
    assert backoff(1, retry_after=30, rng=lambda: 0.5) == 30


def test_backoff_survives_extreme_attempts() -> None:
    assert backoff(10_000, rng=lambda: 1.0) == 5.0
    assert backoff(0, rng=lambda: 1.0) == 0.2
    assert backoff(-3, rng=lambda: 1.0) == 0.2


# --- the retry loop's decisions, on an injected clock ------------------------------------


@dataclass
class FakeClock:
    """A clock that moves only when the retry loop sleeps."""

    now: float = 100.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def run_retrying(
    operation: str,
    errors: list[BaseException],
    *,
    remaining: float | None = None,
    circuit_closed: bool = True,
    clock: FakeClock | None = None,
) -> tuple[int, BaseException | None, FakeClock]:
    """Tries made, the error that escaped (None on success) and the clock, per the policy."""
    clock = clock or FakeClock()
    policy = RetryPolicy(
        max_attempts=3, base_delay=0.2, max_delay=5.0, rng=lambda: 0.5, sleep=clock.sleep
    )
    deadline = None if remaining is None else clock.now + remaining
    tries = 0

    async def attempt() -> str:
        nonlocal tries
        tries += 1
        if tries <= len(errors):
            raise errors[tries - 1]
        return "ok"

    async def may_retry() -> bool:
        return circuit_closed

    retrier = policy.retrying(
        operation, deadline=deadline, clock=clock, may_retry=may_retry, before_sleep=lambda s: None
    )
    try:
        await retrier(attempt)
    except BaseException as exc:
        return tries, exc, clock
    return tries, None, clock


@pytest.mark.parametrize(
    ("operation", "error", "remaining", "retry"),
    [
        ("retrieve", unavailable(), None, True),
        ("list", unavailable(), 10.0, True),
        ("content", ProviderRateLimited("slow", provider="moonshot"), None, True),
        ("delete", unavailable(code="provider_timeout"), None, True),
        ("upload", unavailable(), None, False),  # never repeat an upload
        ("retrieve", ProviderNotFound("gone", provider="moonshot"), None, False),
        ("retrieve", ProviderRejected("no", provider="moonshot"), None, False),
        ("retrieve", CircuitOpen("paused", provider="moonshot"), None, False),
        ("retrieve", DeadlineExceeded("late", provider="moonshot"), None, False),
        ("retrieve", RuntimeError("bug"), None, False),
        ("retrieve", unavailable(), 0.0, False),  # no budget left
        ("retrieve", unavailable(retry_after=5), 4.0, False),  # hint beyond the deadline
        ("retrieve", unavailable(retry_after=5), 6.0, True),
    ],
)
async def test_one_failure_is_retried_or_raised(
    operation: str, error: BaseException, remaining: float | None, retry: bool
) -> None:
    tries, escaped, clock = await run_retrying(operation, [error], remaining=remaining)
    assert (tries, escaped) == ((2, None) if retry else (1, error))
    if retry and isinstance(error, ProviderError) and error.retry_after:
        assert clock.slept == [error.retry_after]


async def test_attempts_are_bounded() -> None:
    errors: list[BaseException] = [unavailable(), unavailable(), unavailable()]
    tries, escaped, clock = await run_retrying("retrieve", errors)
    assert (tries, escaped) == (3, errors[2])
    assert clock.slept == pytest.approx([0.1, 0.2])  # half of 0.2 and 0.4 with rng 0.5


async def test_retry_after_is_honoured_on_the_clock() -> None:
    errors: list[BaseException] = [ProviderRateLimited("slow", provider="zai", retry_after=3)]
    tries, escaped, clock = await run_retrying("list", errors, remaining=10.0)
    assert (tries, escaped, clock.slept, clock.now) == (2, None, [3], 103.0)


async def test_deadline_stops_before_a_wait_that_would_reach_it() -> None:
    errors: list[BaseException] = [
        unavailable(retry_after=2),
        unavailable(retry_after=2),
        unavailable(),
    ]
    tries, escaped, clock = await run_retrying("list", errors, remaining=3.0)
    # 2 s fits into 3 s; after it only 1 s is left, so the second 2 s wait is not taken.
    assert (tries, escaped, clock.slept) == (2, errors[1], [2])


async def test_open_circuit_stops_retries() -> None:
    error = unavailable()
    tries, escaped, clock = await run_retrying("retrieve", [error], circuit_closed=False)
    assert (tries, escaped, clock.slept) == (1, error, [])


def test_is_retryable() -> None:
    assert is_retryable(unavailable())
    assert is_retryable(ProviderRateLimited("slow", provider="zai"))
    assert not is_retryable(ProviderNotFound("gone", provider="zai"))
    assert not is_retryable(CircuitOpen("paused", provider="zai"))


def test_policy_from_settings() -> None:
    settings = Settings(
        retry_max_attempts=4, retry_base_delay=0.5, retry_max_delay=2, provider_deadline_seconds=9
    )
    policy = RetryPolicy.from_settings(settings)
    assert (policy.max_attempts, policy.base_delay, policy.max_delay, policy.deadline) == (
        4,
        0.5,
        2,
        9,
    )
    assert policy.operations == SAFE_OPERATIONS == {"retrieve", "list", "content", "delete"}
    assert policy.attempts_for("upload") == 1 and policy.attempts_for("content") == 4
    defaults = Settings()
    assert (defaults.retry_max_attempts, defaults.retry_base_delay) == (3, 0.2)
    assert (defaults.retry_max_delay, defaults.provider_deadline_seconds) == (5.0, 60)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_delay": -1}, {"max_delay": -1}, {"deadline": 0}]
)
def test_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# --- retries against the sandbox ---------------------------------------------------------


@dataclass
class RetryLog:
    """A RetryObserver keeping (provider, operation) per retry."""

    retries: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, provider: str, operation: str) -> None:
        self.retries.append((provider, operation))


@pytest.fixture
def sandbox(sandbox_server: str) -> Iterator[str]:
    for provider in PROVIDERS:
        control(sandbox_server, provider, "_reset")
    yield sandbox_server
    for provider in PROVIDERS:
        control(sandbox_server, provider, "_faults", _delete=True)


def calls(sandbox: str, provider: str, operation: str) -> int:
    return int(control(sandbox, provider, "_stats").json()["calls"][operation])


Factory = Callable[..., ProviderAdapter]


@pytest.fixture
async def make(sandbox: str, moonshot_base_url: str, zai_base_url: str) -> AsyncIterator[Factory]:
    urls = {"moonshot": moonshot_base_url, "zai": zai_base_url}
    made: list[ProviderAdapter] = []

    def build(provider: str = "moonshot", **kwargs: Any) -> ProviderAdapter:
        cls = PROVIDERS[provider]
        adapter = cls(
            ProviderConfig(name=provider, base_url=urls[provider], api_key="sk-test-retry"),
            **kwargs,
        )
        made.append(adapter)
        return adapter

    yield build
    for adapter in made:
        await adapter.aclose()


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_transient_faults_are_retried_until_success(
    make: Factory, sandbox: str, provider: str
) -> None:
    log = RetryLog()
    adapter = make(provider, retry_policy=FAST, retry_observer=log)
    fault(sandbox, provider, status=503, count=2, operations=["list"])
    assert await adapter.list() == []
    assert calls(sandbox, provider, "list") == 3
    assert log.retries == [(provider, "list")] * 2


async def test_retrieve_is_observed_per_attempt(
    make: Factory, sandbox: str, tmp_path: Path
) -> None:
    recorder, log = Recorder(), RetryLog()
    adapter = make(retry_policy=FAST, observer=recorder, retry_observer=log)
    path = tmp_path / "a.txt"
    path.write_bytes(b"hello")
    uploaded = await adapter.upload(
        body=FileBody(path), filename="a.txt", purpose="file-extract", content_type="text/plain"
    )
    fault(sandbox, "moonshot", status=503, count=2, operations=["retrieve"])
    assert (await adapter.retrieve(uploaded.id)).id == uploaded.id
    assert calls(sandbox, "moonshot", "retrieve") == 3
    assert [out for _, op, out in recorder.outcomes if op == "retrieve"] == [
        "provider_unavailable",
        "provider_unavailable",
        "ok",
    ]
    assert log.retries == [("moonshot", "retrieve")] * 2


@pytest.mark.parametrize("provider", list(PROVIDERS))
async def test_upload_is_never_retried(
    make: Factory, sandbox: str, tmp_path: Path, provider: str
) -> None:
    log = RetryLog()
    adapter = make(provider, retry_policy=FAST, retry_observer=log)
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    fault(sandbox, provider, status=503, count=1, operations=["upload"])
    with pytest.raises(ProviderUnavailable):
        await adapter.upload(
            body=FileBody(path),
            filename="data.jsonl",
            purpose="batch",
            content_type="application/jsonl",
        )
    assert calls(sandbox, provider, "upload") == 1
    assert log.retries == []


async def test_rate_limit_retry_after_is_honoured(make: Factory, sandbox: str) -> None:
    adapter = make(retry_policy=FAST)
    fault(sandbox, "moonshot", status=429, retry_after=1, count=1, operations=["list"])
    started = time.monotonic()
    assert await adapter.list() == []
    assert time.monotonic() - started >= 1.0
    assert calls(sandbox, "moonshot", "list") == 2


async def test_retry_after_beyond_the_deadline_gives_up_at_once(
    make: Factory, sandbox: str
) -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, deadline=2)
    adapter = make(retry_policy=policy)
    fault(sandbox, "moonshot", status=429, retry_after=5, operations=["list"])
    started = time.monotonic()
    with pytest.raises(ProviderRateLimited) as caught:
        await adapter.list()
    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == 5
    assert calls(sandbox, "moonshot", "list") == 1


async def test_deadline_stops_retries(make: Factory, sandbox: str) -> None:
    policy = RetryPolicy(max_attempts=100, base_delay=0.1, max_delay=0.1, deadline=0.6)
    adapter = make(retry_policy=policy)
    fault(sandbox, "moonshot", status=503, operations=["list"])
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.list()
    assert time.monotonic() - started < 1.0
    assert caught.value.error_code in {"provider_unavailable", "provider_deadline"}
    assert 2 <= calls(sandbox, "moonshot", "list") < 100


async def test_deadline_cuts_a_hung_call(make: Factory, sandbox: str) -> None:
    recorder = Recorder()
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, deadline=0.4)
    adapter = make(retry_policy=policy, observer=recorder)
    fault(sandbox, "moonshot", hang=True, operations=["content"])
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.content("file-1")
    assert 0.35 <= time.monotonic() - started < 1.5
    assert isinstance(caught.value, DeadlineExceeded)
    assert caught.value.error_code == "provider_deadline"
    assert recorder.outcomes == [("moonshot", "content", "provider_deadline")]


async def test_no_policy_means_one_try(make: Factory, sandbox: str) -> None:
    adapter = make()
    fault(sandbox, "moonshot", status=503, count=1, operations=["list"])
    with pytest.raises(ProviderUnavailable):
        await adapter.list()
    assert calls(sandbox, "moonshot", "list") == 1


async def test_open_breaker_stops_retries(make: Factory, sandbox: str) -> None:
    board = BreakerBoard(("moonshot",), fail_max=2, reset_seconds=30)
    log = RetryLog()
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)
    adapter = make(retry_policy=policy, breaker=board["moonshot"], retry_observer=log)
    fault(sandbox, "moonshot", status=503, operations=["list"])
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.list()
    # The second failure opened the circuit: the last real error, not a fast failure.
    assert caught.value.error_code == "provider_unavailable"
    assert calls(sandbox, "moonshot", "list") == 2
    assert log.retries == [("moonshot", "list")]
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.list()
    assert isinstance(caught.value, CircuitOpen)
    assert caught.value.error_code == "provider_circuit_open"
    assert calls(sandbox, "moonshot", "list") == 2
    assert log.retries == [("moonshot", "list")]
    await board.aclose()

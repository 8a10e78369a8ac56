"""Bounded retries with full-jitter exponential backoff for provider calls safe to repeat.

tenacity runs the loop; this module decides what is worth another try, how long to wait
(its capped exponential with full jitter, floored at the provider's Retry-After) and when the
overall deadline leaves no room for one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tenacity import AsyncRetrying, RetryCallState
from tenacity.wait import wait_base, wait_exponential

from app.core.errors import (
    CircuitOpen,
    DeadlineExceeded,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from app.core.config import Settings

# Repeating these cannot create or lose anything; an upload might already have landed.
SAFE_OPERATIONS = frozenset({"retrieve", "list", "content", "delete"})


def is_retryable(error: BaseException | None) -> bool:
    """True for provider faults a later try may get past (5xx, 408, timeouts, 429)."""
    if not isinstance(error, ProviderUnavailable | ProviderRateLimited):
        return False
    # Unavailable, but a retry cannot help: the circuit is open or the budget is spent.
    return not isinstance(error, CircuitOpen | DeadlineExceeded)


class FullJitter(wait_base):
    """A uniform wait up to tenacity's capped exponential, floored at the error's Retry-After."""

    def __init__(
        self, *, base: float, cap: float, rng: Callable[[], float] = random.random
    ) -> None:
        self._ceiling = wait_exponential(multiplier=base, max=cap)
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        hint = error.retry_after if isinstance(error, ProviderError) else None
        delay = self._rng() * self._ceiling(retry_state)
        if hint is not None and hint > delay:
            # The provider's own hint wins over the cap: retrying sooner would be throttled again.
            delay = hint
        return max(0.0, delay)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one logical provider call, within one deadline."""

    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0
    deadline: float | None = 60.0
    upload_deadline: float | None = 600.0  # large files on slow links need far longer
    operations: frozenset[str] = SAFE_OPERATIONS
    rng: Callable[[], float] = field(default=random.random, compare=False, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(
        default=asyncio.sleep, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive (or None for no deadline)")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy configured by the retry_* and provider_deadline_seconds settings."""
        return cls(
            max_attempts=settings.retry_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            deadline=settings.provider_deadline_seconds,
            upload_deadline=settings.provider_upload_deadline_seconds,
        )

    def deadline_for(self, operation: str) -> float | None:
        """The overall budget of one logical call of `operation`."""
        return self.upload_deadline if operation == "upload" else self.deadline

    def attempts_for(self, operation: str) -> int:
        """Total tries allowed for `operation` (1 for anything not safe to repeat)."""
        return self.max_attempts if operation in self.operations else 1

    @property
    def wait(self) -> FullJitter:
        """The wait strategy between tries."""
        return FullJitter(base=self.base_delay, cap=self.max_delay, rng=self.rng)

    def backoff(self, attempt: int, *, retry_after: float | None = None) -> float:
        """The jittered wait after failed try `attempt` (1-based), floored at `retry_after`."""
        state = RetryCallState(AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = max(attempt, 1)
        delay = self.wait(state)
        return delay if retry_after is None else max(delay, retry_after)

    def retrying(
        self,
        operation: str,
        *,
        deadline: float | None,
        clock: Callable[[], float],
        may_retry: Callable[[], Awaitable[bool]],
        before_sleep: Callable[[RetryCallState], None],
    ) -> AsyncRetrying:
        """The retry loop for one logical call of `operation` that must end by `deadline`."""
        attempts = self.attempts_for(operation)

        async def worth_another_try(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or not outcome.failed or state.attempt_number >= attempts:
                return False
            return is_retryable(outcome.exception()) and await may_retry()

        def out_of_time(state: RetryCallState) -> bool:
            # A wait that reaches the deadline leaves no time for the try after it.
            return deadline is not None and state.upcoming_sleep >= deadline - clock()

        return AsyncRetrying(
            retry=worth_another_try,
            wait=self.wait,
            stop=out_of_time,
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )

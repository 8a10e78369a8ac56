"""Bounded retries with full-jitter exponential backoff for provider calls safe to repeat."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.core.errors import ProviderRateLimited, ProviderUnavailable

if TYPE_CHECKING:
    from app.core.config import Settings

# Repeating these cannot create or lose anything; an upload might already have landed.
SAFE_OPERATIONS = frozenset({"retrieve", "list", "content", "delete"})
# Unavailable, but a retry cannot help: the circuit is open or the budget is spent.
FINAL_CODES = frozenset({"provider_circuit_open", "provider_deadline"})
# 2**62 already exceeds any sane cap; a bound keeps huge attempt numbers from overflowing.
_MAX_EXPONENT = 62


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Full-jitter delay after failed try `attempt` (1-based), floored at `retry_after`."""
    exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
    ceiling = min(cap, base * float(2**exponent))
    delay = rng() * ceiling
    if retry_after is not None and retry_after > delay:
        # The provider's own hint wins over the cap: retrying sooner would be throttled again.
        delay = retry_after
    return max(0.0, delay)


def is_retryable(error: BaseException) -> bool:
    """True for provider faults a later try may get past (5xx, 408, timeouts, 429)."""
    if not isinstance(error, ProviderUnavailable | ProviderRateLimited):
        return False
    return error.error_code not in FINAL_CODES


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

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The jittered wait after failed try `attempt`."""
        return backoff_delay(
            attempt,
            base=self.base_delay,
            cap=self.max_delay,
            retry_after=retry_after,
            rng=self.rng,
        )

    def next_delay(
        self, operation: str, error: BaseException, attempt: int, remaining: float | None
    ) -> float | None:
        """Seconds to wait before another try, or None to give up and raise `error`."""
        if attempt >= self.attempts_for(operation) or not is_retryable(error):
            return None
        retry_after = getattr(error, "retry_after", None)
        delay = self.delay(attempt, retry_after if isinstance(retry_after, int | float) else None)
        if remaining is not None and delay >= remaining:
            return None
        return delay

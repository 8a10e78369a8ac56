"""The durable job queue as services see it: enqueue work, and errors that ask for a retry."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.repositories.jobs import JobRepository

PLACE = "place"
DELETE_COPY = "delete_copy"
CHECK_FILE = "check_file"
RECONCILE = "reconcile"
EXPIRE = "expire"
HEALTH_SWEEP = "health_sweep"
SWEEP_STORAGE = "sweep_storage"
KINDS = (PLACE, DELETE_COPY, CHECK_FILE, RECONCILE, EXPIRE, HEALTH_SWEEP, SWEEP_STORAGE)


class RetryLater(Exception):
    """Raised by a job handler when the work should be tried again after a backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def enqueue(
    *,
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
    delay_seconds: float = 0.0,
    max_attempts: int = 8,
) -> bool:
    """Add a job in the caller's unit of work; False when an equal active job already exists."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return await JobRepository(session).enqueue(
        kind=kind,
        payload=json.dumps(payload, sort_keys=True),
        dedupe_key=dedupe_key,
        run_after=utcnow() + timedelta(seconds=delay_seconds),
        max_attempts=max_attempts,
    )


async def expedite_placements(*, session: AsyncSession, provider: str) -> int:
    """Make every queued placement that may go to `provider` due now (its circuit closed)."""
    return await JobRepository(session).expedite(
        kind=PLACE, dedupe_patterns=[f"{PLACE}:%:{provider}", f"{PLACE}:%:auto"]
    )


def backoff_at(
    *, attempts: int, base: float, cap: float, retry_after: float | None, rng: random.Random
) -> datetime:
    """When to run again: full-jitter exponential backoff, never sooner than retry_after."""
    delay = rng.uniform(0, min(cap, base * (2 ** max(0, attempts - 1))))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return utcnow() + timedelta(seconds=delay)

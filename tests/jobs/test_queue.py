"""The queue's retry timing: full-jitter exponential, capped, never sooner than asked."""

from __future__ import annotations

from datetime import timedelta

from app.core.db import utcnow
from app.jobs.queue import backoff_at


def test_a_retry_waits_at_most_the_capped_exponential() -> None:
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (30, 5.0)):
        waits = []
        for _ in range(200):
            before = utcnow()
            at = backoff_at(attempts=attempts, base=1.0, cap=5.0, retry_after=None)
            waits.append((at - before).total_seconds())
        assert all(0 <= w <= ceiling + 0.05 for w in waits), (attempts, max(waits))
        assert len({round(w, 6) for w in waits}) > 100  # jittered, not one fixed delay


def test_a_retry_is_never_sooner_than_retry_after() -> None:
    before = utcnow()
    at = backoff_at(attempts=1, base=0.1, cap=0.2, retry_after=30.0)
    assert at - before >= timedelta(seconds=30)

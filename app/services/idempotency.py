"""Idempotency keys: the first request with a key runs; repeats replay its stored answer."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.errors import Conflict, InvalidRequest, Unprocessable
from app.core.leases import renewing
from app.models import IdempotencyKey
from app.repositories.idempotency import IdempotencyRepository

log = logging.getLogger("filegate.idempotency")
KEEP = timedelta(hours=24)
LEGACY_RUNNING = timedelta(minutes=15)  # claims made before leases: this old, their owner died
MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: Any


def request_digest(**fields: Any) -> str:
    """A stable digest of the parts of a request that decide its meaning."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(32 < ord(ch) < 127 for ch in key):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters.",
            param="Idempotency-Key",
        )
    return key


def _lapses_at(row: IdempotencyKey) -> datetime:
    return row.lease_until or row.created_at + LEGACY_RUNNING


async def begin(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_id: str,
    key: str,
    request_fingerprint: str,
    lease_seconds: float,
    clock: Clock = SYSTEM_CLOCK,
) -> StoredAnswer | None:
    """Claim `key` for this request (None), or return the answer to replay; 409/422 otherwise.

    A running claim whose lease lapsed belongs to a request whose process died: it is taken
    over, so the retry runs instead of waiting."""
    async with sessionmaker() as session:
        repo = IdempotencyRepository(session)
        for _ in range(3):
            row = await repo.get(tenant_id=tenant_id, key=key)
            now = clock.now()
            if row is not None and (
                row.expires_at <= now or (row.state == "running" and _lapses_at(row) <= now)
            ):
                taken = await repo.take_over(row)
                await session.commit()
                if not taken:
                    continue  # renewed or taken meanwhile: judge again
                row = None
            if row is None:
                repo.add(
                    IdempotencyKey(
                        tenant_id=tenant_id,
                        key=key,
                        fingerprint=request_fingerprint,
                        state="running",
                        created_at=now,
                        expires_at=now + KEEP,
                        lease_until=now + timedelta(seconds=lease_seconds),
                    )
                )
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    continue  # a concurrent twin claimed it first: judge against its row
                return None
            if row.fingerprint != request_fingerprint:
                raise Unprocessable(
                    "This Idempotency-Key was already used with a different request.",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            if row.state == "running":
                wait = max(1, math.ceil((_lapses_at(row) - now).total_seconds()))
                raise Conflict(
                    "A request with this Idempotency-Key is still running; retry later.",
                    param="Idempotency-Key",
                    code="idempotency_key_in_use",
                    headers={"Retry-After": str(min(wait, 60))},
                )
            return StoredAnswer(row.status_code or 200, json.loads(row.response_body or "null"))
    raise Conflict("The Idempotency-Key could not be claimed; retry.", param="Idempotency-Key")


@asynccontextmanager
async def held(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_id: str,
    key: str,
    lease_seconds: float,
    clock: Clock = SYSTEM_CLOCK,
) -> AsyncIterator[None]:
    """Keep renewing the claim's lease while the request runs (a third of the lease apart)."""

    async def renew() -> bool:
        async with sessionmaker() as session:
            until = clock.now() + timedelta(seconds=lease_seconds)
            alive = await IdempotencyRepository(session).renew(
                tenant_id=tenant_id, key=key, until=until
            )
            await session.commit()
        return alive

    async with renewing(renew, lease_seconds=lease_seconds, what="an Idempotency-Key claim"):
        yield


async def finish(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_id: str,
    key: str,
    status_code: int,
    body: Any,
) -> None:
    """Store the answer so repeats replay it."""
    async with sessionmaker() as session:
        row = await IdempotencyRepository(session).get(tenant_id=tenant_id, key=key)
        if row is not None:
            row.state = "done"
            row.status_code = status_code
            row.response_body = json.dumps(body)
            await session.commit()


async def release(
    *, sessionmaker: async_sessionmaker[AsyncSession], tenant_id: str, key: str
) -> None:
    """Forget a claim whose request failed in a way a retry may fix."""
    async with sessionmaker() as session:
        await IdempotencyRepository(session).remove(tenant_id=tenant_id, key=key)
        await session.commit()

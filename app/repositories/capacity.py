"""SQL for provider account usage and the copies eviction may remove."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.models import File, ProviderCopy, ProviderCopyStatus

C = ProviderCopyStatus
# A copy in these states holds (or may hold) a slot of the provider's account.
HOLDING = (C.ACTIVE, C.PLACING, C.DELETING)
NEVER_EVICTED_PURPOSES = ("batch",)  # a caller's batch may still be reading its input


class EvictionTier:
    """Eviction order: rebuilt most cheaply first (the issue's policy, in order)."""

    REPLICATED = 0  # the file has another live copy elsewhere
    EXTRACTED = 1  # a file-extract copy whose extracted text the gateway has cached
    LEAST_RECENT = 2  # any other, least recently used first

    NAMES = ("replicated", "extracted", "lru")


@dataclass(frozen=True)
class Candidate:
    copy: ProviderCopy
    tenant_id: str
    tier: int


class CapacityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _holding(
        self, *, provider: str, natives: Sequence[str] | None
    ) -> list[ColumnElement[bool]]:
        where = [ProviderCopy.provider == provider, ProviderCopy.status.in_(HOLDING)]
        if natives is not None:
            where.append(ProviderCopy.native_purpose.in_(list(natives)))
        return where

    async def held(
        self,
        *,
        provider: str,
        natives: Sequence[str] | None,
        tenant_id: str | None = None,
        other_than: str | None = None,
    ) -> tuple[int, int]:
        """(copies, bytes) holding slots on a provider (one purpose class of it, one tenant)."""
        stmt = (
            select(func.count(), func.coalesce(func.sum(File.bytes), 0))
            .select_from(ProviderCopy)
            .join(File, File.id == ProviderCopy.file_id)
            .where(*self._holding(provider=provider, natives=natives))
        )
        if tenant_id is not None:
            stmt = stmt.where(File.tenant_id == tenant_id)
        if other_than is not None:
            stmt = stmt.where(ProviderCopy.file_id != other_than)
        count, total = (await self.session.execute(stmt)).one()
        return int(count), int(total)

    async def eviction_candidates(
        self,
        *,
        provider: str,
        natives: Sequence[str] | None,
        tenant_id: str | None,
        other_than: str,
        limit: int,
    ) -> list[Candidate]:
        """Active copies that may be evicted, in policy order: never pinned files, batch
        inputs or the file being placed; `tenant_id` limits them to one tenant's."""
        other = aliased(ProviderCopy)
        replicated = exists().where(
            other.file_id == ProviderCopy.file_id,
            other.provider != ProviderCopy.provider,
            other.status == C.ACTIVE,
        )
        cached = exists().where(other.file_id == ProviderCopy.file_id, other.extracted.is_not(None))
        tier = case(
            (replicated, EvictionTier.REPLICATED),
            (
                and_(ProviderCopy.native_purpose == "file-extract", cached),
                EvictionTier.EXTRACTED,
            ),
            else_=EvictionTier.LEAST_RECENT,
        )
        stmt = (
            select(ProviderCopy, File.tenant_id, tier)
            .join(File, File.id == ProviderCopy.file_id)
            .where(
                ProviderCopy.provider == provider,
                ProviderCopy.status == C.ACTIVE,
                ProviderCopy.provider_file_id.is_not(None),
                ProviderCopy.native_purpose.not_in(NEVER_EVICTED_PURPOSES),
                ProviderCopy.file_id != other_than,
                File.deleted_at.is_(None),
                File.pinned.is_(False),
            )
            .order_by(
                tier,
                func.coalesce(ProviderCopy.last_used_at, ProviderCopy.created_at),
                ProviderCopy.id,
            )
            .limit(limit)
        )
        if natives is not None:
            stmt = stmt.where(ProviderCopy.native_purpose.in_(list(natives)))
        if tenant_id is not None:
            stmt = stmt.where(File.tenant_id == tenant_id)
        rows = (await self.session.execute(stmt)).all()
        return [Candidate(copy, tenant, int(t)) for copy, tenant, t in rows]

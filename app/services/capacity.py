"""Provider accounts as a cache: their caps, their usage, and evicting copies to make room.

A cap covers a purpose class: all of a Moonshot account (files and bytes), or one native purpose
of a Z.ai account (files). Usage is what the registry holds there plus what the last
reconciliation in this process listed that the registry does not (another deployment's files).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.config import Settings
from app.core.db import unit_of_work, utcnow
from app.core.errors import ProviderAccountFull, ProviderError, ProviderNotFound
from app.core.metrics import GatewayMetrics
from app.core.provider_names import Provider
from app.models import File, ProviderCopy, ProviderCopyStatus
from app.providers.base import ProviderFile
from app.providers.hub import ProviderHub
from app.repositories.capacity import Candidate, CapacityRepository, EvictionTier
from app.services import audit, lifecycle

log = logging.getLogger("filegate.capacity")

ACCOUNT = "all"  # the purpose class of a provider that caps its account as a whole
ZAI_BATCH_MAX_FILES = 1000
CANDIDATES_PER_ROUND = 8


@dataclass(frozen=True)
class Cap:
    """One capped purpose class of a provider account."""

    provider: str
    purpose_class: str
    max_files: int | None
    max_bytes: int | None = None

    @property
    def natives(self) -> list[str] | None:
        """The native purposes it covers; None: all of them."""
        return None if self.purpose_class == ACCOUNT else [self.purpose_class]


@dataclass(frozen=True)
class Usage:
    cap: Cap
    files: int
    bytes: int
    foreign_files: int = 0  # listed by the provider, unknown to the registry

    def room_for(self, size: int) -> bool:
        cap = self.cap
        if cap.max_files is not None and self.files + 1 > cap.max_files:
            return False
        return cap.max_bytes is None or self.bytes + size <= cap.max_bytes

    def describe(self) -> str:
        parts = []
        if self.cap.max_files is not None:
            parts.append(f"{self.files} of {self.cap.max_files} files")
        if self.cap.max_bytes is not None:
            parts.append(f"{self.bytes} of {self.cap.max_bytes} bytes")
        scope = "" if self.cap.purpose_class == ACCOUNT else f" for '{self.cap.purpose_class}'"
        return f"{self.cap.provider}'s account holds {' and '.join(parts)}{scope}"


@dataclass
class Capacity:
    """The caps of each provider account, built once from the settings in the lifespan."""

    settings: Settings
    providers: ProviderHub
    metrics: GatewayMetrics
    # (provider, purpose class) -> (files, bytes) the last listing held beyond the registry.
    foreign: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def cap_for(self, provider: str, native: str) -> Cap | None:
        """The cap a copy with this native purpose counts against; None: uncapped."""
        for cap in self.caps(provider):
            if cap.natives is None or native in cap.natives:
                return cap
        return None

    def caps(self, provider: str) -> list[Cap]:
        s = self.settings
        if provider == Provider.MOONSHOT:
            return [Cap(provider, ACCOUNT, s.moonshot_max_files, s.moonshot_max_bytes)]
        if provider == Provider.ZAI:
            counted = ("file-extract", "code-interpreter", "agent")
            return [Cap(provider, native, s.zai_max_files) for native in counted] + [
                Cap(provider, "batch", ZAI_BATCH_MAX_FILES)
            ]
        return []

    async def usage(
        self, session: AsyncSession, cap: Cap, *, other_than: str | None = None
    ) -> Usage:
        files, used = await CapacityRepository(session).held(
            provider=cap.provider, natives=cap.natives, other_than=other_than
        )
        extra_files, extra_bytes = self.foreign.get((cap.provider, cap.purpose_class), (0, 0))
        return Usage(cap, files + extra_files, used + extra_bytes, extra_files)

    async def overview(self, session: AsyncSession, provider: str) -> list[Usage]:
        """Usage against every cap of one provider; also sets the usage gauges."""
        usages = [await self.usage(session, cap) for cap in self.caps(provider)]
        for u in usages:
            labels = (u.cap.provider, u.cap.purpose_class)
            self.metrics.account_files.labels(*labels).set(u.files)
            self.metrics.account_bytes.labels(*labels).set(u.bytes)
            if u.cap.max_files is not None:
                self.metrics.account_max_files.labels(*labels).set(u.cap.max_files)
        return usages

    def observe_listing(
        self, *, provider: str, listing: Sequence[ProviderFile], held: Set[str | None]
    ) -> None:
        """Correct usage by a provider's listing: the files it holds that no copy holding a
        slot in the registry (`held`, their provider file ids) names."""
        extra: dict[str, tuple[int, int]] = {}
        for pfile in listing:
            if pfile.id in held:
                continue
            cap = self.cap_for(provider, pfile.purpose)
            if cap is None:
                continue
            files, used = extra.get(cap.purpose_class, (0, 0))
            extra[cap.purpose_class] = (files + 1, used + pfile.bytes)
        for cap in self.caps(provider):
            self.foreign[(provider, cap.purpose_class)] = extra.get(cap.purpose_class, (0, 0))

    def tenant_bound(self, cap: Cap) -> int | None:
        """The most slots of `cap` one tenant may hold before it evicts only its own copies."""
        share = self.settings.capacity_tenant_share
        if cap.max_files is None or share >= 1:
            return None
        return max(1, math.floor(cap.max_files * share))


@dataclass(frozen=True)
class Eviction:
    copy_id: int
    file_id: str
    provider: str
    tier: str


async def evict_one(
    *,
    session: AsyncSession,
    capacity: Capacity,
    providers: ProviderHub,
    metrics: GatewayMetrics,
    ctx: CallContext,
    cap: Cap,
    file: File,
) -> Eviction | None:
    """Make one slot of `cap` free for `file`: delete one copy the gateway can rebuild at the
    provider, then record it evicted. None when nothing may be evicted.

    A tenant holding its fair share of the account (FILEGATE_CAPACITY_TENANT_SHARE) evicts
    only its own copies."""
    repo = CapacityRepository(session)
    async with unit_of_work(session):
        only_tenant = None
        bound = capacity.tenant_bound(cap)
        if bound is not None:
            own, _ = await repo.held(
                provider=cap.provider, natives=cap.natives, tenant_id=file.tenant_id
            )
            if own >= bound:
                only_tenant = file.tenant_id
        candidates = await repo.eviction_candidates(
            provider=cap.provider,
            natives=cap.natives,
            tenant_id=only_tenant,
            other_than=file.id,
            limit=CANDIDATES_PER_ROUND,
        )
    adapter = providers.adapter(cap.provider)
    for candidate in candidates:
        copy = candidate.copy
        assert copy.provider_file_id is not None
        try:
            await adapter.delete(copy.provider_file_id)
        except ProviderNotFound:
            pass  # gone already: the slot is free all the same
        except ProviderError as exc:
            log.info("evicting %s from %s failed: %s", copy.file_id, cap.provider, exc.message)
            continue
        tier = EvictionTier.NAMES[candidate.tier]
        if await _record_eviction(
            session=session, ctx=ctx, candidate=candidate, tier=tier, for_file=file
        ):
            metrics.evictions.labels(cap.provider, tier).inc()
            return Eviction(copy.id, copy.file_id, cap.provider, tier)
    return None


async def _record_eviction(
    *, session: AsyncSession, ctx: CallContext, candidate: Candidate, tier: str, for_file: File
) -> bool:
    """The registry half of an eviction, in one unit of work with its event and audit row."""
    copy = candidate.copy
    provider_file_id = copy.provider_file_id
    async with unit_of_work(session):
        await session.refresh(copy)
        if copy.status != ProviderCopyStatus.ACTIVE or copy.provider_file_id != provider_file_id:
            return False  # settled otherwise meanwhile (deleted, lost, re-placed)
        lifecycle.transition(
            session,
            copy,
            ProviderCopyStatus.EVICTED,
            reason=(
                f"evicted {provider_file_id} ({tier}) to make room for another file; "
                "re-placed from the stored blob when needed"
            ),
            request_id=ctx.request_id,
        )
        copy.provider_file_id = None
        audit.record(
            session=session,
            ctx=ctx,
            action="copy.evict",
            resource=f"{copy.file_id}@{copy.provider}",
            detail=f"{tier}; room for {for_file.id}",
        )
    return True


def waiting_for_room(usage: Usage, *, retry_after: float) -> ProviderAccountFull:
    """Why a file waits: its account is full and nothing it may evict can go now."""
    return ProviderAccountFull(
        f"{usage.describe()} and none of the copies this file may evict can go (pinned, "
        "batch inputs, or beyond its tenant's share of the account); it is placed as soon "
        "as room appears.",
        provider=usage.cap.provider,
        retry_after=retry_after,
    )


def mark_used(copies: Sequence[ProviderCopy]) -> None:
    """The gateway needed or handed out these copies now (eviction takes the oldest last use)."""
    now = utcnow()
    for copy in copies:
        copy.last_used_at = now

"""Reconciliation jobs: compare a provider's listing with the registry and act on the drift."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import system_context
from app.core.db import unit_of_work, utcnow
from app.core.errors import ProviderError, ProviderNotFound
from app.jobs.queue import RetryLater
from app.models import File, Job, ProviderCopy, ProviderCopyStatus
from app.repositories.capacity import HOLDING
from app.repositories.files import FileRepository
from app.services import audit, placement, reconcile
from app.services.health import mark_missing
from app.services.reconcile import Action, Decision

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("filegate.recovery")


async def handle_reconcile(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Compare a provider's listing with the registry: classify it, then act on each decision."""
    provider = str(payload["provider"])
    adapter = rt.providers.adapter(provider)
    tag = await rt.deployment.tag()
    try:
        listing = await adapter.list()  # 1: the provider's view; no transaction is open
    except ProviderError as exc:
        raise RetryLater(exc.message, retry_after=exc.retry_after) from exc
    async with rt.sessionmaker() as s:  # 2: the registry's view, read after the listing
        registry = await reconcile.registry_view(s, provider=provider, listing=listing, tag=tag)
    plan = reconcile.classify(  # 3: decisions, pure
        listing=listing,
        registry=registry,
        tag=tag,
        now=utcnow(),
        grace=timedelta(seconds=rt.settings.orphan_grace_seconds),
        max_deletions=rt.settings.reconcile_max_deletions,
    )
    _report(rt=rt, provider=provider, plan=plan)
    rt.capacity.observe_listing(  # usage counts what the account holds beyond the registry
        provider=provider,
        listing=listing,
        held={c.provider_file_id for c in registry.copies if c.status in HOLDING},
    )
    task = f"job-{job.id}"
    for decision in plan.decisions:  # 4: each decision in its own unit of work
        if decision.action == Action.ADOPT:
            await _adopt(rt=rt, provider=provider, decision=decision, task=task)
        elif decision.action in (Action.REPLACE, Action.MARK_LOST):
            await _settle_lost(rt=rt, provider=provider, decision=decision, task=task)
        elif decision.action == Action.DELETE_ORPHAN:
            await _delete_orphan(rt=rt, provider=provider, decision=decision, task=task)


def _report(*, rt: Runtime, provider: str, plan: reconcile.Plan) -> None:
    """Metrics and logs of a run: foreign files seen, deletions held at the cap."""
    foreign = plan.count(Action.LEAVE_FOREIGN)
    rt.metrics.reconcile_foreign.labels(provider).set(foreign)
    if foreign:
        log.debug("reconcile %s: %d provider files are not this deployment's", provider, foreign)
    held = plan.count(Action.HOLD)
    rt.metrics.reconcile_deletions_held.labels(provider).set(held)
    if held:
        rt.metrics.reconcile_deletions_capped.labels(provider).inc(held)
        log.warning(
            "reconcile %s: %d orphan deletions held back at the cap of %d "
            "(FILEGATE_RECONCILE_MAX_DELETIONS); check that this gateway uses the registry "
            "that wrote them",
            provider,
            held,
            rt.settings.reconcile_max_deletions,
        )


async def _file_and_copy(
    repo: FileRepository, *, decision: Decision, provider: str
) -> tuple[File | None, ProviderCopy | None]:
    """The registry's current view of the file and copy a decision was made about."""
    assert decision.file_id is not None
    file = await repo.refresh(decision.file_id)
    return file, await repo.copy_for(file_id=decision.file_id, provider=provider)


async def _adopt(*, rt: Runtime, provider: str, decision: Decision, task: str) -> None:
    """Take over a landed upload, if its copy still waits for one."""
    assert decision.file_id is not None
    async with rt.sessionmaker() as s:
        repo = FileRepository(s)
        file, copy = await _file_and_copy(repo, decision=decision, provider=provider)
        if (
            file is None
            or file.deleted_at is not None
            or copy is None
            or copy.id != decision.copy_id
            or copy.status not in reconcile.ADOPTABLE
        ):
            return  # settled meanwhile
        ctx = system_context(tenant_id=file.tenant_id, task=task)
        async with unit_of_work(s):
            placement.adopt(
                session=s, ctx=ctx, file=file, copy=copy, provider_file_id=decision.provider_file_id
            )
    rt.metrics.reconcile_drift.labels(provider, "adopted").inc()


async def _settle_lost(*, rt: Runtime, provider: str, decision: Decision, task: str) -> None:
    """Confirm an unlisted copy is gone (a listing can be partial), then record it lost."""
    assert decision.file_id is not None
    try:
        await rt.providers.adapter(provider).retrieve(decision.provider_file_id)
        return
    except ProviderNotFound:
        pass
    except ProviderError:
        return
    async with rt.sessionmaker() as s:
        repo = FileRepository(s)
        file, copy = await _file_and_copy(repo, decision=decision, provider=provider)
        if (
            file is None
            or copy is None
            or copy.status != ProviderCopyStatus.ACTIVE
            or copy.provider_file_id != decision.provider_file_id
        ):
            return
        ctx = system_context(tenant_id=file.tenant_id, task=task)
        await mark_missing(
            session=s,
            max_attempts=rt.settings.job_max_attempts,
            ctx=ctx,
            file=file,
            copy=copy,
            reason="reconciliation: not listed by the provider",
        )
        await s.commit()
    rt.metrics.reconcile_drift.labels(provider, "missing").inc()


async def _delete_orphan(*, rt: Runtime, provider: str, decision: Decision, task: str) -> None:
    """Remove a provider file this deployment wrote and nothing in its registry wants."""
    assert decision.file_id is not None
    async with rt.sessionmaker() as s:
        file = await FileRepository(s).refresh(decision.file_id)
        if await FileRepository(s).copy_holding(decision.provider_file_id, provider=provider):
            return  # a copy took it on meanwhile
    try:
        await rt.providers.adapter(provider).delete(decision.provider_file_id)
    except ProviderNotFound:
        pass
    except ProviderError:
        return
    async with rt.sessionmaker() as s:
        ctx = system_context(tenant_id=file.tenant_id if file else "unknown", task=task)
        audit.record(
            session=s,
            ctx=ctx,
            action="provider.orphan_delete",
            resource=f"{provider}:{decision.provider_file_id}",
            detail=f"orphan copy of {decision.file_id}",
        )
        await s.commit()
    rt.metrics.reconcile_drift.labels(provider, "orphan_removed").inc()

"""Job handlers that repair the registry: placement retries, deletes, health, reconcile, expiry."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext, system_context
from app.core.db import unit_of_work, utcnow
from app.core.errors import ProviderError, ProviderNotFound, UnsupportedPurpose
from app.models import File, Job, ProviderCopy, ProviderCopyStatus
from app.repositories.files import FileRepository
from app.repositories.idempotency import IdempotencyRepository
from app.services import audit, files, jobs, lifecycle, placement, reconcile
from app.services.files.settle import Attempt, Settled, give_up, settle
from app.services.jobs import RetryLater
from app.services.reconcile import Action, Decision

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("filegate.recovery")
HEALTH_SWEEP_BATCH = 100
EXPIRY_BATCH = 100


async def handle_place(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Finish placing a pending file (or an extra copy) once a provider can take it."""
    repo = FileRepository(session)
    file = await repo.refresh(str(payload["file_id"]))
    if file is None or file.deleted_at is not None:
        return
    provider = str(payload.get("provider", "auto"))
    copies = (await repo.copies_for([file.id]))[file.id]
    live_on = {c.provider for c in copies if c.status == ProviderCopyStatus.ACTIVE}
    if (provider == "auto" and live_on) or provider in live_on:
        return
    ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
    try:
        targets = rt.providers.targets(
            purpose=file.purpose, filename=file.filename, size=file.bytes, requested=provider
        )
    except UnsupportedPurpose as exc:
        give_up(session=session, ctx=ctx, file=file, reason=exc.message)
        return
    outcome = await placement.place(session=session, rt=rt, ctx=ctx, file=file, targets=targets)
    settled = await settle(
        session=session,
        rt=rt,
        ctx=ctx,
        file=file,
        provider=provider,
        outcome=outcome,
        attempt=Attempt.JOB,
    )
    if settled is Settled.DEFERRED:
        raise RetryLater(outcome.reasons, retry_after=outcome.retry_after)


async def on_place_dead(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """A placement that exhausted its attempts leaves the file in error, blob kept."""
    file = await FileRepository(session).refresh(str(payload["file_id"]))
    if file is not None and file.deleted_at is None:
        ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
        give_up(
            session=session,
            ctx=ctx,
            file=file,
            reason=f"gave up after {job.attempts} attempts: {job.last_error or 'failures'}",
        )


async def handle_delete_copy(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Retry removing a provider copy whose delete failed earlier."""
    copy = await session.get(ProviderCopy, int(payload["copy_id"]), populate_existing=True)
    if copy is None or copy.status == ProviderCopyStatus.DELETED:
        return
    file = await FileRepository(session).refresh(copy.file_id)
    ctx = system_context(tenant_id=file.tenant_id if file else "unknown", task=f"job-{job.id}")
    if not await files.remove_copy(
        session=session, rt=rt, ctx=ctx, copy=copy, reason="provider delete retried"
    ):
        raise RetryLater(copy.last_error or "provider delete failed")
    audit.record(
        session=session, ctx=ctx, action="copy.delete", resource=f"{copy.file_id}@{copy.provider}"
    )


async def check_file(
    *, session: AsyncSession, rt: Runtime, ctx: CallContext, file: File
) -> dict[str, Any]:
    """Re-hash the blob and confirm every live copy still exists; repair what is missing."""
    repo = FileRepository(session)
    report: dict[str, Any] = {"file_id": file.id, "blob": "ok", "copies": {}}
    blob = await repo.blob(file.sha256)
    if blob is None or not await rt.blob_store.exists(blob.storage_key):
        report["blob"] = "missing"
    else:
        digest = await rt.blob_store.rehash(blob.storage_key)
        if digest != file.sha256:
            report["blob"] = "corrupt"
            if blob.corrupt_at is None:
                blob.corrupt_at = utcnow()
                blob.corrupt_reason = f"re-hash gave {digest[:16]}…, expected {file.sha256[:16]}…"
        else:
            blob.verified_at = utcnow()
    if report["blob"] != "ok":
        rt.metrics.health_checks.labels("blob_" + report["blob"]).inc()
        reason = f"blob {report['blob']}: content withheld until repaired"
        if file.status_details != reason:
            lifecycle.note(session, file, reason=reason, request_id=ctx.request_id)
            file.status_details = reason
    copies = (await repo.copies_for([file.id]))[file.id]
    for copy in copies:
        if copy.status != ProviderCopyStatus.ACTIVE or not copy.provider_file_id:
            continue
        try:
            await rt.providers.adapter(copy.provider).retrieve(copy.provider_file_id)
        except ProviderNotFound:
            report["copies"][copy.provider] = "missing"
            rt.metrics.health_checks.labels("copy_missing").inc()
            await mark_missing(
                session=session,
                rt=rt,
                ctx=ctx,
                file=file,
                copy=copy,
                reason="health check: the provider no longer has it",
            )
            continue
        except ProviderError as exc:
            report["copies"][copy.provider] = f"unknown ({exc.error_code})"
            continue
        copy.checked_at = utcnow()
        report["copies"][copy.provider] = "ok"
    if report["blob"] == "ok" and all(v == "ok" for v in report["copies"].values()):
        rt.metrics.health_checks.labels("ok").inc()
    audit.record(
        session=session,
        ctx=ctx,
        action="file.check",
        resource=file.id,
        detail=json.dumps(report, sort_keys=True),
    )
    return report


async def mark_missing(
    *,
    session: AsyncSession,
    rt: Runtime,
    ctx: CallContext,
    file: File,
    copy: ProviderCopy,
    reason: str,
) -> None:
    """Record a copy the provider lost and queue its re-placement from the canonical blob."""
    lifecycle.transition(
        session, copy, ProviderCopyStatus.MISSING, reason=reason, request_id=ctx.request_id
    )
    copy.last_error = reason
    if file.deleted_at is None and (file.expires_at is None or file.expires_at > utcnow()):
        await jobs.enqueue(
            session=session,
            kind=jobs.PLACE,
            payload={"file_id": file.id, "provider": copy.provider},
            dedupe_key=f"place:{file.id}:{copy.provider}",
            max_attempts=rt.settings.job_max_attempts,
        )


async def handle_check_file(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    file = await FileRepository(session).refresh(str(payload["file_id"]))
    if file is None or file.deleted_at is not None:
        return
    ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
    await check_file(session=session, rt=rt, ctx=ctx, file=file)


async def handle_health_sweep(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Queue health checks for the live files checked least recently."""
    repo = FileRepository(session)
    cutoff = utcnow() - timedelta(seconds=rt.settings.health_check_interval_seconds)
    for file_id in await repo.due_for_check(before=cutoff, limit=HEALTH_SWEEP_BATCH):
        await jobs.enqueue(
            session=session,
            kind=jobs.CHECK_FILE,
            payload={"file_id": file_id},
            dedupe_key=f"check_file:{file_id}",
            max_attempts=3,
        )


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


async def _adopt(*, rt: Runtime, provider: str, decision: Decision, task: str) -> None:
    """Take over a landed upload, if its copy still waits for one."""
    assert decision.file_id is not None
    async with rt.sessionmaker() as s:
        repo = FileRepository(s)
        file = await repo.refresh(decision.file_id)
        copy = await repo.copy_for(file_id=decision.file_id, provider=provider)
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
        file = await repo.refresh(decision.file_id)
        copy = await repo.copy_for(file_id=decision.file_id, provider=provider)
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
            rt=rt,
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


async def handle_expire(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Delete expired files at every provider (blobs go once unreferenced); forget old keys."""
    repo = FileRepository(session)
    for file in await repo.expired(now=utcnow(), limit=EXPIRY_BATCH):
        ctx = system_context(tenant_id=file.tenant_id, task=f"job-{job.id}")
        await files.expire_file(session=session, rt=rt, ctx=ctx, file=file)
    await IdempotencyRepository(session).purge_expired(now=utcnow())


async def handle_sweep_storage(
    session: AsyncSession, rt: Runtime, job: Job, payload: dict[str, Any]
) -> None:
    """Remove the leftovers of crashed uploads and collections once they are old enough."""
    repo = FileRepository(session)
    removed = await rt.blob_store.sweep(
        max_age_seconds=rt.settings.storage_leftover_max_age_seconds,
        referenced=repo.blobs_with_rows,
    )
    if removed:
        log.info("storage sweep removed %d leftover files", len(removed))


HANDLERS = {
    jobs.PLACE: handle_place,
    jobs.DELETE_COPY: handle_delete_copy,
    jobs.CHECK_FILE: handle_check_file,
    jobs.HEALTH_SWEEP: handle_health_sweep,
    jobs.RECONCILE: handle_reconcile,
    jobs.EXPIRE: handle_expire,
    jobs.SWEEP_STORAGE: handle_sweep_storage,
}
DEAD_HANDLERS = {jobs.PLACE: on_place_dead}

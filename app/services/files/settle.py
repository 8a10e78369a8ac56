"""What a placement attempt means for its file: the one place its outcome is interpreted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import CallContext
from app.core.config import Settings
from app.core.db import unit_of_work, utcnow
from app.core.errors import GatewayError
from app.core.metrics import GatewayMetrics
from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import File, FileStatus
from app.providers.hub import ProviderHub, Target
from app.repositories.files import FileRepository
from app.services import audit, lifecycle, placement
from app.services.capacity import Capacity
from app.services.deployment import DeploymentIdentity
from app.services.files.retire import collect_blob
from app.services.files.views import FileView, not_found
from app.services.placement import Placement
from app.storage.blobs import BlobStore

if TYPE_CHECKING:
    from app.services.files.pipelined import HeadStart


class Attempt(StrEnum):
    """Who placed the file, which decides what a refusal does to it."""

    UPLOAD = "upload"  # an upload's own placement, its answer not given yet
    JOB = "job"  # a queued placement of a file accepted earlier
    COPY = "copy"  # an extra copy of a file that has (or waits for) its own


class Settled(StrEnum):
    PLACED = "placed"
    WITHDRAWN = "withdrawn"  # the file was deleted meanwhile
    DEFERRED = "deferred"  # providers are failing for now: placed later by a job
    REFUSED = "refused"  # refused for good


@dataclass(frozen=True)
class Placer:
    """What placing a file works with, built once in the lifespan: sessions (to renew a
    request's intent lease meanwhile), the blob store, the provider hub, the deployment's tag,
    metrics and the job settings."""

    sessionmaker: async_sessionmaker[AsyncSession]
    blob_store: BlobStore
    providers: ProviderHub
    deployment: DeploymentIdentity
    metrics: GatewayMetrics
    settings: Settings
    capacity: Capacity

    async def place_and_settle(
        self,
        *,
        session: AsyncSession,
        ctx: CallContext,
        file: File,
        targets: Sequence[Target],
        provider: str,
        attempt: Attempt,
        intent: queue.Intent | None = None,
        head_start: HeadStart | None = None,
    ) -> tuple[Placement, Settled]:
        """One placement attempt: place the blob (renewing the request's intent lease
        meanwhile), then settle what came of it."""
        lease = self.settings.job_lease_seconds
        async with queue.holding(self.sessionmaker, intent, lease_seconds=lease):
            outcome = await placement.place(
                session=session,
                blob_store=self.blob_store,
                providers=self.providers,
                deployment=self.deployment,
                metrics=self.metrics,
                capacity=self.capacity,
                ctx=ctx,
                file=file,
                targets=targets,
                retry_seconds=self.settings.capacity_retry_seconds,
                head_start=head_start,
            )
        settled = await settle(
            session=session,
            settings=self.settings,
            blob_store=self.blob_store,
            ctx=ctx,
            file=file,
            provider=provider,
            outcome=outcome,
            attempt=attempt,
            intent=intent,
        )
        return outcome, settled

    async def place_and_answer(
        self,
        *,
        session: AsyncSession,
        ctx: CallContext,
        file: File,
        targets: Sequence[Target],
        provider: str,
        attempt: Attempt,
        intent: queue.Intent | None = None,
        withdrawn: GatewayError | None = None,
        head_start: HeadStart | None = None,
    ) -> FileView:
        """Place a file and answer a request with it: pending when providers are only failing
        for now. With `intent` (a just-claimed file) the request holds the placement job's
        lease meanwhile, and the job ends with the outcome (done, or itself the retry of a
        deferred placement). A delete that wins the race answers 404, or `withdrawn`."""
        outcome, settled = await self.place_and_settle(
            session=session,
            ctx=ctx,
            file=file,
            targets=targets,
            provider=provider,
            attempt=attempt,
            intent=intent,
            head_start=head_start,
        )
        return await answer(
            session=session, file=file, outcome=outcome, settled=settled, withdrawn=withdrawn
        )


async def settle(
    *,
    session: AsyncSession,
    settings: Settings,
    blob_store: BlobStore,
    ctx: CallContext,
    file: File,
    provider: str,
    outcome: Placement,
    attempt: Attempt,
    intent: queue.Intent | None = None,
) -> Settled:
    """Record what `outcome` means for `file` in one unit of work, and say what it was.

    Placed or withdrawn: the request's placement intent is done. Deferred: the file waits as
    pending and the intent becomes its retry (a job is retried by the worker instead).
    Refused for good: a file live elsewhere, or an extra copy, stays as it is; a job's file
    ends in error with its blob kept; an upload's own file is retired with its blob, since
    its answer is the error."""
    async with unit_of_work(session):
        if outcome.withdrawn or outcome.placed_on is not None:
            await queue.end_intent(session=session, intent=intent)
            return Settled.WITHDRAWN if outcome.withdrawn else Settled.PLACED
        if outcome.deferred:
            if attempt is not Attempt.JOB:
                await _defer(
                    session=session,
                    settings=settings,
                    ctx=ctx,
                    file=file,
                    provider=provider,
                    outcome=outcome,
                    intent=intent,
                )
            return Settled.DEFERRED
        await queue.end_intent(session=session, intent=intent)
        if file.status == FileStatus.PROCESSED or attempt is Attempt.COPY:
            return Settled.REFUSED
        if attempt is Attempt.JOB:
            give_up(session=session, ctx=ctx, file=file, reason=outcome.reasons)
            return Settled.REFUSED
        _retire_refused(session=session, ctx=ctx, file=file, outcome=outcome)
    await collect_blob(session=session, blob_store=blob_store, sha256=file.sha256)
    return Settled.REFUSED


async def answer(
    *,
    session: AsyncSession,
    file: File,
    outcome: Placement,
    settled: Settled,
    withdrawn: GatewayError | None = None,
) -> FileView:
    """A request's answer once settled: the file, or the error that ended it."""
    if settled is Settled.WITHDRAWN:
        raise withdrawn or not_found()
    if settled is Settled.REFUSED:
        raise outcome.first_error
    copies = (await FileRepository(session).copies_for([file.id]))[file.id]
    retry_after = outcome.retry_after if settled is Settled.DEFERRED else None
    return FileView(file, copies, retry_after=retry_after)


async def _defer(
    *,
    session: AsyncSession,
    settings: Settings,
    ctx: CallContext,
    file: File,
    provider: str,
    outcome: Placement,
    intent: queue.Intent | None,
) -> None:
    """Keep the accepted file and let a job place it once a provider can take it."""
    retry_after = outcome.retry_after
    delay = retry_after or settings.job_backoff_base
    # A request's intent becomes the retry; otherwise a placement job is queued.
    await queue.end_intent(
        session=session, intent=intent, retry_at=utcnow() + timedelta(seconds=delay)
    )
    waiting = "room on a provider" if outcome.waiting_for_room else "a provider"
    if file.status not in (FileStatus.PROCESSED, FileStatus.PENDING):
        lifecycle.transition(
            session,
            file,
            FileStatus.PENDING,
            reason=f"waiting for {waiting}: {outcome.reasons}",
            request_id=ctx.request_id,
        )
    if file.status == FileStatus.PENDING:
        file.status_details = f"Waiting for {waiting}: {outcome.reasons}"
    await queue.enqueue(
        session=session,
        kind=JobKind.PLACE,
        payload={"file_id": file.id, "provider": provider},
        dedupe_key=f"place:{file.id}:{provider}",
        delay_seconds=delay,
        max_attempts=settings.job_max_attempts,
    )


def give_up(*, session: AsyncSession, ctx: CallContext, file: File, reason: str) -> None:
    """Mark a file that no provider will take; its blob stays so nothing accepted is lost."""
    if file.status == FileStatus.PROCESSED:
        return
    _fail(
        session=session,
        ctx=ctx,
        file=file,
        event=f"placement gave up: {reason}",
        details=f"No provider took the file: {reason}",
        cause=reason,
        status_code=None,
    )


def _retire_refused(
    *, session: AsyncSession, ctx: CallContext, file: File, outcome: Placement
) -> None:
    """Every provider refused a new upload for good: retire it so nothing half-made stays."""
    reasons = outcome.reasons
    _fail(
        session=session,
        ctx=ctx,
        file=file,
        event=f"placement refused: {reasons}",
        details=reasons,
        cause=reasons,
        status_code=outcome.first_error.status_code,
    )
    file.deleted_at = utcnow()


def _fail(
    *,
    session: AsyncSession,
    ctx: CallContext,
    file: File,
    event: str,
    details: str,
    cause: str,
    status_code: int | None,
) -> None:
    """The file ends in error (noted again when it already is), and the audit trail says why."""
    if file.status == FileStatus.ERROR:  # a re-upload's new try of a file in error
        lifecycle.note(session, file, reason=event, request_id=ctx.request_id)
    else:
        lifecycle.transition(
            session, file, FileStatus.ERROR, reason=event, request_id=ctx.request_id
        )
    file.status_details = details
    audit.record(
        session=session,
        ctx=ctx,
        action="file.place",
        resource=file.id,
        outcome="failed",
        status_code=status_code,
        detail=cause,
    )

"""Choosing providers for a file and putting the canonical blob on them."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.db import unit_of_work, utcnow
from app.core.errors import BlobCorrupt, CircuitOpen, ProviderAccountFull, ProviderError
from app.core.metrics import GatewayMetrics
from app.models import Blob, File, FileStatus, ProviderCopy
from app.models import ProviderCopyStatus as C
from app.providers.hub import ProviderHub, Target
from app.repositories.files import FileRepository
from app.services import audit, lifecycle
from app.services.capacity import Cap, Capacity, Usage, evict_one, waiting_for_room
from app.services.deployment import TAG_ALPHABET, TAG_LENGTH, DeploymentIdentity
from app.storage.blobs import BlobMissing, BlobStore

if TYPE_CHECKING:
    from app.services.files.pipelined import HeadStart

PROVIDER_FILENAME_MAX = 255
FILE_ID_LENGTH = 29
MAX_EVICTIONS_PER_PLACEMENT = 64  # enough for a large file on a byte cap of small ones
MAX_UPLOADS_PER_PLACEMENT = 3  # the provider said full although the registry counted room


@dataclass(frozen=True)
class ProviderName:
    """What a provider-side filename says about its writer: a file id, and a tag if it has one."""

    file_id: str
    tag: str | None  # None: the untagged format written before deployment tags


def provider_filename(file: File, *, tag: str) -> str:
    """`<file id>.<deployment tag>__<original name>`: the head is never cut, the extension kept."""
    return provider_name_for(file.id, file.filename, tag=tag)


def provider_name_for(file_id: str, filename: str, *, tag: str) -> str:
    """provider_filename for a file id chosen before its row exists (a pipelined upload)."""
    head = f"{file_id}.{tag}__"
    return head + _shortened(filename, PROVIDER_FILENAME_MAX - len(head))


def _shortened(name: str, room: int) -> str:
    """`name` within `room` characters, cutting the stem so providers still see the extension."""
    if len(name) <= room:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext) + 1 < room:
        return stem[: room - len(ext) - 1] + "." + ext
    return name[:room]


def parse_provider_name(name: str) -> ProviderName | None:
    """The file id and tag in a name given by provider_filename (or its untagged predecessor)."""
    head, sep, _ = name.partition("__")
    if not sep:
        return None
    file_id, dot, tag = head.partition(".")
    if not _is_file_id(file_id):
        return None
    if not dot:
        return ProviderName(file_id, None)
    if len(tag) == TAG_LENGTH and all(ch in TAG_ALPHABET for ch in tag):
        return ProviderName(file_id, tag)
    return None


def file_id_from_provider_name(name: str, *, tag: str, registered: Container[str]) -> str | None:
    """The file id of a provider file this deployment wrote; None for anything else's."""
    # Untagged names predate tags: ours only if the registry holds that file id.
    parsed = parse_provider_name(name)
    if parsed is None:
        return None
    if parsed.tag == tag or (parsed.tag is None and parsed.file_id in registered):
        return parsed.file_id
    return None


def _is_file_id(value: str) -> bool:
    return (
        len(value) == FILE_ID_LENGTH
        and value.startswith("file-")
        and value[5:].isascii()
        and value[5:].isalnum()
    )


@dataclass
class Placement:
    """What a placement attempt achieved."""

    placed_on: str | None = None
    errors: list[ProviderError] = field(default_factory=list)
    deferred: bool = False  # some target failed for a reason that may pass
    withdrawn: bool = False  # the file was deleted while it was being placed
    waiting_for_room: bool = False  # every target's account is full, nothing could be evicted
    evicted: int = 0  # copies evicted to make room for it

    @property
    def first_error(self) -> ProviderError:
        return self.errors[0]

    @property
    def reasons(self) -> str:
        """Every provider's reason, in the order they were tried (each names its provider)."""
        seen: list[str] = []
        for error in self.errors:
            if error.message not in seen:
                seen.append(error.message)
        return " ".join(seen)

    @property
    def retry_after(self) -> float | None:
        """The longest wait a provider asked for, if any did."""
        return max((e.retry_after or 0 for e in self.errors), default=0) or None


class Tried(StrEnum):
    PLACED = "placed"
    WITHDRAWN = "withdrawn"
    FULL = "full"  # the account is at its cap (the gateway's count, or the provider said so)
    FAILED = "failed"


@dataclass
class Placing:
    """What one placement works with: its collaborators, the caller, the file, and the head
    start of one target until a try of that target takes it."""

    session: AsyncSession
    blob_store: BlobStore
    providers: ProviderHub
    metrics: GatewayMetrics
    capacity: Capacity
    ctx: CallContext
    file: File
    blob: Blob
    tag: str
    head_start: HeadStart | None = None

    def take_head_start(self, target: Target) -> HeadStart | None:
        """The head start, once, for the try of its own target."""
        pending = self.head_start
        if pending is None or pending.provider != target.provider:
            return None
        self.head_start = None
        return pending


async def place(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    deployment: DeploymentIdentity,
    metrics: GatewayMetrics,
    capacity: Capacity,
    ctx: CallContext,
    file: File,
    targets: Sequence[Target],
    retry_seconds: float,
    head_start: HeadStart | None = None,
) -> Placement:
    """Upload the canonical blob to the first target that takes it, making room if need be.

    Targets whose account is full (by the registry's count or the provider's answer) are
    passed over while another has room; if none has, copies the gateway can rebuild are
    evicted from the first full one that has some, then the file is placed there. With
    nothing to evict the placement waits for room (deferred, never refused).

    A `head_start` (the upload of its target that ran while the body arrived) is that
    target's first try, the registry's count unasked: its outcome is taken here (an
    account-full answer makes room as any would). When it fails, the next target is tried
    from the blob, or, when no other target is left, the same one again from the blob.

    Per target: a unit of work records the intent (the copy row, so a crash leaves a trail),
    the provider call runs with no transaction open, and a last unit records the outcome:
    failed, or live under the file's row lock, so a concurrent delete either sees the new
    copy or is seen (then the late copy is removed)."""
    repo = FileRepository(session)
    outcome = Placement()
    async with unit_of_work(session):
        blob = await repo.blob(file.sha256)
        gone = blob is None and await _deleted_meanwhile(session=session, file=file)
    if gone:
        outcome.withdrawn = True  # a delete collected the blob before this placement began
        return outcome
    if blob is None or blob.corrupt_at is not None:
        raise BlobCorrupt(
            f"The stored content of {file.id} failed its integrity check; it is not pushed again."
        )
    run = Placing(
        session=session,
        blob_store=blob_store,
        providers=providers,
        metrics=metrics,
        capacity=capacity,
        ctx=ctx,
        file=file,
        blob=blob,
        tag=await deployment.tag(),
    )
    tries = list(targets)
    if head_start is not None and head_start.usable and head_start.file_id == file.id:
        run.head_start = head_start
        if len(tries) == 1 and tries[0].provider == head_start.provider:
            tries.append(tries[0])  # its blob is the second try of the only target
    full: list[tuple[Target, Cap, bool]] = []  # and whether the provider itself said so
    again = False  # whether the only target is tried again from the blob
    for index, target in enumerate(tries):
        repeat = index > 0 and target is tries[index - 1]
        if repeat and not again:
            continue
        again = False
        adapter = providers.adapter(target.provider)
        pipelined = run.head_start is not None and run.head_start.provider == target.provider
        paused_for = None if pipelined else await adapter.paused_for()
        if paused_for is not None:
            outcome.deferred = True
            outcome.errors.append(
                CircuitOpen(
                    f"{target.provider} is failing (circuit open); it is skipped for now.",
                    provider=target.provider,
                    retry_after=paused_for,
                )
            )
            continue
        if index > 0 and not repeat:
            metrics.fallbacks.labels(target.provider).inc()
        cap = capacity.cap_for(target.provider, target.rule.native)
        # A head start has sent its bytes already: the provider's answer counts, not the count.
        if cap is not None and not pipelined and not (await _usage(run, cap)).room_for(file.bytes):
            full.append((target, cap, False))
            continue
        tried = await _attempt(run, target, outcome)
        if tried in (Tried.PLACED, Tried.WITHDRAWN):
            return outcome
        # A refusal of the bytes would only be repeated; a failure that may pass is not.
        again = tried is Tried.FAILED and pipelined and outcome.errors[-1].retryable
        if tried is Tried.FULL and cap is not None:
            full.append((target, cap, True))
        elif tried is Tried.FULL:  # a cap the gateway does not know of: wait for room
            outcome.errors.append(
                ProviderAccountFull(
                    f"{target.provider} says its account is full; the file is placed as soon "
                    "as room appears.",
                    provider=target.provider,
                    retry_after=retry_seconds,
                )
            )
            outcome.deferred = outcome.waiting_for_room = True
    waiting: list[Cap] = []
    for target, cap, refused in full:
        tried = await _make_room_and_place(run, target, cap, outcome, evict_first=refused)
        if tried in (Tried.PLACED, Tried.WITHDRAWN):
            return outcome
        if tried is Tried.FULL:
            waiting.append(cap)
    if waiting:
        usage = await _usage(run, waiting[0])
        outcome.errors.append(waiting_for_room(usage, retry_after=retry_seconds))
        outcome.deferred = outcome.waiting_for_room = True
    return outcome


async def _usage(run: Placing, cap: Cap) -> Usage:
    async with unit_of_work(run.session):
        return await run.capacity.usage(run.session, cap, other_than=run.file.id)


async def _make_room_and_place(
    run: Placing, target: Target, cap: Cap, outcome: Placement, *, evict_first: bool
) -> Tried:
    """Evict until the registry counts room on `cap`, then place; evict once more each time
    the provider still says full (files the registry does not know hold slots there)."""
    if cap.max_bytes is not None and run.file.bytes > cap.max_bytes:
        return Tried.FULL  # larger than the whole account: evicting would not help
    uploads = 0
    for _ in range(MAX_EVICTIONS_PER_PLACEMENT):
        if not evict_first and (await _usage(run, cap)).room_for(run.file.bytes):
            tried = await _attempt(run, target, outcome)
            uploads += 1
            if tried is not Tried.FULL or uploads >= MAX_UPLOADS_PER_PLACEMENT:
                return tried
        evict_first = False
        evicted = await evict_one(
            session=run.session,
            capacity=run.capacity,
            providers=run.providers,
            metrics=run.metrics,
            ctx=run.ctx,
            cap=cap,
            file=run.file,
        )
        if evicted is None:
            return Tried.FULL
        outcome.evicted += 1
    return Tried.FULL


async def _attempt(run: Placing, target: Target, outcome: Placement) -> Tried:
    """One upload to one target (its head start's outcome, if it has one): the intent
    recorded, the call made with no transaction open, and its outcome recorded (failed, or
    live under the file's row lock)."""
    session, ctx, file = run.session, run.ctx, run.file
    adapter = run.providers.adapter(target.provider)
    async with unit_of_work(session):
        intent = await _intent(session=session, ctx=ctx, file=file, target=target)
    if intent is None:
        outcome.placed_on = target.provider  # a concurrent placement got there first
        return Tried.PLACED
    copy, replacing = intent
    try:
        if (pending := run.take_head_start(target)) is not None:
            result = await pending.result()
        else:
            async with await run.blob_store.open(run.blob.storage_key) as body:
                result = await adapter.upload(
                    body=body,
                    filename=provider_filename(file, tag=run.tag),
                    purpose=target.rule.native,
                    content_type=file.content_type,
                )
    except BlobMissing:
        # The blob went with a delete that ran while this placement waited its turn.
        async with unit_of_work(session):
            gone = await _deleted_meanwhile(session=session, file=file)
            if gone:
                await _withdraw_unsent_copy(session=session, ctx=ctx, copy=copy)
        if not gone:
            raise BlobCorrupt(
                f"The stored content of {file.id} is missing; it is not pushed again."
            ) from None
        outcome.withdrawn = True
        return Tried.WITHDRAWN
    except ProviderError as exc:
        full = isinstance(exc, ProviderAccountFull)
        if not full:
            outcome.errors.append(exc)
            outcome.deferred = outcome.deferred or exc.retryable
        async with unit_of_work(session):
            lifecycle.transition(
                session, copy, C.FAILED, reason=exc.message, request_id=ctx.request_id
            )
            copy.last_error = exc.message
        return Tried.FULL if full else Tried.FAILED
    async with unit_of_work(session):
        late = await _deleted_meanwhile(session=session, file=file, lock=True)
        if late:
            _discard_late_copy(session=session, ctx=ctx, copy=copy, provider_file_id=result.id)
        else:
            _activate(
                session=session,
                ctx=ctx,
                file=file,
                copy=copy,
                provider_file_id=result.id,
                reason=f"re-placed as {result.id}" if replacing else None,
                keep_extracted=replacing,
            )
    if late:
        try:
            await adapter.delete(result.id)
        except ProviderError:
            pass  # reconciliation removes it: it carries the id of a deleted file
        outcome.withdrawn = True
        return Tried.WITHDRAWN
    if replacing:
        run.metrics.replacements.labels(target.provider).inc()
    outcome.placed_on = target.provider
    return Tried.PLACED


async def _deleted_meanwhile(*, session: AsyncSession, file: File, lock: bool = False) -> bool:
    current = await FileRepository(session).refresh(file.id, lock=lock)
    return current is None or current.deleted_at is not None


async def _withdraw_unsent_copy(
    *, session: AsyncSession, ctx: CallContext, copy: ProviderCopy
) -> None:
    """The file was deleted before its upload began: nothing reached the provider."""
    await session.refresh(copy)
    if copy.status != C.PLACING:
        return  # the delete settled it already
    lifecycle.transition(
        session,
        copy,
        C.DELETED,
        reason="file deleted during placement; nothing was uploaded",
        request_id=ctx.request_id,
    )


def _discard_late_copy(
    *, session: AsyncSession, ctx: CallContext, copy: ProviderCopy, provider_file_id: str
) -> None:
    """The file was deleted while its upload ran: record the late copy as removed."""
    copy.provider_file_id = provider_file_id
    lifecycle.transition(
        session,
        copy,
        C.DELETED,
        reason=f"file deleted during placement; removing {provider_file_id}",
        request_id=ctx.request_id,
    )


async def _intent(
    *, session: AsyncSession, ctx: CallContext, file: File, target: Target
) -> tuple[ProviderCopy, bool] | None:
    """The copy row, written before calling the provider so a crash leaves a trail, and
    whether it re-places an evicted copy; None when the copy is live already (a concurrent
    placement of it finished first)."""
    repo = FileRepository(session)
    copy = await repo.copy_for(file_id=file.id, provider=target.provider)
    if copy is None:
        fresh = ProviderCopy(
            file_id=file.id,
            provider=target.provider,
            native_purpose=target.rule.native,
            status=C.PLACING,  # the row's placeholder until the move below records it
            attempts=0,
        )
        try:
            async with session.begin_nested():
                session.add(fresh)
        except IntegrityError:
            pass  # a concurrent placement of the same copy wrote the row first: take it over
        copy = (
            fresh
            if fresh in session
            else await repo.copy_for(file_id=file.id, provider=target.provider)
        )
        assert copy is not None
    if copy.status == C.ACTIVE:
        return None
    replacing = copy.status == C.EVICTED
    # A copy still placing after an attempt was cut off (a crash, a lapsed lease) stays placing.
    if copy.status != C.PLACING or copy.attempts == 0:
        lifecycle.transition(
            session,
            copy,
            C.PLACING,
            reason=(
                f"re-placing the evicted copy as '{target.rule.native}'"
                if replacing
                else f"placing as '{target.rule.native}'"
            ),
            request_id=ctx.request_id,
            new=copy.attempts == 0,
        )
    copy.native_purpose = target.rule.native
    copy.provider_file_id = None
    copy.attempts += 1
    return copy, replacing


def adopt(
    *,
    session: AsyncSession,
    ctx: CallContext,
    file: File,
    copy: ProviderCopy,
    provider_file_id: str,
) -> None:
    """Take over a provider file the gateway uploaded but never recorded (crash before commit)."""
    _activate(
        session=session,
        ctx=ctx,
        file=file,
        copy=copy,
        provider_file_id=provider_file_id,
        reason=f"adopted {provider_file_id} found by reconciliation",
    )


def _activate(
    *,
    session: AsyncSession,
    ctx: CallContext,
    file: File,
    copy: ProviderCopy,
    provider_file_id: str,
    reason: str | None = None,
    keep_extracted: bool = False,
) -> None:
    lifecycle.transition(
        session,
        copy,
        C.ACTIVE,
        reason=reason or f"placed as {provider_file_id}",
        request_id=ctx.request_id,
    )
    copy.provider_file_id = provider_file_id
    copy.last_error = None
    copy.last_used_at = utcnow()
    if not keep_extracted:  # the same bytes extract alike: an evicted copy's text still holds
        copy.extracted = None
    if file.status != FileStatus.PROCESSED:
        lifecycle.transition(
            session,
            file,
            FileStatus.PROCESSED,
            reason=f"live on {copy.provider}",
            request_id=ctx.request_id,
        )
        file.status_details = None
    audit.record(
        session=session, ctx=ctx, action="file.place", resource=f"{file.id}@{copy.provider}"
    )

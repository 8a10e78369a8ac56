"""Choosing providers for a file and putting the canonical blob on them."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import CallContext
from app.core.db import unit_of_work
from app.core.errors import BlobCorrupt, CircuitOpen, ProviderError
from app.core.metrics import GatewayMetrics
from app.models import File, FileStatus, ProviderCopy
from app.models import ProviderCopyStatus as C
from app.providers.hub import ProviderHub, Target
from app.repositories.files import FileRepository
from app.services import audit, lifecycle
from app.services.deployment import TAG_ALPHABET, TAG_LENGTH, DeploymentIdentity
from app.storage.blobs import BlobMissing, BlobStore

if TYPE_CHECKING:
    from app.services.files.pipelined import HeadStart

PROVIDER_FILENAME_MAX = 255
FILE_ID_LENGTH = 29


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


async def place(
    *,
    session: AsyncSession,
    blob_store: BlobStore,
    providers: ProviderHub,
    deployment: DeploymentIdentity,
    metrics: GatewayMetrics,
    ctx: CallContext,
    file: File,
    targets: Sequence[Target],
    head_start: HeadStart | None = None,
) -> Placement:
    """Upload the canonical blob to the first target that takes it.

    A `head_start` (the upload of its target that ran while the body arrived) is that
    target's first try: its outcome is taken here. When it fails, the next target
    is tried from the blob, or, when no other target is left, the same one again from the blob.

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
    tag = await deployment.tag()
    tries = list(targets)
    if head_start is not None and head_start.usable and head_start.file_id == file.id:
        ahead = [t for t in tries if t.provider == head_start.provider]
        if ahead and len(tries) == 1:
            tries.insert(0, ahead[0])  # its blob is the second try of the only target
    else:
        head_start = None
    again = True  # whether the only target is tried again from the blob
    for index, target in enumerate(tries):
        if index > 0 and target is tries[index - 1] and not again:
            continue
        adapter = providers.adapter(target.provider)
        pipelined = head_start is not None and target.provider == head_start.provider
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
        if index > 0 and target.provider != tries[index - 1].provider:
            metrics.fallbacks.labels(target.provider).inc()
        async with unit_of_work(session):
            copy = await _intent(session=session, ctx=ctx, file=file, target=target)
        if copy is None:
            outcome.placed_on = target.provider  # a concurrent placement got there first
            return outcome
        try:
            if head_start is not None and pipelined:
                pending, head_start = head_start, None
                result = await pending.result()
            else:
                async with await blob_store.open(blob.storage_key) as body:
                    result = await adapter.upload(
                        body=body,
                        filename=provider_filename(file, tag=tag),
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
            return outcome
        except ProviderError as exc:
            again = exc.retryable  # a refusal of the bytes would only be repeated
            outcome.errors.append(exc)
            outcome.deferred = outcome.deferred or exc.retryable
            async with unit_of_work(session):
                lifecycle.transition(
                    session, copy, C.FAILED, reason=exc.message, request_id=ctx.request_id
                )
                copy.last_error = exc.message
            continue
        async with unit_of_work(session):
            late = await _deleted_meanwhile(session=session, file=file, lock=True)
            if late:
                _discard_late_copy(session=session, ctx=ctx, copy=copy, provider_file_id=result.id)
            else:
                _activate(
                    session=session, ctx=ctx, file=file, copy=copy, provider_file_id=result.id
                )
        if late:
            try:
                await adapter.delete(result.id)
            except ProviderError:
                pass  # reconciliation removes it: it carries the id of a deleted file
            outcome.withdrawn = True
            return outcome
        outcome.placed_on = target.provider
        return outcome
    return outcome


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
) -> ProviderCopy | None:
    """The copy row, written before calling the provider so a crash leaves a trail;
    None when the copy is live already (a concurrent placement of it finished first)."""
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
    # A copy still placing after an attempt was cut off (a crash, a lapsed lease) stays placing.
    if copy.status != C.PLACING or copy.attempts == 0:
        lifecycle.transition(
            session,
            copy,
            C.PLACING,
            reason=f"placing as '{target.rule.native}'",
            request_id=ctx.request_id,
            new=copy.attempts == 0,
        )
    copy.native_purpose = target.rule.native
    copy.provider_file_id = None
    copy.attempts += 1
    return copy


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

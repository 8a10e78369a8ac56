"""The one place file, provider-copy and upload statuses change: allowed moves, each recorded.

Every status change goes through `transition`, which checks the move against the tables below,
sets the status and adds the lifecycle event with its reason to the caller's unit of work (an
upload's moves are recorded in the audit log by the service that makes them: lifecycle events
belong to files). A move the tables do not allow is a bug in the caller and raises
`IllegalTransition`."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import IllegalTransition
from app.models import (
    File,
    FileStatus,
    LifecycleEvent,
    ProviderCopy,
    ProviderCopyStatus,
    Upload,
    UploadStatus,
)

F = FileStatus
C = ProviderCopyStatus
U = UploadStatus

# None is the state before the row exists.
FILE_MOVES: Mapping[FileStatus | None, frozenset[FileStatus]] = {
    None: frozenset({F.UPLOADED}),
    F.UPLOADED: frozenset({F.PROCESSED, F.PENDING, F.ERROR, F.DELETED}),
    F.PENDING: frozenset({F.PROCESSED, F.ERROR, F.DELETED}),
    F.PROCESSED: frozenset({F.DELETED}),
    F.ERROR: frozenset({F.PROCESSED, F.PENDING, F.DELETED}),
    F.DELETED: frozenset(),
}

COPY_MOVES: Mapping[ProviderCopyStatus | None, frozenset[ProviderCopyStatus]] = {
    None: frozenset({C.PLACING}),
    # The upload landed, the provider refused it, or the file was deleted meanwhile.
    C.PLACING: frozenset({C.ACTIVE, C.FAILED, C.DELETED}),
    # Evicted: the provider file was deleted to make room; the blob rebuilds it on demand.
    C.ACTIVE: frozenset({C.MISSING, C.DELETING, C.DELETED, C.EVICTED}),
    # Placed again; or adopted when reconciliation finds the upload that did land.
    C.FAILED: frozenset({C.PLACING, C.ACTIVE}),
    C.MISSING: frozenset({C.PLACING, C.ACTIVE, C.DELETING, C.DELETED}),
    C.DELETING: frozenset({C.DELETED}),
    C.DELETED: frozenset({C.PLACING}),
    # Re-placed when needed; nothing is left at the provider when its file is deleted.
    C.EVICTED: frozenset({C.PLACING, C.DELETED}),
}

UPLOAD_MOVES: Mapping[UploadStatus | None, frozenset[UploadStatus]] = {
    None: frozenset({U.PENDING}),
    U.PENDING: frozenset({U.COMPLETED, U.CANCELLED, U.EXPIRED}),
    U.COMPLETED: frozenset(),
    U.CANCELLED: frozenset(),
    U.EXPIRED: frozenset(),
}

Subject = File | ProviderCopy | Upload


def transition(
    session: AsyncSession,
    subject: Subject,
    to: FileStatus | ProviderCopyStatus | UploadStatus,
    *,
    reason: str,
    request_id: str | None,
    new: bool = False,
) -> None:
    """Move `subject` to `to` and record why; `new` for a row being created by this move."""
    current = None if new else _status(subject)
    allowed = _moves(subject).get(current, frozenset())
    if to not in allowed:
        raise IllegalTransition(
            f"{_describe(subject)} cannot move from '{current}' to '{to}'.",
        )
    subject.status = to
    _record(session, subject, current, to, reason, request_id)


def note(
    session: AsyncSession, subject: File | ProviderCopy, *, reason: str, request_id: str | None
) -> None:
    """Record something that happened to `subject` without changing its status."""
    status = _status(subject)
    assert status is not None
    _record(session, subject, status, status, reason, request_id)


def _moves(subject: Subject) -> Mapping[str | None, frozenset[str]]:
    if isinstance(subject, Upload):
        return UPLOAD_MOVES  # type: ignore[return-value]
    return FILE_MOVES if isinstance(subject, File) else COPY_MOVES  # type: ignore[return-value]


def _status(subject: Subject) -> FileStatus | ProviderCopyStatus | UploadStatus | None:
    if subject.status is None:
        return None
    if isinstance(subject, Upload):
        return U(subject.status)
    return FileStatus(subject.status) if isinstance(subject, File) else C(subject.status)


def _describe(subject: Subject) -> str:
    if isinstance(subject, Upload):
        return f"upload {subject.id}"
    if isinstance(subject, File):
        return f"file {subject.id}"
    return f"the {subject.provider} copy of {subject.file_id}"


def _record(
    session: AsyncSession,
    subject: Subject,
    from_status: str | None,
    to_status: str,
    reason: str,
    request_id: str | None,
) -> None:
    if isinstance(subject, Upload):
        return
    if isinstance(subject, File):
        file_id, provider = subject.id, None
    else:
        file_id, provider = subject.file_id, subject.provider
    session.add(
        LifecycleEvent(
            file_id=file_id,
            provider=provider,
            from_status=from_status,
            to_status=to_status,
            reason=reason,
            request_id=request_id,
        )
    )

"""Statuses change only along the lifecycle tables, and every change is recorded."""

from __future__ import annotations

import itertools

import pytest
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
from app.services import lifecycle

FILE_ID = "file-" + "aB3" * 8


def events(session: AsyncSession) -> list[tuple[str | None, str | None, str, str]]:
    return [
        (e.provider, e.from_status, e.to_status, e.reason)
        for e in session.new
        if isinstance(e, LifecycleEvent)
    ]


def test_a_new_file_is_uploaded_and_the_move_is_recorded() -> None:
    session = AsyncSession()
    file = File(id=FILE_ID)
    lifecycle.transition(
        session, file, FileStatus.UPLOADED, reason="upload accepted", request_id="r1", new=True
    )
    assert file.status == FileStatus.UPLOADED
    assert events(session) == [(None, None, "uploaded", "upload accepted")]
    [event] = [e for e in session.new if isinstance(e, LifecycleEvent)]
    assert (event.file_id, event.request_id) == (FILE_ID, "r1")


def test_every_move_outside_the_file_table_raises_and_changes_nothing() -> None:
    for start, to in itertools.product(list(FileStatus), list(FileStatus)):
        session = AsyncSession()
        file = File(id=FILE_ID, status=start)
        if to in lifecycle.FILE_MOVES[start]:
            lifecycle.transition(session, file, to, reason="r", request_id=None)
            assert file.status == to
            assert events(session) == [(None, start, to, "r")]
        else:
            with pytest.raises(IllegalTransition):
                lifecycle.transition(session, file, to, reason="r", request_id=None)
            assert (file.status, events(session)) == (start, [])


def test_every_move_outside_the_copy_table_raises_and_changes_nothing() -> None:
    for start, to in itertools.product(list(ProviderCopyStatus), list(ProviderCopyStatus)):
        session = AsyncSession()
        copy = ProviderCopy(file_id=FILE_ID, provider="moonshot", status=start)
        if to in lifecycle.COPY_MOVES[start]:
            lifecycle.transition(session, copy, to, reason="r", request_id=None)
            assert copy.status == to
            assert events(session) == [("moonshot", start, to, "r")]
        else:
            with pytest.raises(IllegalTransition):
                lifecycle.transition(session, copy, to, reason="r", request_id=None)
            assert (copy.status, events(session)) == (start, [])


def test_an_upload_is_pending_until_it_ends_once_and_for_all() -> None:
    for start, to in itertools.product(list(UploadStatus), list(UploadStatus)):
        session = AsyncSession()
        upload = Upload(id="upload_" + "aB3" * 8, status=start)
        if start == UploadStatus.PENDING and to != UploadStatus.PENDING:
            lifecycle.transition(session, upload, to, reason="r", request_id=None)
            assert upload.status == to
        else:
            with pytest.raises(IllegalTransition):
                lifecycle.transition(session, upload, to, reason="r", request_id=None)
            assert upload.status == start
        # Uploads are no files: their moves are in the audit log, never lifecycle events.
        assert events(session) == []


def test_deleted_is_final_for_a_file_and_nothing_starts_but_upload_or_placing() -> None:
    assert lifecycle.FILE_MOVES[FileStatus.DELETED] == frozenset()
    assert lifecycle.FILE_MOVES[None] == {FileStatus.UPLOADED}
    assert lifecycle.COPY_MOVES[None] == {ProviderCopyStatus.PLACING}
    session = AsyncSession()
    with pytest.raises(IllegalTransition):
        lifecycle.transition(
            session, File(id=FILE_ID), FileStatus.PROCESSED, reason="r", request_id=None, new=True
        )


def test_a_note_records_without_changing_the_status() -> None:
    session = AsyncSession()
    file = File(id=FILE_ID, status=FileStatus.PROCESSED)
    lifecycle.note(session, file, reason="blob corrupt", request_id=None)
    assert file.status == FileStatus.PROCESSED
    assert events(session) == [(None, "processed", "processed", "blob corrupt")]

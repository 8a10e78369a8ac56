"""What the file services take and answer: uploads received, files with their copies, ids."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.core.errors import InvalidRequest, NotFound
from app.models import File, ProviderCopy
from app.storage.blobs import Spool

if TYPE_CHECKING:
    from app.services.files.pipelined import HeadStart

FILE_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(FILE_ID_ALPHABET) for _ in range(24))


def valid_file_id(file_id: str) -> bool:
    return (
        len(file_id) == 29
        and file_id.startswith("file-")
        and all(ch in FILE_ID_ALPHABET for ch in file_id[5:])
    )


def check_id(file_id: str) -> None:
    if not valid_file_id(file_id):
        raise InvalidRequest(
            f"'{file_id}' is not a file id (expected 'file-' and 24 letters or digits).",
            param="id",
            code="invalid_file_id",
        )


def not_found() -> NotFound:
    # Identical for a missing id and for another tenant's id.
    return NotFound("No such File object.", param="id")


@dataclass
class IncomingUpload:
    """A fully received upload: the spooled file part (`durable` once the spool is finished)
    plus the text fields, and the provider upload that ran while it arrived (with the file id
    its provider name carries), if any."""

    spool: Spool
    sha256: str
    size: int
    filename: str
    content_type: str
    fields: dict[str, str] = field(default_factory=dict)
    head_start: HeadStart | None = None
    durable: asyncio.Future[str] | None = None


@dataclass(frozen=True)
class FileView:
    """A file and its provider copies, as the API shows them."""

    file: File
    copies: list[ProviderCopy]
    retry_after: float | None = None  # a pending placement: the wait a provider asked for


@dataclass(frozen=True)
class CreateResult:
    view: FileView
    created: bool


@dataclass(frozen=True)
class FilePage:
    views: list[FileView]
    has_more: bool

"""Streaming multipart intake: hash and spool the file part as it arrives, in bounded memory.

The spool is owned here: `receive_upload` yields the upload and removes its spool when the
request is done with it, whatever happened (a blob store commit has moved it by then). When
the file part begins, before any of its bytes, a hook sees what is known by then (the fields
before it, the filename, the declared digest) and may answer in place of the upload; another
may start a provider upload that every spooled piece is passed on to as well (one read of the
stream feeds the hash, the spool and the provider)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.api import digest
from app.core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from app.services.files import IncomingUpload
from app.services.files.pipelined import HeadStart
from app.storage.blobs import BlobStore, Spool

FLUSH_BYTES = 256 * 1024
MAX_FIELD_BYTES = 1024
MAX_HEADER_BYTES = 8 * 1024
MAX_FILENAME_CHARS = 255
MULTIPART_OVERHEAD_BYTES = 1024 * 1024

T = TypeVar("T")


_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
MEDIA_TYPE = re.compile(rf"{_TCHARS}/{_TCHARS}(?:[ \t]*;[ \t]*{_TCHARS}=(?:{_TCHARS}|{_QUOTED}))*")
MAX_MEDIA_TYPE_CHARS = 255


def media_type(raw: str) -> str:
    """The part's Content-Type if it is a media type by RFC 9110's grammar (ASCII only), else
    a 400: it is stored and sent back on every download, so it must be a valid header value."""
    value = raw.strip(" \t")
    if not value:
        return "application/octet-stream"
    if len(value) > MAX_MEDIA_TYPE_CHARS or MEDIA_TYPE.fullmatch(value) is None:
        raise InvalidRequest(
            "The file part's Content-Type is not a valid media type "
            f"(type/subtype[; name=value], printable ASCII, at most {MAX_MEDIA_TYPE_CHARS} "
            "characters).",
            param="file",
        )
    return value


def _utf8(raw: bytes) -> str:
    """Header parameters are UTF-8 as browsers and HTTP clients send them; else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def validate_filename(raw: str) -> str:
    """Refuse names that could address paths or smuggle control characters."""
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InvalidRequest("The file part needs a non-empty filename.", param="file")
    if len(name) > MAX_FILENAME_CHARS:
        raise InvalidRequest(
            f"The filename is longer than {MAX_FILENAME_CHARS} characters.", param="file"
        )
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise InvalidRequest(
            "The filename must not contain path separators ('/' or '\\').", param="file"
        )
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in name):
        raise InvalidRequest("The filename must not contain control characters.", param="file")
    return name


@dataclass(frozen=True)
class FileStart:
    """What is known when the file part begins, before its bytes: the fields sent before it,
    the part's name and type, and the SHA-256 the client declared (header or field)."""

    filename: str
    content_type: str
    fields: dict[str, str]
    declared_sha256: str | None


OnFileStart = Callable[[FileStart], Awaitable[T | None]]
StartPipelined = Callable[[FileStart], Awaitable[HeadStart | None]]


class _PartState:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.header_bytes = 0
        self.name: str | None = None
        self.filename: str | None = None
        self.content_type = "application/octet-stream"
        self.value = bytearray()


class MultipartIntake:
    """Feeds request body chunks to python-multipart's streaming parser."""

    def __init__(
        self,
        *,
        blob_store: BlobStore,
        boundary: bytes,
        max_file_bytes: int,
        max_parts: int,
        text_fields: frozenset[str],
        declared_sha256: str | None = None,
        file_field: str = "file",
        filename_required: bool = True,
    ) -> None:
        self.blob_store = blob_store
        self.file_field = file_field
        self.filename_required = filename_required
        self.max_file_bytes = max_file_bytes
        self.max_parts = max_parts
        self.text_fields = text_fields | {digest.FIELD}
        self.declared_sha256 = declared_sha256
        self.file_start: FileStart | None = None  # set as the file part begins, until taken
        self.fields: dict[str, str] = {}
        self.parts = 0
        self.part: _PartState | None = None
        self.spool: Spool | None = None
        self.file_seen = False
        self.filename: str | None = None
        self.file_content_type = "application/octet-stream"
        self.file_size = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.flushed_bytes = 0
        self.head_start: HeadStart | None = None
        self.durable: asyncio.Future[str] | None = None
        self.finished = False
        self.writing: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_end": self._on_end,
            },
        )

    def _fail(self, exc: Exception) -> None:
        # Callbacks run inside parser.write(); remember the first error and stop there.
        if self.error is None:
            self.error = exc

    def _on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            self._fail(InvalidRequest(f"Too many multipart parts (at most {self.max_parts})."))
        self.part = _PartState()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        assert self.part is not None
        self.part.header_field += data[start:end]
        self._count_header(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        assert self.part is not None
        self.part.header_value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, n: int) -> None:
        assert self.part is not None
        self.part.header_bytes += n
        if self.part.header_bytes > MAX_HEADER_BYTES:
            self._fail(InvalidRequest("A multipart part has oversized headers."))

    def _on_header_end(self) -> None:
        assert self.part is not None
        key = self.part.header_field.decode("latin-1").strip().lower()
        # Latin-1 round-trips every byte; names and filenames are decoded as UTF-8 below.
        self.part.headers[key] = self.part.header_value.decode("latin-1")
        self.part.header_field.clear()
        self.part.header_value.clear()

    def _on_headers_finished(self) -> None:
        part = self.part
        assert part is not None
        disposition, params = parse_options_header(part.headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in params:
            self._fail(InvalidRequest("Each multipart part needs Content-Disposition: form-data."))
            return
        part.name = _utf8(params[b"name"])
        if part.name == self.file_field:
            if self.file_seen:
                self._fail(InvalidRequest(f"Send exactly one '{part.name}' part.", param=part.name))
                return
            self.file_seen = True
            raw_name = params.get(b"filename")
            if raw_name is None and not self.filename_required:
                raw_name = part.name.encode()
            if raw_name is None:
                self._fail(InvalidRequest("The 'file' part needs a filename.", param="file"))
                return
            try:
                self.filename = validate_filename(_utf8(raw_name))
            except InvalidRequest as exc:
                self._fail(exc)
                return
            try:
                self.file_content_type = media_type(part.headers.get("content-type", ""))
            except InvalidRequest as exc:
                self._fail(exc)
                return
            self.spool = self.blob_store.new_spool()
            self.file_start = FileStart(
                filename=self.filename,
                content_type=self.file_content_type,
                fields=dict(self.fields),
                declared_sha256=self.declared_sha256,
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part is None or self.error is not None:
            return
        n = end - start
        if part.name == self.file_field and self.spool is not None:
            self.file_size += n
            if self.file_size > self.max_file_bytes:
                self._fail(
                    PayloadTooLarge(
                        f"The file is larger than the gateway's limit of {self.max_file_bytes} "
                        "bytes.",
                        param="file",
                    )
                )
                return
            self.pending.append(data[start:end])
            self.pending_bytes += n
        elif part.name in self.text_fields:
            part.value += data[start:end]
            if len(part.value) > MAX_FIELD_BYTES:
                self._fail(InvalidRequest(f"The '{part.name}' field is too long.", param=part.name))

    def _on_part_end(self) -> None:
        part = self.part
        if part is None or part.name is None or part.name == self.file_field:
            return
        if part.name in self.text_fields:
            try:
                value = part.value.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(InvalidRequest(f"'{part.name}' is not UTF-8.", param=part.name))
                return
            if any(unicodedata.category(ch) == "Cc" for ch in value):
                self._fail(
                    InvalidRequest(
                        f"The '{part.name}' field must not contain control characters.",
                        param=part.name,
                    )
                )
                return
            if part.name in self.fields:
                self._fail(
                    InvalidRequest(f"The '{part.name}' field is given twice.", param=part.name)
                )
                return
            self.fields[part.name] = value.strip()
            if part.name == digest.FIELD and self.fields[part.name]:
                self._declare(self.fields[part.name])  # an empty one (a blank form) declares none

    def _declare(self, value: str) -> None:
        """The `sha256` field: it must come before the file part and agree with the header."""
        if self.file_seen:
            self._fail(
                InvalidRequest(
                    f"The '{digest.FIELD}' field must come before the 'file' part.",
                    param=digest.FIELD,
                    code="invalid_digest",
                )
            )
            return
        try:
            self.declared_sha256 = digest.agreed(self.declared_sha256, digest.hex_digest(value))
        except InvalidRequest as exc:
            self._fail(exc)

    def _on_end(self) -> None:
        self.finished = True

    async def _flush(self, *, wait: bool = False) -> None:
        """Hand buffered bytes to a writer thread; parsing goes on while it hashes and writes."""
        await self._settle()
        if self.pending and self.spool is not None:
            chunk = b"".join(self.pending)
            self.pending.clear()
            self.pending_bytes = 0
            # One write in flight at a time keeps order and bounds memory to two buffers.
            self.writing = asyncio.ensure_future(self.spool.write(chunk))
            self.flushed_bytes += len(chunk)
            if self.head_start is not None:
                # The same piece goes to the provider while the writer thread spools it.
                await self.head_start.send(chunk, total=self.flushed_bytes)
        if wait:
            await self._settle()

    async def _settle(self) -> None:
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest("The multipart body is malformed.") from exc
        if self.error is not None:
            raise self.error
        # Held while the file part's start is being answered: a pipelined upload gets it all.
        if self.pending_bytes >= FLUSH_BYTES and self.file_start is None:
            await self._flush()

    async def finish(self) -> IncomingUpload:
        if not self.finished:
            raise InvalidRequest("The multipart body is truncated (no closing boundary).")
        field = self.file_field
        if self.spool is None or self.filename is None:
            raise InvalidRequest(f"The request has no '{field}' part.", param=field)
        await self._flush(wait=True)
        if self.file_size == 0:
            raise InvalidRequest(f"The {field} is empty.", param=field)
        sha256 = self.spool.sha256()
        if self.declared_sha256 is not None and sha256 != self.declared_sha256:
            raise digest.mismatch(declared=self.declared_sha256, received=sha256)
        # Made durable while the upload is looked up and a pipelined one completes; the claim
        # waits for it before committing the blob.
        self.durable = asyncio.ensure_future(self.spool.finish())
        return IncomingUpload(
            spool=self.spool,
            sha256=sha256,
            size=self.file_size,
            filename=self.filename,
            content_type=self.file_content_type,
            fields=self.fields,
            head_start=self.head_start,
            durable=self.durable,
        )

    async def discard(self) -> None:
        if self.head_start is not None:
            await self.head_start.close()  # a no-op once placement took its outcome
        if self.durable is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.durable)  # a spool is removed once it is closed
        if self.writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.writing)  # let the writer thread finish first
            self.writing = None
        if self.spool is not None:
            await self.spool.discard()


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or a 415/400 error."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType(
            "Uploads must be sent as multipart/form-data with a 'file' part and a 'purpose' field."
        )
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise InvalidRequest("The multipart Content-Type has no valid boundary.")
    return boundary


@asynccontextmanager
async def receive_upload(
    *,
    body: AsyncIterator[bytes],
    content_type: str | None,
    blob_store: BlobStore,
    max_file_bytes: int,
    max_parts: int,
    text_fields: frozenset[str],
    declared_sha256: str | None = None,
    on_file_start: OnFileStart[T] | None = None,
    start_pipelined: StartPipelined | None = None,
    file_field: str = "file",
    filename_required: bool = True,
) -> AsyncIterator[IncomingUpload | T]:
    """Stream a multipart body into a spool, yield it, and leave nothing on disk afterwards;
    the bytes are the `file_field` part (`data` for an upload's part, which needs no name).

    `on_file_start` runs once, as the file part begins: an answer it returns is yielded
    instead, and the rest of the body is left unread. The bytes are checked against the
    declared digest (the `Repr-Digest` value, or the `sha256` field) before they are
    yielded: a mismatch is a 400 and the spool goes. `start_pipelined` runs next (when no
    answer came): the provider upload it starts gets every piece as it is spooled, and is
    closed with the spool unless placement took it."""
    intake = MultipartIntake(
        blob_store=blob_store,
        boundary=multipart_boundary(content_type),
        max_file_bytes=max_file_bytes,
        max_parts=max_parts,
        text_fields=text_fields,
        declared_sha256=declared_sha256,
        file_field=file_field,
        filename_required=filename_required,
    )
    max_body = max_file_bytes + MULTIPART_OVERHEAD_BYTES
    received = 0
    try:
        async for chunk in body:
            if chunk:
                received += len(chunk)
                if received > max_body:
                    raise PayloadTooLarge(
                        f"The request body exceeds the gateway's limit of {max_body} bytes.",
                        param="file",
                    )
                await intake.feed(chunk)
                if intake.file_start is not None:
                    start, intake.file_start = intake.file_start, None
                    answer = None if on_file_start is None else await on_file_start(start)
                    if answer is not None:
                        yield answer
                        return
                    if start_pipelined is not None:
                        intake.head_start = await start_pipelined(start)
        yield await intake.finish()
    finally:
        await intake.discard()

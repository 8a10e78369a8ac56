"""The OpenAI-shaped Files API: /v1/files."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from app.api import digest
from app.api.deps import FileId, ReadSessionDep, RuntimeDep, SessionDep
from app.api.download import BlobResponse, byte_ranges
from app.api.errors import AUTH_ERRORS, responses
from app.api.idempotency import IdempotencyScope, Idempotent
from app.api.intake import FileStart, media_type, multipart_boundary, receive_upload
from app.api.schemas import (
    Extracted,
    FileDeleted,
    FileEvent,
    FileEventList,
    FileList,
    FileObject,
    ReplicateRequest,
)
from app.auth.guards import ReadCtx, WriteCtx
from app.core.db import utcnow
from app.core.errors import (
    BlobCorrupt,
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProviderAuthFailed,
    ProviderFileTooLarge,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderUnavailable,
    RangeNotSatisfiable,
    UnsupportedMediaType,
)
from app.core.provider_names import Provider
from app.models import FileStatus
from app.runtime import Runtime
from app.services import files as file_service
from app.services.files import IncomingUpload, pipelined
from app.services.idempotency import request_digest

router = APIRouter(prefix="/v1/files", tags=["files"])

PROVIDER_ERRORS = (
    ProviderAuthFailed,
    ProviderRateLimited,
    ProviderFileTooLarge,
    ProviderQuotaExceeded,
    ProviderUnavailable,
)
UPLOAD_FIELDS = frozenset(
    {"purpose", "provider", "pin", "expires_after[anchor]", "expires_after[seconds]"}
)
DEDUP_HEADER = "Filegate-Dedup"
DEDUP_DOC = {
    "description": "`hit`: the tenant already held these bytes with this purpose and the "
    "answer is that file; `miss`: a new file",
    "schema": {"type": "string", "enum": ["hit", "miss"]},
}
REPR_DIGEST_DOC = {
    "description": "RFC 9530 digest of the whole file, `sha-256=:<base64>:`",
    "schema": {"type": "string"},
}
PIN_VALUES = {"true": True, "false": False}
EXPIRES_MIN_SECONDS = 3600
EXPIRES_MAX_SECONDS = 30 * 24 * 3600

UPLOAD_BODY = {
    "parameters": [
        {
            "name": digest.HEADER,
            "in": "header",
            "required": False,
            # No example: the docs' "Try it out" would send it, declaring another file's digest.
            "description": "RFC 9530 digest of the file part's bytes, `sha-256=:<base64>:` "
            "(e.g. `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:`); other algorithms "
            "are ignored, a malformed value is 400 invalid_digest",
            "schema": {"type": "string"},
        },
        *(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": "The form field of this name, given before the body (must "
                "agree with the form's if both are sent)",
                "schema": {"type": "string"},
            }
            for name in ("purpose", "provider", "expires_after[anchor]", "expires_after[seconds]")
        ),
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {
                            "type": "string",
                            "description": "file-extract (or its OpenAI aliases assistants and "
                            "user_data), batch, vision, code-interpreter, agent, fine-tune",
                            "example": "file-extract",
                        },
                        "provider": {
                            "type": "string",
                            "enum": ["auto", *Provider],
                            "default": "auto",
                        },
                        # No pattern: the docs would fill in a random match and send it.
                        "sha256": {
                            "type": "string",
                            "default": "",
                            "description": "The file's SHA-256 as 64 hex digits, declared "
                            "before the file part (empty: none): a hit answers without reading "
                            "the file's bytes; the bytes must match (else 400 digest_mismatch)",
                        },
                        "pin": {
                            "type": "string",
                            "enum": ["true", "false"],
                            "default": "false",
                            "description": "true: the file's provider copies are never "
                            "evicted to make room (see POST /v1/files/{id}/pin)",
                        },
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": EXPIRES_MIN_SECONDS,
                            "maximum": EXPIRES_MAX_SECONDS,
                        },
                    },
                }
            }
        },
    },
}


@router.post(
    "",
    response_model=FileObject,
    summary="Upload a file",
    description=(
        "Streams the multipart body to disk while hashing it and, once the target provider "
        "is known from the fields before the file part, to the provider at the same time "
        "(FILEGATE_SPECULATIVE_PLACEMENT). The same bytes with the same "
        "purpose (an alias counts as the purpose it names) return the tenant's existing file "
        f"(same id, its first filename) without a second provider upload; `{DEDUP_HEADER}` "
        "says `hit` or `miss`. A hit never shortens or clears the file's expiry: a later "
        "`expires_after` lengthens it, none leaves it. A SHA-256 declared before the bytes "
        f"(`{digest.HEADER}: sha-256=:<base64>:`, or a hex `sha256` field before the file "
        "part) lets a hit answer without reading them: with the header, `purpose` in the query "
        "string and `Expect: 100-continue`, the body is never sent. Declared digests are "
        "checked against the bytes received: a mismatch is `400 digest_mismatch` and nothing "
        "is stored. Every text field may also be given in the query string."
    ),
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {
            "model": FileObject,
            "description": "The file, live on a provider",
            "headers": {DEDUP_HEADER: DEDUP_DOC},
        },
        202: {
            "model": FileObject,
            "description": "Accepted as pending: no allowed provider can take it right now; "
            "the gateway places it later by itself (poll GET /v1/files/{id})",
            "headers": {DEDUP_HEADER: DEDUP_DOC},
        },
        **responses(
            *AUTH_ERRORS, PayloadTooLarge, UnsupportedMediaType, Conflict, *PROVIDER_ERRORS
        ),
    },
)
async def upload_file(
    request: Request, ctx: WriteCtx, idem: Idempotent, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    content_type = request.headers.get("content-type")
    multipart_boundary(content_type)  # a body that is not multipart is refused before anything
    declared = digest.repr_digest(request.headers.getlist(digest.HEADER))
    query = _query_fields(request)
    claimed = False  # whether the Idempotency-Key is this request's already
    missed: set[tuple[str, str]] = set()  # (sha256, purpose) looked up in vain

    async def reuse(fields: dict[str, str], sha256: str | None) -> JSONResponse | None:
        """The tenant's file of the declared bytes, answered before they are read; else None."""
        nonlocal claimed
        purpose = fields.get("purpose")
        if sha256 is None or not purpose or (sha256, purpose) in missed:
            return None
        provider = _provider(rt, fields)
        expires_at = _expires_at(fields)
        pin = _pin(fields)
        existing = await file_service.find_declared(
            session=session, ctx=ctx, sha256=sha256, purpose=purpose
        )
        if existing is None:
            missed.add((sha256, purpose))
            return None
        if not claimed:
            claimed = True
            replay = await idem.begin(_fingerprint(sha256, purpose, provider, fields, pin))
            if replay is not None:
                return replay
        result = await file_service.reuse_declared(
            session=session,
            placer=rt.placer,
            ctx=ctx,
            file=existing,
            provider=provider,
            expires_at=expires_at,
            pin=pin,
        )
        return await _answer(idem, result) if result is not None else None

    if (early := await reuse(query, declared)) is not None:
        return early  # the body is never asked for (so it closes, see ExpectContinueMiddleware)
    async with receive_upload(
        body=request.stream(),
        content_type=content_type,
        blob_store=rt.blob_store,
        max_file_bytes=rt.settings.max_upload_bytes,
        max_parts=rt.settings.max_multipart_parts,
        text_fields=UPLOAD_FIELDS,
        declared_sha256=declared,
        on_file_start=lambda start: reuse(_merged(query, start.fields), start.declared_sha256),
        start_pipelined=lambda start: _pipelined(rt, _merged(query, start.fields), start),
    ) as received:
        if not isinstance(received, IncomingUpload):
            return received
        upload = received
        fields = _merged(query, upload.fields)
        purpose = fields.get("purpose")
        if not purpose:
            raise InvalidRequest("The 'purpose' field is required.", param="purpose")
        provider = _provider(rt, fields)
        expires_at = _expires_at(fields)
        pin = _pin(fields)
        if not claimed:
            replay = await idem.begin(_fingerprint(upload.sha256, purpose, provider, fields, pin))
            if replay is not None:
                return replay
        result = await file_service.create_file(
            session=session,
            placer=rt.placer,
            ctx=ctx,
            upload=upload,
            purpose=purpose,
            provider=provider,
            expires_at=expires_at,
            pin=pin,
        )
        return await _answer(idem, result)


async def _pipelined(
    rt: Runtime, fields: dict[str, str], start: FileStart
) -> pipelined.HeadStart | None:
    """The provider upload that runs while the file part arrives, when its target is known."""
    purpose = fields.get("purpose")
    if not purpose:
        return None  # a purpose after the file part: stored first, then placed
    return await pipelined.start(
        placer=rt.placer,
        purpose=purpose,
        requested=_provider(rt, fields),
        filename=start.filename,
        content_type=start.content_type,
        declared=start.declared_sha256 is not None,
    )


def _provider(rt: Runtime, fields: dict[str, str]) -> str:
    provider = (fields.get("provider") or "auto").lower()
    rt.providers.check_provider_known(provider)
    return provider


def _fingerprint(
    sha256: str, purpose: str, provider: str, fields: dict[str, str], pin: bool
) -> str:
    """Hash of the bytes plus canonical fields: a retry with a new boundary still matches."""
    return request_digest(
        route="POST /v1/files",
        sha256=sha256,
        purpose=purpose,
        provider=provider,
        expires=fields.get("expires_after[seconds]"),
        pin=pin,
    )


async def _answer(idem: IdempotencyScope, result: file_service.CreateResult) -> JSONResponse:
    pending = result.view.file.status in (FileStatus.PENDING, FileStatus.UPLOADED)
    response = await idem.answer(202 if pending else 200, FileObject.of(result.view))
    response.headers[DEDUP_HEADER] = "miss" if result.created else "hit"
    return _with_retry_after(response, result.view.retry_after)


def _query_fields(request: Request) -> dict[str, str]:
    """The upload's text fields given in the query string (known before the body)."""
    fields: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in UPLOAD_FIELDS:
            continue
        if name in fields:
            raise InvalidRequest(f"The '{name}' field is given twice.", param=name)
        fields[name] = value.strip()
    return fields


def _merged(query: dict[str, str], form: dict[str, str]) -> dict[str, str]:
    """Query and form fields together; a field given in both must say the same."""
    for name in query.keys() & form.keys():
        if query[name] != form[name]:
            raise InvalidRequest(
                f"The '{name}' field differs between the query string and the form.", param=name
            )
    return {**form, **query}


def _with_retry_after(response: JSONResponse, retry_after: float | None) -> JSONResponse:
    """A 202 says when the provider that is failing asked to be tried again, if it did."""
    if response.status_code == 202 and retry_after:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _pin(fields: dict[str, str]) -> bool:
    value = fields.get("pin", "false").lower()
    if value not in PIN_VALUES:
        raise InvalidRequest("pin must be 'true' or 'false'.", param="pin")
    return PIN_VALUES[value]


def _expires_at(fields: dict[str, str]) -> datetime | None:
    """The OpenAI `expires_after` form fields (anchor created_at, seconds) as a UTC time."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after[anchor] must be 'created_at'.", param="expires_after[anchor]"
        )
    if seconds is None or not (seconds.isascii() and seconds.isdigit()):
        raise InvalidRequest(
            "expires_after[seconds] must be a whole number of seconds.",
            param="expires_after[seconds]",
        )
    value = int(seconds)
    if not EXPIRES_MIN_SECONDS <= value <= EXPIRES_MAX_SECONDS:
        raise InvalidRequest(
            f"expires_after[seconds] must be between {EXPIRES_MIN_SECONDS} and "
            f"{EXPIRES_MAX_SECONDS}.",
            param="expires_after[seconds]",
        )
    return utcnow() + timedelta(seconds=value)


@router.get(
    "",
    response_model=FileList,
    summary="List files",
    responses=responses(*AUTH_ERRORS),
)
async def list_files(
    ctx: ReadCtx,
    session: ReadSessionDep,
    after: Annotated[str | None, Query(max_length=64, description="A file id cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    purpose: Annotated[str | None, Query(max_length=40)] = None,
) -> FileList:
    page = await file_service.list_files(
        session=session, ctx=ctx, limit=limit, order=order, purpose=purpose, after=after
    )
    data = [FileObject.of(view) for view in page.views]
    return FileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.get(
    "/{file_id}",
    response_model=FileObject,
    summary="Retrieve a file",
    responses=responses(*AUTH_ERRORS, NotFound),
)
async def retrieve_file(file_id: FileId, ctx: ReadCtx, session: ReadSessionDep) -> FileObject:
    view = await file_service.read_file(session=session, ctx=ctx, file_id=file_id)
    return FileObject.of(view)


@router.get(
    "/{file_id}/content",
    summary="Download the original bytes",
    description="Streams the canonical copy; supports Range requests; the ETag is the sha256.",
    response_class=BlobResponse,
    status_code=200,
    responses={
        200: {
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The file's bytes, with the Content-Type it was uploaded with",
            "headers": {digest.HEADER: REPR_DIGEST_DOC},
        },
        206: {
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "Partial content for a Range request",
            "headers": {digest.HEADER: REPR_DIGEST_DOC},
        },
        304: {"description": "Not modified: If-None-Match carried the current ETag"},
        **responses(*AUTH_ERRORS, NotFound, RangeNotSatisfiable, BlobCorrupt),
    },
)
async def download_content(
    file_id: FileId, request: Request, ctx: ReadCtx, session: SessionDep, rt: RuntimeDep
) -> Response:
    view, reader = await file_service.open_content(
        session=session, blob_store=rt.blob_store, ctx=ctx, file_id=file_id
    )
    try:
        file = view.file
        etag = f'"{file.sha256}"'
        headers = {
            "ETag": etag,
            digest.HEADER: digest.repr_digest_of(file.sha256),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file.filename)}",
            "Cache-Control": "private, max-age=0, must-revalidate",
            # The bytes are the tenant's, never a page of ours: no sniffing, no scripts, no frames.
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
        tags = _etags(request.headers.get("if-none-match"))
        if etag in tags or "*" in tags:
            await reader.aclose()
            return Response(status_code=304, headers=headers)
        ranges = byte_ranges(request.headers.get("range"), reader.size)
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range != etag:
            ranges = []  # the caller's copy is another version: send the whole body
        return BlobResponse(
            reader,
            ranges=ranges,
            media_type=_served_type(file.content_type),
            headers=headers,
            last_modified=file.created_at,
            head=request.method == "HEAD",
        )
    except BaseException:
        await reader.aclose()
        raise


router.add_api_route(
    "/{file_id}/content",
    download_content,
    methods=["HEAD"],
    include_in_schema=False,
    summary="Headers of a download (size, type, ETag) without its bytes",
)


def _served_type(stored: str) -> str:
    """Rows stored before media types were validated may hold anything: send those as bytes."""
    try:
        return media_type(stored)
    except InvalidRequest:
        return "application/octet-stream"


def _etags(value: str | None) -> set[str]:
    if not value:
        return set()
    return {tag.strip().removeprefix("W/") for tag in value.split(",")}


@router.get(
    "/{file_id}/extract",
    response_model=Extracted,
    summary="Extracted text of a file-extract file",
    description="Asks the provider holding the file for its extracted text once, then caches it; "
    "a file whose provider copies were evicted to make room is placed again first.",
    responses=responses(*AUTH_ERRORS, NotFound, *PROVIDER_ERRORS),
)
async def extract_text(
    file_id: FileId, ctx: ReadCtx, session: SessionDep, rt: RuntimeDep
) -> Extracted:
    provider, parsed = await file_service.extract(
        session=session, placer=rt.placer, ctx=ctx, file_id=file_id
    )
    return Extracted(
        id=file_id,
        provider=provider,
        content=str(parsed.get("content", "")),
        file_type=_opt_str(parsed.get("file_type")),
        filename=_opt_str(parsed.get("filename")),
        title=_opt_str(parsed.get("title")),
        type=_opt_str(parsed.get("type")),
    )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@router.delete(
    "/{file_id}",
    response_model=FileDeleted,
    summary="Delete a file and every provider copy",
    responses=responses(*AUTH_ERRORS, NotFound, *PROVIDER_ERRORS),
)
async def delete_file(
    file_id: FileId, ctx: WriteCtx, session: SessionDep, rt: RuntimeDep
) -> FileDeleted:
    deleted = await file_service.delete_file(
        session=session,
        blob_store=rt.blob_store,
        providers=rt.providers,
        settings=rt.settings,
        ctx=ctx,
        file_id=file_id,
    )
    return FileDeleted(id=deleted)


@router.post(
    "/{file_id}/providers",
    response_model=FileObject,
    summary="Copy a file to another provider, or ensure a live copy",
    description="Places a copy from the canonical blob on the named provider (`auto`: ensures a "
    "copy on any provider), also when an earlier copy was evicted to make room: the answer "
    "carries the new provider file id. 202 when the provider cannot take it now and the "
    "gateway will finish the copy by itself.",
    responses={
        202: {"model": FileObject, "description": "Accepted; the copy is placed later"},
        **responses(*AUTH_ERRORS, NotFound, *PROVIDER_ERRORS),
    },
)
async def replicate_file(
    file_id: FileId,
    body: ReplicateRequest,
    ctx: WriteCtx,
    idem: Idempotent,
    session: SessionDep,
    rt: RuntimeDep,
) -> JSONResponse:
    fingerprint = request_digest(
        route="POST /v1/files/{id}/providers", id=file_id, body=body.model_dump()
    )
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    view = await file_service.replicate(
        session=session, placer=rt.placer, ctx=ctx, file_id=file_id, provider=body.provider
    )
    live = any(body.provider in ("auto", c.provider) and c.status == "active" for c in view.copies)
    response = await idem.answer(200 if live else 202, FileObject.of(view))
    return _with_retry_after(response, view.retry_after)


@router.post(
    "/{file_id}/pin",
    response_model=FileObject,
    summary="Pin a file: its provider copies are never evicted to make room",
    responses=responses(*AUTH_ERRORS, NotFound),
)
async def pin_file(
    file_id: FileId, ctx: WriteCtx, idem: Idempotent, session: SessionDep
) -> JSONResponse:
    fingerprint = request_digest(route="POST /v1/files/{id}/pin", id=file_id)
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    view = await file_service.set_pinned(session=session, ctx=ctx, file_id=file_id, pinned=True)
    return await idem.answer(200, FileObject.of(view))


@router.delete(
    "/{file_id}/pin",
    response_model=FileObject,
    summary="Unpin a file: its provider copies may be evicted again (and re-placed on demand)",
    responses=responses(*AUTH_ERRORS, NotFound),
)
async def unpin_file(file_id: FileId, ctx: WriteCtx, session: SessionDep) -> FileObject:
    view = await file_service.set_pinned(session=session, ctx=ctx, file_id=file_id, pinned=False)
    return FileObject.of(view)


@router.get(
    "/{file_id}/events",
    response_model=FileEventList,
    summary="A file's lifecycle: every state change of the file and its provider copies",
    responses=responses(*AUTH_ERRORS, NotFound),
)
async def file_events(file_id: FileId, ctx: ReadCtx, session: ReadSessionDep) -> FileEventList:
    rows = await file_service.events(session=session, ctx=ctx, file_id=file_id)
    return FileEventList(data=[FileEvent.of(row) for row in rows])

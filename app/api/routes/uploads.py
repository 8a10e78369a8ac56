"""The OpenAI-shaped Uploads API: /v1/uploads, a large file sent in resumable parts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from app.api.deps import RuntimeDep, SessionDep
from app.api.errors import AUTH_ERRORS, responses
from app.api.idempotency import Idempotent
from app.api.intake import media_type, receive_upload, validate_filename
from app.api.schemas import (
    CompleteUploadRequest,
    CreateUploadRequest,
    FileObject,
    UploadObject,
    UploadPartObject,
)
from app.auth.guards import WriteCtx
from app.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProviderUnavailable,
    QuotaExceeded,
    UnsupportedMediaType,
    UnsupportedPurpose,
)
from app.core.logging import log_context
from app.services import uploads as upload_service
from app.services.idempotency import request_digest

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

PART_FIELD = "data"

PART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [PART_FIELD],
                    "properties": {PART_FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


async def upload_id_param(upload_id: Annotated[str, Path(max_length=64)]) -> str:
    """The path's upload id, bound to the request's log lines."""
    log_context.bind(upload_id=upload_id)
    return upload_id


UploadId = Annotated[str, Depends(upload_id_param)]


@router.post(
    "",
    response_model=UploadObject,
    summary="Create an upload",
    description="Starts a resumable upload of `bytes` bytes; add its parts within an hour, "
    "then complete it with their ids in order.",
    responses=responses(*AUTH_ERRORS, UnsupportedPurpose, PayloadTooLarge),
)
async def create_upload(
    body: CreateUploadRequest, ctx: WriteCtx, idem: Idempotent, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    try:
        filename = validate_filename(body.filename)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param="filename") from None
    try:
        mime_type = media_type(body.mime_type)
    except InvalidRequest:
        raise InvalidRequest(
            "mime_type is not a valid media type (type/subtype[; name=value], printable ASCII).",
            param="mime_type",
        ) from None
    fingerprint = request_digest(route="POST /v1/uploads", body=body.model_dump())
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    upload = await upload_service.create_upload(
        session=session,
        providers=rt.providers,
        settings=rt.settings,
        clock=rt.clock,
        ctx=ctx,
        filename=filename,
        purpose=body.purpose,
        size=body.bytes,
        mime_type=mime_type,
        file_expires_after_seconds=body.expires_after.seconds if body.expires_after else None,
    )
    return await idem.answer(200, UploadObject.model_validate(upload))


@router.post(
    "/{upload_id}/parts",
    response_model=UploadPartObject,
    summary="Add a part to an upload",
    description=f"One chunk of the file in the multipart field `{PART_FIELD}`, at most 64 MiB "
    "(and at most the upload's size); parts may arrive in any order, on any replica. A part "
    "whose answer was lost is simply sent again: only the ids given at completion count.",
    openapi_extra=PART_BODY,
    responses=responses(*AUTH_ERRORS, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType),
)
async def add_part(
    upload_id: UploadId, request: Request, ctx: WriteCtx, session: SessionDep, rt: RuntimeDep
) -> UploadPartObject:
    limit = await upload_service.part_limit(
        session=session, clock=rt.clock, ctx=ctx, upload_id=upload_id
    )
    try:
        async with receive_upload(
            body=request.stream(),
            content_type=request.headers.get("content-type"),
            blob_store=rt.blob_store,
            max_file_bytes=limit,
            max_parts=rt.settings.max_multipart_parts,
            text_fields=frozenset(),
            file_field=PART_FIELD,
            filename_required=False,
        ) as part:
            row = await upload_service.add_part(
                session=session,
                blob_store=rt.blob_store,
                clock=rt.clock,
                ctx=ctx,
                upload_id=upload_id,
                part=part,
            )
    except PayloadTooLarge:
        raise PayloadTooLarge(
            f"A part of this upload may hold at most {limit} bytes (64 MiB, and never more "
            "than the upload's size).",
            param=PART_FIELD,
            code="part_too_large",
        ) from None
    return UploadPartObject.model_validate(row)


@router.post(
    "/{upload_id}/complete",
    response_model=UploadObject,
    summary="Complete an upload",
    description="Joins the parts named in `part_ids`, in that order, into one file (the "
    "upload's `file`), accepted as any upload is: dedup, quota and placement apply. The parts "
    "must add up to the upload's `bytes`; `md5`, when given, must match the whole.",
    responses=responses(
        *AUTH_ERRORS,
        NotFound,
        Conflict,
        PayloadTooLarge,
        QuotaExceeded,
        UnsupportedPurpose,
        ProviderUnavailable,
    ),
)
async def complete_upload(
    upload_id: UploadId,
    body: CompleteUploadRequest,
    ctx: WriteCtx,
    idem: Idempotent,
    session: SessionDep,
    rt: RuntimeDep,
) -> JSONResponse:
    fingerprint = request_digest(
        route="POST /v1/uploads/{id}/complete", id=upload_id, body=body.model_dump()
    )
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    done = await upload_service.complete_upload(
        session=session,
        placer=rt.placer,
        clock=rt.clock,
        ctx=ctx,
        upload_id=upload_id,
        part_ids=body.part_ids,
        md5=body.md5,
    )
    answer = UploadObject.model_validate(done.upload)
    answer.file = FileObject.of(done.file)
    return await idem.answer(200, answer)


@router.post(
    "/{upload_id}/cancel",
    response_model=UploadObject,
    summary="Cancel an upload",
    description="No part is accepted after; the parts already sent are removed.",
    responses=responses(*AUTH_ERRORS, NotFound, Conflict),
)
async def cancel_upload(
    upload_id: UploadId, ctx: WriteCtx, session: SessionDep, rt: RuntimeDep
) -> UploadObject:
    upload = await upload_service.cancel_upload(
        session=session, blob_store=rt.blob_store, clock=rt.clock, ctx=ctx, upload_id=upload_id
    )
    return UploadObject.model_validate(upload)

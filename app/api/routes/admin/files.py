"""On-demand integrity checks of a file."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import FileId, RuntimeDep, SessionDep
from app.api.errors import responses
from app.api.idempotency import Idempotent
from app.api.routes.admin.common import ADMIN_ERRORS, PREFIX
from app.api.schemas import CheckReport
from app.auth.guards import AdminCtx
from app.core.errors import NotFound
from app.services import admin as admin_service
from app.services.idempotency import request_digest

router = APIRouter(prefix=PREFIX)


@router.post(
    "/files/{file_id}/check",
    response_model=CheckReport,
    summary="Check a file now: re-hash its blob and confirm every provider copy exists",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def check_file(
    file_id: FileId, ctx: AdminCtx, idem: Idempotent, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    fingerprint = request_digest(route="POST /admin/files/check", id=file_id)
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    report = await admin_service.check_file(
        session=session,
        blob_store=rt.blob_store,
        providers=rt.providers,
        metrics=rt.metrics,
        settings=rt.settings,
        ctx=ctx,
        file_id=file_id,
    )
    return await idem.answer(200, CheckReport(**report))

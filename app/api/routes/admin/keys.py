"""API keys: issue, rotate, list and revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.api.deps import RuntimeDep, SessionDep
from app.api.errors import responses
from app.api.idempotency import Idempotent
from app.api.routes.admin.common import ADMIN_ERRORS, PREFIX
from app.api.schemas import KeyCreate, KeyCreated, KeyList, KeyOut, KeyRotate
from app.auth import keys as key_service
from app.auth.guards import AdminCtx
from app.core.errors import NotFound
from app.models import ApiKey
from app.services import admin as admin_service
from app.services.idempotency import request_digest

router = APIRouter(prefix=PREFIX)


def _created(row: ApiKey, token: str) -> KeyCreated:
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), key=token)


def _without_secret(body: dict[str, Any]) -> dict[str, Any]:
    # Secrets are never stored: a replayed key answer carries no token.
    return {**body, "key": None}


@router.post(
    "/keys",
    response_model=KeyCreated,
    status_code=201,
    summary="Issue an API key (the secret is shown once)",
    responses=responses(*ADMIN_ERRORS),
)
async def create_key(
    body: KeyCreate, ctx: AdminCtx, idem: Idempotent, session: SessionDep, rt: RuntimeDep
) -> JSONResponse:
    fingerprint = request_digest(route="POST /admin/keys", body=body.model_dump())
    if (replay := await idem.begin(fingerprint, redact=_without_secret)) is not None:
        return replay
    issued = await admin_service.create_key(
        session=session,
        hmac_key=rt.hmac_key,
        ctx=ctx,
        tenant=body.tenant,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        rate_limit_per_minute=body.rate_limit_per_minute,
    )
    return await idem.answer(201, _created(issued.key, issued.token))


@router.post(
    "/keys/{key_id}/rotate",
    response_model=KeyCreated,
    status_code=201,
    summary="Rotate a key: a successor now, the old key ends after the overlap",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def rotate_key(
    key_id: str,
    ctx: AdminCtx,
    idem: Idempotent,
    session: SessionDep,
    rt: RuntimeDep,
    body: KeyRotate | None = None,
) -> JSONResponse:
    body = body or KeyRotate()
    fingerprint = request_digest(route="POST /admin/keys/rotate", id=key_id, body=body.model_dump())
    if (replay := await idem.begin(fingerprint, redact=_without_secret)) is not None:
        return replay
    issued = await admin_service.rotate_key(
        session=session,
        hmac_key=rt.hmac_key,
        ctx=ctx,
        key_id=key_id,
        overlap_seconds=body.overlap_seconds,
    )
    response = await idem.answer(201, _created(issued.key, issued.token))
    rt.identity.invalidate(key_id)  # committed: a lookup from now on reads the new expiry
    return response


@router.get(
    "/keys",
    response_model=KeyList,
    summary="List API keys (never their secrets)",
    responses=responses(*ADMIN_ERRORS),
)
async def list_keys(
    session: SessionDep,
    tenant_id: Annotated[str | None, Query(max_length=40)] = None,
    tenant: Annotated[str | None, Query(description="The tenant's name")] = None,
) -> KeyList:
    rows = await key_service.list_keys(session=session, tenant_id=tenant_id, tenant=tenant)
    return KeyList(data=[KeyOut.model_validate(row) for row in rows])


@router.delete(
    "/keys/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key",
    responses=responses(*ADMIN_ERRORS, NotFound),
)
async def revoke_key(key_id: str, ctx: AdminCtx, session: SessionDep, rt: RuntimeDep) -> KeyOut:
    row = await admin_service.revoke_key(session=session, ctx=ctx, key_id=key_id)
    await session.commit()
    # Forgotten once committed: a lookup racing the revocation cannot cache the live key again.
    rt.identity.invalidate(key_id)
    return KeyOut.model_validate(row)

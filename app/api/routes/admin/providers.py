"""Providers: an overview with their circuit breakers, and forcing a breaker."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import RuntimeDep, SessionDep
from app.api.errors import responses
from app.api.idempotency import Idempotent
from app.api.routes.admin.common import ADMIN_ERRORS, PREFIX
from app.api.schemas import BreakerAction, BreakerOut, ProviderList, ProviderOut
from app.auth.guards import AdminCtx
from app.services import admin as admin_service
from app.services.idempotency import request_digest

router = APIRouter(prefix=PREFIX)


@router.get(
    "/providers",
    response_model=ProviderList,
    summary="Providers: mode, circuit breaker, and usage against each account cap",
    responses=responses(*ADMIN_ERRORS),
)
async def providers(session: SessionDep, rt: RuntimeDep) -> ProviderList:
    rows = await admin_service.provider_overview(
        session=session, providers=rt.providers, capacity=rt.capacity
    )
    return ProviderList(data=[ProviderOut.of(row) for row in rows])


@router.post(
    "/providers/{provider}/breaker",
    response_model=BreakerOut,
    summary="Open, close or reset a provider's circuit breaker",
    responses=responses(*ADMIN_ERRORS),
)
async def force_breaker(
    provider: str,
    body: BreakerAction,
    ctx: AdminCtx,
    idem: Idempotent,
    session: SessionDep,
    rt: RuntimeDep,
) -> JSONResponse:
    fingerprint = request_digest(
        route="POST /admin/providers/breaker", provider=provider, body=body.model_dump()
    )
    if (replay := await idem.begin(fingerprint)) is not None:
        return replay
    snapshot = await admin_service.force_breaker(
        session=session,
        providers=rt.providers,
        breakers=rt.breakers,
        ctx=ctx,
        provider=provider,
        action=body.action,
    )
    return await idem.answer(200, BreakerOut.of(snapshot))

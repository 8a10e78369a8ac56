"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from app.api.deps import RuntimeDep
from app.api.schemas import Liveness, ProbeStatus, Readiness
from app.core.errors import AuthenticationFailed
from app.services.metrics import refresh_on_scrape

router = APIRouter(prefix="/health", tags=["health"])
PROBE_TIMEOUT = 3.0


@router.get("/live", response_model=Liveness, summary="The process is up")
async def live() -> Liveness:
    return Liveness()


async def _probe(coro: object) -> ProbeStatus:
    try:
        await asyncio.wait_for(coro, PROBE_TIMEOUT)  # type: ignore[arg-type]
    except Exception as exc:  # any failure makes the dependency not ready
        return ProbeStatus(status="down", detail=type(exc).__name__)
    return ProbeStatus(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Database, blob store, Redis and provider modes",
    responses={503: {"model": Readiness, "description": "A required dependency is down"}},
)
async def ready(rt: RuntimeDep) -> JSONResponse:
    async def db() -> None:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    checks = {
        "database": await _probe(db()),
        "blob_store": await _probe(rt.blob_store.check_writable()),
    }
    if rt.redis is not None:
        redis_status = await _probe(rt.redis.ping())
        if redis_status.status == "down":
            redis_status = ProbeStatus(status="degraded", detail=redis_status.detail)
        checks["redis"] = redis_status
        if rt.rate_limiter.degraded:
            checks["rate_limiter"] = ProbeStatus(
                status="degraded", detail="Redis unreachable: per-process limits"
            )
    for name, adapter in rt.providers.adapters.items():
        state = (await adapter.breaker_snapshot()).state
        checks[f"provider:{name}"] = ProbeStatus(
            status="degraded" if state != "closed" else "ok",
            mode=adapter.mode,
            detail=f"circuit {state}" if state != "closed" else None,
        )
    if rt.breakers is not None and rt.breakers.degraded:
        checks["breakers"] = ProbeStatus(
            status="degraded", detail="Redis unreachable: breaker state is per process"
        )
    if any(c.status == "down" for c in checks.values()):
        overall = "down"
    elif any(c.status == "degraded" for c in checks.values()):
        overall = "degraded"
    else:
        overall = "ok"
    body = Readiness(status=overall, checks=checks)
    return JSONResponse(body.model_dump(), status_code=503 if overall == "down" else 200)


metrics_router = APIRouter(tags=["health"])


async def _metrics_allowed(request: Request, rt: RuntimeDep) -> None:
    """/metrics may require its own bearer token (FILEGATE_METRICS_TOKEN)."""
    expected = rt.settings.metrics_token
    if expected is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.get_secret_value().encode()
    ):
        raise AuthenticationFailed("/metrics needs 'Authorization: Bearer <metrics token>'.")


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics",
    include_in_schema=False,
    dependencies=[Depends(_metrics_allowed)],
)
async def metrics(rt: RuntimeDep) -> Response:
    await refresh_on_scrape(
        sessionmaker=rt.sessionmaker,
        metrics=rt.metrics,
        database=rt.database,
        capacity=rt.capacity,
    )
    # Under several workers this reads every worker's files: off the event loop.
    body = await asyncio.to_thread(rt.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

"""The FastAPI application factory; everything long-lived is built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_fastapi_instrumentator import Instrumentator

from app.api import docs as api_docs
from app.api import errors, openapi
from app.api.edge import EdgeMiddleware
from app.api.intake import MULTIPART_OVERHEAD_BYTES
from app.api.middleware import ExpectContinueMiddleware, RequestContextMiddleware
from app.api.routes import admin, console, files, health, uploads, usage
from app.api.timeouts import BodyIdleTimeoutMiddleware
from app.auth.identify import IdentifyMiddleware
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.config import Settings, load_settings
from app.core.logging import configure_logging
from app.core.metrics import GatewayMetrics
from app.jobs.worker import running_workers
from app.runtime import build_runtime
from app.services.sandbox import recheck_on_start
from app.services.uploads import PART_MAX_BYTES

DESCRIPTION = """\
One OpenAI-compatible Files API in front of Moonshot (Kimi) and Z.ai (GLM).

Authenticate with `Authorization: Bearer fg_...` or `X-API-Key: fg_...`.
Every error body is `{"error": {"message", "type", "code", "param"}}`.
"""


def create_app(settings: Settings | None = None, *, clock: Clock = SYSTEM_CLOCK) -> FastAPI:
    """The gateway for `settings` (the environment's by default), reading time from `clock`."""
    settings = settings or load_settings()
    configure_logging(settings)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_runtime(
            settings, metrics=metrics, own_sandbox=True, clock=clock
        ) as runtime:
            if runtime.sandbox_url is not None and runtime.sandbox_name is not None:
                await recheck_on_start(
                    sessionmaker=runtime.sessionmaker,
                    sandbox_url=runtime.sandbox_url,
                    sandbox=runtime.sandbox_name,
                    providers=runtime.settings.sandboxed_providers(),
                )
            async with running_workers(runtime, count=settings.workers_in_process):
                app.state.runtime = runtime
                yield

    docs = settings.docs_enabled
    app = FastAPI(
        title="filegate",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # The docs pages are api_docs' own, with their assets served locally (no CDN).
        docs_url=None,
        redoc_url=None,
        openapi_url=api_docs.OPENAPI_URL if docs else None,
        # A slash-less path is a 404, never a redirect built from the untrusted Host header.
        redirect_slashes=False,
    )
    errors.install(app)
    openapi.install(app)
    if docs:
        api_docs.install(app)
    app.include_router(files.router)
    app.include_router(usage.router)
    app.include_router(uploads.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(health.metrics_router)
    console.install(app)
    app.add_middleware(
        EdgeMiddleware,
        upload_limit=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        body_limit=settings.json_body_limit,
        part_limit=min(PART_MAX_BYTES, settings.max_upload_bytes) + MULTIPART_OVERHEAD_BYTES,
    )
    app.add_middleware(BodyIdleTimeoutMiddleware, idle_seconds=settings.body_idle_timeout_seconds)
    app.add_middleware(IdentifyMiddleware)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(ExpectContinueMiddleware)
    Instrumentator(
        registry=metrics.registry,
        excluded_handlers=["/metrics"],
        should_group_status_codes=False,
    ).instrument(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "PUT"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Idempotency-Key",
                "Repr-Digest",
            ],
            expose_headers=[
                "X-Request-ID",
                "ETag",
                "Content-Range",
                "Idempotent-Replayed",
                "Filegate-Dedup",
                "Repr-Digest",
            ],
        )
    return app

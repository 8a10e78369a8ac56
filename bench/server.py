"""The gateway under benchmark, in its own process.

    python -m bench.server --port P --data-dir D --sandbox-url URL --key-file F

Builds `create_app(Settings(...))` exactly as production does (SQLite embedded default under
the temp data dir unless `--database-url`, every provider sent to the standalone sandbox;
`--workers-in-process` job loops, polling only with `--no-job-listen`; provider order
moonshot,zai; JWT HS256 enabled with the throwaway JWT_SECRET / issuer JWT_ISSUER; provider
idle timeout PROVIDER_TIMEOUT s; a breaker opened by hand stays open BREAKER_RESET_SECONDS s,
or `--breaker-reset-seconds`; `--first-byte-timeout` overrides the provider default) and
adds two bench-only routes:

- `GET /bench/bare`: a small constant JSON dict, the "bare JSON endpoint in the same app"
  that the retrieve throughput is compared with;
- `GET /bench/noauth/v1/files/{file_id}`: the retrieve of `GET /v1/files/{file_id}` with
  authentication bypassed.  It calls the same service function
  (`app.services.files.read_file`) through the same read-only session dependency and
  response model, with a fixed principal of the bench tenant.  Its path is outside
  IdentifyMiddleware's prefixes (/v1, /admin), so the middleware only does its prefix check,
  and the route has no `authorize` dependency.
  It sits right after the files router in the route list, so routing costs about the same
  (a few microseconds more).  The only difference is authentication (identify + authorize).

Before serving it applies the migrations and issues two API keys: the bench key (tenant
TENANT, files:read + files:write) and an admin key (tenant ADMIN_TENANT, scope admin).  It
writes them to `--key-file` for the driver as JSON: {"token", "admin_token", "tenant",
"tenant_id"}.

Profiling switch (off by default): with BENCH_PROFILE=1 in the environment two more routes
exist, `POST /bench/profile/start` and `POST /bench/profile/stop?name=...`; the latter
writes `<name>.prof` (cProfile, event-loop thread only) and `<name>.txt` (top functions by
cumulative and by own time) into BENCH_PROFILE_DIR.  Worker-thread time (sha256, file
writes, fsync, SQLite) is not in those profiles; the driver reports process CPU separately.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pstats
from pathlib import Path
from typing import Any

BARE = {"object": "bench", "ok": True}
SECRET = "bench-secret-key-for-hmac-0123456789abcdef"  # noqa: S105 - throwaway temp database
TENANT = "bench"
ADMIN_TENANT = "bench-ops"
JWT_SECRET = "bench-jwt-hs256-secret-0123456789abcdefghijkl"  # noqa: S105 - >= 32 bytes, throwaway
JWT_ISSUER = "bench"
JWT_AUDIENCE = "filegate"  # the Settings default
PROVIDER_ORDER = ["moonshot", "zai"]
PROVIDER_TIMEOUT = 30.0  # the idle timeout; a hung call is cut by the first-byte timeout
BREAKER_RESET_SECONDS = 600.0  # a breaker forced open stays open for the whole bench
NOAUTH_PREFIX = "/bench/noauth"


def build_settings(
    *,
    data_dir: Path,
    sandbox_url: str,
    breaker_reset_seconds: float = BREAKER_RESET_SECONDS,
    first_byte_timeout: float | None = None,
    database_url: str | None = None,
    workers_in_process: int | None = None,
    job_listen: bool = True,
) -> Any:
    from app.core.config import Settings

    # None: the production default.
    extra: dict[str, Any] = {
        name: value
        for name, value in (
            ("provider_first_byte_timeout", first_byte_timeout),
            ("workers_in_process", workers_in_process),
        )
        if value is not None
    }
    return Settings(
        **extra,
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,  # None: the embedded default, SQLite at data_dir/filegate.db
        job_listen=job_listen,
        redis_url=None,
        secret_key=SECRET,
        sandbox=True,
        sandbox_url=sandbox_url,
        provider_order=PROVIDER_ORDER,
        provider_timeout=PROVIDER_TIMEOUT,
        breaker_reset_seconds=breaker_reset_seconds,
        jwt_algorithm="HS256",
        jwt_key=JWT_SECRET,
        jwt_issuer=JWT_ISSUER,
        jwt_audience=JWT_AUDIENCE,
        log_level="WARNING",
    )


async def issue_bench_keys(settings: Any) -> dict[str, str]:
    """The bench key (tenant TENANT) and an admin key; also the bench tenant's id."""
    from app.auth.keys import issue_key
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(settings.resolved_database_url)
    try:
        # An explicit commit, as tests/conftest.py does (no CLI subprocess needed).
        async with create_sessionmaker(engine)() as session:
            issued = await issue_key(
                session=session,
                hmac_key=settings.hmac_key(),
                tenant_name=TENANT,
                name="bench",
                scopes=["files:read", "files:write"],
            )
            admin = await issue_key(
                session=session,
                hmac_key=settings.hmac_key(),
                tenant_name=ADMIN_TENANT,
                name="bench-admin",
                scopes=["admin"],
            )
            await session.commit()
            return {
                "token": issued.token,
                "admin_token": admin.token,
                "tenant": TENANT,
                "tenant_id": issued.key.tenant_id,
            }
    finally:
        await engine.dispose()


def add_profile_routes(app: Any, out_dir: Path) -> None:
    import cProfile

    from fastapi.responses import JSONResponse

    state: dict[str, cProfile.Profile | None] = {"profiler": None}

    async def start() -> JSONResponse:
        profiler = cProfile.Profile()
        state["profiler"] = profiler
        profiler.enable()
        return JSONResponse({"profiling": True})

    def write(profiler: cProfile.Profile, name: str) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch for ch in name if ch.isalnum() or ch in "-_") or "profile"
        profiler.dump_stats(str(out_dir / f"{safe}.prof"))
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf).strip_dirs()
        buf.write(f"==== {safe}: by cumulative time ====\n")
        stats.sort_stats("cumulative").print_stats(45)
        buf.write(f"==== {safe}: by own time ====\n")
        stats.sort_stats("tottime").print_stats(35)
        path = out_dir / f"{safe}.txt"
        path.write_text(buf.getvalue())
        return path

    async def stop(name: str) -> JSONResponse:
        profiler = state["profiler"]
        if profiler is None:
            return JSONResponse({"profiling": False}, 409)
        profiler.disable()
        state["profiler"] = None
        return JSONResponse({"profiling": False, "written": str(write(profiler, name))})

    app.add_api_route("/bench/profile/start", start, methods=["POST"], include_in_schema=False)
    app.add_api_route("/bench/profile/stop", stop, methods=["POST"], include_in_schema=False)


def add_noauth_retrieve(app: Any, tenant_id: str) -> None:
    """`GET /bench/noauth/v1/files/{file_id}`: the real retrieve minus authentication."""
    from fastapi import Request

    from app.api.deps import ReadSessionDep, client_addr
    from app.api.schemas import FileObject
    from app.auth.principal import CallContext, Principal
    from app.services import files as file_service

    principal = Principal(
        key_id="bench-noauth", tenant_id=tenant_id, scopes=frozenset({"files:read"})
    )

    async def noauth_retrieve(file_id, request, session):  # type: ignore[no-untyped-def]
        # The CallContext authorize() would build, for a fixed principal.
        ctx = CallContext(
            principal=principal,
            request_id=request.state.request_id,
            client_addr=client_addr(request),
        )
        view = await file_service.read_file(session=session, ctx=ctx, file_id=file_id)
        return FileObject.of(view)

    # Real objects, not strings (this module uses postponed annotations and imports lazily).
    noauth_retrieve.__annotations__ = {
        "file_id": str,
        "request": Request,
        "session": ReadSessionDep,
        "return": FileObject,
    }
    app.add_api_route(
        NOAUTH_PREFIX + "/v1/files/{file_id}",
        noauth_retrieve,
        methods=["GET"],
        response_model=FileObject,
        include_in_schema=False,
    )
    # Move it from the end of the app's route list to right after the files router, so that
    # routing it costs about what routing the real retrieve costs (measured: ~15 vs ~8 us,
    # instead of ~36 us at the end of the list).  The app's top-level router walks its route
    # list per request; nothing caches it.
    from app.api.routes import files as files_routes

    routes = app.router.routes
    after = [
        i
        for i, r in enumerate(routes[:-1])
        if getattr(r, "original_router", None) is files_routes.router
    ]
    if after:
        routes.insert(after[0] + 1, routes.pop())


def build_app(settings: Any, *, tenant_id: str | None = None) -> Any:
    from app.main import create_app

    app = create_app(settings)

    async def bare() -> dict[str, Any]:
        return BARE

    app.add_api_route("/bench/bare", bare, methods=["GET"], include_in_schema=False)
    if tenant_id is not None:
        add_noauth_retrieve(app, tenant_id)
    if os.environ.get("BENCH_PROFILE") == "1":
        add_profile_routes(app, Path(os.environ.get("BENCH_PROFILE_DIR", "bench-results")))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="filegate gateway for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--sandbox-url", required=True, help="e.g. http://127.0.0.1:9000/sandbox")
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--breaker-reset-seconds", type=float, default=BREAKER_RESET_SECONDS)
    parser.add_argument("--first-byte-timeout", type=float, default=None)
    parser.add_argument("--database-url", default=None, help="default: SQLite in --data-dir")
    parser.add_argument("--workers-in-process", type=int, default=None)
    parser.add_argument("--no-job-listen", action="store_true", help="job loops only poll")
    args = parser.parse_args()

    from app import server
    from app.core.migrations import upgrade

    settings = build_settings(
        data_dir=args.data_dir,
        sandbox_url=args.sandbox_url,
        breaker_reset_seconds=args.breaker_reset_seconds,
        first_byte_timeout=args.first_byte_timeout,
        database_url=args.database_url,
        workers_in_process=args.workers_in_process,
        job_listen=not args.no_job_listen,
    )
    upgrade(settings.resolved_database_url)
    keys = asyncio.run(issue_bench_keys(settings))
    tmp = args.key_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(keys))
    tmp.replace(args.key_file)

    config = server.build_config(
        settings,
        app=build_app(settings, tenant_id=keys["tenant_id"]),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    server.run(config)


if __name__ == "__main__":
    main()

"""Shared fixtures: the provider sandbox on a loopback port, databases, the app and clients."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from app.auth.keys import issue_key
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.config import Settings
from app.core.logging import APP_LOGGER, UVICORN_LOGGERS, GatewayHandler
from app.core.migrations import downgrade, sync_url, upgrade
from app.main import create_app
from app.runtime import Runtime
from tests.support.browser import Browser, artifact_dir, chromium
from tests.support.clock import FakeClock
from tests.support.seaweed import ObjectStore, seaweedfs
from tests.support.servers import free_port, serve_in_thread
from tests.support.waiting import wait_until

S3_BUCKET = "filegate-test"
PG_URL = os.environ.get("FILEGATE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("FILEGATE_TEST_REDIS_URL")
TEST_SECRET = "test-secret-key-for-hmac-0123456789"
TABLES = (
    "deployment",
    "sandbox_instances",
    "idempotency_keys",
    "jobs",
    "audit_events",
    "upload_parts",
    "uploads",
    "lifecycle_events",
    "provider_copies",
    "files",
    "blobs",
    "api_keys",
    "tenants",
)


def _check_reachable() -> None:
    """Configured services must answer: an unreachable one fails the run, never skips."""
    if PG_URL:
        try:
            engine = create_engine(sync_url(Settings(database_url=PG_URL).resolved_database_url))
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            pytest.exit(f"FILEGATE_TEST_DATABASE_URL is unreachable: {exc}", returncode=3)
    if REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        except Exception as exc:
            pytest.exit(f"FILEGATE_TEST_REDIS_URL is unreachable: {exc}", returncode=3)


def pytest_sessionstart(session: pytest.Session) -> None:
    _check_reachable()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[str]:
    """The standalone sandbox (both providers under /sandbox) on a loopback port."""
    from app.sandbox import create_standalone_app

    with serve_in_thread(create_standalone_app()) as url:
        yield url


@pytest.fixture(scope="session")
def object_store() -> Iterator[ObjectStore]:
    """A real S3-compatible store (SeaweedFS) for the whole session, with the test bucket."""
    with seaweedfs(buckets=(S3_BUCKET,)) as store:
        yield store


@pytest.fixture(scope="session")
def moonshot_base_url(sandbox_server: str) -> str:
    return f"{sandbox_server}/sandbox/moonshot/v1"


@pytest.fixture(scope="session")
def zai_base_url(sandbox_server: str) -> str:
    return f"{sandbox_server}/sandbox/zai/api/paas/v4"


@pytest.fixture(scope="session")
def pg_url() -> str:
    if not PG_URL:
        pytest.skip("FILEGATE_TEST_DATABASE_URL is not set")
    url = Settings(database_url=PG_URL).resolved_database_url
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        # A clean slate each run: tables, functions and triggers of earlier runs all go.
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(url)
    downgrade(url)  # the migrations must also be reversible
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def _truncate(url: str) -> None:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each backend."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        _truncate(url)
        yield url
        _truncate(url)
    else:
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "filegate.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def pg_peer_url(pg_url: str) -> str:
    """A second PostgreSQL database beside the test one, migrated: another deployment's."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    peer = url.set(database=f"{url.database}_peer")
    admin = create_engine(sync_url(pg_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        found = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": peer.database}
        ).scalar()
        if not found:
            conn.execute(text(f'CREATE DATABASE "{peer.database}"'))
    admin.dispose()
    peer_url = peer.render_as_string(hide_password=False)
    engine = create_engine(sync_url(peer_url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(peer_url)
    return peer_url


@pytest.fixture
def peer_database_url(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """Another migrated, empty database of the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        path = tmp_path / "peer.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = request.getfixturevalue("pg_peer_url")
    _truncate(url)
    yield url
    _truncate(url)


@pytest.fixture
def sandbox_reset(sandbox_server: str) -> Iterator[str]:
    """Fresh sandbox state for both providers before and after a test."""

    def reset() -> None:
        for provider in ("moonshot", "zai"):
            httpx.post(f"{sandbox_server}/sandbox/{provider}/_reset").raise_for_status()

    reset()
    yield sandbox_server
    reset()


@pytest.fixture
def breaker_namespace() -> Iterator[str]:
    """A Redis namespace of the test's own, so one test's open circuit never leaks to the next."""
    namespace = f"filegate-test:{uuid.uuid4().hex}:breaker"
    yield namespace
    if REDIS_URL:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}*"))
        if keys:
            client.delete(*keys)
        client.close()


def settings_with(settings: Settings, **overrides: Any) -> Settings:
    """`settings` with `overrides`, validated as a new object; the original is left as it was."""
    return Settings(**{**settings.model_dump(), **overrides})


def _marked_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What `@pytest.mark.settings(...)` asks for; the mark nearest the test wins."""
    overrides: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers("settings"))):
        overrides.update(mark.kwargs)
    return overrides


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    sandbox_reset: str,
    breaker_namespace: str,
) -> Settings:
    """The test's settings; `@pytest.mark.settings(name=value, ...)` changes any of them."""
    values: dict[str, Any] = {
        "breaker_namespace": breaker_namespace,
        "env": "test",
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "secret_key": TEST_SECRET,
        "sandbox": True,
        "sandbox_url": f"{sandbox_reset}/sandbox",
        "dedup_wait_seconds": 30,
        "workers_in_process": 0,
        "job_backoff_base": 0.01,
        "job_backoff_max": 0.05,
        "provider_timeout": 20,
    }
    return Settings(**{**values, **_marked_settings(request)})


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what configure_logging does to global loggers, leaving pytest's handlers alone."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, GatewayHandler)]
    names = (APP_LOGGER, *UVICORN_LOGGERS)
    saved = {
        name: (lg.level, list(lg.handlers), lg.propagate)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    yield
    for handler in [h for h in root.handlers if isinstance(h, GatewayHandler)]:
        if handler not in ours:
            root.removeHandler(handler)
    for handler in ours:
        if handler not in root.handlers:
            root.addHandler(handler)
    for name, (level, handlers, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


@dataclass
class Gateway:
    """The app under test with helpers to mint keys and clients."""

    app: FastAPI
    sandbox_url: str

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def key(
        self, tenant: str = "acme", scopes: tuple[str, ...] = ("files:read", "files:write")
    ) -> str:
        rt = self.runtime
        async with rt.sessionmaker() as session:
            issued = await issue_key(
                session=session,
                hmac_key=rt.hmac_key,
                tenant_name=tenant,
                name="test",
                scopes=list(scopes),
            )
            await session.commit()
        return issued.token

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gateway",
            headers=headers,
            timeout=60,
        )

    async def sandbox_stats(self, provider: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as c:
            resp = await c.get(f"{self.sandbox_url}/sandbox/{provider}/_stats")
            stats: dict[str, Any] = resp.json()
            return stats

    async def sandbox_fault(self, provider: str, **fault: object) -> None:
        async with httpx.AsyncClient() as c:
            resp = await c.post(f"{self.sandbox_url}/sandbox/{provider}/_faults", json=fault)
            resp.raise_for_status()


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand; the test's `gateway` then reads its time from it."""
    return FakeClock()


@asynccontextmanager
async def started_gateway(
    settings: Settings, sandbox_url: str, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[Gateway]:
    """A gateway built for `settings` on `clock`, running until the block ends."""
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        yield Gateway(app=app, sandbox_url=sandbox_url)


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest, settings: Settings, sandbox_reset: str
) -> AsyncIterator[Gateway]:
    """The gateway for `settings`; on the test's `clock` when the test asks for one."""
    clock = request.getfixturevalue("clock") if "clock" in request.fixturenames else SYSTEM_CLOCK
    async with started_gateway(settings, sandbox_reset, clock=clock) as gw:
        yield gw


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client(await gateway.key()) as c:
        yield c


@dataclass
class ServedGateway(Gateway):
    """A gateway behind a real HTTP server on a loopback port (for browsers and raw clients)."""

    base_url: str = ""

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=60)


@asynccontextmanager
async def serving_gateway(
    settings: Settings, sandbox_url: str, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[ServedGateway]:
    """`settings`' gateway served by uvicorn on 127.0.0.1, in this event loop, until the block
    ends (so the test can still reach its runtime, as with `started_gateway`)."""
    app = create_app(settings, clock=clock)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await wait_until(
            lambda: server.started or serving.done(), timeout=20, what="the gateway serving"
        )
        if serving.done():
            serving.result()  # raises what stopped it
        yield ServedGateway(
            app=app, sandbox_url=sandbox_url, base_url=f"http://127.0.0.1:{config.port}"
        )
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def served(
    request: pytest.FixtureRequest, settings: Settings, sandbox_reset: str
) -> AsyncIterator[ServedGateway]:
    """The gateway for `settings` over loopback HTTP; on the test's `clock` when it asks."""
    clock = request.getfixturevalue("clock") if "clock" in request.fixturenames else SYSTEM_CLOCK
    async with serving_gateway(settings, sandbox_reset, clock=clock) as gw:
        yield gw


@pytest.fixture
async def browser(request: pytest.FixtureRequest, served: ServedGateway) -> AsyncIterator[Browser]:
    """Chromium that may reach the served gateway and nothing else; screenshots kept."""
    async with chromium(served.base_url, artifacts=artifact_dir(request.node.nodeid)) as b:
        yield b

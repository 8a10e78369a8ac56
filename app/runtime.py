"""Everything long-lived, built once in the lifespan (or the CLI) and closed there."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property

from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.cache import IdentityCache
from app.auth.jwt import JWTVerifier, verifier_from_settings
from app.auth.sessions import SignOuts
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.config import ConfigError, Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.metrics import GatewayMetrics
from app.core.outage import OutageLog
from app.core.ratelimit import MemoryRateLimiter, RateLimiter, build_rate_limiter
from app.jobs import queue
from app.jobs.wakeup import WAKE_ON_COMMIT, JobWakeup, NotifyListener, build_listener
from app.providers.breaker_board import BreakerBoard
from app.providers.hub import ProviderHub, no_sandbox_message, provider_configs
from app.providers.pipeline import ProviderConfig
from app.providers.retry import RetryPolicy
from app.services import audit
from app.services.audit import RefusalThrottle
from app.services.capacity import Capacity
from app.services.deployment import DeploymentIdentity, DeploymentTagInvalid
from app.services.files.settle import Placer
from app.storage.blobs import BlobStore, LocalBlobStore
from app.storage.s3 import S3BlobStore, S3Location

log = logging.getLogger("filegate")

# The registry's name for a sandbox this process serves itself (its port changes every start).
IN_PROCESS_SANDBOX = "in-process"


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    blob_store: BlobStore
    providers: ProviderHub
    metrics: GatewayMetrics
    redis: Redis | None
    deployment: DeploymentIdentity
    wakeup: JobWakeup = field(default_factory=JobWakeup)
    listener: NotifyListener | None = None
    identity: IdentityCache = field(default_factory=IdentityCache)
    jwt: JWTVerifier | None = None
    rate_limiter: RateLimiter = field(default_factory=MemoryRateLimiter)
    breakers: BreakerBoard | None = None
    database: OutageLog = field(default_factory=lambda: OutageLog("database"))
    refusals: RefusalThrottle = field(default_factory=lambda: RefusalThrottle(20))
    sandbox_url: str | None = None
    sandbox_in_process: bool = False
    clock: Clock = SYSTEM_CLOCK
    signouts: SignOuts = field(
        default_factory=lambda: SignOuts(None, clock=lambda: SYSTEM_CLOCK.now().timestamp())
    )

    @cached_property
    def capacity(self) -> Capacity:
        """The provider accounts' caps and usage corrections, shared by placement and jobs."""
        return Capacity(settings=self.settings, providers=self.providers, metrics=self.metrics)

    @cached_property
    def placer(self) -> Placer:
        """Placement's collaborators, taken from this runtime's long-lived parts."""
        return Placer(
            sessionmaker=self.sessionmaker,
            blob_store=self.blob_store,
            providers=self.providers,
            deployment=self.deployment,
            metrics=self.metrics,
            settings=self.settings,
            capacity=self.capacity,
        )

    @property
    def sandbox_name(self) -> str | None:
        """How the registry remembers this process's sandbox: its URL, or the in-process one."""
        if self.sandbox_url is None:
            return None
        return IN_PROCESS_SANDBOX if self.sandbox_in_process else self.sandbox_url

    @property
    def hmac_key(self) -> bytes:
        return self._hmac_key

    def __post_init__(self) -> None:
        self._hmac_key = self.settings.hmac_key()


async def _record_suppressed_refusals(runtime: Runtime) -> None:
    """At shutdown, the summary rows of throttled anonymous refusals not yet written."""
    summaries = runtime.refusals.drain()
    if not summaries:
        return
    try:
        async with runtime.sessionmaker() as session:
            for summary in summaries:
                audit.record_suppressed(session=session, summary=summary)
            await session.commit()
    except Exception:
        log.warning("could not record %d throttled-refusal summaries", len(summaries))


async def _load_deployment(deployment: DeploymentIdentity) -> None:
    """Read this registry's deployment tag now, or at first use if the database is not ready."""
    # A replica may start before another has migrated; it must not fail for that.
    try:
        tag = await deployment.tag()
    except DeploymentTagInvalid as exc:
        raise ConfigError(f"invalid registry: {exc}") from None
    except SQLAlchemyError as exc:
        log.warning("deployment tag unread at start-up (%s): read at first use", type(exc).__name__)
        return
    log.info("deployment tag %s", tag)


@asynccontextmanager
async def build_runtime(
    settings: Settings,
    *,
    metrics: GatewayMetrics,
    own_sandbox: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> AsyncIterator[Runtime]:
    """The runtime on `clock`; with `own_sandbox` and no FILEGATE_SANDBOX_URL, a loopback
    sandbox too."""
    async with AsyncExitStack() as stack:
        sandbox_url = settings.sandbox_url
        in_process = False
        if settings.sandboxed_providers() and sandbox_url is None:
            if not own_sandbox:
                raise ConfigError(no_sandbox_message(settings))
            from app.sandbox.server import serve_on_loopback

            sandbox_url = await stack.enter_async_context(
                serve_on_loopback(**settings.sandbox_caps())
            )
            in_process = True
            log.info("provider sandbox on %s (loopback only)", sandbox_url)
        async with _build_runtime(
            settings, metrics=metrics, sandbox_url=sandbox_url, in_process=in_process, clock=clock
        ) as runtime:
            yield runtime


@asynccontextmanager
async def _build_runtime(
    settings: Settings,
    *,
    metrics: GatewayMetrics,
    sandbox_url: str | None,
    in_process: bool,
    clock: Clock,
) -> AsyncIterator[Runtime]:
    configs = provider_configs(settings, sandbox_url=sandbox_url)
    engine = create_engine(
        settings.resolved_database_url, connect_timeout=settings.database_connect_timeout
    )
    async with (
        open_blob_store(settings) as blob_store,
        _assemble(
            settings,
            metrics=metrics,
            sandbox_url=sandbox_url,
            in_process=in_process,
            configs=configs,
            engine=engine,
            blob_store=blob_store,
            clock=clock,
        ) as runtime,
    ):
        yield runtime


@asynccontextmanager
async def open_blob_store(settings: Settings) -> AsyncIterator[BlobStore]:
    """The blob store the settings name: local disk under data_dir, or an S3 bucket."""
    if settings.blob_store == "s3":
        assert settings.s3_bucket is not None  # the settings refuse s3 without a bucket
        secret = settings.s3_secret_access_key
        location = S3Location(
            endpoint_url=settings.s3_endpoint_url,
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            prefix=settings.s3_prefix,
        )
        async with S3BlobStore.connect(location, part_dir=settings.data_dir / "parts") as s3:
            yield s3
        return
    local = LocalBlobStore(settings.data_dir)
    local.prepare()
    yield local


@asynccontextmanager
async def _assemble(
    settings: Settings,
    *,
    metrics: GatewayMetrics,
    sandbox_url: str | None,
    in_process: bool,
    configs: list[ProviderConfig],
    engine: AsyncEngine,
    blob_store: BlobStore,
    clock: Clock,
) -> AsyncIterator[Runtime]:
    # Jobs queued through this process's sessions wake its own job loops at commit.
    wakeup = JobWakeup()
    sessionmaker = create_sessionmaker(engine, info={WAKE_ON_COMMIT: wakeup.wake})

    async def placements_due(provider: str) -> None:
        """This process closed a circuit: placements waiting for the provider go now."""
        async with sessionmaker() as session:
            count = await queue.expedite_placements(session=session, provider=provider)
            await session.commit()
        if count:
            log.info("circuit %s closed: %d pending placement(s) made due", provider, count)

    breakers = BreakerBoard.from_settings(
        settings, metrics=metrics, on_close=placements_due, clock=clock.monotonic
    )
    redis = (
        Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        if (settings.redis_url)
        else None
    )
    hub = ProviderHub.build(
        configs,
        order=settings.provider_order,
        breakers=breakers,
        retry_policy=RetryPolicy.from_settings(settings),
        observer=metrics.observe_provider_call,
        retry_observer=metrics.observe_provider_retry,
    )
    jwt = verifier_from_settings(settings)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        blob_store=blob_store,
        providers=hub,
        metrics=metrics,
        redis=redis,
        deployment=DeploymentIdentity(sessionmaker),
        wakeup=wakeup,
        listener=build_listener(settings, wakeup),
        identity=IdentityCache(clock=clock.monotonic),
        jwt=jwt,
        rate_limiter=build_rate_limiter(redis),
        breakers=breakers,
        database=OutageLog("database", clock=clock.monotonic),
        refusals=RefusalThrottle(
            settings.audit_anonymous_refusals_per_minute, clock=clock.monotonic
        ),
        sandbox_url=sandbox_url if any(cfg.sandbox for cfg in configs) else None,
        sandbox_in_process=in_process,
        clock=clock,
        signouts=SignOuts(redis, clock=lambda: clock.now().timestamp()),
    )
    await _load_deployment(runtime.deployment)
    if runtime.listener is not None:
        runtime.listener.start()
    try:
        yield runtime
    finally:
        if runtime.listener is not None:
            await runtime.listener.aclose()
        await _record_suppressed_refusals(runtime)
        await runtime.rate_limiter.aclose()
        await hub.aclose()
        await breakers.aclose()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()

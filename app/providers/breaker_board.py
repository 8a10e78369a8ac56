"""The process's breakers: one per provider, their Redis client and their close hooks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING

from app.core.provider_names import Provider
from app.providers import breaker_store as store
from app.providers.breakers import Action, BreakerSnapshot, ProviderBreaker

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.metrics import GatewayMetrics

logger = logging.getLogger("filegate.breakers")

# Called (in the background) with the provider's name when this process closes its circuit.
CloseHook = Callable[[str], Awaitable[object]]


@dataclass(eq=False)
class BreakerBoard:
    """One breaker per provider, sharing state through Redis when a URL is configured (no I/O)."""

    providers: Sequence[str] = tuple(Provider)
    _: KW_ONLY
    redis_url: str | None = None
    fail_max: int = 5
    reset_seconds: float = 30.0
    probe_seconds: float = 60.0
    namespace: str = "filegate:breaker"
    metrics: GatewayMetrics | None = None
    on_close: CloseHook | None = None
    redis_timeout: float = store.REDIS_TIMEOUT_SECONDS
    reconnect_seconds: float = store.RECONNECT_SECONDS
    clock: Callable[[], float] = time.monotonic
    _hooks: set[asyncio.Task[object]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.store = store.BreakerStore(
            self.namespace,
            self.redis_url,
            self.redis_timeout,
            self.reconnect_seconds,
            clock=self.clock,
        )
        self.breakers = {provider: ProviderBreaker(provider, self) for provider in self.providers}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        metrics: GatewayMetrics | None = None,
        on_close: CloseHook,
        clock: Callable[[], float] = time.monotonic,
    ) -> BreakerBoard:
        """The board for these settings (no I/O)."""
        return cls(
            redis_url=settings.redis_url,
            fail_max=settings.breaker_fail_max,
            reset_seconds=settings.breaker_reset_seconds,
            # A probe cannot outlive one logical call; a crashed prober's claim expires then.
            probe_seconds=settings.provider_deadline_seconds,
            namespace=settings.breaker_namespace,
            metrics=metrics,
            on_close=on_close,
            redis_timeout=settings.breaker_redis_timeout_seconds,
            clock=clock,
        )

    def closed(self, provider: str) -> None:
        """Run the close hook in the background: the call that closed the circuit goes on."""
        if self.on_close is not None:
            task = asyncio.ensure_future(self.on_close(provider))
            self._hooks.add(task)
            task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Task[object]) -> None:
        self._hooks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("breaker close hook failed: %s: %s", type(exc).__name__, exc)

    def __getitem__(self, provider: str) -> ProviderBreaker:
        return self.breakers[provider]

    def get(self, provider: str) -> ProviderBreaker | None:
        return self.breakers.get(provider)

    @property
    def degraded(self) -> bool:
        """True when Redis is configured but unusable: breakers run on in-process state."""
        return self.store.degraded

    async def force(self, provider: str, action: Action) -> BreakerSnapshot:
        return await self.breakers[provider].force(action)

    async def snapshot(self) -> dict[str, BreakerSnapshot]:
        return {name: await breaker.snapshot() for name, breaker in self.breakers.items()}

    async def aclose(self) -> None:
        """Let running close hooks finish (briefly), then dispose of the Redis client."""
        if self._hooks:
            await asyncio.wait(list(self._hooks), timeout=5)
            for task in list(self._hooks):
                task.cancel()
        await self.store.aclose()

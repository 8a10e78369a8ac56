"""Per-provider circuit breakers: pybreaker counts in process, Redis shares what must be shared."""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import pybreaker

from app.core import errors
from app.providers import breaker_store as store

if TYPE_CHECKING:
    from app.providers.breaker_board import BreakerBoard

logger = logging.getLogger("filegate.breakers")

CLOSED, HALF_OPEN, OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_HALF_OPEN, pybreaker.STATE_OPEN
RECENT_TRANSITIONS = 10  # kept per process and provider for the operator's overview
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # gauge values of filegate_breaker_state
# The provider is at fault: only these count towards opening the circuit.
PROVIDER_FAULTS = (errors.ProviderUnavailable, errors.ProviderRateLimited)
Action = Literal["open", "close", "reset"]
ACTIONS: tuple[Action, ...] = ("open", "close", "reset")
_State = pybreaker.CircuitBreakerState
_OPEN_MESSAGE = "{} is failing and calls to it are paused (circuit open); try again later."


def _excluded(exc: BaseException) -> bool:
    """pybreaker's `exclude`: a request fault (the provider answered) counts as a success."""
    if not isinstance(exc, errors.ProviderError):
        # Cancelled or broken on our side: raised before pybreaker books anything, so neutral.
        raise exc
    return not isinstance(exc, PROVIDER_FAULTS)


@dataclass(frozen=True)
class BreakerSnapshot:
    """One circuit as this process sees it."""

    provider: str
    state: str = CLOSED
    storage: Literal["redis", "memory", "none"] = "none"
    degraded: bool = False
    failures: int = 0
    fail_max: int = 0
    opened_at: datetime | None = None
    retry_after: float | None = None  # seconds the open circuit still rejects calls
    probe_in_flight: bool = False
    last_error: str | None = None
    forced: str | None = None
    # The latest transitions this process made or noticed, newest first: (unix time, from, to).
    transitions: tuple[tuple[float, str, str], ...] = ()


class ProviderBreaker(pybreaker.CircuitBreakerListener):
    """One provider's circuit: `breaker.calling()` around each awaited call, one probe at a time."""

    def __init__(self, provider: str, board: BreakerBoard) -> None:
        self.provider, self.board = provider, board
        self.shared = store.SharedCircuit(board.store, provider)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=board.fail_max,
            reset_timeout=board.reset_seconds,
            exclude=[_excluded],
            listeners=[self],
            name=provider,
            throw_new_error_on_trip=False,  # the provider's own error propagates
        )
        self.last_error: str | None = None
        self.transitions: deque[tuple[float, str, str]] = deque(maxlen=RECENT_TRANSITIONS)
        if board.metrics is not None:
            board.metrics.breaker_state.labels(provider).set(0)

    @property
    def state(self) -> str:
        return self.breaker.current_state

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        """Keep our typed message (never a provider body) of a counted failure."""
        typed = exc if isinstance(exc, errors.GatewayError) else None
        self.last_error = f"{typed.error_code}: {typed.message}" if typed else type(exc).__name__

    def state_change(
        self, cb: pybreaker.CircuitBreaker, old_state: _State | None, new_state: _State
    ) -> None:
        """Count a transition made or noticed here; one made here is published (and hooked)."""
        old, new = old_state.name if old_state else "none", new_state.name
        if old == new:
            return
        logger.info("circuit %s: %s -> %s", self.provider, old, new)
        self.transitions.appendleft((time.time(), old, new))
        if not (noticed := self.shared.adopting):
            opened = time.time() if new == OPEN else self.shared.view.opened_at
            self.shared.changed(store.Shared(new, opened, cb.fail_counter))
        try:
            if (metrics := self.board.metrics) is not None:
                metrics.breaker_transitions.labels(self.provider, old, new).inc()
                metrics.breaker_state.labels(self.provider).set(STATE_VALUES[new])
            if new == CLOSED and not noticed:
                self.board.closed(self.provider)
        except Exception:
            logger.exception("circuit %s: reporting the transition failed", self.provider)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Admit one call (or raise CircuitOpen) and let pybreaker count its outcome."""
        probe = await self._admit()
        try:
            with self.breaker.calling():
                yield
        finally:
            await self.shared.push()
            if probe is not None:
                await self.shared.release_probe(probe)

    async def _admit(self) -> str | None:
        """None to run a normal call, a probe token to run the half-open probe; else raise."""
        await self.shared.sync(self.breaker)
        if self.state == CLOSED:
            return None
        if (wait := self._reopens_in()) > 0:
            raise self._open_error(wait)
        token = uuid.uuid4().hex
        if not await self.shared.claim_probe(token, self.board.probe_seconds):
            raise self._open_error(await self._probe_wait())
        # Read again: a probe that just finished may have closed or re-opened the circuit.
        await self.shared.sync(self.breaker, fresh=True)
        if self.state == CLOSED or (wait := self._reopens_in()) > 0:
            await self.shared.release_probe(token)
            if self.state == CLOSED:
                return None
            raise self._open_error(wait)
        if self.state == OPEN:
            self.breaker.half_open()
            await self.shared.push()
        return token

    def _reopens_in(self) -> float:
        """Seconds the open circuit still rejects calls (0 once due for a probe, or not open)."""
        if self.state != OPEN or (opened := self.shared.view.opened_at) is None:
            return 0.0
        return max(0.0, opened + self.board.reset_seconds - time.time())

    async def _probe_wait(self) -> float:
        """How long a call that lost the probe race should wait (0 when no probe is in flight)."""
        # Not the claim TTL: a failed probe re-opens it for reset_seconds; a good one frees all.
        return min(await self.shared.probe_left(), self.board.reset_seconds)

    def _open_error(self, wait: float) -> errors.CircuitOpen:
        message = _OPEN_MESSAGE.format(self.provider)
        return errors.CircuitOpen(message, provider=self.provider, retry_after=max(wait, 0.001))

    async def paused_for(self) -> float | None:
        """Seconds a call would still fail fast (open, or a probe in flight); None if it goes."""
        await self.shared.sync(self.breaker)
        if self.state == CLOSED:
            return None
        return self._reopens_in() or await self._probe_wait() or None

    async def available(self) -> bool:
        """False while a call would fail fast: open and not due, or a probe in flight."""
        return await self.paused_for() is None

    async def snapshot(self) -> BreakerSnapshot:
        """The state (read from Redis now), counters, last counted error and storage."""
        await self.shared.sync(self.breaker, fresh=True)
        state, view, opened = self.state, self.shared.view, self.shared.view.opened_at
        return BreakerSnapshot(
            provider=self.provider,
            state=state,
            storage=self.board.store.kind,
            degraded=self.board.store.degraded,
            failures=self.breaker.fail_counter if state == CLOSED else view.failures,
            fail_max=self.breaker.fail_max,
            opened_at=None if opened is None else datetime.fromtimestamp(opened, UTC),
            retry_after=round(self._reopens_in(), 3) if state == OPEN else None,
            probe_in_flight=state != CLOSED and await self.shared.probe_left() > 0,
            last_error=self.last_error,
            forced=view.forced,
            transitions=tuple(self.transitions),
        )

    async def force(self, action: Action) -> BreakerSnapshot:
        """Open, close, or reset (close, forget opened_at and the last error); the snapshot."""
        if action not in ACTIONS:
            raise ValueError(f"unknown breaker action {action!r}; use one of {ACTIONS}")
        await self.shared.sync(self.breaker, fresh=True)
        (self.breaker.open if action == "open" else self.breaker.close)()
        opened = {"open": time.time(), "reset": None}.get(action, self.shared.view.opened_at)
        self.shared.changed(store.Shared(self.state, opened, self.breaker.fail_counter, action))
        self.last_error = None if action == "reset" else self.last_error
        await self.shared.push()
        if action != "open":
            await self.shared.release_probe()
        logger.warning("circuit %s: forced %s by an operator", self.provider, action)
        return await self.snapshot()

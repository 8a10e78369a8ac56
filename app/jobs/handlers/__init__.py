"""The job handlers, by kind: the registry a Worker runs jobs from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.handlers import (
    copies,
    expiry,
    health,
    placement,
    reconcile,
    retention,
    storage,
    uploads,
)
from app.jobs.queue import JobKind
from app.models import Job

if TYPE_CHECKING:
    from app.runtime import Runtime

Handler = Callable[[AsyncSession, "Runtime", Job, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Registry:
    """What runs a job of each kind, and what runs when one of a kind gives up for good."""

    handlers: Mapping[str, Handler]
    on_dead: Mapping[str, Handler] = field(default_factory=dict)

    def with_handlers(self, **extra: Handler) -> Registry:
        """This registry plus `extra` handlers (tests add kinds of their own)."""
        return Registry({**self.handlers, **extra}, self.on_dead)


REGISTRY = Registry(
    handlers={
        JobKind.PLACE: placement.handle_place,
        JobKind.DELETE_COPY: copies.handle_delete_copy,
        JobKind.CHECK_FILE: health.handle_check_file,
        JobKind.HEALTH_SWEEP: health.handle_health_sweep,
        JobKind.RECONCILE: reconcile.handle_reconcile,
        JobKind.EXPIRE: expiry.handle_expire,
        JobKind.SWEEP_STORAGE: storage.handle_sweep_storage,
        JobKind.PURGE_JOBS: retention.handle_purge_jobs,
        JobKind.EXPIRE_UPLOADS: uploads.handle_expire_uploads,
    },
    on_dead={JobKind.PLACE: placement.on_place_dead},
)

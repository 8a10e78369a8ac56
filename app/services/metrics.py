"""Gauges read from the registry database when /metrics is scraped."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.logging import log_failure
from app.core.metrics import GatewayMetrics
from app.core.outage import OutageLog, is_database_outage
from app.repositories.files import FileRepository
from app.services.capacity import Capacity

log = logging.getLogger("filegate.metrics")
READ_TIMEOUT_SECONDS = 2.0


async def refresh_on_scrape(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    metrics: GatewayMetrics,
    database: OutageLog,
    capacity: Capacity | None = None,
) -> None:
    """Set the registry gauges; an unreachable database leaves their last values (and the
    scrape still answers)."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS), sessionmaker() as session:
            oldest = await FileRepository(session).oldest_pending()
            if capacity is not None:
                for provider in capacity.providers.order:
                    await capacity.overview(session, provider)  # sets the usage gauges
    except Exception as exc:
        if is_database_outage(exc):
            database.failed(exc)
        else:
            log_failure(log, "could not read the registry gauges", exc=exc)
        return
    age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0
    metrics.oldest_pending_file_age.set(age)

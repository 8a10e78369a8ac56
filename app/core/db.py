"""Database plumbing: declarative base with a naming convention, UTC timestamps, engines."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops offsets otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_rollback(dbapi_connection: Any) -> None:
    """Roll back only an open transaction: SQLite opens none for reads, and each call to
    the aiosqlite connection is a round trip to its thread."""
    inner = getattr(dbapi_connection, "_connection", None)
    if getattr(inner, "in_transaction", True):
        dbapi_connection.rollback()


def sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite URL (None for other databases and :memory:)."""
    if not url.startswith("sqlite"):
        return None
    raw = url.split("///", 1)[-1].split("?", 1)[0]
    return None if not raw or raw == ":memory:" else Path(raw)


def private_sqlite_file(url: str, *, make_dirs: bool = True) -> None:
    """Create the SQLite file (and, with `make_dirs`, its directory) readable by this user
    only, whatever the umask, and tighten an existing one: it holds every tenant's registry
    and extracts. Without `make_dirs` a missing directory is left for the engine to report."""
    path = sqlite_path(url)
    if path is None or (not make_dirs and not path.parent.is_dir()):
        return
    missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, 0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chmod(name, 0o600)


def create_engine(url: str, *, pool_size: int = 10, connect_timeout: float = 5.0) -> AsyncEngine:
    """An async engine for PostgreSQL (psycopg 3) or SQLite (aiosqlite)."""
    if url.startswith("sqlite"):
        private_sqlite_file(url, make_dirs=False)
        # Pooled: opening a SQLite connection (and its pragmas) per request is costly.
        engine = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, connect_args={"timeout": 30}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        engine.dialect.do_rollback = _sqlite_rollback  # type: ignore[method-assign]
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # A server that accepts connections but never answers is an outage within seconds.
        connect_args={"connect_timeout": max(2, round(connect_timeout))},
    )


def create_sessionmaker(
    engine: AsyncEngine, *, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine`; `info` is copied into each session's `info`."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info)


@asynccontextmanager
async def unit_of_work(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """One transaction of a multi-step flow, committed when the block ends.

    An error leaves the transaction to the session's owner, which rolls it back (objects stay
    loaded for the error path); helpers called inside never commit."""
    yield session
    await session.commit()


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A unit of work: commit on success, roll back on any error, always close."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise

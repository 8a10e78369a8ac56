"""Applying Alembic migrations, serialised across replicas by a PostgreSQL advisory lock."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from app.core.db import private_sqlite_file

ROOT = Path(__file__).resolve().parents[2]
MIGRATION_LOCK_ID = 0x46_47_4D_49  # "FGMI": any constant shared by every replica


def alembic_config() -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    return cfg


def sync_url(async_url: str) -> str:
    return async_url.replace("+aiosqlite", "")


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`; blocking, so call it outside an event loop or in a thread."""
    cfg = alembic_config()
    url = sync_url(database_url)
    private_sqlite_file(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
                connection.commit()
            try:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, revision)
                connection.commit()
            finally:
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID}
                    )
                    connection.commit()
    finally:
        engine.dispose()


def downgrade(database_url: str, revision: str = "base") -> None:
    cfg = alembic_config()
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, revision)
            connection.commit()
    finally:
        engine.dispose()

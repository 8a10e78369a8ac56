"""Applying Alembic migrations, serialised across replicas by a PostgreSQL advisory lock.

The migration scripts are the top-level `alembic/` directory of a checkout, where `alembic
upgrade head` finds them through alembic.ini; an installed package carries the same scripts as
`app/migrations`. The Config is built here in code, so no alembic.ini is read at runtime.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from app.core.db import private_sqlite_file

MIGRATION_LOCK_ID = 0x46_47_4D_49  # "FGMI": any constant shared by every replica


class MigrationsNotFound(RuntimeError):
    """Neither the installed package nor a source checkout holds the migration scripts."""


def script_location() -> Path:
    """The directory with env.py and versions/: installed with the package, or the checkout's.

    A built (non-editable) install has `app/migrations`; an editable install or a plain
    checkout has `alembic/` next to `app/`, recognised by the alembic.ini beside it.
    """
    package = resources.files("app")
    candidates: list[Path] = []
    if isinstance(package, Path):
        candidates.append(package / "migrations")
        checkout = package.resolve().parent
        if (checkout / "alembic.ini").is_file():
            candidates.append(checkout / "alembic")
    for candidate in candidates:
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates) or f"the package at {package}"
    raise MigrationsNotFound(
        f"filegate's migration scripts are missing (looked in {looked}); reinstall the package"
    )


def alembic_config() -> Config:
    """An Alembic Config for the migration scripts, without reading any .ini file."""
    cfg = Config()
    # Config values go through ConfigParser interpolation, where "%" is special.
    cfg.set_main_option("script_location", str(script_location()).replace("%", "%%"))
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

"""The package as users get it: built with `python -m build`, installed from the wheel into a
fresh virtualenv, and run from a directory that is not the checkout.

The sdist and the wheel are built from a copy of the checkout (the wheel from the unpacked
sdist, as `python -m build` does); the wheel and its dependencies are installed into a new
virtualenv with nothing else on its path, and every `filegate` command below runs that
virtualenv's script in an empty working directory, so the checkout's `app/` and `alembic/`
cannot stand in for what the wheel left out. Building and installing need the package index
(the build backend, the dependencies): only when it does not answer are these tests skipped,
saying so. Those tests take about a minute together (`-m packaging` selects them); the first
test, which only reads pyproject.toml, catches a new subpackage missing from the wheel at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tomllib
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.core.migrations import alembic_config, sync_url
from tests.conftest import PG_URL, TABLES
from tests.support.processes import ServerProcess
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT = 600.0
CLI_TIMEOUT = 120.0
SHIPPED_SUFFIXES = (".py", ".mako", ".html", ".js", ".css")  # modules, templates, console assets


@dataclass
class Installed:
    """The built distributions and the fresh virtualenv the wheel is installed in."""

    sdist: Path
    wheel: Path
    venv: Path
    scratch: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, settings: Mapping[str, str] | None = None) -> dict[str, str]:
        """The parent's environment without FILEGATE_* or Python path settings, plus `settings`."""
        dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env = {k: v for k, v in env.items() if not k.startswith("FILEGATE_")}
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(settings or {})
        return env

    def workdir(self) -> Path:
        """A new empty directory, outside the checkout, to run a command in."""
        path = self.scratch / f"cwd-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def run(
        self, args: list[str], cwd: Path, settings: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the virtualenv's scripts (`filegate`, `python`) to completion."""
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=cwd,
            env=self.env(settings),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)


def _require(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def _skip_unless_index_answers(scratch: Path) -> None:
    """Skip (saying why) when the package index cannot serve the build backend."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requires = pyproject["build-system"]["requires"]
    pip = [sys.executable, "-m", "pip"]
    probe = _run(
        [
            *pip,
            "download",
            "--no-deps",
            "--timeout",
            "15",
            "--retries",
            "1",
            "--dest",
            str(scratch / "probe"),
            *requires,
        ]
    )
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the package index is unreachable or lacks {requires}: {tail}")


TOP_LEVEL_OUTPUTS = {".git", ".venv", "venv", "build", "dist", "data", "bench-results", ".env"}


def _not_sources(directory: str, names: list[str]) -> set[str]:
    """What copying the checkout leaves out: VCS data, environments, caches and build outputs."""
    top = Path(directory) == ROOT
    return {
        name
        for name in names
        if (top and name in TOP_LEVEL_OUTPUTS)
        or name == "__pycache__"
        or name.endswith((".egg-info", "_cache"))
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    scratch = tmp_path_factory.mktemp("packaging")
    _skip_unless_index_answers(scratch)
    # A copy of the checkout, so that building leaves no egg-info behind in it, nor reads one.
    source = scratch / "source"
    shutil.copytree(ROOT, source, ignore=_not_sources)
    dist = scratch / "dist"
    built = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)])
    _require(built, "python -m build")
    [sdist] = dist.glob("filegate-*.tar.gz")
    [wheel] = dist.glob("filegate-*.whl")

    venv = scratch / "venv"
    _require(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)]), "python -m venv")
    # This interpreter's pip installs into the new virtualenv (`--python`), which saves
    # bootstrapping pip there; byte-compiling is skipped for speed.
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    install = _run([*pip, "install", "--no-compile", str(wheel)])
    _require(install, "pip install <wheel>")
    return Installed(sdist=sdist, wheel=wheel, venv=venv, scratch=scratch)


def test_every_package_of_the_checkout_is_listed_for_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = pyproject["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "app").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    migrations = {"app.migrations", "app.migrations.versions"}
    missing = found - set(setuptools["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert set(setuptools["packages"]) == found | migrations
    assert setuptools["package-dir"] == {"app.migrations": "alembic"}
    assert (ROOT / "alembic" / "env.py").is_file() and (ROOT / "alembic" / "versions").is_dir()


def _checkout_files(directory: str) -> set[str]:
    """Files under a checkout directory that a distribution must carry (no caches)."""
    base = ROOT / directory
    return {
        p.relative_to(base).as_posix()
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in SHIPPED_SUFFIXES
    }


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@pytest.mark.packaging
@pytest.mark.slow
def test_the_wheel_and_sdist_carry_every_module_and_migration(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
    modules = _checkout_files("app")
    migrations = _checkout_files("alembic")
    assert {"env.py", "script.py.mako"} <= migrations
    assert any(name.startswith("versions/") for name in migrations)
    assert not {f"app/{m}" for m in modules} - names
    assert not {f"app/migrations/{m}" for m in migrations} - names

    with tarfile.open(installed.sdist) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert not {f"alembic/{m}" for m in migrations} - members

    # The installed package is the wheel's, and so are the migration scripts it finds.
    site = installed.run(
        [
            "python",
            "-c",
            "import app; from app.core.migrations import script_location; "
            "print(app.__file__); print(script_location())",
        ],
        installed.workdir(),
    )
    _require(site, "python -c 'import app'")
    package_file, scripts = site.stdout.split()
    assert Path(package_file).is_relative_to(installed.venv), package_file
    assert Path(scripts).is_relative_to(installed.venv) and Path(scripts).name == "migrations"


def _sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.packaging
@pytest.mark.slow
def test_migrate_creates_the_schema_on_an_empty_sqlite_database(installed: Installed) -> None:
    cwd = installed.workdir()
    migrated = installed.run(["filegate", "migrate"], cwd)
    _require(migrated, "filegate migrate")
    assert "database is at the latest revision" in migrated.stdout
    db = cwd / "data" / "filegate.db"  # the embedded default, relative to the working directory
    tables = {
        row[0] for row in _sqlite_rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    assert set(TABLES) | {"alembic_version"} <= tables
    assert _sqlite_rows(db, "SELECT version_num FROM alembic_version") == [(_head(),)]


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of the test database; dropped after."""
    if not PG_URL:
        pytest.skip("FILEGATE_TEST_DATABASE_URL is not set")
    server = make_url(sync_url(PG_URL)).set(drivername="postgresql+psycopg")
    name = f"filegate_pkg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.mark.packaging
@pytest.mark.slow
@pytest.mark.postgres
def test_migrate_creates_the_schema_on_an_empty_postgres_database(
    installed: Installed, empty_pg_database: str
) -> None:
    settings = {"FILEGATE_DATABASE_URL": empty_pg_database}
    migrated = installed.run(["filegate", "migrate"], installed.workdir(), settings)
    _require(migrated, "filegate migrate")
    assert "database is at the latest revision" in migrated.stdout
    engine = create_engine(empty_pg_database)
    try:
        with engine.connect() as conn:
            tables = set(
                conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
            )
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    finally:
        engine.dispose()
    assert set(TABLES) | {"alembic_version"} <= tables
    assert version == [_head()]


@pytest.mark.packaging
@pytest.mark.slow
def test_serve_on_the_embedded_default_accepts_an_upload(installed: Installed) -> None:
    cwd = installed.workdir()
    created = installed.run(["filegate", "keys", "create", "--tenant", "demo", "--name", "me"], cwd)
    _require(created, "filegate keys create")
    token = created.stdout.strip().splitlines()[-1]

    port = free_port()
    logdir = installed.scratch / f"serve-{port}"
    logdir.mkdir()
    argv = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(logdir / "server.log", "wb") as log:
        proc = ServerProcess(
            [str(installed.bin / "filegate"), *argv],
            env=installed.env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.url, proc.probe_path, proc.workdir, proc.argv = (
        f"http://127.0.0.1:{port}",
        "/health/live",
        logdir,
        argv,
    )
    with proc:
        proc.wait_ready(timeout=60)
        payload = b"installed from the wheel, run from elsewhere\n"
        with httpx.Client(
            base_url=proc.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            ready = client.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ok", ready.text
            assert ready.json()["checks"]["provider:moonshot"]["mode"] == "sandbox"

            upload = client.post(
                "/v1/files",
                data={"purpose": "file-extract"},
                files={"file": ("notes.txt", payload, "text/plain")},
            )
            assert upload.status_code == 200, upload.text
            body = upload.json()
            assert body["object"] == "file" and body["status"] == "processed"
            assert body["bytes"] == len(payload) and body["filename"] == "notes.txt"
            assert [p["status"] for p in body["providers"]] == ["active"]
            content = client.get(f"/v1/files/{body['id']}/content")
            assert content.status_code == 200 and content.content == payload
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it
        assert proc.stop() == -signal.SIGTERM, proc.log()
        assert "Application shutdown complete." in proc.log()
    # The embedded default lives under the working directory: SQLite and the blob itself.
    assert (cwd / "data" / "filegate.db").is_file()
    blobs = [p for p in (cwd / "data" / "blobs").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in blobs] == [payload]

"""The `filegate` command in child processes: keys, migrate, configuration errors, serve."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from app.core.migrations import alembic_config
from tests.conftest import TABLES
from tests.support.processes import (
    ServerProcess,
    child_env,
    create_key,
    listening_addresses,
    mint_key,
    run_cli,
    start_gateway,
    start_sandbox,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

KEY_LINE = re.compile(r"^fg_[a-z0-9]{12}_[A-Za-z0-9_-]+$")


@dataclass
class Embedded:
    """`filegate serve --sandbox` with nothing configured but FILEGATE_DATA_DIR."""

    proc: ServerProcess
    env: dict[str, str]
    data_dir: Path

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def db_path(self) -> Path:
        return self.data_dir / "filegate.db"

    def hmac_key(self) -> bytes:
        # no FILEGATE_SECRET_KEY: the gateway generates one under the data dir on first start
        return (self.data_dir / "secret_key").read_text(encoding="ascii").strip().encode()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    data_dir = tmp_path_factory.mktemp("embedded") / "data"
    env = child_env({"FILEGATE_DATA_DIR": str(data_dir)})
    with start_gateway(env, None, "--sandbox") as proc:
        yield Embedded(proc=proc, env=env, data_dir=data_dir)


def in_process_sandbox(proc: ServerProcess) -> str:
    """The URL of the sandbox a `filegate serve` child runs itself, asserted loopback-only."""
    gateway_port = int(proc.url.rsplit(":", 1)[1])
    others = {(ip, port) for ip, port in listening_addresses(proc.pid) if port != gateway_port}
    assert len(others) == 1, others
    [(ip, port)] = others
    assert ip == "127.0.0.1"
    return f"http://127.0.0.1:{port}/sandbox"


def sqlite_rows(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.mark.parametrize("admin", [False, True], ids=["plain", "admin"])
def test_keys_create_prints_the_key_alone_on_its_last_line(tmp_path: Path, admin: bool) -> None:
    env = child_env({"FILEGATE_DATA_DIR": str(tmp_path / "data")})
    args = ["keys", "create", "--tenant", "acme", "--name", "ci"] + (["--admin"] if admin else [])
    proc = run_cli(args, env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    token = lines[-1]
    assert KEY_LINE.match(token), proc.stdout
    assert proc.stdout.count(token) == 1  # shown once, and only on that line
    key_id = token.split("_")[1]
    assert f"key id {key_id} for tenant acme" in lines[-2]
    scopes = re.search(r"\(scopes: ([^)]*)\)", lines[-2])
    assert scopes is not None
    assert set(scopes.group(1).split()) == {"files:read", "files:write"} | (
        {"admin"} if admin else set()
    )
    # two runs never print the same key
    again = run_cli(args, env)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] != token


def test_keys_create_stores_a_key_the_gateway_accepts(embedded: Embedded) -> None:
    token = create_key(embedded.env, tenant="acme", name="cli-plain")
    key_id = token.split("_")[1]
    assert sqlite_rows(embedded.db_path, "SELECT scopes FROM api_keys WHERE id = ?", key_id) == [
        ("files:read files:write",)
    ]
    headers = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{embedded.url}/v1/files", headers=headers)
    assert listed.status_code == 200, listed.text
    denied = httpx.get(f"{embedded.url}/admin/keys", headers=headers)
    assert denied.status_code == 403, denied.text


def test_keys_create_admin_grants_the_admin_scope(embedded: Embedded) -> None:
    token = create_key(embedded.env, tenant="ops", name="cli-admin", admin=True)
    key_id = token.split("_")[1]
    [(scopes,)] = sqlite_rows(embedded.db_path, "SELECT scopes FROM api_keys WHERE id = ?", key_id)
    assert "admin" in str(scopes).split()
    resp = httpx.get(f"{embedded.url}/admin/keys", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    [mine] = [k for k in resp.json()["data"] if k["id"] == key_id]
    assert set(mine["scopes"]) == {"admin", "files:read", "files:write"}


def test_migrate_creates_the_tables_on_a_fresh_sqlite_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    env = child_env({"FILEGATE_DATA_DIR": str(data_dir)})
    proc = run_cli(["migrate"], env)
    assert proc.returncode == 0, proc.stderr
    assert "database is at the latest revision" in proc.stdout
    db = data_dir / "filegate.db"
    assert db.is_file()
    tables = {
        row[0] for row in sqlite_rows(db, "SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert set(TABLES) | {"alembic_version"} <= tables
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert sqlite_rows(db, "SELECT version_num FROM alembic_version") == [(head,)]
    # idempotent
    again = run_cli(["migrate"], env)
    assert again.returncode == 0, again.stderr
    assert sqlite_rows(db, "SELECT version_num FROM alembic_version") == [(head,)]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("FILEGATE_PROVIDER_ORDER", "foo"), ("FILEGATE_DATABASE_URL", "mysql://db/x")],
)
@pytest.mark.parametrize(
    "command",
    [["migrate"], ["keys", "create", "--tenant", "t", "--name", "n"], ["serve", "--port", "0"]],
    ids=["migrate", "keys-create", "serve"],
)
def test_bad_configuration_exits_nonzero_naming_the_variable(
    tmp_path: Path, command: list[str], variable: str, value: str
) -> None:
    data_dir = tmp_path / "data"
    env = child_env({"FILEGATE_DATA_DIR": str(data_dir), variable: value})
    if command[0] == "serve":
        command = ["serve", "--port", str(free_port())]
    proc = run_cli(command, env, timeout=30)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert variable in proc.stderr
    assert "invalid configuration" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not data_dir.exists()  # nothing was migrated or created


async def test_serve_sandbox_embeds_everything_on_sqlite(embedded: Embedded) -> None:
    payload = b"embedded default: sqlite, local blobs, in-process sandbox\n"
    log = embedded.proc.log()
    assert "providers in SANDBOX mode: moonshot, zai" in log
    assert embedded.db_path.is_file()  # SQLite under the data dir, migrated at start
    token = await mint_key(f"sqlite+aiosqlite:///{embedded.db_path}", embedded.hmac_key())
    async with httpx.AsyncClient(
        base_url=embedded.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        sandbox = in_process_sandbox(embedded.proc)
        assert (await client.post(f"{sandbox}/moonshot/_reset")).status_code == 200

        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert ready.json()["status"] == "ok"
        assert checks["provider:moonshot"]["mode"] == "sandbox"
        assert checks["provider:zai"]["mode"] == "sandbox"
        assert checks["database"]["status"] == "ok"
        assert "redis" not in checks

        created = await client.post(
            "/v1/files",
            data={"purpose": "file-extract"},
            files={"file": ("notes.txt", payload, "text/plain")},
        )
        assert created.status_code == 200, created.text
        body = created.json()
        assert body["bytes"] == len(payload) and body["filename"] == "notes.txt"
        assert [(p["provider"], p["status"]) for p in body["providers"]] == [("moonshot", "active")]

        got = await client.get(f"/v1/files/{body['id']}")
        assert got.status_code == 200 and got.json()["id"] == body["id"]
        content = await client.get(f"/v1/files/{body['id']}/content")
        assert content.status_code == 200 and content.content == payload
        listed = await client.get("/v1/files")
        assert body["id"] in [f["id"] for f in listed.json()["data"]]

        stats = (await client.get(f"{sandbox}/moonshot/_stats")).json()
        assert stats["calls"]["upload"] == 1 and stats["files"] == 1
        assert stats["bytes"] == len(payload)
    blobs = [p for p in (embedded.data_dir / "blobs").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in blobs] == [payload]


async def enqueue_check(database_url: str, file_id: str) -> None:
    """Queue a health check of one file straight into the registry, as the hourly sweep would."""
    from app.core.db import create_engine, create_sessionmaker
    from app.jobs import queue
    from app.jobs.queue import JobKind

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await queue.enqueue(
                session=session,
                kind=JobKind.CHECK_FILE,
                payload={"file_id": file_id},
                max_attempts=3,
            )
            await session.commit()
    finally:
        await engine.dispose()


TEXT_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) \S+ \[[^\]]*\] "
)


def test_serve_logs_formatted_lines_with_the_request_id(embedded: Embedded) -> None:
    resp = httpx.get(f"{embedded.url}/health/live", headers={"X-Request-ID": "req-cli-text"})
    assert resp.status_code == 200
    lines = embedded.proc.log().splitlines()
    [access] = [line for line in lines if "request_id=req-cli-text" in line]
    assert TEXT_LOG_LINE.match(access) and " uvicorn.access " in access, access
    assert '"GET /health/live HTTP/1.1" 200' in access
    started = [line for line in lines if "Started server process" in line]
    assert started and all(TEXT_LOG_LINE.match(line) for line in started), started


async def _enqueue_unknown_job(db_path: Path, *, file_id: str) -> None:
    from app.core.db import create_engine, create_sessionmaker, utcnow
    from app.repositories.jobs import JobRepository

    engine = create_engine(f"sqlite+aiosqlite:///{db_path}")
    try:
        async with create_sessionmaker(engine)() as session:
            await JobRepository(session).enqueue(
                kind="retired-kind",  # no handler: the worker gives it up at once
                payload=f'{{"file_id": "{file_id}"}}',
                dedupe_key=None,
                run_after=utcnow(),
                max_attempts=3,
            )
            await session.commit()
    finally:
        await engine.dispose()


SANDBOX_PATHS_ON_THE_GATEWAY = [
    ("GET", "/sandbox/moonshot/_stats"),
    ("POST", "/sandbox/moonshot/_reset"),
    ("POST", "/sandbox/zai/_faults"),
    ("DELETE", "/sandbox/zai/_faults"),
    ("POST", "/sandbox/moonshot/_lose/file-x"),
    ("GET", "/sandbox/moonshot/v1/files"),
    ("GET", "/sandbox/zai/api/paas/v4/files"),
    ("GET", "/sandbox/_instance"),
    ("GET", "/sandbox"),
]


async def test_the_gateway_listener_never_answers_for_the_sandbox(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # The `make run` default (sandboxed, no sandbox URL), bound to every interface as in docker;
    # the retired FILEGATE_MOUNT_SANDBOX must not bring the mount back.
    env = child_env(
        {
            "FILEGATE_DATA_DIR": str(data_dir),
            "FILEGATE_SANDBOX": "true",
            "FILEGATE_MOUNT_SANDBOX": "true",
        }
    )
    with start_gateway(env, None, host="0.0.0.0") as proc:  # noqa: S104
        async with httpx.AsyncClient(base_url=proc.url, timeout=30) as client:
            for method, path in SANDBOX_PATHS_ON_THE_GATEWAY:
                resp = await client.request(method, path, json={"status": 503, "rate": 1.0})
                assert resp.status_code == 404, (method, path, resp.text)
                error = resp.json()["error"]
                assert set(error) == {"message", "type", "code", "param"}, (path, error)

            db = f"sqlite+aiosqlite:///{data_dir / 'filegate.db'}"
            secret = (data_dir / "secret_key").read_text(encoding="ascii").strip().encode()
            token = await mint_key(db, secret)
            created = await client.post(
                "/v1/files",
                headers={"Authorization": f"Bearer {token}"},
                data={"purpose": "file-extract"},
                files={"file": ("a.txt", b"still works\n", "text/plain")},
            )
            assert created.status_code == 200, created.text
            assert [p["status"] for p in created.json()["providers"]] == ["active"]

            # The gateway's providers live on its own sandbox, listening on loopback only.
            sandbox = in_process_sandbox(proc)
            stats = (await client.get(f"{sandbox}/moonshot/_stats")).json()
            assert stats["files"] == 1 and stats["calls"]["upload"] == 1
        # ... and that sandbox left the gateway's own access log in place.
        assert '"GET /health/live HTTP/1.1" 200' in proc.log()


async def test_serve_and_worker_honour_the_sandbox_url_of_dotenv(
    tmp_path: Path, sandbox_reset: str
) -> None:
    data_dir = tmp_path / "data"
    db = f"sqlite+aiosqlite:///{data_dir / 'filegate.db'}"
    env = child_env({"FILEGATE_DATA_DIR": str(data_dir)})
    dotenv = (
        "FILEGATE_SANDBOX=true\n"
        f"FILEGATE_SANDBOX_URL={sandbox_reset}/sandbox\n"
        "FILEGATE_WORKERS_IN_PROCESS=0\n"
    )
    sandbox = f"{sandbox_reset}/sandbox"
    with start_gateway(env, None, dotenv=dotenv) as proc:
        assert f"(at {sandbox})" in proc.log()
        port = int(proc.url.rsplit(":", 1)[1])
        assert listening_addresses(proc.pid) == {("127.0.0.1", port)}  # no sandbox of its own
        secret = (data_dir / "secret_key").read_text(encoding="ascii").strip().encode()
        auth = {"Authorization": f"Bearer {await mint_key(db, secret)}"}
        async with httpx.AsyncClient(base_url=proc.url, headers=auth, timeout=30) as client:
            created = await client.post(
                "/v1/files",
                data={"purpose": "file-extract"},
                files={"file": ("a.txt", b"placed via .env\n", "text/plain")},
            )
            assert created.status_code == 200, created.text
            [copy] = created.json()["providers"]
            stats = (await client.get(f"{sandbox}/moonshot/_stats")).json()
            assert stats["files"] == 1 and stats["calls"]["upload"] == 1

            # The sandbox loses the copy; a standalone worker reading the same .env repairs it.
            lost = await client.post(f"{sandbox}/moonshot/_lose/{copy['provider_file_id']}")
            assert lost.status_code == 200
            await enqueue_check(db, created.json()["id"])
            ran = run_cli(["worker", "--once"], env, dotenv=dotenv)
            assert ran.returncode == 0, (ran.stdout, ran.stderr)
            stats = (await client.get(f"{sandbox}/moonshot/_stats")).json()
            assert stats["files"] == 1 and stats["calls"]["upload"] == 2
            after = (await client.get(f"/v1/files/{created.json()['id']}")).json()
            [again] = [p for p in after["providers"] if p["status"] == "active"]
            assert again["provider_file_id"] != copy["provider_file_id"]


@pytest.mark.parametrize("once", [False, True], ids=["loop", "once"])
def test_a_sandboxed_worker_without_a_sandbox_url_refuses_to_guess(
    tmp_path: Path, once: bool
) -> None:
    env = child_env({"FILEGATE_DATA_DIR": str(tmp_path / "data"), "FILEGATE_SANDBOX": "true"})
    proc = run_cli(["worker", *(["--once"] if once else [])], env, timeout=30)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "FILEGATE_SANDBOX_URL" in proc.stderr and "filegate sandbox" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_several_workers_each_with_its_own_sandbox(tmp_path: Path) -> None:
    env = child_env({"FILEGATE_DATA_DIR": str(tmp_path / "data"), "FILEGATE_SANDBOX": "true"})
    proc = run_cli(["serve", "--port", str(free_port()), "--workers", "2"], env, timeout=30)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "FILEGATE_SANDBOX_URL" in proc.stderr and "--workers 1" in proc.stderr


async def test_worker_once_logs_json_lines_at_the_configured_level(
    tmp_path: Path, sandbox_reset: str
) -> None:
    data_dir = tmp_path / "data"
    env = child_env(
        {
            "FILEGATE_DATA_DIR": str(data_dir),
            "FILEGATE_LOG_FORMAT": "json",
            "FILEGATE_SANDBOX": "true",
            "FILEGATE_SANDBOX_URL": f"{sandbox_reset}/sandbox",
        }
    )
    assert run_cli(["migrate"], env).returncode == 0
    await _enqueue_unknown_job(data_dir / "filegate.db", file_id="file-cli-1")

    proc = run_cli(["worker", "--once"], env)
    assert proc.returncode == 0, proc.stderr
    assert "ran 2 jobs" in proc.stdout  # the retired job and the start-up storage sweep
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    [gave_up] = [line for line in lines if line.get("job_kind") == "retired-kind"]
    assert gave_up["level"] == "WARNING" and gave_up["logger"] == "filegate.worker"
    assert "gave up" in gave_up["message"] and "no handler" in gave_up["message"]
    assert gave_up["file_id"] == "file-cli-1" and gave_up["job_id"]
    assert gave_up["time"].endswith("Z")

    await _enqueue_unknown_job(data_dir / "filegate.db", file_id="file-cli-2")
    quiet = run_cli(["worker", "--once"], {**env, "FILEGATE_LOG_LEVEL": "error"})
    assert quiet.returncode == 0 and "ran 2 jobs" in quiet.stdout, quiet.stderr
    assert "file-cli-2" not in quiet.stderr  # the warning is below the configured level


def test_serve_logs_json_lines_with_uvicorn_in_the_same_format(tmp_path: Path) -> None:
    env = child_env({"FILEGATE_DATA_DIR": str(tmp_path / "data"), "FILEGATE_LOG_FORMAT": "json"})
    with start_gateway(env, None, "--sandbox") as proc:
        resp = httpx.get(f"{proc.url}/health/live", headers={"X-Request-ID": "req-cli-json"})
        assert resp.status_code == 200
        proc.stop()
        log = proc.log()
    banner = ("filegate on ", "providers in SANDBOX", "create an API key")
    records = [line for line in log.splitlines() if line and not line.startswith(banner)]
    parsed = [json.loads(line) for line in records]  # every log line is one JSON object
    [access] = [x for x in parsed if x.get("request_id") == "req-cli-json"]
    assert access["logger"] == "uvicorn.access" and access["level"] == "INFO"
    assert '"GET /health/live HTTP/1.1" 200' in access["message"]
    loggers = {x["logger"] for x in parsed}
    assert "uvicorn.error" in loggers
    assert all({"time", "level", "logger", "message"} <= set(x) for x in parsed)


async def test_sandbox_keeps_the_account_caps_it_is_given() -> None:
    with start_sandbox(None, "--moonshot-max-files", "2", "--zai-max-files", "1") as proc:
        async with httpx.AsyncClient(base_url=f"{proc.url}/sandbox", timeout=30) as client:

            async def upload(path: str, name: str) -> httpx.Response:
                return await client.post(
                    path,
                    headers={"Authorization": "Bearer sk-x.y"},
                    data={"purpose": "file-extract"},
                    files={"file": (name, name.encode())},
                )

            moonshot = [await upload("/moonshot/v1/files", f"m{n}.txt") for n in range(3)]
            zai = [await upload("/zai/api/paas/v4/files", f"z{n}.csv") for n in range(2)]
    assert [r.status_code for r in moonshot] == [200, 200, 400]
    assert moonshot[2].json()["error"]["message"] == (
        "The number of files you have uploaded exceeded the max file count 2, "
        "please delete previous uploaded files"
    )
    assert [r.status_code for r in zai] == [200, 400]
    assert "reached the limit of 1" in zai[1].json()["error"]["message"]

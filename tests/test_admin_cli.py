"""The operator commands of `filegate`, run through its real entry point against the test's
database, sandbox and Redis: every admin task, JSON for scripts, one-line user errors."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from app.cli import main
from app.core.config import Settings
from app.models import AuditEvent, Job, JobState
from tests.conftest import REDIS_URL, Gateway
from tests.support.processes import child_env, run_cli


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


def _env(settings: Settings) -> dict[str, str]:
    """The settings under test as the FILEGATE_ variables a command reads."""
    assert settings.database_url and settings.sandbox_url and settings.secret_key
    env = {
        "FILEGATE_ENV": "test",
        "FILEGATE_DATABASE_URL": settings.database_url,
        "FILEGATE_DATA_DIR": str(settings.data_dir),
        "FILEGATE_SECRET_KEY": settings.secret_key.get_secret_value(),
        "FILEGATE_SANDBOX": "true",
        "FILEGATE_SANDBOX_URL": settings.sandbox_url,
        "FILEGATE_BREAKER_NAMESPACE": settings.breaker_namespace,
    }
    if settings.redis_url:
        env["FILEGATE_REDIS_URL"] = settings.redis_url
    return env


@pytest.fixture
def cli_env(settings: Settings, restore_logging: None) -> Iterator[dict[str, str]]:
    """This process's environment pointed at the test's settings while the test runs."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("FILEGATE_")}
    for name in saved:
        del os.environ[name]
    env = _env(settings)
    os.environ.update(env)
    yield env
    for name in [k for k in os.environ if k.startswith("FILEGATE_")]:
        del os.environ[name]
    os.environ.update(saved)


def _run(*args: str) -> Ran:
    out, err = StringIO(), StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Ran(code, out.getvalue(), err.getvalue())


async def filegate(*args: str) -> Ran:
    """`filegate ARGS` through main(), in a thread: each command runs its own event loop."""
    return await asyncio.to_thread(_run, *args)


def assert_one_line_error(ran: Ran, *, code: int, says: str) -> None:
    assert ran.code == code, (ran.code, ran.out, ran.err)
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert "Traceback" not in ran.err + ran.out


async def _upload(gateway: Gateway, token: str, body: bytes, name: str) -> dict[str, Any]:
    async with gateway.client(token) as c:
        resp = await c.post(
            "/v1/files",
            data={"purpose": "file-extract", "provider": "zai"},
            files={"file": (name, body, "text/csv")},
        )
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def _audit(gateway: Gateway, action: str) -> list[AuditEvent]:
    async with gateway.runtime.sessionmaker() as session:
        stmt = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        return list((await session.execute(stmt)).scalars().all())


async def test_keys_are_created_listed_rotated_and_revoked_audited_as_the_cli(
    gateway: Gateway, cli_env: dict[str, str]
) -> None:
    created = (
        await filegate(
            "--json",
            "keys",
            "create",
            "--tenant",
            "acme",
            "--name",
            "ingest",
            "--scopes",
            "files:read",
            "--expires",
            "2099-01-01T00:00:00Z",
            "--rate-limit",
            "30",
        )
    ).json()
    assert created["scopes"] == ["files:read"] and created["rate_limit_per_minute"] == 30
    assert created["expires_at"] == 4070908800 and created["key"].startswith("fg_")
    async with gateway.client(created["key"]) as c:
        assert (await c.get("/v1/files")).status_code == 200
        assert (await c.post("/v1/files")).status_code == 403  # read only
    listed = (await filegate("--json", "keys", "list", "--tenant", "acme")).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert all("key" not in k for k in listed)
    human = await filegate("keys", "list")
    assert human.code == 0 and created["id"] in human.out and created["key"] not in human.out

    rotated = (await filegate("--json", "keys", "rotate", created["id"], "--overlap", "0")).json()
    assert rotated["rotated_from"] == created["id"] and rotated["key"] != created["key"]
    revoked = (await filegate("--json", "keys", "revoke", rotated["id"])).json()
    assert revoked["revoked_at"] is not None
    gateway.runtime.identity.invalidate(created["id"])
    gateway.runtime.identity.invalidate(rotated["id"])
    for token in (created["key"], rotated["key"]):
        async with gateway.client(token) as c:
            assert (await c.get("/v1/files")).status_code == 401

    actor = f"cli:{getpass.getuser()}"
    for action, resource in [
        ("key.create", created["id"]),
        ("key.rotate", created["id"]),
        ("key.revoke", rotated["id"]),
    ]:
        [row] = await _audit(gateway, action)
        assert (row.actor, row.resource, row.tenant_id) == (actor, resource, None)
        assert row.request_id and row.request_id.startswith("cli-")
    for row in await _audit(gateway, "key.create") + await _audit(gateway, "key.rotate"):
        assert created["key"] not in str(row.detail) and rotated["key"] not in str(row.detail)


async def test_the_plain_key_create_prints_the_key_alone_on_its_last_line(
    gateway: Gateway, cli_env: dict[str, str]
) -> None:
    ran = await filegate("keys", "create", "--tenant", "ops", "--name", "root", "--admin")
    assert ran.code == 0, ran.err
    *_, note, token = ran.out.strip().splitlines()
    assert "tenant ops" in note and "admin" in note
    async with gateway.client(token) as c:
        assert (await c.get("/admin/tenants")).status_code == 200


async def test_tenants_are_listed_and_quotas_set(gateway: Gateway, cli_env: dict[str, str]) -> None:
    token = await gateway.key("acme")
    await _upload(gateway, token, b"a,1\n", "a.csv")
    set_ = (
        await filegate(
            "--json", "tenants", "quota", "acme", "--max-bytes", "100", "--max-files", "1"
        )
    ).json()
    assert (set_["name"], set_["max_bytes"], set_["max_files"], set_["used_files"]) == (
        "acme",
        100,
        1,
        1,
    )
    [tenant] = (await filegate("--json", "tenants", "list")).json()["data"]
    assert tenant["max_files"] == 1 and tenant["used_bytes"] == 4
    async with gateway.client(token) as c:
        refused = await c.post(
            "/v1/files",
            data={"purpose": "file-extract"},
            files={"file": ("b.csv", b"b,2\n", "text/csv")},
        )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota_exceeded"
    [row] = await _audit(gateway, "tenant.quota")
    assert row.actor.startswith("cli:")
    missing = await filegate("tenants", "quota", "nobody", "--max-files", "1")
    assert_one_line_error(missing, code=1, says="No tenant")


async def test_files_are_found_shown_checked_and_deleted(
    gateway: Gateway, cli_env: dict[str, str]
) -> None:
    acme, globex = await gateway.key("acme"), await gateway.key("globex")
    mine = await _upload(gateway, acme, b"x,1\n", "report.csv")
    theirs = await _upload(gateway, globex, b"y,2\n", "other.csv")
    everything = (await filegate("--json", "files", "list")).json()
    assert [f["id"] for f in everything["data"]] == [theirs["id"], mine["id"]]
    assert everything["has_more"] is False
    by_sha = await filegate(
        "--json", "files", "list", "--sha256", hashlib.sha256(b"x,1\n").hexdigest()
    )
    assert [f["id"] for f in by_sha.json()["data"]] == [mine["id"]]
    paged = (await filegate("--json", "files", "list", "--limit", "1")).json()
    assert paged["has_more"] is True and paged["next_cursor"] == theirs["id"]
    rest = await filegate("--json", "files", "list", "--cursor", paged["next_cursor"])
    assert [f["id"] for f in rest.json()["data"]] == [mine["id"]]
    by_name = (await filegate("--json", "files", "list", "--filename", "REPORT")).json()
    assert [f["tenant"] for f in by_name["data"]] == ["acme"]
    human = await filegate("files", "list", "--tenant", "globex")
    assert human.code == 0 and theirs["id"] in human.out and mine["id"] not in human.out

    shown = (await filegate("--json", "files", "show", mine["id"])).json()
    assert shown["tenant"] == "acme" and shown["events"][0]["to_status"] == "uploaded"
    assert (await filegate("files", "show", mine["id"])).out.count("\n") > 5

    checked = (await filegate("--json", "files", "check", mine["id"])).json()
    assert checked == {"file_id": mine["id"], "blob": "ok", "copies": {"zai": "ok"}}

    deleted = (await filegate("--json", "files", "delete", mine["id"])).json()
    assert deleted == {"id": mine["id"], "object": "file", "deleted": True}
    async with gateway.client(acme) as c:
        assert (await c.get(f"/v1/files/{mine['id']}")).status_code == 404
    [row] = await _audit(gateway, "file.delete")
    assert row.actor.startswith("cli:") and row.resource == mine["id"]
    again = await filegate("files", "delete", mine["id"])
    assert_one_line_error(again, code=1, says="No file with id")
    bad = await filegate("files", "show", "file-nope")
    assert_one_line_error(bad, code=2, says="is not a file id")


async def test_jobs_are_listed_by_state_kind_and_file_and_retried(
    gateway: Gateway, cli_env: dict[str, str]
) -> None:
    token = await gateway.key("acme")
    file = await _upload(gateway, token, b"j,1\n", "j.csv")
    placements = (await filegate("--json", "jobs", "list", "--file", file["id"])).json()
    [place] = placements["data"]
    assert place["kind"] == "place" and place["payload"]["file_id"] == file["id"]
    async with gateway.runtime.sessionmaker() as session:
        await session.execute(update(Job).where(Job.id == place["id"]).values(state=JobState.DEAD))
        await session.commit()
    dead = (await filegate("--json", "jobs", "list", "--state", "dead", "--kind", "place")).json()
    assert [j["id"] for j in dead["data"]] == [place["id"]]
    assert (await filegate("--json", "jobs", "list", "--kind", "reconcile")).json()["data"] == []
    retried = (await filegate("--json", "jobs", "retry", str(place["id"]))).json()
    assert retried["state"] == "queued" and retried["attempts"] == 0
    [row] = await _audit(gateway, "job.retry")
    assert row.actor.startswith("cli:") and row.resource == f"job:{place['id']}"
    human = await filegate("jobs", "list", "--state", "queued")
    assert human.code == 0 and str(place["id"]) in human.out
    unknown = await filegate("jobs", "retry", "999999")
    assert_one_line_error(unknown, code=1, says="No job with id 999999")
    bad_state = await filegate("jobs", "list", "--state", "sleeping")
    assert_one_line_error(bad_state, code=2, says="--state")


@pytest.mark.skipif(not REDIS_URL, reason="breakers are shared through Redis")
async def test_providers_are_shown_and_breakers_forced(
    gateway: Gateway, cli_env: dict[str, str]
) -> None:
    shown = (await filegate("--json", "providers", "show")).json()["data"]
    assert [p["provider"] for p in shown] == ["moonshot", "zai"]
    assert all(p["breaker"]["state"] == "closed" and p["mode"] == "sandbox" for p in shown)
    opened = (await filegate("--json", "providers", "breaker", "open", "zai")).json()
    assert opened["state"] == "open" and opened["storage"] == "redis"
    admin = await gateway.key("ops", ("admin",))

    async def zai_state() -> str:
        async with gateway.client(admin) as ops:
            rows = (await ops.get("/admin/providers")).json()["data"]
        return str(next(r for r in rows if r["provider"] == "zai")["breaker"]["state"])

    assert await zai_state() == "open"  # the server process sees the CLI's action
    assert (await filegate("--json", "providers", "breaker", "close", "zai")).json()["state"] == (
        "closed"
    )
    assert await zai_state() == "closed"
    reset = await filegate("providers", "breaker", "reset", "zai")
    assert reset.code == 0 and "closed" in reset.out
    actions = [row.action for row in await _audit(gateway, "breaker.open")]
    assert actions == ["breaker.open"]
    unknown = await filegate("providers", "breaker", "open", "nowhere")
    assert_one_line_error(unknown, code=2, says="Unknown provider")


async def test_breakers_without_redis_are_refused(
    gateway: Gateway, cli_env: dict[str, str]
) -> None:
    os.environ.pop("FILEGATE_REDIS_URL", None)
    ran = await filegate("providers", "breaker", "open", "zai")
    assert_one_line_error(ran, code=2, says="FILEGATE_REDIS_URL")


def test_version_is_printed(restore_logging: None) -> None:
    ran = _run("--version")
    assert ran.code == 0 and ran.out.startswith("filegate ") and len(ran.out.splitlines()) == 1


def test_bad_flags_are_one_line(restore_logging: None) -> None:
    assert_one_line_error(_run("--bogus"), code=2, says="--bogus")
    assert_one_line_error(_run("keys", "create", "--name", "x"), code=2, says="--tenant")
    assert_one_line_error(
        _run("keys", "create", "--tenant", "a", "--name", "x", "--rate-limit", "0"),
        code=2,
        says="--rate-limit",
    )


@pytest.mark.slow
def test_an_unreachable_database_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    env = child_env(
        {
            "FILEGATE_DATA_DIR": str(tmp_path / "data"),
            # Nothing listens on port 9 (discard) of loopback: the connection is refused.
            "FILEGATE_DATABASE_URL": "postgresql://filegate@127.0.0.1:9/filegate",
            "FILEGATE_SECRET_KEY": "test-secret-key-for-hmac-0123456789",
        }
    )
    for args in (["tenants", "list"], ["keys", "create", "--tenant", "a", "--name", "b"]):
        proc = run_cli(args, env)
        ran = Ran(proc.returncode, proc.stdout, proc.stderr)
        assert_one_line_error(ran, code=1, says="cannot reach the database")


@pytest.mark.slow
def test_an_empty_tenant_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    env = child_env({"FILEGATE_DATA_DIR": str(tmp_path / "data")})
    proc = run_cli(["keys", "create", "--tenant", "", "--name", "me"], env)
    ran = Ran(proc.returncode, proc.stdout, proc.stderr)
    assert_one_line_error(ran, code=2, says="Invalid tenant name")
    listed = run_cli(["--json", "tenants", "list"], env)
    assert listed.returncode == 0 and json.loads(listed.stdout)["data"] == []

"""Every /v1 and /admin route needs a key; scopes decide what it may do."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models import AuditEvent, File
from tests.api.test_files import upload
from tests.conftest import TEST_SECRET, Gateway
from tests.security.conftest import seed
from tests.security.test_authorization import (
    WRITE_TEMPLATES,
    admin_calls,
    assert_allowed,
    assert_forbidden,
    bearer,
    read_calls,
    write_calls,
)

ROUTES = [
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/file-AAAAAAAAAAAAAAAAAAAAAAAA"),
    ("GET", "/v1/files/file-AAAAAAAAAAAAAAAAAAAAAAAA/content"),
    ("GET", "/v1/files/file-AAAAAAAAAAAAAAAAAAAAAAAA/extract"),
    ("DELETE", "/v1/files/file-AAAAAAAAAAAAAAAAAAAAAAAA"),
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys"),
    ("DELETE", "/admin/keys/abcdefabcdef"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_missing_key_is_401(gateway: Gateway, method: str, path: str) -> None:
    async with gateway.client() as anon:
        resp = await anon.request(method, path)
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"
    assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "fg_abcdefabcdef_" + "x" * 43,  # well-formed, unknown id
        "sk-" + "a" * 40,
    ],
)
async def test_invalid_keys_are_401_and_audited(gateway: Gateway, token: str) -> None:
    async with gateway.client(token) as c:
        resp = await c.get("/v1/files")
    assert resp.status_code == 401
    assert token not in resp.text
    async with gateway.runtime.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent))).scalars().all()
    assert [(r.actor, r.outcome, r.status_code) for r in rows] == [("anonymous", "denied", 401)]
    assert token not in (rows[0].detail or "")


async def test_wrong_secret_for_a_real_key_id_is_401(gateway: Gateway) -> None:
    token = await gateway.key()
    forged = token[: token.rindex("_") + 1] + "A" * 43
    async with gateway.client(forged) as c:
        assert (await c.get("/v1/files")).status_code == 401
    async with gateway.client(token) as c:
        assert (await c.get("/v1/files")).status_code == 200


async def test_x_api_key_header_works(gateway: Gateway) -> None:
    token = await gateway.key()
    async with gateway.client() as c:
        resp = await c.get("/v1/files", headers={"X-API-Key": token})
    assert resp.status_code == 200


async def test_revoked_key_is_refused(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    token = await gateway.key()
    key_id = token.split("_")[1]
    async with gateway.client(token) as user, gateway.client(admin) as ops:
        assert (await user.get("/v1/files")).status_code == 200
        revoked = await ops.delete(f"/admin/keys/{key_id}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert (await user.get("/v1/files")).status_code == 401


async def test_read_only_key_cannot_write(gateway: Gateway) -> None:
    world = await seed(gateway)
    reader = await gateway.key("acme", ("files:read",))
    await assert_allowed(world, bearer(reader), read_calls(world))
    calls = write_calls(world)
    assert {(c.method, c.template) for c in calls} == WRITE_TEMPLATES
    assert len(calls) >= 9
    # Each write is 403 permission_denied and audited; no row, blob or provider call appears.
    await assert_forbidden(world, bearer(reader), calls, actor=f"key:{reader.split('_')[1]}")
    async with gateway.client(reader) as c:
        resp = await upload(c)
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "permission_denied"
        assert (await c.get("/v1/files")).status_code == 200
        # The file is intact and still readable.
        resp = await c.get(f"/v1/files/{world.file_id}")
        assert resp.status_code == 200 and resp.json()["status"] == "processed"
        assert [p["provider"] for p in resp.json()["providers"]] == ["moonshot"]
    async with gateway.runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(File)) == 1  # the seeded one
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 1  # the seed's


async def test_non_admin_cannot_use_admin_routes(gateway: Gateway) -> None:
    world = await seed(gateway)
    calls = admin_calls(world)
    # Every admin route the app serves is tried (the route table is the security suite's).
    served = {
        (method.upper(), path)
        for path, operations in gateway.app.openapi()["paths"].items()
        if path.startswith("/admin")
        for method in operations
    }
    assert len(served) >= 17
    assert {(c.method, c.template) for c in calls} == served
    for header in ("Authorization", "X-API-Key"):
        value = f"Bearer {world.user}" if header == "Authorization" else world.user
        await assert_forbidden(world, {header: value}, calls, actor=f"key:{world.user_key_id}")
    # Control: the operator key is let through on the same routes (reads only, here).
    await assert_allowed(world, bearer(world.admin), [c for c in calls if c.method == "GET"])


async def test_secrets_are_stored_only_as_hmac(gateway: Gateway) -> None:
    token = await gateway.key()
    secret = token.split("_", 2)[2]
    async with gateway.runtime.engine.connect() as conn:
        from sqlalchemy import text

        rows = (await conn.execute(text("SELECT * FROM api_keys"))).all()
    flat = " ".join(str(v) for row in rows for v in row)
    assert secret not in flat and token not in flat
    assert TEST_SECRET not in flat

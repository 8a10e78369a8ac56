"""JWT bearer tokens identify callers as well as API keys do."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from jose import jwt
from sqlalchemy import select

from app.models import AuditEvent, Tenant
from tests.api.test_files import upload
from tests.conftest import Gateway

SECRET = "jwt-test-secret-that-is-long-enough-0123456789"


def token(**overrides: Any) -> str:
    claims = {
        "sub": "svc-ingest",
        "aud": "filegate",
        "iss": "https://issuer.example",
        "exp": int(time.time()) + 300,
        "tenant": "acme",
        "scope": "files:read files:write",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    encoded: str = jwt.encode(claims, SECRET, algorithm="HS256")
    return encoded


pytestmark = pytest.mark.settings(jwt_key=SECRET, jwt_issuer="https://issuer.example")


@pytest.fixture
def jwt_app(gateway: Gateway) -> Any:
    """The gateway's app, accepting HS256 JWTs signed with SECRET."""
    return gateway.app


def client_for(app: Any, bearer: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://g", headers=headers
    )


async def test_valid_jwt_uploads_and_reads_as_its_tenant(jwt_app: Any) -> None:
    async with client_for(jwt_app, token()) as c:
        created = await upload(c)
        assert created.status_code == 200, created.text
        assert (await c.get(f"/v1/files/{created.json()['id']}")).status_code == 200
    async with jwt_app.state.runtime.sessionmaker() as session:
        names = (await session.execute(select(Tenant.name))).scalars().all()
        actors = (await session.execute(select(AuditEvent.actor))).scalars().all()
    assert names == ["acme"]
    assert "jwt:svc-ingest" in actors
    async with client_for(jwt_app, token(tenant="globex")) as other:
        assert (await other.get(f"/v1/files/{created.json()['id']}")).status_code == 404


async def test_jwt_scopes_are_enforced(jwt_app: Any) -> None:
    async with client_for(jwt_app, token(scope="files:read")) as c:
        assert (await upload(c)).status_code == 403
        assert (await c.get("/v1/files")).status_code == 200
        assert (await c.get("/admin/keys")).status_code == 403
    async with client_for(jwt_app, token(scope="admin")) as c:
        refused = await c.get("/admin/keys")
        assert refused.status_code == 401
        assert "admin scope is not accepted" in refused.json()["error"]["message"]


@pytest.mark.settings(jwt_allow_admin=True)
async def test_jwt_admin_needs_the_setting(jwt_app: Any) -> None:
    async with client_for(jwt_app, token(scope="admin")) as c:
        assert (await c.get("/admin/keys")).status_code == 200


async def test_long_tenants_sharing_a_prefix_stay_apart(jwt_app: Any) -> None:
    prefix = "t" * 100
    async with client_for(jwt_app, token(tenant=prefix)) as victim:
        created = await upload(victim)
        assert created.status_code == 200, created.text
    for tenant in (prefix + "-attacker", prefix + "\u200b"):
        async with client_for(jwt_app, token(tenant=tenant)) as attacker:
            refused = await attacker.get("/v1/files")
            assert refused.status_code == 401, refused.text
            assert "invalid tenant claim" in refused.json()["error"]["message"]
    async with client_for(jwt_app, token(sub="s" * 58 + "-a")) as long_subject:
        assert (await long_subject.get("/v1/files")).status_code == 401


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda: token(exp=int(time.time()) - 120), "expired"),
        (lambda: token(aud="someone-else"), "audience"),
        (lambda: token(iss="https://evil.example"), "issuer"),
        (lambda: token(tenant=None), "tenant"),
        (lambda: jwt.encode({"sub": "x"}, "another-secret-of-enough-length-000000", "HS256"), ""),
    ],
)
async def test_bad_jwts_are_401_with_reason(jwt_app: Any, bad: Any, reason: str) -> None:
    bearer = bad()
    async with client_for(jwt_app, bearer) as c:
        resp = await c.get("/v1/files")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert reason in resp.json()["error"]["message"]
    assert bearer not in resp.text

"""Console sign-in over plain HTTP: cookie flags, CSRF, CSP, expiry, revocation, sign-out."""

from __future__ import annotations

import re

import httpx
import pytest
from pydantic import ValidationError

from app.auth.sessions import COOKIE
from app.core.config import Settings
from tests.conftest import REDIS_URL, Gateway, started_gateway
from tests.support.clock import FakeClock

BREAKER = "/admin/providers/moonshot/breaker"


def key_id(token: str) -> str:
    return token[3:15]  # fg_<12-character id>_<secret>


async def _sign_in(c: httpx.AsyncClient, key: str) -> httpx.Response:
    return await c.post("/console/session", json={"key": key})


async def _audit(gateway: Gateway, admin: str, action: str) -> list[dict[str, object]]:
    async with gateway.client(admin) as c:
        rows: list[dict[str, object]] = (await c.get(f"/admin/audit?action={action}")).json()[
            "data"
        ]
    return rows


async def test_an_admin_key_gets_an_httponly_strict_cookie_and_never_sees_it_again(
    gateway: Gateway,
) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    async with gateway.client() as c:
        resp = await _sign_in(c, admin)
        assert resp.status_code == 200
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= flags
        assert any(flag.startswith("max-age=") for flag in flags)
        body = resp.json()
        assert admin not in resp.text and admin[16:] not in cookie
        assert body["operator"] == f"console:{key_id(admin)}" and body["csrf_token"]
        assert resp.headers["cache-control"] == "no-store"
        # The cookie alone reads the admin API, and the session says who is signed in.
        assert (await c.get("/admin/providers")).status_code == 200
        again = await c.get("/console/session")
        assert again.json()["csrf_token"] == body["csrf_token"]
        # ... but is not a credential for the files API.
        assert (await c.get("/v1/files")).status_code == 401
    [row] = await _audit(gateway, admin, "console.sign_in")
    assert row["actor"] == body["operator"] and row["outcome"] == "success"


async def test_a_key_without_admin_scope_or_a_bad_key_cannot_sign_in(gateway: Gateway) -> None:
    tenant_key = await gateway.key("acme")
    async with gateway.client() as c:
        refused = await _sign_in(c, tenant_key)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert refused.json()["error"]["param"] == "key"
        for wrong in (tenant_key[:-4] + "AAAA", "not-a-key"):
            bad = await _sign_in(c, wrong)
            assert bad.status_code == 401 and "set-cookie" not in bad.headers
        assert (await c.get("/admin/providers")).status_code == 401
    admin = await gateway.key("ops", scopes=("admin",))
    [denied] = [
        row
        for row in await _audit(gateway, admin, "POST /console/session")
        if row["actor"] != "anonymous"
    ]
    assert denied["outcome"] == "denied" and denied["status_code"] == 403


async def test_changes_through_the_cookie_need_the_sessions_csrf_token(gateway: Gateway) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    async with gateway.client() as c:
        csrf = (await _sign_in(c, admin)).json()["csrf_token"]
        for headers in ({}, {"X-CSRF-Token": "x" * len(csrf)}, {"X-CSRF-Token": ""}):
            refused = await c.post(BREAKER, json={"action": "reset"}, headers=headers)
            assert refused.status_code == 403, headers
            assert refused.json()["error"]["code"] == "csrf_failed"
        assert (await c.delete("/console/session")).status_code == 403
        ok = await c.post(BREAKER, json={"action": "reset"}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200
    [row] = await _audit(gateway, admin, "breaker.reset")
    assert row["actor"] == f"console:{key_id(admin)}"


async def test_another_sessions_csrf_token_does_not_fit(gateway: Gateway) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    async with gateway.client() as first, gateway.client() as second:
        await _sign_in(first, admin)
        other = (await _sign_in(second, admin)).json()["csrf_token"]
        resp = await first.post(BREAKER, json={"action": "reset"}, headers={"X-CSRF-Token": other})
    assert resp.status_code == 403


async def test_console_answers_carry_a_strict_csp_and_the_page_has_nothing_inline(
    gateway: Gateway,
) -> None:
    async with gateway.client() as c:
        for path in ("/console", "/console/assets/console.js", "/console/assets/console.css"):
            resp = await c.get(path)
            assert resp.status_code == 200, path
            csp = resp.headers["content-security-policy"]
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
            assert directives["default-src"] == "'self'"
            assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
            assert directives["frame-ancestors"] == "'none'"
            assert "unsafe" not in csp
            assert resp.headers["x-content-type-options"] == "nosniff"
        page = (await c.get("/console")).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page)
        assert "style=" not in page and "<style" not in page
        assert not re.search(r"\son\w+=", page, re.I)
        script = (await c.get("/console/assets/console.js")).text
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


async def test_a_session_ends_when_it_expires(gateway: Gateway, clock: FakeClock) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    lifetime = gateway.runtime.settings.console_session_seconds
    async with gateway.client() as c:
        await _sign_in(c, admin)
        clock.advance(lifetime - 1)
        assert (await c.get("/admin/providers")).status_code == 200
        clock.advance(1)
        expired = await c.get("/admin/providers")
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


async def test_revoking_the_key_ends_its_sessions(gateway: Gateway) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    other = await gateway.key("ops", scopes=("admin",))
    async with gateway.client() as c:
        await _sign_in(c, admin)
        async with gateway.client(other) as ops:
            revoked = await ops.delete(f"/admin/keys/{key_id(admin)}")
            assert revoked.status_code == 200
        assert (await c.get("/admin/providers")).status_code == 401


async def test_sign_out_clears_the_cookie_and_is_audited(gateway: Gateway) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    async with gateway.client() as c:
        csrf = (await _sign_in(c, admin)).json()["csrf_token"]
        stolen = c.cookies[COOKIE]
        out = await c.delete("/console/session", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200
        assert re.match(rf'{COOKIE}="?"?; .*Max-Age=0', out.headers["set-cookie"], re.I)
        assert (await c.get("/admin/providers")).status_code == 401
    # A copy of the cookie taken before signing out is refused too.
    async with gateway.client() as thief:
        thief.cookies.set(COOKIE, stolen)
        assert (await thief.get("/admin/providers")).status_code == 401
    [row] = await _audit(gateway, admin, "console.sign_out")
    assert row["outcome"] == "success"


def test_the_session_lifetime_has_a_floor() -> None:
    with pytest.raises(ValidationError, match="console_session_seconds"):
        Settings(console_session_seconds=59)


@pytest.mark.settings(env="production")
async def test_in_production_the_cookie_is_secure(gateway: Gateway) -> None:
    admin = await gateway.key("ops", scopes=("admin",))
    async with gateway.client() as c:
        resp = await _sign_in(c, admin)
    flags = {part.strip().lower() for part in resp.headers["set-cookie"].split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict"} <= flags


async def test_a_sign_out_is_seen_by_every_process_through_redis(
    gateway: Gateway, settings: Settings, sandbox_reset: str
) -> None:
    if not REDIS_URL:
        pytest.skip("FILEGATE_TEST_REDIS_URL is not set")
    admin = await gateway.key("ops", scopes=("admin",))
    async with started_gateway(settings, sandbox_reset) as peer:
        async with gateway.client() as c, peer.client() as other:
            csrf = (await _sign_in(c, admin)).json()["csrf_token"]
            other.cookies.set(COOKIE, c.cookies[COOKIE])
            assert (await other.get("/admin/providers")).status_code == 200
            out = await c.delete("/console/session", headers={"X-CSRF-Token": csrf})
            assert out.status_code == 200
            assert (await other.get("/admin/providers")).status_code == 401

"""Secret hygiene: a busy session leaves no credential in logs, rows, metrics or error bodies.

The session issues, rotates, replays and revokes keys, uploads and reads files with keys and
JWTs, presents forged keys and JWTs, and makes both providers fail (auth, 5xx, 429, dropped
connections) while they are configured as live providers with known keys. Every log record
(all loggers at DEBUG), every row of every table, the /metrics text and every answer seen
must then be free of each secret: API-key tokens and their secret halves, JWTs and their
signatures, the provider keys, the HMAC secret, the JWT secret and the metrics token.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest
from jose import jwt

from app.core.config import Settings
from tests.conftest import TABLES, TEST_SECRET, Gateway, settings_with, started_gateway
from tests.security.conftest import (
    AUDIENCE,
    HS256_SECRET,
    ISSUER,
    anonymous,
    claims,
    secret_parts,
    table_rows,
    unsigned,
    upload,
)

MOONSHOT_KEY = "sk-provider-secret-moonshot-4f1c9a7e2b6d8035"
ZAI_KEY = "zai-provider-secret-id.5e2b7c9d1a3f4860b7e1"
METRICS_TOKEN = "metrics-token-secret-8b3e1f6a0c9d2745"
CSV = b"city,temp\nOslo,-3\nLima,19\n"


class Session:
    """Drives requests, remembering every secret presented and every answer received."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.secrets: set[str] = {
            MOONSHOT_KEY,
            ZAI_KEY,
            ZAI_KEY.split(".")[1],
            TEST_SECRET,
            HS256_SECRET,
            METRICS_TOKEN,
        }
        self.responses: list[httpx.Response] = []
        # Answers that hand out a brand-new key: they may hold that one token, nothing else.
        self.issued: dict[int, str] = {}

    def remember(self, token: str) -> str:
        self.secrets.update(secret_parts(token))
        return token

    async def send(
        self, token: str | None, method: str, path: str, *, header: str = "Authorization", **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if token is not None:
            self.remember(token)
            headers[header] = f"Bearer {token}" if header == "Authorization" else token
        async with anonymous(self.gateway, headers) as client:
            resp = await client.request(method, path, **kw)
        self.responses.append(resp)
        return resp

    async def upload(self, token: str, content: bytes, name: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        self.remember(token)
        async with anonymous(self.gateway, {"Authorization": f"Bearer {token}", **headers}) as c:
            resp = await upload(c, content, filename=name, **kw)
        self.responses.append(resp)
        return resp

    def new_key(self, resp: httpx.Response) -> str:
        assert resp.status_code == 201, resp.text
        token = self.remember(resp.json()["key"])
        self.issued[id(resp)] = token
        return token


def jwt_for(**overrides: Any) -> str:
    return str(jwt.encode(claims(**overrides), HS256_SECRET, algorithm="HS256"))


async def run_session(s: Session) -> None:
    gw = s.gateway
    admin = s.remember(await gw.key("ops", ("admin",)))

    # Keys: issue (with an Idempotency-Key, then replayed), rotate, revoke.
    body = {"tenant": "acme", "name": "ingest"}
    user = s.new_key(
        await s.send(admin, "POST", "/admin/keys", json=body, headers={"Idempotency-Key": "k1"})
    )
    replay = await s.send(
        admin, "POST", "/admin/keys", json=body, headers={"Idempotency-Key": "k1"}
    )
    assert replay.headers.get("idempotent-replayed") == "true"
    victim = s.new_key(await s.send(admin, "POST", "/admin/keys", json={**body, "name": "old"}))
    successor = s.new_key(
        await s.send(
            admin,
            "POST",
            f"/admin/keys/{victim.split('_')[1]}/rotate",
            json={"overlap_seconds": 0},
            headers={"Idempotency-Key": "rot-1"},
        )
    )
    assert (await s.send(successor, "GET", "/v1/files")).status_code == 200
    assert (await s.send(victim, "GET", "/v1/files")).status_code == 401  # rotated away
    revoked = s.new_key(await s.send(admin, "POST", "/admin/keys", json={**body, "name": "gone"}))
    assert (
        await s.send(admin, "DELETE", f"/admin/keys/{revoked.split('_')[1]}")
    ).status_code == 200

    # Files with an API key and with a JWT.
    ok = await s.upload(user, CSV, "weather.csv", headers={"Idempotency-Key": "u1"})
    assert ok.status_code == 200, ok.text
    file_id = ok.json()["id"]
    assert (
        await s.upload(user, CSV, "weather.csv", headers={"Idempotency-Key": "u1"})
    ).status_code == 200
    assert (await s.send(user, "GET", f"/v1/files/{file_id}/content")).status_code == 200
    assert (await s.send(user, "GET", f"/v1/files/{file_id}/extract")).status_code == 200
    good_jwt = jwt_for(sub="svc-hygiene")
    assert (await s.upload(good_jwt, b"jwt,1\n", "jwt.csv")).status_code == 200
    assert (await s.send(good_jwt, "GET", "/v1/files")).status_code == 200

    # Refused credentials of every kind (API keys and JWTs, both headers).
    user_prefix = user[: user.rindex("_") + 1]
    refused = [
        user_prefix + "A" * 43,  # wrong secret for a real key id
        user_prefix + admin.split("_", 2)[2],  # another key's secret
        "fg_zzzzzzzzzzzz_" + user.split("_", 2)[2],  # real secret, unknown id
        revoked,
        victim,
        user + "x",
        jwt_for(exp=int(time.time()) - 600),
        jwt_for(aud="someone-else"),
        jwt.encode(claims(), "some-other-secret-that-is-long-enough-000", "HS256"),
        unsigned({"alg": "none"}, claims(), "c2ln"),
        good_jwt[: good_jwt.rindex(".")],
        "garbage-" + user.split("_", 2)[2],
    ]
    for token in refused:
        assert (await s.send(token, "GET", "/v1/files")).status_code == 401
        assert (
            await s.send(token, "POST", "/admin/keys", json=body, header="X-API-Key")
        ).status_code == 401
    basic = await s.send(None, "GET", "/v1/files", headers={"Authorization": f"Basic {user}"})
    assert basic.status_code == 401
    s.remember(user)
    # A user key at /metrics, and the metrics token at the API.
    assert (await s.send(user, "GET", "/metrics")).status_code == 401
    assert (await s.send(METRICS_TOKEN, "GET", "/v1/files")).status_code == 401

    # Provider failures: auth refused, 5xx, throttling, dropped connections.
    await gw.sandbox_fault("moonshot", status=401, operations=["upload"])
    fell_back = await s.upload(user, b"a,b\n1,2\n", "fallback.csv")
    assert fell_back.status_code in (200, 202), fell_back.text
    await gw.sandbox_fault("zai", status=401)
    await gw.sandbox_fault("moonshot", status=500)
    failed = await s.upload(user, b"c,d\n3,4\n", "failed.csv", extra={"provider": "moonshot"})
    assert failed.status_code >= 400 or failed.json()["status"] == "pending", failed.text
    await gw.sandbox_fault("moonshot", status=429, retry_after=1, operations=["content"])
    fresh = await s.send(user, "POST", f"/v1/files/{file_id}/providers", json={"provider": "zai"})
    assert fresh.status_code >= 400 or fresh.status_code == 202
    await gw.sandbox_fault("moonshot", reset=True, operations=["delete"])
    deleted = await s.send(user, "DELETE", f"/v1/files/{file_id}")
    assert deleted.status_code == 200, deleted.text
    await gw.sandbox_fault("moonshot", status=503, retry_after=1, operations=["upload"])
    late = await s.upload(good_jwt, b"x,y\n9,9\n", "late.csv")
    assert late.status_code >= 400 or late.json()["status"] == "pending", late.text
    for provider in ("moonshot", "zai"):
        async with httpx.AsyncClient() as c:
            await c.delete(f"{gw.sandbox_url}/sandbox/{provider}/_faults")

    # Operator views of what happened.
    for path in (
        "/admin/audit?limit=1000",
        "/admin/audit?format=jsonl",
        "/admin/keys",
        "/admin/jobs",
        "/admin/jobs/summary",
        "/admin/files",
        "/v1/usage",
    ):
        assert (await s.send(admin, "GET", path)).status_code == 200
    metrics = await s.send(METRICS_TOKEN, "GET", "/metrics")
    assert metrics.status_code == 200 and "filegate_provider_calls_total" in metrics.text


@pytest.fixture
def hygiene_settings(settings: Settings, sandbox_reset: str) -> Settings:
    """Both providers live (not sandboxed) with known keys, aimed at the sandbox server."""
    return settings_with(
        settings,
        sandbox=False,
        moonshot_api_key=MOONSHOT_KEY,
        moonshot_base_url=f"{sandbox_reset}/sandbox/moonshot/v1",
        zai_api_key=ZAI_KEY,
        zai_base_url=f"{sandbox_reset}/sandbox/zai/api/paas/v4",
        jwt_key=HS256_SECRET,
        jwt_issuer=ISSUER,
        jwt_allow_admin=True,
        jwt_audience=AUDIENCE,
        metrics_token=METRICS_TOKEN,
        retry_base_delay=0.01,
        retry_max_delay=0.02,
    )


def _all_loggers_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        if isinstance(logging.root.manager.loggerDict[name], logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)


async def test_no_secret_leaks_anywhere(
    hygiene_settings: Settings, sandbox_reset: str, caplog: pytest.LogCaptureFixture
) -> None:
    _all_loggers_at_debug(caplog)
    async with started_gateway(hygiene_settings, sandbox_reset) as gw:
        # The providers really are live adapters using the configured keys.
        assert {a.mode for a in gw.runtime.providers.adapters.values()} == {"live"}
        s = Session(gw)
        await run_session(s)
        stats = await gw.sandbox_stats("moonshot")
        assert stats["calls"]["upload"] >= 2  # the session did reach the provider
        rows = {table: await table_rows(gw, table) for table in TABLES}
    secrets = sorted(s.secrets)
    assert len(secrets) > 20

    # Logs: every record of every logger, formatted, with any traceback.
    assert any(r.levelno >= logging.WARNING for r in caplog.records)  # failures were logged
    logged = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    leaks = [x for x in secrets if x in logged]
    assert not leaks, f"secrets in logs: {[x[:8] for x in leaks]}"

    # Every row of every table (audit_events and idempotency_keys included), all columns.
    for table, table_data in rows.items():
        text = "\n".join(repr(row) for row in table_data)
        leaks = [x for x in secrets if x in text]
        assert not leaks, f"secrets in {table}: {[x[:8] for x in leaks]}"
    assert rows["audit_events"] and any(r["outcome"] == "denied" for r in rows["audit_events"])
    assert rows["idempotency_keys"]

    # Every answer: status line, headers and body; new-key answers only hold their own key.
    errors = [r for r in s.responses if r.status_code >= 400]
    assert len(errors) >= 25
    for resp in s.responses:
        text = f"{resp.status_code} {resp.headers!r} {resp.text}"
        allowed = set(secret_parts(s.issued[id(resp)])) if id(resp) in s.issued else set()
        leaks = [x for x in secrets if x in text and x not in allowed]
        assert not leaks, (resp.request.url, [x[:8] for x in leaks])

    # /metrics: labels and values.
    metrics = [r for r in s.responses if r.request.url.path == "/metrics" and r.status_code == 200]
    assert metrics and not [x for x in secrets if x in metrics[-1].text]

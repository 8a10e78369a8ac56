"""Probes, metrics and the published API description."""

from __future__ import annotations

import httpx
import pytest

from app.core.config import Settings
from tests.api.test_files import upload
from tests.conftest import REDIS_URL, Gateway, settings_with, started_gateway


async def test_live_and_ready(gateway: Gateway) -> None:
    async with gateway.client() as c:
        assert (await c.get("/health/live")).json() == {"status": "ok"}
        ready = await c.get("/health/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["blob_store"]["status"] == "ok"
    assert checks["provider:moonshot"]["mode"] == "sandbox"
    assert checks["provider:zai"]["mode"] == "sandbox"
    if REDIS_URL:
        assert checks["redis"]["status"] == "ok"


async def test_ready_reports_down_database(settings: Settings, sandbox_reset: str) -> None:
    unreachable = (
        "sqlite+aiosqlite:////nonexistent/dir/x.db"
        if settings.is_sqlite
        else "postgresql+psycopg://postgres@127.0.0.1:1/nope"
    )
    down = settings_with(settings, database_url=unreachable)
    async with started_gateway(down, sandbox_reset) as gateway:
        async with gateway.client() as c:
            ready = await c.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["status"] == "down"


async def test_metrics_count_uploads_dedup_and_provider_calls(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    file_id = (await upload(client)).json()["id"]
    await upload(client)
    async with gateway.client() as c:
        text = (await c.get("/metrics")).text
    assert 'filegate_uploads_total{outcome="created",provider="moonshot"} 1.0' in text
    assert "filegate_dedup_hits_total 1.0" in text
    assert (
        'filegate_provider_calls_total{operation="upload",outcome="ok",provider="moonshot"} 1.0'
        in text
    )
    assert "filegate_provider_call_seconds_bucket" in text
    assert "http_requests_total" in text or "http_request_duration" in text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in samples if "tenant" in line or file_id in line]


async def test_openapi_declares_error_shapes_for_every_route(gateway: Gateway) -> None:
    async with gateway.client() as c:
        schema = (await c.get("/openapi.json")).json()
        assert (await c.get("/docs")).status_code == 200
    paths = schema["paths"]
    for path in ("/v1/files", "/v1/files/{file_id}", "/v1/files/{file_id}/content"):
        assert path in paths
    for path, ops in paths.items():
        if not path.startswith(("/v1", "/admin")):
            continue
        for method, op in ops.items():
            for status in ("400", "401", "403"):
                assert status in op["responses"], (method, path, status)
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody")
    upload_op = paths["/v1/files"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]


async def test_unknown_route_uses_error_shape(gateway: Gateway) -> None:
    async with gateway.client() as c:
        resp = await c.get("/v2/nothing")
    assert resp.status_code == 404
    assert set(resp.json()["error"]) == {"message", "type", "code", "param"}


@pytest.mark.settings(
    metrics_token="metrics-secret-token",
    docs_enabled=False,
    cors_origins=["https://console.example"],
)
async def test_metrics_token_and_docs_switch(gateway: Gateway) -> None:
    async with gateway.client() as c:
        assert (await c.get("/metrics")).status_code == 401
        wrong = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "metrics-secret-token" not in wrong.text
        ok = await c.get("/metrics", headers={"Authorization": "Bearer metrics-secret-token"})
        assert ok.status_code == 200 and "filegate_uploads_total" in ok.text
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 404
        pre = await c.options(
            "/v1/files",
            headers={
                "Origin": "https://console.example",
                "Access-Control-Request-Method": "GET",
            },
        )
        assert pre.headers["access-control-allow-origin"] == "https://console.example"
        other = await c.options(
            "/v1/files",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in other.headers


async def test_cors_is_off_by_default(gateway: Gateway) -> None:
    async with gateway.client() as c:
        resp = await c.get("/health/live", headers={"Origin": "https://x.example"})
    assert "access-control-allow-origin" not in resp.headers

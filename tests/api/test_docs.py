"""The API docs: security schemes, documented headers, and pages that need no CDN."""

from __future__ import annotations

import re

from tests.conftest import Gateway


async def test_the_schema_declares_both_credentials_on_every_secured_route(
    gateway: Gateway,
) -> None:
    async with gateway.client() as c:
        schema = (await c.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {
        **schemes["apiKey"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            secured = path.startswith(("/v1", "/admin"))
            expected: list[dict[str, list[str]]] | None = (
                [{"bearer": []}, {"apiKey": []}] if secured else None
            )
            assert operation.get("security") == expected, (method, path)


async def test_download_headers_idempotency_and_the_pending_example_are_documented(
    gateway: Gateway,
) -> None:
    async with gateway.client() as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
    download = {p["name"] for p in paths["/v1/files/{file_id}/content"]["get"]["parameters"]}
    assert {"Range", "If-None-Match", "If-Range"} <= download
    upload = paths["/v1/files"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in upload["parameters"]}
    example = upload["responses"]["202"]["content"]["application/json"]["example"]
    assert example["status"] == "pending" and example["status_details"]


async def test_the_docs_pages_load_their_assets_from_the_gateway(gateway: Gateway) -> None:
    async with gateway.client() as c:
        for page in ("/docs", "/redoc"):
            html = (await c.get(page)).text
            assets = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert assets and all(url.startswith("/docs/assets/") for url in assets), assets
            assert "https://" not in html and "http://" not in html
            for url in assets:
                resp = await c.get(url)
                assert resp.status_code == 200 and len(resp.content) > 1000, url


async def test_the_docs_pages_may_reach_the_gateway_only(gateway: Gateway) -> None:
    async with gateway.client() as c:
        for page in ("/docs", "/redoc"):
            resp = await c.get(page)
            directives = dict(
                d.strip().split(" ", 1) for d in resp.headers["content-security-policy"].split(";")
            )
            assert directives["default-src"] == "'self'"
            assert directives["connect-src"] == "'self'"
            assert directives["img-src"] == "'self' data:"
            assert "unsafe" not in directives["script-src"], page
            assert directives["frame-ancestors"] == "'none'"

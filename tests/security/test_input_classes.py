"""Hostile input by class: every string input of every /v1 and /admin operation (path and query
parameters from the OpenAPI document, JSON body fields, multipart fields, the filename and the
part's Content-Type) gets NUL, control and format characters, over-long values and non-ASCII
digits. Each answer is a 4xx (or a success that stored nothing hostile) in the one error shape,
never a 5xx, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Gateway
from tests.security.conftest import app_operations, seed

HOSTILE = {
    "nul": "\x00",
    "nul-inside": "file-extract\x00",
    "c0": "a\x01\x1fb",
    "del": "a\x7fb",
    "c1": "a\x85b",
    "newline": "a\nb",
    "zero-width": "acme\u200b",
    "bidi": "\u202eacme",
    "bom": "\ufeffacme",
    "long": "x" * 5000,
    "arabic-digits": "\u0663\u0666\u0660\u0660",
    "full-width-digits": "\uff13\uff16\uff10\uff10",
    "superscript": "3600\u00b2",
    "full-width-letters": "\uff41\uff43\uff4d\uff45",
}

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/admin/keys"): {"tenant": "acme", "name": "svc", "scopes": ["files:read"]},
    ("POST", "/admin/keys/{key_id}/rotate"): {"overlap_seconds": 0},
    ("PUT", "/admin/tenants/{tenant}/quota"): {"max_bytes": 1, "max_files": 1},
    ("POST", "/admin/providers/{provider}/breaker"): {"action": "reset"},
    ("POST", "/v1/files/{file_id}/providers"): {"provider": "zai"},
    ("POST", "/v1/uploads"): {
        "filename": "a.txt",
        "purpose": "file-extract",
        "bytes": 8,
        "mime_type": "text/plain",
    },
    ("POST", "/v1/uploads/{upload_id}/complete"): {"part_ids": ["part_x"], "md5": "0" * 32},
}
UPLOAD_FIELDS = ("purpose", "provider", "expires_after[anchor]", "expires_after[seconds]")


def _string_fields(body: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every place in a JSON body a string can go: each field, and one list element."""
    out: list[tuple[str, ...]] = []
    for name, value in body.items():
        out.append((name,))
        if isinstance(value, list):
            out.append((name, "0"))
    return out


def _with(body: dict[str, Any], where: tuple[str, ...], value: str) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(body))
    if len(where) == 1:
        changed[where[0]] = value
    else:
        changed[where[0]] = [value]
    return changed


def assert_refused_well(resp: httpx.Response, label: str) -> None:
    assert resp.status_code < 500, f"{label}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400:
        body = resp.json()
        assert set(body) == {"error"}, label
        assert set(body["error"]) == {"message", "type", "code", "param"}, label
        assert resp.headers.get("x-request-id"), label


async def _no_hostile_rows(gateway: Gateway) -> None:
    """Nothing carrying a NUL or a bidi override was stored as a name anywhere."""
    async with gateway.runtime.engine.connect() as conn:
        for table, column in [
            ("tenants", "name"),
            ("api_keys", "name"),
            ("files", "purpose"),
            ("files", "filename"),
            ("files", "content_type"),
            ("uploads", "filename"),
            ("uploads", "purpose"),
            ("uploads", "mime_type"),
        ]:
            values = (await conn.execute(text(f"SELECT {column} FROM {table}"))).scalars()  # noqa: S608
            for value in values:
                assert "\x00" not in value and "\u202e" not in value, (table, column, value)


@pytest.mark.settings(default_rate_limit_per_minute=0)
async def test_every_string_input_refuses_every_hostile_class(gateway: Gateway) -> None:
    world = await seed(gateway)
    admin = await gateway.key("root", ("admin", "files:read", "files:write"))
    document = gateway.app.openapi()
    real = {
        "file_id": world.file_id,
        "key_id": world.user_key_id,
        "job_id": str(world.job_id),
        "tenant": world.tenant,
        "provider": "moonshot",
        "upload_id": world.upload_id,
    }
    covered: set[tuple[str, str]] = set()
    sent = 0
    async with gateway.client(admin) as client:
        for template, item in document["paths"].items():
            if not template.startswith(("/v1", "/admin")):
                continue
            for method, operation in item.items():
                op = (method.upper(), template)
                covered.add(op)
                params = operation.get("parameters", [])
                body = BODIES.get(op)
                upload = op == ("POST", "/v1/files")

                async def call(
                    path_values: dict[str, str],
                    query: dict[str, str],
                    json_body: dict[str, Any] | None,
                    op: tuple[str, str] = op,
                    body: dict[str, Any] | None = body,
                    upload: bool = upload,
                    fields: dict[str, str] | None = None,
                    filename: str = "a.txt",
                    ctype: str = "text/plain",
                ) -> httpx.Response:
                    path = op[1]
                    for name, value in path_values.items():
                        path = path.replace("{" + name + "}", quote(value, safe=""))
                    if upload:
                        data = {"purpose": "file-extract", **(fields or {})}
                        return await client.post(
                            path,
                            params=query,
                            data=data,
                            files={"file": (filename, b"hostile\n", ctype)},
                        )
                    return await client.request(
                        op[0],
                        path,
                        params=query,
                        json=json_body if json_body is not None else body,
                    )

                path_names = [p["name"] for p in params if p["in"] == "path"]
                query_names = [p["name"] for p in params if p["in"] == "query"]
                for label, value in HOSTILE.items():
                    base_path = {name: real[name] for name in path_names}
                    for name in path_names:
                        resp = await call({**base_path, name: value}, {}, None)
                        assert_refused_well(resp, f"{op} path {name}={label}")
                        sent += 1
                    for name in query_names:
                        resp = await call(base_path, {name: value}, None)
                        assert_refused_well(resp, f"{op} query {name}={label}")
                        sent += 1
                    for where in _string_fields(body or {}):
                        resp = await call(base_path, {}, _with(body or {}, where, value))
                        assert_refused_well(resp, f"{op} body {'.'.join(where)}={label}")
                        sent += 1
                    if upload:
                        for field in UPLOAD_FIELDS:
                            resp = await call(base_path, {}, None, fields={field: value})
                            assert_refused_well(resp, f"{op} field {field}={label}")
                            sent += 1
                        resp = await call(base_path, {}, None, filename=value)
                        assert_refused_well(resp, f"{op} filename={label}")
                        resp = await call(base_path, {}, None, ctype="text/" + value)
                        assert_refused_well(resp, f"{op} content-type={label}")
                        sent += 2
    assert covered == app_operations(gateway.app), "an operation escaped the generator"
    assert sent > 500
    await _no_hostile_rows(gateway)

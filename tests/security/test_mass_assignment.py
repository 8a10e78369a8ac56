"""Mass assignment: fields a caller may not set are ignored or refused, and never stored."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.security.conftest import (
    assert_error,
    snapshot,
    table_rows,
    upload,
)
from tests.support.blobs import read_blob

CONTENT = b"the real bytes of the upload\n"
FORGED_SHA = "0" * 64
FORGED_FIELDS = {
    "tenant": "globex",
    "tenant_id": "ten_0000000000000000",
    "status": "error",
    # No `sha256`: that field declares the file's digest, checked against its bytes (a wrong
    # one is a 400 that stores nothing, tests/api/test_digest.py).
    "id": "file-AAAAAAAAAAAAAAAAAAAAAAAA",
    "provider_file_id": "attacker-chosen-id",
    "bytes": "999999999",
    "deleted_at": "2020-01-01T00:00:00Z",
}


async def tenant_id_of(gateway: Gateway, name: str) -> str:
    rows = [r for r in await table_rows(gateway, "tenants") if r["name"] == name]
    assert len(rows) == 1, rows
    return str(rows[0]["id"])


async def assert_stored_honestly(
    gateway: Gateway, body: dict[str, Any], tenant: str, content: bytes = CONTENT
) -> None:
    """The response and the stored rows carry the gateway's own values only."""
    sha = hashlib.sha256(content).hexdigest()
    assert body["sha256"] == sha
    assert body["bytes"] == len(content)
    assert body["status"] == "processed"
    assert body["id"].startswith("file-") and len(body["id"]) == 29
    assert body["id"] != FORGED_FIELDS["id"]
    assert [p["provider_file_id"] for p in body["providers"]] != ["attacker-chosen-id"]
    [row] = [r for r in await table_rows(gateway, "files") if r["id"] == body["id"]]
    assert row["tenant_id"] == await tenant_id_of(gateway, tenant)
    assert (row["sha256"], row["bytes"], row["status"]) == (sha, len(content), "processed")
    assert not [r for r in await table_rows(gateway, "tenants") if r["name"] == "globex"]
    assert not [r for r in await table_rows(gateway, "files") if r["id"] == FORGED_FIELDS["id"]]
    copies = [r for r in await table_rows(gateway, "provider_copies") if r["file_id"] == row["id"]]
    assert copies and all(c["provider_file_id"] != "attacker-chosen-id" for c in copies)
    [blob] = [r for r in await table_rows(gateway, "blobs") if r["sha256"] == sha]
    assert blob["size"] == len(content)
    assert await read_blob(gateway.runtime.blob_store, blob["storage_key"]) == content
    assert not [r for r in await table_rows(gateway, "blobs") if r["sha256"] == FORGED_SHA]


@pytest.mark.settings(max_multipart_parts=16)  # room for file, purpose and seven extra parts
async def test_upload_with_every_forged_part_is_ignored(gateway: Gateway) -> None:
    async with gateway.client(await gateway.key("acme")) as c:
        resp = await upload(
            c,
            CONTENT,
            extra=FORGED_FIELDS,
            # Nor do query strings or headers carry a tenant.
            headers={"X-Tenant": "globex", "X-Tenant-ID": "ten_0000000000000000"},
        )
        assert resp.status_code == 200, resp.text
        await assert_stored_honestly(gateway, resp.json(), "acme")
        # Whatever the part said, reading back gives the real values.
        again = await c.get(f"/v1/files/{resp.json()['id']}")
        assert again.json() == resp.json()


async def test_upload_with_one_forged_part_is_ignored(
    gateway: Gateway, subtests: pytest.Subtests
) -> None:
    async with gateway.client(await gateway.key("acme")) as c:
        for field, value in FORGED_FIELDS.items():
            with subtests.test(field):
                content = CONTENT + field.encode()  # a new file each time, never a dedup hit
                resp = await upload(c, content, extra={field: value})
                assert resp.status_code == 200, resp.text
                await assert_stored_honestly(gateway, resp.json(), "acme", content)


async def test_too_many_forged_parts_are_refused_and_nothing_is_stored(gateway: Gateway) -> None:
    """With the default part limit the nine-part upload is refused outright."""
    async with gateway.client(await gateway.key("acme")) as c:
        before = await snapshot(gateway)
        resp = await upload(c, CONTENT, extra=FORGED_FIELDS)
        assert_error(resp, status=400, type_="invalid_request_error")
        assert "parts" in resp.json()["error"]["message"]
    after = await snapshot(gateway)
    for table in ("files", "blobs", "provider_copies", "tenants"):
        assert after.rows[table] == before.rows[table], table
    assert after.stored == before.stored and after.sandbox == before.sandbox


KEY_EXTRAS = {
    "id": "aaaaaaaaaaaa",
    "tenant_id": "ten_0000000000000000",
    "secret_hash": "0" * 64,
    "key": "fg_aaaaaaaaaaaa_" + "a" * 43,
    "created_at": "2020-01-01T00:00:00Z",
    "revoked_at": None,
    "last_used_at": "2020-01-01T00:00:00Z",
    "rotated_from": "bbbbbbbbbbbb",
    "admin": True,
}
ROTATE_EXTRAS = {
    "scopes": ["admin"],
    "tenant": "globex",
    "expires_at": None,
    "name": "renamed",
}
REPLICATE_EXTRAS = {
    "provider_file_id": "attacker-chosen-id",
    "status": "active",
    "tenant": "globex",
    "file_id": "file-AAAAAAAAAAAAAAAAAAAAAAAA",
}
BREAKER_EXTRAS = {
    "provider": "zai",
    "state": "closed",
    "failure_count": 0,
}
QUOTA_EXTRAS = {
    "used_bytes": 0,
    "used_files": 0,
    "name": "renamed",
    "id": "ten_0000000000000000",
    "max_bytes_override": 1,
}


async def test_json_extra_fields_are_refused_naming_the_field(
    gateway: Gateway, subtests: pytest.Subtests
) -> None:
    admin = await gateway.key("ops", ("admin",))
    user = await gateway.key("acme")
    to_rotate = (await gateway.key("acme")).split("_")[1]
    async with gateway.client(user) as c:
        created = await upload(c, CONTENT, filename="t.csv")
        file_id = created.json()["id"]
    async with gateway.client(admin) as c:
        assert (await c.get("/admin/tenants")).status_code == 200  # notes the key's first use
    routes: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
        (
            admin,
            "POST",
            "/admin/keys",
            {"tenant": "acme", "name": "n", "scopes": ["files:read"]},
            KEY_EXTRAS,
        ),
        (
            admin,
            "PUT",
            "/admin/tenants/acme/quota",
            {"max_bytes": 1000, "max_files": 10},
            QUOTA_EXTRAS,
        ),
        (user, "POST", f"/v1/files/{file_id}/providers", {"provider": "zai"}, REPLICATE_EXTRAS),
        (
            admin,
            "POST",
            "/admin/providers/moonshot/breaker",
            {"action": "reset"},
            BREAKER_EXTRAS,
        ),
        (
            admin,
            "POST",
            f"/admin/keys/{to_rotate}/rotate",
            {"overlap_seconds": 60},
            ROTATE_EXTRAS,
        ),
    ]
    for token, method, path, body, extras in routes:
        async with gateway.client(token) as c:
            for field, value in extras.items():
                with subtests.test(f"{method} {path} + {field}"):
                    before = await snapshot(gateway)
                    resp = await c.request(method, path, json={**body, field: value})
                    err = assert_error(resp, status=400, type_="invalid_request_error")
                    assert err["param"] == field, err
                    assert f"'{field}'" in err["message"], err
                    after = await snapshot(gateway)
                    for table in ("tenants", "api_keys", "files", "provider_copies", "jobs"):
                        assert after.rows[table] == before.rows[table], table
                    assert after.sandbox == before.sandbox
            # Control: the same request without an extra field is accepted.
            ok = await c.request(method, path, json=body)
            assert ok.status_code in (200, 201), ok.text

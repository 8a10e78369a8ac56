"""Operators find, show, copy and delete files of every tenant; each action is audited."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select

from app.models import AuditEvent
from tests.conftest import Gateway


async def _upload(
    gateway: Gateway, token: str, body: bytes, name: str, provider: str = "auto"
) -> dict[str, Any]:
    async with gateway.client(token) as c:
        resp = await c.post(
            "/v1/files",
            data={"purpose": "file-extract", "provider": provider},
            files={"file": (name, body, "text/csv")},
        )
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def _audit(gateway: Gateway, action: str) -> list[AuditEvent]:
    async with gateway.runtime.sessionmaker() as session:
        stmt = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        return list((await session.execute(stmt)).scalars().all())


async def test_files_are_found_across_tenants_by_each_filter(gateway: Gateway) -> None:
    acme, globex = await gateway.key("acme"), await gateway.key("globex")
    report = await _upload(gateway, acme, b"q,1\n", "Quarterly-Report.csv")
    notes = await _upload(gateway, acme, b"n,2\n", "notes.csv")
    theirs = await _upload(gateway, globex, b"q,1\n", "100%_done.csv")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:

        async def ids(**params: Any) -> list[str]:
            resp = await ops.get("/admin/files", params=params)
            assert resp.status_code == 200, resp.text
            return [f["id"] for f in resp.json()["data"]]

        assert await ids() == [theirs["id"], notes["id"], report["id"]]
        assert await ids(tenant="acme") == [notes["id"], report["id"]]
        assert await ids(tenant="nobody") == []
        assert await ids(id=notes["id"]) == [notes["id"]]
        sha = hashlib.sha256(b"q,1\n").hexdigest()
        assert await ids(sha256=sha) == [theirs["id"], report["id"]]
        assert await ids(sha256=sha.upper()) == [theirs["id"], report["id"]]
        assert await ids(filename="quarterly") == [report["id"]]  # substring, any case
        assert await ids(filename="%") == [theirs["id"]]  # wildcards match themselves
        assert await ids(filename="_d") == [theirs["id"]]
        assert await ids(status="processed", tenant="globex") == [theirs["id"]]
        [item] = (await ops.get("/admin/files", params={"id": theirs["id"]})).json()["data"]
    assert item["tenant"] == "globex" and item["filename"] == "100%_done.csv"
    assert item["bytes"] == 4 and item["purpose"] == "file-extract" and item["sha256"] == sha
    assert item["status"] == "processed" and isinstance(item["created_at"], int)
    [copy] = item["copies"]
    assert (
        copy["status"] == "active"
        and copy["provider_file_id"] == (theirs["providers"][0]["provider_file_id"])
    )


async def test_file_pages_follow_the_cursor(gateway: Gateway) -> None:
    acme = await gateway.key("acme")
    uploaded = [
        (await _upload(gateway, acme, f"r,{n}\n".encode(), f"{n}.csv"))["id"] for n in range(5)
    ]
    admin = await gateway.key("ops", ("admin",))
    seen: list[str] = []
    async with gateway.client(admin) as ops:
        params: dict[str, Any] = {"limit": 2}
        while True:
            page = (await ops.get("/admin/files", params=params)).json()
            seen += [f["id"] for f in page["data"]]
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            assert page["next_cursor"] == page["data"][-1]["id"]
            params["cursor"] = page["next_cursor"]
    assert seen == uploaded[::-1]


async def test_bad_file_filters_are_4xx_in_the_error_shape(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        for params, param in [
            ({"sha256": "abc"}, "sha256"),
            ({"sha256": "G" * 64}, "sha256"),
            ({"id": "file-nope"}, "id"),
            ({"status": "lost"}, "status"),
            ({"tenant": "two words"}, "tenant"),
            ({"tenant": ""}, "tenant"),
            ({"cursor": "file-" + "Q" * 24}, "cursor"),
            ({"filename": ""}, "filename"),
            ({"limit": "9999"}, "limit"),
        ]:
            resp = await ops.get("/admin/files", params=params)
            assert resp.status_code in (400, 422), (params, resp.text)
            error = resp.json()["error"]
            assert set(error) == {"message", "type", "code", "param"}
            assert error["param"] == param, (params, error)
        assert (await ops.get("/admin/files/file-nope")).status_code == 400
        missing = await ops.get("/admin/files/file-" + "Q" * 24)
        assert missing.status_code == 404 and missing.json()["error"]["code"]


async def test_a_file_is_shown_with_its_events(gateway: Gateway) -> None:
    acme = await gateway.key("acme")
    file = await _upload(gateway, acme, b"e,1\n", "e.csv")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(acme) as c:
        own = (await c.get(f"/v1/files/{file['id']}/events")).json()["data"]
    async with gateway.client(admin) as ops:
        shown = (await ops.get(f"/admin/files/{file['id']}")).json()
    assert shown["id"] == file["id"] and shown["tenant"] == "acme"
    assert shown["events"] == own and shown["events"][0]["to_status"] == "uploaded"
    assert [c["provider"] for c in shown["copies"]] == [p["provider"] for p in file["providers"]]


async def test_operators_delete_any_tenants_file_audited_as_themselves(gateway: Gateway) -> None:
    acme = await gateway.key("acme")
    file = await _upload(gateway, acme, b"d,1\n", "d.csv")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        gone = await ops.delete(f"/admin/files/{file['id']}")
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"id": file["id"], "object": "file", "deleted": True}
        again = await ops.delete(f"/admin/files/{file['id']}")
        assert again.status_code == 404
        shown = (await ops.get(f"/admin/files/{file['id']}")).json()
        assert shown["status"] == "deleted" and shown["deleted_at"] is not None
        assert {c["status"] for c in shown["copies"]} == {"deleted"}
        assert (await ops.get("/admin/files", params={"tenant": "acme"})).json()["data"] == []
        listed = await ops.get("/admin/files", params={"tenant": "acme", "status": "deleted"})
        assert [f["id"] for f in listed.json()["data"]] == [file["id"]]
    async with gateway.client(acme) as c:
        assert (await c.get(f"/v1/files/{file['id']}")).status_code == 404
    [row] = await _audit(gateway, "file.delete")
    ops_key = admin.split("_")[1]
    assert row.actor == f"key:{ops_key}" and row.resource == file["id"]
    async with gateway.runtime.sessionmaker() as session:
        tenant_of_file = await session.scalar(
            select(AuditEvent.tenant_id).where(AuditEvent.action == "file.create")
        )
    assert row.tenant_id == tenant_of_file


async def test_operators_copy_any_tenants_file_to_a_provider(gateway: Gateway) -> None:
    acme = await gateway.key("acme")
    file = await _upload(gateway, acme, b"c,1\n", "c.csv", provider="zai")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        copied = await ops.post(
            f"/admin/files/{file['id']}/providers", json={"provider": "moonshot"}
        )
        assert copied.status_code == 200, copied.text
        body = copied.json()
        assert body["tenant"] == "acme"
        assert {(c["provider"], c["status"]) for c in body["copies"]} == {
            ("zai", "active"),
            ("moonshot", "active"),
        }
        bad = await ops.post(f"/admin/files/{file['id']}/providers", json={"provider": "elsewhere"})
        assert bad.status_code == 400 and bad.json()["error"]["param"]
        unknown = await ops.post(
            "/admin/files/file-" + "Q" * 24 + "/providers", json={"provider": "zai"}
        )
        assert unknown.status_code == 404
    async with gateway.client(acme) as c:
        own = (await c.get(f"/v1/files/{file['id']}")).json()
    assert {p["provider"] for p in own["providers"]} == {"zai", "moonshot"}
    [row] = await _audit(gateway, "file.copy")
    assert row.actor == f"key:{admin.split('_')[1]}"
    assert row.resource == f"{file['id']}@moonshot"


async def test_tenants_cannot_reach_the_operator_file_routes(gateway: Gateway) -> None:
    acme = await gateway.key("acme")
    file = await _upload(gateway, acme, b"t,1\n", "t.csv")
    async with gateway.client(acme) as c:
        for method, path, body in [
            ("GET", "/admin/files", None),
            ("GET", f"/admin/files/{file['id']}", None),
            ("DELETE", f"/admin/files/{file['id']}", None),
            ("POST", f"/admin/files/{file['id']}/providers", {"provider": "zai"}),
        ]:
            resp = await c.request(method, path, json=body)
            assert resp.status_code == 403, (method, path, resp.text)
        assert (await c.get(f"/v1/files/{file['id']}")).status_code == 200


async def test_operators_check_any_tenants_file(gateway: Gateway) -> None:
    acme = await gateway.key("acme")
    file = await _upload(gateway, acme, b"k,1\n", "k.csv", provider="zai")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        report = await ops.post(f"/admin/files/{file['id']}/check")
        assert report.status_code == 200, report.text
        assert report.json() == {"file_id": file["id"], "blob": "ok", "copies": {"zai": "ok"}}
        malformed = await ops.post("/admin/files/file-nope/check")
        assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "file_id"
        unknown = await ops.post("/admin/files/file-" + "Q" * 24 + "/check")
        assert unknown.status_code == 404
    [row] = [r for r in await _audit(gateway, "file.check") if r.actor.startswith("key:")]
    assert row.actor == f"key:{admin.split('_')[1]}" and row.resource == file["id"]

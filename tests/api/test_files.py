"""The /v1/files API end to end: app in-process, providers over loopback HTTP to the sandbox."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
from sqlalchemy import func, select

from app.models import AuditEvent, Blob, File, Job, LifecycleEvent, ProviderCopy
from tests.conftest import Gateway

TEXT = b"quarterly numbers: revenue up, costs down\n"


async def upload(
    client: httpx.AsyncClient,
    content: bytes = TEXT,
    *,
    filename: str = "report.txt",
    purpose: str = "file-extract",
    provider: str | None = None,
    content_type: str = "text/plain",
) -> httpx.Response:
    data = {"purpose": purpose}
    if provider is not None:
        data["provider"] = provider
    return await client.post(
        "/v1/files", data=data, files={"file": (filename, content, content_type)}
    )


def wasted_uploads(gateway: Gateway, provider: str = "moonshot") -> float:
    """Pipelined provider uploads not kept, aborted in flight or deleted after."""
    registry = gateway.runtime.metrics.registry
    return sum(
        registry.get_sample_value(
            "filegate_wasted_provider_uploads_total", {"provider": provider, "how": how}
        )
        or 0.0
        for how in ("aborted", "deleted")
    )


async def count(gateway: Gateway, model: type) -> int:
    async with gateway.runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_upload_returns_openai_file_object_placed_on_first_provider(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    resp = await upload(client)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "file"
    assert body["id"].startswith("file-") and len(body["id"]) == 29
    assert body["bytes"] == len(TEXT)
    assert body["filename"] == "report.txt"
    assert body["purpose"] == "file-extract"
    assert body["status"] == "processed"
    assert body["sha256"] == hashlib.sha256(TEXT).hexdigest()
    assert body["expires_at"] is None
    assert isinstance(body["created_at"], int)
    [copy] = body["providers"]
    assert copy["provider"] == "moonshot" and copy["status"] == "active"
    stats = await gateway.sandbox_stats("moonshot")
    assert stats["calls"]["upload"] == 1 and stats["files"] == 1
    assert resp.headers["x-request-id"]


async def test_explicit_provider_is_honoured(gateway: Gateway, client: httpx.AsyncClient) -> None:
    resp = await upload(client, b"a,b\n1,2\n", filename="t.csv", provider="zai")
    assert resp.status_code == 200, resp.text
    assert [p["provider"] for p in resp.json()["providers"]] == ["zai"]
    assert (await gateway.sandbox_stats("zai"))["calls"]["upload"] == 1
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 0


async def test_same_bytes_same_purpose_deduplicate(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    first = (await upload(client)).json()
    second = await upload(client, filename="renamed.txt")
    assert second.status_code == 200
    assert second.json()["id"] == first["id"]
    assert second.json()["created_at"] == first["created_at"]
    # The hit's speculative upload (pipelined placement) is cut: one provider file stays.
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 1
    assert wasted_uploads(gateway) == 1
    assert await count(gateway, File) == 1
    assert await count(gateway, Blob) == 1
    other_purpose = await upload(client, filename="x.jsonl", purpose="batch")
    assert other_purpose.json()["id"] != first["id"]


async def test_twenty_concurrent_identical_uploads_make_one_file(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    payload = b"concurrent payload " * 5000
    responses = await asyncio.gather(*(upload(client, payload) for _ in range(20)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert {r.json()["status"] for r in responses} == {"processed"}
    assert await count(gateway, File) == 1
    assert await count(gateway, Blob) == 1
    assert await count(gateway, ProviderCopy) == 1
    stats = await gateway.sandbox_stats("moonshot")
    assert stats["files"] == 1
    assert wasted_uploads(gateway) == stats["calls"]["upload"] - 1  # every other one cut
    blobs = list((gateway.runtime.settings.data_dir / "blobs").rglob("*"))
    assert len([p for p in blobs if p.is_file()]) == 1
    tmp = list((gateway.runtime.settings.data_dir / "tmp").iterdir())
    assert tmp == []


async def test_cross_tenant_same_bytes_are_separate_files(gateway: Gateway) -> None:
    async with (
        gateway.client(await gateway.key("acme")) as acme,
        gateway.client(await gateway.key("globex")) as globex,
    ):
        a = (await upload(acme)).json()
        b = (await upload(globex)).json()
        assert a["id"] != b["id"]
        assert a["providers"][0]["provider_file_id"] != b["providers"][0]["provider_file_id"]
        assert await count(gateway, Blob) == 1
        # globex's file answers acme exactly like a file that does not exist
        foreign = await acme.get(f"/v1/files/{b['id']}")
        missing = await acme.get("/v1/files/file-" + "Z" * 24)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.content == missing.content
        for path in ("", "/content", "/extract", "/events"):
            r = await acme.get(f"/v1/files/{b['id']}{path}")
            m = await acme.get(f"/v1/files/file-{'Z' * 24}{path}")
            assert r.status_code == 404 and r.content == m.content, path
        assert (await acme.delete(f"/v1/files/{b['id']}")).status_code == 404
        # acme's delete never touches globex's file or the shared blob
        assert (await acme.delete(f"/v1/files/{a['id']}")).status_code == 200
        still = await globex.get(f"/v1/files/{b['id']}/content")
        assert still.status_code == 200 and still.content == TEXT


async def test_retrieve_and_list_with_cursor_pagination(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        r = await upload(client, f"document number {i}\n".encode(), filename=f"d{i}.txt")
        ids.append(r.json()["id"])
    got = await client.get(f"/v1/files/{ids[0]}")
    assert got.status_code == 200 and got.json()["id"] == ids[0]

    page = (await client.get("/v1/files", params={"limit": 2, "order": "asc"})).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [f["id"] for f in page["data"]] == ids[:2]
    assert page["first_id"] == ids[0] and page["last_id"] == ids[1]
    seen = [f["id"] for f in page["data"]]
    while page["has_more"]:
        page = (
            await client.get(
                "/v1/files", params={"limit": 2, "order": "asc", "after": page["last_id"]}
            )
        ).json()
        seen += [f["id"] for f in page["data"]]
    assert seen == ids
    desc = (await client.get("/v1/files")).json()
    assert [f["id"] for f in desc["data"]] == list(reversed(ids))
    assert (await client.get("/v1/files", params={"purpose": "batch"})).json()["data"] == []


async def test_content_streams_original_bytes_with_etag_and_ranges(
    client: httpx.AsyncClient,
) -> None:
    payload = bytes(range(256)) * 64
    body = (await upload(client, payload, filename="blob.png", content_type="image/png")).json()
    resp = await client.get(f"/v1/files/{body['id']}/content")
    assert resp.status_code == 200
    assert resp.content == payload
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["content-length"] == str(len(payload))
    assert resp.headers["etag"] == f'"{hashlib.sha256(payload).hexdigest()}"'
    part = await client.get(f"/v1/files/{body['id']}/content", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == payload[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(payload)}"
    bad = await client.get(
        f"/v1/files/{body['id']}/content", headers={"Range": f"bytes={len(payload) + 5}-"}
    )
    assert bad.status_code == 416
    assert bad.json()["error"]["code"] == "range_not_satisfiable"
    assert bad.headers["content-range"] == f"bytes */{len(payload)}"
    cached = await client.get(
        f"/v1/files/{body['id']}/content", headers={"If-None-Match": resp.headers["etag"]}
    )
    assert cached.status_code == 304 and cached.content == b""


async def test_content_serves_several_ranges_if_range_and_head(
    client: httpx.AsyncClient,
) -> None:
    payload = bytes(range(256)) * 64
    body = (await upload(client, payload, filename="blob.png", content_type="image/png")).json()
    url = f"/v1/files/{body['id']}/content"
    etag = f'"{hashlib.sha256(payload).hexdigest()}"'
    multi = await client.get(url, headers={"Range": "bytes=0-3, 100-103"})
    assert multi.status_code == 206
    kind, _, boundary = multi.headers["content-type"].partition("; boundary=")
    assert kind == "multipart/byteranges" and boundary
    assert int(multi.headers["content-length"]) == len(multi.content)
    parts = multi.content.split(f"--{boundary}".encode())
    assert parts[-1] == b"--" and parts[0] == b""
    served = [part.split(b"\r\n\r\n", 1) for part in parts[1:-1]]
    assert [head.split(b"Content-Range: ")[1] for head, _ in served] == [
        f"bytes 0-3/{len(payload)}".encode(),
        f"bytes 100-103/{len(payload)}".encode(),
    ]
    assert [data for _, data in served] == [payload[0:4] + b"\r\n", payload[100:104] + b"\r\n"]
    # If-Range names another version: the whole body, not the range.
    stale = await client.get(url, headers={"Range": "bytes=0-3", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == payload
    fresh = await client.get(url, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == payload[:4]
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(payload))
    assert head.headers["etag"] == etag
    assert head.headers["accept-ranges"] == "bytes"
    assert head.headers["last-modified"].endswith(" GMT")


async def test_extract_returns_provider_text_and_caches_it(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    body = (await upload(client)).json()
    first = await client.get(f"/v1/files/{body['id']}/extract")
    assert first.status_code == 200, first.text
    assert first.json()["content"] == TEXT.decode()
    assert first.json()["provider"] == "moonshot"
    assert first.json()["filename"] == "report.txt"
    second = await client.get(f"/v1/files/{body['id']}/extract")
    assert second.json() == first.json()
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["content"] == 1


async def test_extract_refuses_non_extract_purposes(client: httpx.AsyncClient) -> None:
    body = (await upload(client, b'{"a": 1}\n', filename="in.jsonl", purpose="batch")).json()
    resp = await client.get(f"/v1/files/{body['id']}/extract")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "not_extractable"


async def test_delete_removes_provider_copy_blob_and_file(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    body = (await upload(client)).json()
    resp = await client.delete(f"/v1/files/{body['id']}")
    assert resp.status_code == 200
    assert resp.json() == {"id": body["id"], "object": "file", "deleted": True}
    assert (await client.get(f"/v1/files/{body['id']}")).status_code == 404
    stats = await gateway.sandbox_stats("moonshot")
    assert stats["files"] == 0 and stats["calls"]["delete"] == 1
    assert await count(gateway, Blob) == 0
    assert not [p for p in (gateway.runtime.settings.data_dir / "blobs").rglob("*") if p.is_file()]
    again = await upload(client)
    assert again.status_code == 200 and again.json()["id"] != body["id"]


async def test_lifecycle_and_audit_rows_record_changes(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    body = (await upload(client)).json()
    await client.delete(f"/v1/files/{body['id']}")
    async with gateway.runtime.sessionmaker() as session:
        events = (
            (
                await session.execute(
                    select(LifecycleEvent.to_status).where(LifecycleEvent.file_id == body["id"])
                )
            )
            .scalars()
            .all()
        )
        actions = (await session.execute(select(AuditEvent.action, AuditEvent.outcome))).all()
    assert events == ["uploaded", "placing", "active", "processed", "deleted", "deleted"]
    assert ("file.create", "success") in actions
    assert ("file.place", "success") in actions
    assert ("file.delete", "success") in actions


async def test_provider_refusal_leaves_nothing_live(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("zai", status=400, rate=1.0)
    resp = await upload(client, b"a,b\n", filename="t.csv", provider="zai")
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "provider_rejected" and "zai" in err["message"]
    assert (await client.get("/v1/files")).json()["data"] == []
    assert await count(gateway, Blob) == 0


async def test_a_refused_extra_copy_keeps_the_live_file(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # The same bytes again, for a provider that refuses them: the tenant's live file stays.
    first = (await upload(client, b"a,b\n", filename="t.csv")).json()
    await gateway.sandbox_fault("zai", status=400, rate=1.0)
    resp = await upload(client, b"a,b\n", filename="t.csv", provider="zai")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "provider_rejected"
    kept = await client.get(f"/v1/files/{first['id']}")
    assert kept.status_code == 200, kept.text
    assert kept.json()["status"] == "processed"
    assert {p["provider"]: p["status"] for p in kept.json()["providers"]} == {"moonshot": "active"}
    events = (await client.get(f"/v1/files/{first['id']}/events")).json()["data"]
    assert [(e["provider"], e["to_status"]) for e in events][-2:] == [
        ("zai", "placing"),
        ("zai", "failed"),
    ]
    content = await client.get(f"/v1/files/{first['id']}/content")
    assert content.status_code == 200 and content.content == b"a,b\n"
    assert await count(gateway, Blob) == 1


async def test_provider_outage_accepts_upload_as_pending(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("zai", status=500, rate=1.0)
    resp = await upload(client, b"a,b\n", filename="t.csv", provider="zai")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "pending" and "zai" in body["status_details"]
    # The failed attempt is history, not a copy: it shows in the file's events.
    assert body["providers"] == []
    events = (await client.get(f"/v1/files/{body['id']}/events")).json()["data"]
    assert [(e["provider"], e["to_status"]) for e in events if e["provider"]][-1] == (
        "zai",
        "failed",
    )
    assert await count(gateway, Blob) == 1
    async with gateway.runtime.sessionmaker() as session:
        jobs = (await session.execute(select(Job.kind, Job.payload))).all()
    assert [kind for kind, _ in jobs] == ["place"] and '"provider": "zai"' in jobs[0][1]


async def test_auto_falls_back_to_next_provider(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("moonshot", status=503, rate=1.0)
    resp = await upload(client, b"a,b\n1,2\n", filename="t.csv")
    assert resp.status_code == 200, resp.text
    copies = {p["provider"]: p["status"] for p in resp.json()["providers"]}
    assert copies == {"zai": "active"}  # moonshot's failed attempt is history, not a copy
    events = (await client.get(f"/v1/files/{resp.json()['id']}/events")).json()["data"]
    assert ("moonshot", "failed") in [(e["provider"], e["to_status"]) for e in events]


async def test_downloads_are_never_sniffed_scripted_or_framed(client: httpx.AsyncClient) -> None:
    created = await upload(
        client, b"<script>alert(1)</script>", filename="x.html", content_type="text/html"
    )
    assert created.status_code == 200, created.text
    got = await client.get(f"/v1/files/{created.json()['id']}/content")
    assert got.status_code == 200
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert got.headers["content-disposition"].startswith("attachment;")


async def test_head_on_content_gives_the_headers_without_the_bytes(
    client: httpx.AsyncClient,
) -> None:
    created = await upload(client, b"twelve bytes")
    file_id = created.json()["id"]
    head = await client.head(f"/v1/files/{file_id}/content")
    assert head.status_code == 200, head.text
    assert head.headers["content-length"] == "12"
    assert head.headers["etag"] == f'"{created.json()["sha256"]}"'
    assert head.content == b""
    missing = await client.head("/v1/files/file-00000000000000000000000000000000/content")
    assert missing.status_code in (400, 404)


async def test_if_none_match_star_is_not_modified(client: httpx.AsyncClient) -> None:
    file_id = (await upload(client, b"any representation")).json()["id"]
    resp = await client.get(f"/v1/files/{file_id}/content", headers={"if-none-match": "*"})
    assert resp.status_code == 304
    assert resp.content == b""


async def test_405_allows_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    file_id = (await upload(client, b"methods")).json()["id"]
    resp = await client.put(f"/v1/files/{file_id}")
    assert resp.status_code == 405
    assert resp.json()["error"]["code"] == "http_405"
    assert set(resp.headers["allow"].split(", ")) == {"GET", "DELETE"}
    content = await client.post(f"/v1/files/{file_id}/content")
    assert set(content.headers["allow"].split(", ")) == {"GET", "HEAD"}


async def _with_expiry(client: httpx.AsyncClient, seconds: int | None) -> httpx.Response:
    data = {"purpose": "file-extract"}
    if seconds is not None:
        data |= {"expires_after[anchor]": "created_at", "expires_after[seconds]": str(seconds)}
    return await client.post(
        "/v1/files", data=data, files={"file": ("report.txt", TEXT, "text/plain")}
    )


async def test_the_dedup_header_says_hit_or_miss_and_a_hit_keeps_the_first_filename(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    first = await upload(client)
    assert first.headers["filegate-dedup"] == "miss"
    again = await upload(client, filename="renamed.txt", content_type="application/pdf")
    assert again.headers["filegate-dedup"] == "hit"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["filename"] == "report.txt"
    download = await client.get(f"/v1/files/{first.json()['id']}/content")
    assert "report.txt" in download.headers["content-disposition"]
    assert download.headers["content-type"].startswith("text/plain")


async def test_a_hit_never_clears_or_shortens_an_expiry_and_may_lengthen_it(
    client: httpx.AsyncClient,
) -> None:
    first = (await _with_expiry(client, 7200)).json()
    assert first["expires_at"] is not None
    without = (await _with_expiry(client, None)).json()
    assert without["id"] == first["id"] and without["expires_at"] == first["expires_at"]
    shorter = (await _with_expiry(client, 3600)).json()
    assert shorter["expires_at"] == first["expires_at"]
    longer = (await _with_expiry(client, 86400)).json()
    assert longer["id"] == first["id"] and longer["expires_at"] >= first["expires_at"] + 3600
    kept = await client.get(f"/v1/files/{first['id']}")
    assert kept.json()["expires_at"] == longer["expires_at"]


async def test_a_hit_on_a_file_that_never_expires_keeps_it_so(client: httpx.AsyncClient) -> None:
    first = (await _with_expiry(client, None)).json()
    hit = (await _with_expiry(client, 3600)).json()
    assert hit["id"] == first["id"] and hit["expires_at"] is None


async def test_openai_purpose_aliases_dedup_and_list_as_file_extract(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    first = await upload(client, purpose="assistants")
    assert first.status_code == 200, first.text
    assert first.json()["purpose"] == "file-extract"
    for purpose in ("user_data", "file-extract"):
        again = await upload(client, purpose=purpose)
        assert again.json()["id"] == first.json()["id"], purpose
        assert again.headers["filegate-dedup"] == "hit"
    assert await count(gateway, File) == 1
    for purpose in ("assistants", "user_data", "file-extract"):
        listed = await client.get("/v1/files", params={"purpose": purpose})
        assert [f["id"] for f in listed.json()["data"]] == [first.json()["id"]], purpose
    assert (await client.get("/v1/files", params={"purpose": "batch"})).json()["data"] == []
    extracted = await client.get(f"/v1/files/{first.json()['id']}/extract")
    assert extracted.status_code == 200, extracted.text


async def test_rows_stored_under_an_alias_are_still_found_by_every_spelling(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    """Files stored before aliases were merged keep their alias and still deduplicate."""
    first = (await upload(client)).json()
    async with gateway.runtime.sessionmaker() as session:
        row = await session.get(File, first["id"])
        assert row is not None
        row.purpose = "assistants"
        await session.commit()
    again = await upload(client, purpose="user_data")
    assert again.json()["id"] == first["id"]
    listed = await client.get("/v1/files", params={"purpose": "file-extract"})
    assert [f["id"] for f in listed.json()["data"]] == [first["id"]]

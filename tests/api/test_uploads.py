"""The /v1/uploads API (resumable uploads) end to end: app in-process, sandbox over loopback."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.models import AuditEvent, Upload, UploadPart
from app.services.uploads import PART_MAX_BYTES
from app.storage.blobs import LocalBlobStore
from app.storage.s3 import PART_BYTES
from tests.api.test_files import upload as upload_file
from tests.api.test_files import wasted_uploads
from tests.api.test_files_on_s3 import objects, on_s3, s3_store
from tests.conftest import Gateway, started_gateway
from tests.support.blobs import leftovers, read_blob
from tests.support.clock import FakeClock
from tests.support.seaweed import ObjectStore

MiB = 1024 * 1024


async def create(
    client: httpx.AsyncClient,
    size: int,
    *,
    filename: str = "big.txt",
    purpose: str = "file-extract",
    mime_type: str = "text/plain",
    **extra: Any,
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/uploads",
        json={
            "filename": filename,
            "purpose": purpose,
            "bytes": size,
            "mime_type": mime_type,
            **extra,
        },
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def add_part(client: httpx.AsyncClient, upload_id: str, data: bytes) -> httpx.Response:
    return await client.post(f"/v1/uploads/{upload_id}/parts", files={"data": data})


async def part(client: httpx.AsyncClient, upload_id: str, data: bytes) -> str:
    resp = await add_part(client, upload_id, data)
    assert resp.status_code == 200, resp.text
    part_id: str = resp.json()["id"]
    return part_id


async def complete(
    client: httpx.AsyncClient, upload_id: str, part_ids: list[str], **extra: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/uploads/{upload_id}/complete", json={"part_ids": part_ids, **extra}
    )


def error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()["error"]
    assert set(body) == {"message", "type", "code", "param"}
    return body


async def stored_parts(gateway: Gateway) -> list[str]:
    store = gateway.runtime.blob_store
    assert isinstance(store, LocalBlobStore)
    return sorted(str(p.relative_to(store.parts_dir)) for p in store.parts_dir.rglob("part_*"))


async def part_rows(gateway: Gateway) -> int:
    async with gateway.runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(UploadPart)) or 0)


async def test_parts_sent_out_of_order_complete_into_a_file_that_downloads_identical(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    content = os.urandom(3 * MiB + 17)
    pieces = [content[:MiB], content[MiB : 2 * MiB], content[2 * MiB :]]
    created = await create(client, len(content), filename="big.txt")
    assert set(created) == {
        "id",
        "object",
        "bytes",
        "created_at",
        "expires_at",
        "filename",
        "purpose",
        "status",
        "file",
    }
    assert created["object"] == "upload" and created["status"] == "pending"
    assert created["id"].startswith("upload_") and created["file"] is None
    assert created["bytes"] == len(content) and created["filename"] == "big.txt"
    assert created["expires_at"] - created["created_at"] == 3600
    upload_id = created["id"]
    third = await part(client, upload_id, pieces[2])
    first = await part(client, upload_id, pieces[0])
    resp = await add_part(client, upload_id, pieces[1])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"id", "object", "created_at", "upload_id"}
    assert body["object"] == "upload.part" and body["upload_id"] == upload_id
    assert body["id"].startswith("part_")
    assert len(await stored_parts(gateway)) == 3

    resp = await complete(
        client,
        upload_id,
        [first, body["id"], third],
        md5=hashlib.md5(content, usedforsecurity=False).hexdigest(),
    )
    assert resp.status_code == 200, resp.text
    done = resp.json()
    assert done["status"] == "completed" and done["id"] == upload_id
    file = done["file"]
    assert file["object"] == "file" and file["id"].startswith("file-")
    assert file["bytes"] == len(content) and file["filename"] == "big.txt"
    assert file["sha256"] == hashlib.sha256(content).hexdigest()
    assert file["status"] == "processed" and file["purpose"] == "file-extract"
    download = await client.get(f"/v1/files/{file['id']}/content")
    assert download.status_code == 200 and download.content == content
    assert download.headers["content-type"].startswith("text/plain")
    # The parts are gone from the blob store and the registry once the file exists.
    assert await stored_parts(gateway) == []
    assert await part_rows(gateway) == 0
    # Neither a part nor the completion is pipelined: one upload, from the assembled blob.
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 1
    assert wasted_uploads(gateway) == 0


async def test_a_lost_part_is_sent_again_and_only_the_ids_named_count(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    content = b"first half|" + b"second half"
    upload_id = (await create(client, len(content)))["id"]
    first = await part(client, upload_id, content[:11])
    await part(client, upload_id, content[11:])  # stored, but its answer never arrived
    again = await part(client, upload_id, content[11:])
    resp = await complete(client, upload_id, [first, again])
    assert resp.status_code == 200, resp.text
    got = await client.get(f"/v1/files/{resp.json()['file']['id']}/content")
    assert got.content == content
    assert await stored_parts(gateway) == []  # the unused copy went with the rest


async def test_a_completed_upload_is_an_ordinary_upload_dedup_included(
    client: httpx.AsyncClient,
) -> None:
    content = b"the same bytes, sent whole or in parts\n"
    whole = await upload_file(client, content)
    assert whole.status_code == 200, whole.text
    upload_id = (await create(client, len(content)))["id"]
    parts = [await part(client, upload_id, content[:5]), await part(client, upload_id, content[5:])]
    resp = await complete(client, upload_id, parts)
    assert resp.status_code == 200, resp.text
    assert resp.json()["file"]["id"] == whole.json()["id"]


async def test_expires_after_sets_the_files_expiry(client: httpx.AsyncClient) -> None:
    upload_id = (await create(client, 4, expires_after={"anchor": "created_at", "seconds": 7200}))[
        "id"
    ]
    resp = await complete(client, upload_id, [await part(client, upload_id, b"four")])
    assert resp.status_code == 200, resp.text
    file = resp.json()["file"]
    assert file["expires_at"] - file["created_at"] in (7199, 7200, 7201)


async def test_completion_is_idempotent_with_a_key(client: httpx.AsyncClient) -> None:
    upload_id = (await create(client, 5))["id"]
    parts = [await part(client, upload_id, b"hello")]
    headers = {"Idempotency-Key": "complete-1"}
    first = await client.post(
        f"/v1/uploads/{upload_id}/complete", json={"part_ids": parts}, headers=headers
    )
    again = await client.post(
        f"/v1/uploads/{upload_id}/complete", json={"part_ids": parts}, headers=headers
    )
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_create_refuses_what_no_file_could_be(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    def post(**body: Any) -> Any:
        base = {
            "filename": "a.txt",
            "purpose": "file-extract",
            "bytes": 10,
            "mime_type": "text/plain",
        }
        return client.post("/v1/uploads", json={**base, **body})

    too_big = gateway.runtime.settings.max_upload_bytes + 1
    assert error(await post(bytes=too_big), 413)["param"] == "bytes"
    assert error(await post(bytes=0), 400)["param"] == "bytes"
    assert error(await post(purpose="nonsense"), 400)["param"] == "purpose"
    # Within the gateway's limit, but over what any provider takes for the purpose (20 MiB).
    over = error(await post(purpose="code-interpreter", bytes=30 * MiB), 400)
    assert over["code"] == "unsupported_purpose"
    assert error(await post(filename="../etc/passwd"), 400)["param"] == "filename"
    assert error(await post(mime_type="not a type"), 400)["param"] == "mime_type"
    assert error(await post(expires_after={"anchor": "created_at", "seconds": 5}), 400)
    assert error(await post(unknown="field"), 400)
    async with gateway.runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Upload)) == 0


async def test_a_part_larger_than_the_upload_or_empty_is_refused(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    upload_id = (await create(client, 10))["id"]
    refused = error(await add_part(client, upload_id, b"x" * 11), 413)
    assert refused["code"] == "part_too_large" and refused["param"] == "data"
    assert error(await add_part(client, upload_id, b""), 400)["param"] == "data"
    resp = await client.post(f"/v1/uploads/{upload_id}/parts", files={"file": b"x"})
    assert error(resp, 400)["param"] == "data"
    assert await stored_parts(gateway) == [] and await part_rows(gateway) == 0


async def test_a_part_over_64_mib_is_refused_and_leaves_nothing(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    upload_id = (await create(client, 100 * MiB))["id"]
    refused = error(await add_part(client, upload_id, b"\0" * (PART_MAX_BYTES + 1)), 413)
    assert refused["code"] == "part_too_large"
    assert await stored_parts(gateway) == [] and await part_rows(gateway) == 0
    store = gateway.runtime.blob_store
    assert isinstance(store, LocalBlobStore) and list(store.tmp_dir.iterdir()) == []


async def test_completion_checks_the_parts_named(client: httpx.AsyncClient) -> None:
    upload_id = (await create(client, 8))["id"]
    other_id = (await create(client, 8))["id"]
    four = await part(client, upload_id, b"1234")
    five = await part(client, upload_id, b"56789")
    foreign = await part(client, other_id, b"abcd")

    short = error(await complete(client, upload_id, [four]), 400)
    assert short["code"] == "upload_size_mismatch" and short["param"] == "part_ids"
    assert error(await complete(client, upload_id, [four, five]), 400)["code"] == (
        "upload_size_mismatch"
    )
    assert error(await complete(client, upload_id, [four, "part_nope"]), 400)["code"] == (
        "unknown_part"
    )
    assert error(await complete(client, upload_id, [four, foreign]), 400)["code"] == (
        "part_of_another_upload"
    )
    assert error(await complete(client, upload_id, [four, four]), 400)["code"] == ("duplicate_part")
    assert error(await complete(client, upload_id, []), 400)["param"] == "part_ids"
    bad_md5 = await complete(
        client, upload_id, [four, await part(client, upload_id, b"5678")], md5="0" * 32
    )
    assert error(bad_md5, 400)["code"] == "md5_mismatch"
    # Nothing was refused for good: the upload still takes parts and completes.
    last = await part(client, upload_id, b"wxyz")
    resp = await complete(client, upload_id, [four, last])
    assert resp.status_code == 200, resp.text


async def test_a_finished_upload_takes_no_parts_and_is_not_finished_twice(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    upload_id = (await create(client, 3))["id"]
    done = await complete(client, upload_id, [await part(client, upload_id, b"abc")])
    assert done.status_code == 200, done.text
    assert error(await complete(client, upload_id, []), 400)  # the body is checked first
    again = error(await complete(client, upload_id, ["part_x"]), 409)
    assert again["code"] == "upload_completed"
    assert error(await add_part(client, upload_id, b"abc"), 409)["code"] == "upload_completed"
    cancel = await client.post(f"/v1/uploads/{upload_id}/cancel")
    assert error(cancel, 409)["code"] == "upload_completed"

    cancelled_id = (await create(client, 3))["id"]
    kept = await part(client, cancelled_id, b"abc")
    resp = await client.post(f"/v1/uploads/{cancelled_id}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled" and resp.json()["file"] is None
    assert await stored_parts(gateway) == [] and await part_rows(gateway) == 0
    assert error(await add_part(client, cancelled_id, b"abc"), 409)["code"] == "upload_cancelled"
    assert error(await complete(client, cancelled_id, [kept]), 409)["code"] == "upload_cancelled"
    assert error(await client.post(f"/v1/uploads/{cancelled_id}/cancel"), 409)
    async with gateway.runtime.sessionmaker() as session:
        audited = (
            await session.execute(
                select(AuditEvent.resource, AuditEvent.action).where(
                    AuditEvent.action.like("upload.%"), AuditEvent.outcome == "success"
                )
            )
        ).all()
    assert sorted(audited) == sorted(
        [
            (upload_id, "upload.create"),
            (upload_id, "upload.complete"),
            (cancelled_id, "upload.create"),
            (cancelled_id, "upload.cancel"),
        ]
    )


async def test_an_upload_expires_an_hour_after_creation(
    gateway: Gateway, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    upload_id = (await create(client, 6))["id"]
    first = await part(client, upload_id, b"abc")
    clock.advance(3599)
    second = await part(client, upload_id, b"def")
    clock.advance(2)
    assert error(await add_part(client, upload_id, b"ghi"), 409)["code"] == "upload_expired"
    assert error(await complete(client, upload_id, [first, second]), 409)["code"] == (
        "upload_expired"
    )
    async with gateway.runtime.sessionmaker() as session:
        row = await session.get(Upload, upload_id)
        assert row is not None and row.status == "expired"


async def test_another_tenants_upload_is_not_found(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    upload_id = (await create(client, 3))["id"]
    mine = await part(client, upload_id, b"abc")
    async with gateway.client(await gateway.key("other")) as other:
        for resp in (
            await add_part(other, upload_id, b"abc"),
            await complete(other, upload_id, [mine]),
            await other.post(f"/v1/uploads/{upload_id}/cancel"),
        ):
            assert error(resp, 404)["message"] == "No such Upload object."
        own = (await create(other, 3))["id"]
        # Another tenant's part is unknown, not "of another upload".
        assert error(await complete(other, own, [mine]), 400)["code"] == "unknown_part"
    for bad in ("nope", "upload_" + "x" * 40, "file-abc"):
        assert error(await add_part(client, bad, b"abc"), 404)
    resp = await complete(client, upload_id, [mine])
    assert resp.status_code == 200, resp.text


@pytest.mark.settings(max_upload_bytes=1024)
async def test_parts_are_bounded_by_the_gateways_limit_at_the_edge(
    client: httpx.AsyncClient,
) -> None:
    upload_id = (await create(client, 1000))["id"]
    resp = await client.post(
        f"/v1/uploads/{upload_id}/parts",
        content=b"x" * (2 * MiB),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert error(resp, 413)


async def test_parts_on_the_object_store_complete_into_a_file_and_are_collected(
    settings: Settings, object_store: ObjectStore, sandbox_reset: str
) -> None:
    content = os.urandom(PART_BYTES + MiB + 5)  # the first part is a multipart spool on S3
    cut = PART_BYTES + 3
    async with started_gateway(on_s3(settings, object_store), sandbox_reset) as gateway:
        store = s3_store(gateway)
        async with gateway.client(await gateway.key()) as client:
            upload_id = (await create(client, len(content)))["id"]
            second = await part(client, upload_id, content[cut:])
            first = await part(client, upload_id, content[:cut])
            assert len([k for k in await objects(store) if "parts/" in k]) == 2
            resp = await complete(client, upload_id, [first, second])
            assert resp.status_code == 200, resp.text
            file = resp.json()["file"]
            assert file["sha256"] == hashlib.sha256(content).hexdigest()
            got = await client.get(f"/v1/files/{file['id']}/content")
            assert got.status_code == 200 and got.content == content
        assert [k for k in await objects(store) if "parts/" in k] == []
        assert await leftovers(store) == []
        assert await read_blob(store, store.key_for(file["sha256"])) == content


async def test_a_part_lost_from_the_store_is_named_and_sent_again(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    upload_id = (await create(client, 6))["id"]
    first = await part(client, upload_id, b"abc")
    lost = await part(client, upload_id, b"def")
    store = gateway.runtime.blob_store
    assert isinstance(store, LocalBlobStore)
    (store.parts_dir / upload_id / lost).unlink()  # a disk lost it behind the gateway's back
    gone = error(await complete(client, upload_id, [first, lost]), 409)
    assert gone["code"] == "part_missing" and lost in gone["message"]
    again = await part(client, upload_id, b"def")
    resp = await complete(client, upload_id, [first, again])
    assert resp.status_code == 200, resp.text
    got = await client.get(f"/v1/files/{resp.json()['file']['id']}/content")
    assert got.content == b"abcdef"

"""The Files API on the S3 blob store, against a real SeaweedFS: the same answers as on disk."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.models import Blob, File
from app.storage.s3 import PART_BYTES, S3BlobStore
from tests.api.test_files import upload
from tests.conftest import S3_BUCKET, Gateway, settings_with, started_gateway
from tests.support.blobs import leftovers, read_blob
from tests.support.invariants import assert_registry_sound
from tests.support.seaweed import ObjectStore


def on_s3(settings: Settings, store: ObjectStore, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "blob_store": "s3",
        "s3_endpoint_url": store.endpoint_url,
        "s3_bucket": S3_BUCKET,
        "s3_region": store.region,
        "s3_access_key_id": store.access_key_id,
        "s3_secret_access_key": store.secret_access_key,
        "s3_prefix": f"gw-{secrets.token_hex(6)}",
    }
    return settings_with(settings, **{**values, **overrides})


@pytest.fixture
async def s3_gateway(
    settings: Settings, object_store: ObjectStore, sandbox_reset: str
) -> AsyncIterator[Gateway]:
    async with started_gateway(on_s3(settings, object_store), sandbox_reset) as gateway:
        yield gateway


def s3_store(gateway: Gateway) -> S3BlobStore:
    store = gateway.runtime.blob_store
    assert isinstance(store, S3BlobStore)
    return store


async def objects(store: S3BlobStore) -> list[str]:
    listed = await store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return sorted(str(o["Key"]) for o in listed.get("Contents", []))


async def test_upload_download_extract_and_delete_through_the_object_store(
    s3_gateway: Gateway,
) -> None:
    store = s3_store(s3_gateway)
    async with s3_gateway.client(await s3_gateway.key()) as client:
        body = (await upload(client, b"quarterly numbers\n" * 100)).json()
        assert body["status"] == "processed", body
        again = (await upload(client, b"quarterly numbers\n" * 100)).json()
        assert again["id"] == body["id"]  # deduplicated: one file, one object
        assert await objects(store) == [store.key_for(body["sha256"])]
        url = f"/v1/files/{body['id']}/content"
        whole = await client.get(url)
        assert whole.status_code == 200 and whole.content == b"quarterly numbers\n" * 100
        assert whole.headers["etag"] == f'"{body["sha256"]}"'
        part = await client.get(url, headers={"Range": "bytes=0-8"})
        assert part.status_code == 206 and part.content == b"quarterly"
        cached = await client.get(url, headers={"If-None-Match": whole.headers["etag"]})
        assert cached.status_code == 304
        extracted = await client.get(f"/v1/files/{body['id']}/extract")
        assert extracted.status_code == 200 and "quarterly numbers" in extracted.json()["content"]
        await assert_registry_sound(s3_gateway)
        assert (await client.delete(f"/v1/files/{body['id']}")).json()["deleted"] is True
    assert await objects(store) == []  # collected: the object went with the last file
    assert await leftovers(store) == []


async def test_a_large_upload_streams_through_a_multipart_upload_to_the_provider(
    s3_gateway: Gateway,
) -> None:
    line = json.dumps({"custom_id": "x", "body": {"messages": ["y" * 200]}}).encode() + b"\n"
    data = line * (2 * PART_BYTES // len(line) + 7)
    store = s3_store(s3_gateway)
    async with s3_gateway.client(await s3_gateway.key()) as client:
        resp = await upload(
            client,
            data,
            filename="batch.jsonl",
            purpose="batch",
            provider="zai",
            content_type="application/jsonl",
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert await read_blob(store, store.key_for(body["sha256"])) == data
        downloaded = await client.get(f"/v1/files/{body['id']}/content")
        assert downloaded.content == data
    [copy] = [c for c in body["providers"] if c["status"] == "active"]
    async with httpx.AsyncClient() as direct:
        pushed = await direct.get(
            f"{s3_gateway.sandbox_url}/sandbox/zai/api/paas/v4/files/{copy['provider_file_id']}/content",
            headers={"Authorization": "Bearer sandbox"},
        )
    assert pushed.content == data  # the provider got the very bytes, streamed from the store
    assert await leftovers(store) == []
    await assert_registry_sound(s3_gateway)


async def test_an_unreachable_object_store_refuses_uploads_and_keeps_nothing(
    settings: Settings, object_store: ObjectStore, sandbox_reset: str
) -> None:
    down = on_s3(settings, object_store, s3_endpoint_url="http://127.0.0.1:1")
    async with started_gateway(down, sandbox_reset) as gateway:
        async with gateway.client(await gateway.key()) as client:
            resp = await upload(client)
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "storage_unavailable"
            assert "Retry-After" in resp.headers
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
        async with gateway.runtime.sessionmaker() as session:
            assert (await session.execute(select(File))).scalars().all() == []
            assert (await session.execute(select(Blob))).scalars().all() == []

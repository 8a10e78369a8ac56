"""Blob stores under test: the local one on a temp directory, the S3 one on SeaweedFS."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.storage.blobs import BlobStore, LocalBlobStore
from app.storage.s3 import S3BlobStore, S3Location
from tests.conftest import S3_BUCKET
from tests.support.clock import FakeClock
from tests.support.seaweed import ObjectStore


@pytest.fixture(params=["local", "s3"])
async def blob_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        local = LocalBlobStore(tmp_path / "data", clock=clock.time)
        local.prepare()
        yield local
        return
    object_store: ObjectStore = request.getfixturevalue("object_store")
    location = S3Location(
        endpoint_url=object_store.endpoint_url,
        bucket=S3_BUCKET,
        region=object_store.region,
        access_key_id=object_store.access_key_id,
        secret_access_key=object_store.secret_access_key,
        prefix=f"t-{secrets.token_hex(6)}/",  # one test's objects apart from every other's
    )
    async with S3BlobStore.connect(location, part_dir=tmp_path / "parts", clock=clock.time) as s3:
        yield s3

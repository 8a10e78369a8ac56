"""The official openai SDK against a real `filegate serve --sandbox` process (SQLite)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.support.processes import ServerProcess, child_env, mint_key, start_gateway

pytestmark = pytest.mark.slow


@dataclass
class Served:
    proc: ServerProcess
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"{self.proc.url}/v1"

    async def key(self, tenant: str | None = None) -> str:
        """A files:read/write key for `tenant` (a fresh tenant by default, so lists are ours)."""
        hmac_key = (self.data_dir / "secret_key").read_text(encoding="ascii").strip().encode()
        return await mint_key(
            f"sqlite+aiosqlite:///{self.data_dir / 'filegate.db'}",
            hmac_key,
            tenant=tenant or f"sdk-{secrets.token_hex(4)}",
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("sdk") / "data"
    with start_gateway(child_env({"FILEGATE_DATA_DIR": str(data_dir)}), None, "--sandbox") as proc:
        yield Served(proc=proc, data_dir=data_dir)


@pytest.fixture
async def sdk(served: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key=await served.key(), base_url=served.base_url, max_retries=0, timeout=30
    ) as client:
        yield client


@pytest.mark.parametrize("purpose", ["file-extract", "assistants"])
async def test_sdk_round_trip(sdk: openai.AsyncOpenAI, purpose: str) -> None:
    payload = f"meeting notes for {purpose}: ship it on friday\n".encode()
    created = await sdk.files.create(file=("notes.txt", payload, "text/plain"), purpose=purpose)  # type: ignore[arg-type]
    assert isinstance(created, openai.types.FileObject)
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(payload)
    assert created.filename == "notes.txt"
    assert str(created.purpose) == "file-extract"  # an OpenAI alias is stored as what it names
    assert created.status == "processed"

    listed = [f.id async for f in sdk.files.list()]
    assert listed == [created.id]  # terminates, and the tenant sees exactly its own file

    got = await sdk.files.retrieve(created.id)
    assert got.id == created.id and got.bytes == len(payload) and str(got.purpose) == "file-extract"

    content = await sdk.files.content(created.id)
    assert content.read() == payload

    deleted = await sdk.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True

    with pytest.raises(openai.NotFoundError) as info:
        await sdk.files.retrieve(created.id)
    err = info.value
    assert err.status_code == 404
    envelope = err.response.json()
    assert set(envelope) == {"error"}
    assert set(envelope["error"]) == {"message", "type", "code", "param"}
    assert err.body == envelope["error"]  # the SDK unwraps {"error": {...}}
    assert envelope["error"]["message"] == "No such File object."  # never echoes the id
    assert err.type == envelope["error"]["type"] and err.type
    assert [f.id async for f in sdk.files.list()] == []


async def test_sdk_auto_paginates_with_limit(sdk: openai.AsyncOpenAI) -> None:
    ids = []
    for i in range(3):
        f = await sdk.files.create(
            file=(f"part-{i}.txt", f"page {i} of the paging test\n".encode(), "text/plain"),
            purpose="file-extract",  # type: ignore[arg-type]  # filegate's Kimi-style purpose
        )
        ids.append(f.id)
    assert len(set(ids)) == 3

    first_page = await sdk.files.list(limit=1)
    assert [f.id for f in first_page.data] == [ids[-1]]  # newest first
    assert first_page.has_next_page()

    seen = [f.id async for f in sdk.files.list(limit=1)]
    assert seen == list(reversed(ids))  # every file once, across three pages, then it stops

    ascending = [f.id async for f in sdk.files.list(limit=1, order="asc")]
    assert ascending == ids


async def test_sdk_invalid_key_raises_authentication_error(served: Served) -> None:
    bad = "fg_aaaaaaaaaaaa_" + "x" * 43
    async with openai.AsyncOpenAI(
        api_key=bad, base_url=served.base_url, max_retries=0, timeout=30
    ) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.files.list()
    assert info.value.status_code == 401
    assert set(info.value.response.json()["error"]) == {"message", "type", "code", "param"}
    async with openai.AsyncOpenAI(
        api_key="not-a-filegate-key", base_url=served.base_url, max_retries=0, timeout=30
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.files.create(file=("x.txt", b"x", "text/plain"), purpose="batch")


async def test_sdk_declares_a_digest_with_extra_headers_and_query(
    sdk: openai.AsyncOpenAI,
) -> None:
    payload = b"a report the gateway already holds\n"
    digest = base64.b64encode(hashlib.sha256(payload).digest()).decode()
    first = await sdk.files.create(file=("notes.txt", payload, "text/plain"), purpose="assistants")
    again = await sdk.files.with_raw_response.create(
        file=("notes.txt", payload, "text/plain"),
        purpose="user_data",
        extra_headers={"Repr-Digest": f"sha-256=:{digest}:"},
        extra_query={"purpose": "user_data"},
    )
    assert again.headers["filegate-dedup"] == "hit"
    assert again.parse().id == first.id


async def test_sdk_chunked_upload_yields_a_file_that_downloads_identical(
    sdk: openai.AsyncOpenAI, tmp_path: Path
) -> None:
    content = b"".join(f"line {i}: resumable uploads in parts\n".encode() for i in range(60_000))
    path = tmp_path / "minutes.txt"
    path.write_bytes(content)
    part_size = 512 * 1024  # five parts, the last one short
    upload = await sdk.uploads.upload_file_chunked(
        file=path,
        mime_type="text/plain",
        purpose="assistants",
        part_size=part_size,
        md5=hashlib.md5(content, usedforsecurity=False).hexdigest(),
    )
    assert isinstance(upload, openai.types.Upload)
    assert upload.status == "completed" and upload.object == "upload"
    assert upload.bytes == len(content) and upload.filename == "minutes.txt"
    assert upload.expires_at - upload.created_at == 3600
    assert upload.file is not None and upload.file.bytes == len(content)
    # The OpenAI alias is stored as the gateway's own purpose (see Purposes in the README).
    assert str(upload.file.purpose) == "file-extract" and upload.file.status == "processed"
    downloaded = await sdk.files.content(upload.file.id)
    assert downloaded.read() == content


async def test_sdk_errors_of_the_uploads_api_are_typed(sdk: openai.AsyncOpenAI) -> None:
    upload = await sdk.uploads.create(
        bytes=4, filename="x.txt", mime_type="text/plain", purpose="assistants"
    )
    assert upload.status == "pending" and upload.file is None
    with pytest.raises(openai.APIStatusError) as info:
        await sdk.uploads.parts.create(upload_id=upload.id, data=b"12345")
    assert info.value.status_code == 413
    cancelled = await sdk.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        await sdk.uploads.parts.create(upload_id=upload.id, data=b"1234")
    with pytest.raises(openai.NotFoundError):
        await sdk.uploads.cancel("upload_" + "0" * 24)


async def test_parts_survive_a_restart_of_the_gateway(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = child_env({"FILEGATE_DATA_DIR": str(data_dir)})
    content = os.urandom(3 * 1024 * 1024)
    thirds = [content[i : i + 1024 * 1024] for i in range(0, len(content), 1024 * 1024)]
    with start_gateway(env, None, "--sandbox") as first:
        served = Served(proc=first, data_dir=data_dir)
        key = await served.key()
        async with openai.AsyncOpenAI(
            api_key=key, base_url=served.base_url, max_retries=0, timeout=30
        ) as sdk:
            upload = await sdk.uploads.create(
                bytes=len(content),
                filename="scan.pdf",
                mime_type="application/pdf",
                purpose="assistants",
            )
            parts = [
                (await sdk.uploads.parts.create(upload_id=upload.id, data=p)).id for p in thirds[:2]
            ]
    # A new process (another replica, or the same after a restart) takes the rest.
    with start_gateway(env, None, "--sandbox") as second:
        served = Served(proc=second, data_dir=data_dir)
        async with openai.AsyncOpenAI(
            api_key=key, base_url=served.base_url, max_retries=0, timeout=30
        ) as sdk:
            parts.append((await sdk.uploads.parts.create(upload_id=upload.id, data=thirds[2])).id)
            done = await sdk.uploads.complete(upload_id=upload.id, part_ids=parts)
            assert done.status == "completed" and done.file is not None
            downloaded = await sdk.files.content(done.file.id)
            assert downloaded.read() == content

"""The official openai SDK against a real `filegate serve --sandbox` process (SQLite)."""

from __future__ import annotations

import base64
import hashlib
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

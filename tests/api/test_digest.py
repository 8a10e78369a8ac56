"""Declared digests (app/api/digest.py): the Repr-Digest header and the sha256 field, parsed
strictly, answered from the tenant's own files before the body, and checked against it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets

import httpx
import pytest

from app.api.digest import hex_digest, repr_digest
from app.core.config import Settings
from app.core.errors import InvalidRequest
from app.models import Blob, File, ProviderCopy
from tests.api.test_files import TEXT, count, upload
from tests.conftest import Gateway
from tests.support.blobs import leftovers
from tests.support.servers import serve_started_app

BOUNDARY = "digest-test-boundary"


def header_of(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def multipart(
    data: bytes, *, fields: dict[str, str], after: dict[str, str] | None = None
) -> tuple[bytes, bytes]:
    """A multipart body split where the file's bytes begin: (everything before them, the rest)."""
    head = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="report.txt"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    tail = data + b"\r\n"
    tail += b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (after or {}).items()
    )
    return head, tail + f"--{BOUNDARY}--\r\n".encode()


def request_head(path: str, token: str, length: int, **headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: gateway",
        f"Authorization: Bearer {token}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One response: its status line, headers (lower-case names) and body by Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), timeout=20) if length else b""
    return status.encode(), headers, body


# ---- parsing --------------------------------------------------------------------------------


def test_repr_digest_reads_sha256_and_ignores_other_algorithms() -> None:
    digest = hashlib.sha256(b"x").digest()
    b64 = base64.b64encode(digest).decode()
    other = base64.b64encode(hashlib.sha512(b"x").digest()).decode()
    assert repr_digest([f"sha-256=:{b64}:"]) == digest.hex()
    assert repr_digest([f"sha-512=:{other}:, sha-256=:{b64}:;note=1"]) == digest.hex()
    assert repr_digest([f"sha-512=:{other}:", f"sha-256=:{b64}:"]) == digest.hex()
    assert repr_digest([f"sha-512=:{other}:", "md5=:AAAA:"]) is None
    assert repr_digest([]) is None


@pytest.mark.parametrize(
    "value",
    [
        "sha-256",
        "sha-256=abc",
        "sha-256=1",
        'sha-256="AAAA"',
        "sha-256=:AAAA:",  # 3 bytes, not 32
        "sha-256=:not base64!:",
        "sha-256=:" + "A" * 43 + ":",  # unpadded
        "SHA-256=:" + base64.b64encode(bytes(32)).decode() + ":",
        "sha-256=:" + base64.b64encode(bytes(32)).decode() + ":,",
        "sha-256=:" + base64.b64encode(bytes(32)).decode() + ": sha-512=:AAAA:",
        "sha-256=:{0}:, sha-256=:{0}:".format(base64.b64encode(bytes(32)).decode()),
        "",
        "sha-256=:" + base64.b64encode(bytes(32)).decode() + ":, é",
    ],
)
def test_repr_digest_refuses_what_is_not_one_sha256_byte_sequence(value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        repr_digest([value])
    assert refused.value.error_code == "invalid_digest"


@pytest.mark.parametrize("value", ["", "abc", "g" * 64, "a" * 63, "a" * 65, " " + "a" * 63])
def test_hex_digest_refuses_anything_but_64_hex_digits(value: str) -> None:
    with pytest.raises(InvalidRequest):
        hex_digest(value)


def test_hex_digest_accepts_either_case() -> None:
    assert hex_digest("AB" * 32) == "ab" * 32


# ---- over HTTP ------------------------------------------------------------------------------


async def test_a_declared_hit_is_answered_from_the_head_and_the_body_is_never_sent(
    gateway: Gateway, settings: Settings
) -> None:
    """A raw client sends only the head with Expect: 100-continue: the final answer comes
    without a 100 Continue, so the body is never asked for (nor sent)."""
    token = await gateway.key()
    async with gateway.client(token) as client:
        first = (await upload(client)).json()
    big = 50 * 1024 * 1024  # announced, never sent
    async with serve_started_app(gateway.app, settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                request_head(
                    "/v1/files?purpose=file-extract",
                    token,
                    big,
                    **{"Repr-Digest": header_of(TEXT), "Expect": "100-continue"},
                )
            )
            await writer.drain()
            status, headers, body = await read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200"), (status, body)
            assert headers["filegate-dedup"] == "hit"
            assert headers["connection"] == "close"
            assert json.loads(body)["id"] == first["id"]
            assert await reader.read() == b""  # closed: no body is expected any more
        finally:
            writer.close()
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 1
    assert await leftovers(gateway.runtime.blob_store) == []


async def test_a_digest_held_only_by_another_tenant_is_a_miss_like_an_unknown_one(
    gateway: Gateway, settings: Settings
) -> None:
    """Another tenant's copy changes nothing: the body is asked for (100 Continue) exactly as
    for bytes nobody holds, and the upload makes the tenant's own file and provider copy."""
    acme, globex = await gateway.key("acme"), await gateway.key("globex")
    async with gateway.client(globex) as client:
        theirs = (await upload(client)).json()
    nobody = secrets.token_bytes(64)
    answers = []
    async with serve_started_app(gateway.app, settings) as (host, port):
        for data in (TEXT, nobody):
            head, tail = multipart(data, fields={})
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    request_head(
                        "/v1/files?purpose=file-extract",
                        acme,
                        len(head) + len(tail),
                        **{"Repr-Digest": header_of(data), "Expect": "100-continue"},
                    )
                )
                await writer.drain()
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
                assert interim.startswith(b"HTTP/1.1 100"), interim
                writer.write(head + tail)
                await writer.drain()
                status, headers, body = await read_answer(reader)
                answers.append((interim, status, headers["filegate-dedup"], json.loads(body)))
            finally:
                writer.close()
    (i1, s1, d1, mine), (i2, s2, d2, unknown) = answers
    assert i1 == i2 and s1 == s2 and d1 == d2 == "miss"
    assert mine["id"] != theirs["id"] and mine["sha256"] == theirs["sha256"]
    assert mine["providers"][0]["provider_file_id"] != theirs["providers"][0]["provider_file_id"]
    assert unknown["sha256"] == hashlib.sha256(nobody).hexdigest()
    assert await count(gateway, File) == 3


async def test_a_sha256_field_before_the_file_part_answers_before_the_files_bytes(
    gateway: Gateway, settings: Settings
) -> None:
    """The client sends the fields and the file part's head, then waits: the answer comes
    before any of the file's bytes are sent."""
    token = await gateway.key()
    async with gateway.client(token) as client:
        first = (await upload(client)).json()
    data = TEXT
    head, tail = multipart(
        data,
        fields={"purpose": "file-extract", "sha256": hashlib.sha256(data).hexdigest().upper()},
    )
    async with serve_started_app(gateway.app, settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request_head("/v1/files", token, len(head) + len(tail)) + head)
            await writer.drain()
            status, headers, body = await read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200"), (status, body)
            assert headers["filegate-dedup"] == "hit"
            assert json.loads(body)["id"] == first["id"]
            # The connection lives on: the server drops the unread rest and serves the next.
            writer.write(tail + b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            await writer.drain()
            status, _, _ = await read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 1


async def test_declared_hits_through_the_header_and_the_field_with_the_client(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    first = (await upload(client)).json()
    by_header = await client.post(
        "/v1/files",
        params={"purpose": "file-extract"},
        headers={"Repr-Digest": header_of(TEXT)},
        files={"file": ("report.txt", TEXT, "text/plain")},
    )
    by_field = await client.post(
        "/v1/files",
        data={"purpose": "file-extract", "sha256": hashlib.sha256(TEXT).hexdigest()},
        files={"file": ("report.txt", TEXT, "text/plain")},
    )
    for resp in (by_header, by_field):
        assert resp.status_code == 200, resp.text
        assert resp.json()["id"] == first["id"]
        assert resp.headers["filegate-dedup"] == "hit"
    assert await count(gateway, File) == 1


async def test_a_declared_miss_is_stored_once_its_bytes_match(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    resp = await client.post(
        "/v1/files",
        params={"purpose": "file-extract"},
        headers={"Repr-Digest": header_of(TEXT)},
        files={"file": ("report.txt", TEXT, "text/plain")},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["filegate-dedup"] == "miss"
    assert resp.json()["sha256"] == hashlib.sha256(TEXT).hexdigest()


@pytest.mark.parametrize("how", ["header", "field"])
async def test_a_digest_mismatch_is_a_400_that_leaves_nothing_behind(
    store_gateway: Gateway, how: str
) -> None:
    """On disk and on S3: no row, no blob, no provider copy, no spool or part left over."""
    gateway = store_gateway
    claimed = b"some other bytes entirely"
    big = secrets.token_bytes(6 * 1024 * 1024)  # several spool flushes (on S3, a part) first
    async with gateway.client(await gateway.key()) as client:
        if how == "header":
            resp = await client.post(
                "/v1/files",
                headers={"Repr-Digest": header_of(claimed)},
                data={"purpose": "file-extract"},
                files={"file": ("report.txt", big, "text/plain")},
            )
        else:
            resp = await client.post(
                "/v1/files",
                data={"purpose": "file-extract", "sha256": hashlib.sha256(claimed).hexdigest()},
                files={"file": ("report.txt", big, "text/plain")},
            )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "digest_mismatch" and error["param"] == "file"
    assert await count(gateway, File) == 0
    assert await count(gateway, Blob) == 0
    assert await count(gateway, ProviderCopy) == 0
    # The pipelined provider upload was cut before its last byte: no provider file.
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 0
    assert (await gateway.sandbox_stats("zai"))["files"] == 0
    store = gateway.runtime.blob_store
    assert await leftovers(store) == []
    assert not await store.exists(store.key_for(hashlib.sha256(big).hexdigest()))


@pytest.mark.parametrize(
    ("headers", "fields", "param"),
    [
        ({"Repr-Digest": "sha-256=:AAAA:"}, {}, "Repr-Digest"),
        ({"Repr-Digest": "sha-256=deadbeef"}, {}, "Repr-Digest"),
        ({}, {"sha256": "not-hex"}, "sha256"),
        ({}, {"sha256": "ab" * 31}, "sha256"),
        (
            {"Repr-Digest": header_of(b"one")},
            {"sha256": hashlib.sha256(b"two").hexdigest()},
            "sha256",
        ),
    ],
)
async def test_malformed_or_conflicting_declarations_are_400(
    gateway: Gateway,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    fields: dict[str, str],
    param: str,
) -> None:
    resp = await client.post(
        "/v1/files",
        headers=headers,
        data={"purpose": "file-extract", **fields},
        files={"file": ("report.txt", TEXT, "text/plain")},
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_digest" and error["param"] == param
    assert await count(gateway, File) == 0
    assert await leftovers(gateway.runtime.blob_store) == []


async def test_a_sha256_field_after_the_file_part_is_refused(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    head, tail = multipart(
        TEXT, fields={"purpose": "file-extract"}, after={"sha256": hashlib.sha256(TEXT).hexdigest()}
    )
    resp = await client.post(
        "/v1/files",
        content=head + tail,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "sha256"
    assert await count(gateway, File) == 0


async def test_an_empty_sha256_field_declares_nothing_wherever_it_is(
    client: httpx.AsyncClient,
) -> None:
    """A blank form (the docs page's, a browser's) sends the field empty, even after the file."""
    head, tail = multipart(TEXT, fields={"purpose": "file-extract"}, after={"sha256": ""})
    resp = await client.post(
        "/v1/files",
        content=head + tail,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["filegate-dedup"] == "miss"
    assert resp.json()["sha256"] == hashlib.sha256(TEXT).hexdigest()


async def test_query_and_form_fields_must_agree(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/files",
        params={"purpose": "batch"},
        data={"purpose": "file-extract"},
        files={"file": ("report.txt", TEXT, "text/plain")},
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "purpose"


async def test_a_declared_hit_replays_under_its_idempotency_key(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    first = (await upload(client)).json()
    sent = {
        "params": {"purpose": "file-extract"},
        "headers": {"Repr-Digest": header_of(TEXT), "Idempotency-Key": "declared-1"},
        "files": {"file": ("report.txt", TEXT, "text/plain")},
    }
    one = await client.post("/v1/files", **sent)  # type: ignore[arg-type]
    two = await client.post("/v1/files", **sent)  # type: ignore[arg-type]
    assert one.json()["id"] == two.json()["id"] == first["id"]
    assert two.headers["idempotent-replayed"] == "true"

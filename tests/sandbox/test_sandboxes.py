"""Behaviour both files API emulations share, each test run for Moonshot and for Z.ai: auth,
upload validation, retrieve, content, delete and unknown routes in each provider's envelope."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from app.sandbox import ZAI_DEFAULT_RULES
from tests.sandbox import test_moonshot_sandbox as moonshot
from tests.sandbox import test_zai_sandbox as zai

MiB = 1024 * 1024


@dataclass(frozen=True)
class Emulator:
    """One provider's emulation and what it answers differently."""

    name: str
    files: str  # the files collection's path
    auth: dict[str, str]
    upload: Callable[..., Awaitable[httpx.Response]]
    assert_error: Callable[[httpx.Response, int, str, str], None]
    file_fields: set[str]
    id_pattern: str
    json_type: str  # the Content-Type of JSON answers
    request_id_header: str | None  # a header every answer carries
    missing_id: str
    not_found: str  # the error kind (Moonshot's type, Z.ai's code) for an unknown file id
    invalid: str  # the error kind for an invalid upload or content request

    def assert_request_id(self, response: httpx.Response) -> None:
        if self.request_id_header is not None:
            assert response.headers[self.request_id_header]


EMULATORS = {
    "moonshot": Emulator(
        name="moonshot",
        files=moonshot.BASE,
        auth=moonshot.AUTH,
        upload=moonshot.upload,
        assert_error=moonshot.assert_error,
        file_fields=moonshot.FILE_FIELDS,
        id_pattern=r"[0-9a-z]{20}",
        json_type=moonshot.JSON_UTF8,
        request_id_header="msh-request-id",
        missing_id="cnhgqnucp7f5h7jfb3s0",
        not_found="resource_not_found_error",
        invalid="invalid_request_error",
    ),
    "zai": Emulator(
        name="zai",
        files=zai.BASE,
        auth=zai.AUTH,
        upload=zai.upload,
        assert_error=zai.assert_error,
        file_fields=zai.FILE_FIELDS,
        id_pattern=r"\d+_[0-9a-f]{32}",
        json_type="application/json; charset=UTF-8",
        request_id_header=None,
        missing_id="1741136989_8dd96cbee6274251b7e4c9568779bd6a",
        not_found="1214",
        invalid="1214",
    ),
}


@pytest.fixture(params=sorted(EMULATORS))
def emulator(request: pytest.FixtureRequest) -> Emulator:
    return EMULATORS[request.param]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with moonshot.client_for() as c:
        yield c


ROUTES = [("POST", ""), ("GET", ""), ("GET", "/x"), ("GET", "/x/content"), ("DELETE", "/x")]


@pytest.mark.parametrize(("method", "suffix"), ROUTES)
@pytest.mark.parametrize(
    ("emulator", "headers", "kind", "message"),
    [
        ("moonshot", {}, "invalid_authentication_error", "Invalid Authentication"),
        ("moonshot", {"Authorization": "Bearer "}, "invalid_authentication_error", "Invalid Authentication"),  # noqa: E501
        ("moonshot", {"Authorization": "sk-1"}, "invalid_authentication_error", "Invalid Authentication"),  # noqa: E501
        ("zai", {}, "1001", "Authentication parameter not received in Header, unable to authenticate"),  # noqa: E501
        ("zai", {"Authorization": "Bearer "}, "1001", "Authentication parameter not received in Header, unable to authenticate"),  # noqa: E501
        ("zai", {"Authorization": ""}, "1001", "Authentication parameter not received in Header, unable to authenticate"),  # noqa: E501
    ],
    indirect=["emulator"],
)  # fmt: skip
async def test_a_request_without_a_key_is_401(
    emulator: Emulator,
    client: httpx.AsyncClient,
    method: str,
    suffix: str,
    headers: dict[str, str],
    kind: str,
    message: str,
) -> None:
    response = await client.request(method, f"{emulator.files}{suffix}", headers=headers)
    emulator.assert_error(response, 401, kind, message)


@pytest.mark.parametrize(
    ("emulator", "content", "filename"),
    [("moonshot", b"hello world", "notes.txt"), ("zai", b"a,b\n1,2\n", "table.csv")],
    indirect=["emulator"],
)
async def test_upload_returns_exact_file_object(
    emulator: Emulator, client: httpx.AsyncClient, content: bytes, filename: str
) -> None:
    before = int(time.time())
    response = await emulator.upload(client, content, filename)
    assert response.status_code == 200
    assert response.headers["content-type"] == emulator.json_type
    emulator.assert_request_id(response)
    body = response.json()
    assert set(body) == emulator.file_fields
    assert re.fullmatch(emulator.id_pattern, body["id"])
    assert body["object"] == "file"
    assert body["bytes"] == len(content)
    assert before <= body["created_at"] <= int(time.time())
    assert body["filename"] == filename
    assert body["purpose"] == "file-extract"


@pytest.mark.parametrize(
    ("emulator", "purpose", "filename", "fields"),
    [
        ("moonshot", "file-extract", "a.pdf", {}),
        ("moonshot", "batch", "in.jsonl", {}),
        ("moonshot", "image", "a.png", {}),
        ("moonshot", "video", "a.mp4", {}),
        ("zai", "batch", "in.jsonl", {}),
        ("zai", "file-extract", "a.PDF", {}),
        ("zai", "code-interpreter", "a.txt", {}),
        ("zai", "agent", "glossary.xlsx", {}),
        ("zai", "voice-clone-input", "voice.wav", {}),
        ("zai", "fine-tune", "train.jsonl", {}),
        ("zai", "retrieval", "kb.docx", {"knowledge_id": "kb-1"}),
    ],
    indirect=["emulator"],
)
async def test_accepted_purposes(
    emulator: Emulator,
    client: httpx.AsyncClient,
    purpose: str,
    filename: str,
    fields: dict[str, str],
) -> None:
    response = await emulator.upload(client, b"x", filename, purpose, **fields)
    assert response.status_code == 200, response.text
    assert response.json()["purpose"] == purpose


@pytest.mark.parametrize(
    ("emulator", "purpose", "kind", "message"),
    [
        ("moonshot", "file-extract", "invalid_request_error", "Invalid request: file is required"),
        ("zai", "batch", "1213", "Missing required parameter: file"),
    ],
    indirect=["emulator"],
)
async def test_missing_file_is_400(
    emulator: Emulator, client: httpx.AsyncClient, purpose: str, kind: str, message: str
) -> None:
    response = await client.post(emulator.files, headers=emulator.auth, data={"purpose": purpose})
    emulator.assert_error(response, 400, kind, message)


@pytest.mark.parametrize(
    ("emulator", "kind", "message"),
    [
        ("moonshot", "invalid_request_error", "Invalid request: purpose is required"),
        ("zai", "1213", "Missing required parameter: purpose"),
    ],
    indirect=["emulator"],
)
async def test_missing_purpose_is_400(
    emulator: Emulator, client: httpx.AsyncClient, kind: str, message: str
) -> None:
    response = await emulator.upload(client, purpose=None)
    emulator.assert_error(response, 400, kind, message)


@pytest.mark.parametrize(
    ("emulator", "message"),
    [
        ("moonshot", "Invalid purpose: assistants, only file-extract, batch, image and video accepted"),  # noqa: E501
        ("zai", f"Invalid purpose: assistants. Supported: {', '.join(ZAI_DEFAULT_RULES)}"),
    ],
    indirect=["emulator"],
)  # fmt: skip
async def test_unknown_purpose_is_400(
    emulator: Emulator, client: httpx.AsyncClient, message: str
) -> None:
    response = await emulator.upload(client, purpose="assistants")
    emulator.assert_error(response, 400, emulator.invalid, message)


@pytest.mark.parametrize(
    ("emulator", "message"),
    [
        ("moonshot", "File size is zero, please confirm and re-upload the file"),
        ("zai", "File cannot be empty"),
    ],
    indirect=["emulator"],
)
async def test_an_empty_file_is_400(
    emulator: Emulator, client: httpx.AsyncClient, message: str
) -> None:
    response = await emulator.upload(client, b"")
    emulator.assert_error(response, 400, emulator.invalid, message)


@pytest.mark.parametrize(
    ("emulator", "content", "message"),
    [
        ("moonshot", b'{"a":1}', "Invalid request: batch files must be .jsonl files"),
        ("zai", b"{}", "Unsupported file format for purpose batch: 'in.json'. Supported: jsonl"),
    ],
    indirect=["emulator"],
)
async def test_batch_files_must_be_jsonl(
    emulator: Emulator, client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    response = await emulator.upload(client, content, "in.json", "batch")
    emulator.assert_error(response, 400, emulator.invalid, message)


@pytest.mark.parametrize(
    ("emulator", "option", "limit", "filename", "purpose", "status", "kind", "message"),
    [
        ("moonshot", "moonshot_max_file_bytes", 2 * MiB, "notes.txt", "file-extract", 400, "invalid_request_error", "File size is too large, max file size is 2MB, please confirm and re-upload the file"),  # noqa: E501
        ("zai", "zai_max_file_bytes", MiB, "in.jsonl", "batch", 435, "1210", "File size exceeds 1MB"),  # noqa: E501
    ],
    indirect=["emulator"],
)  # fmt: skip
async def test_the_size_limit_is_inclusive(
    emulator: Emulator,
    option: str,
    limit: int,
    filename: str,
    purpose: str,
    status: int,
    kind: str,
    message: str,
) -> None:
    async with moonshot.client_for(**{option: limit}) as c:
        ok = await emulator.upload(c, b"a" * limit, filename, purpose)
        too_big = await emulator.upload(c, b"a" * (limit + 1), filename, purpose)
    assert ok.status_code == 200
    assert ok.json()["bytes"] == limit
    emulator.assert_error(too_big, status, kind, message)


async def test_ids_are_unique(emulator: Emulator, client: httpx.AsyncClient) -> None:
    ids = {(await emulator.upload(client)).json()["id"] for _ in range(20)}
    assert len(ids) == 20


async def test_retrieve(emulator: Emulator, client: httpx.AsyncClient) -> None:
    created = (await emulator.upload(client)).json()
    response = await client.get(f"{emulator.files}/{created['id']}", headers=emulator.auth)
    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/content"), ("DELETE", "")])
@pytest.mark.parametrize(
    ("emulator", "message"),
    [
        ("moonshot", "file not found: {}"),
        ("zai", "The file does not exist or has been deleted: {}"),
    ],
    indirect=["emulator"],
)
async def test_unknown_id_is_404(
    emulator: Emulator, client: httpx.AsyncClient, method: str, suffix: str, message: str
) -> None:
    url = f"{emulator.files}/{emulator.missing_id}{suffix}"
    response = await client.request(method, url, headers=emulator.auth)
    emulator.assert_error(response, 404, emulator.not_found, message.format(emulator.missing_id))


@pytest.mark.parametrize(
    ("emulator", "raw"),
    [("moonshot", b'{"custom_id":"1"}\n\xff'), ("zai", b'{"custom_id":"1"}\n\xff\n')],
    indirect=["emulator"],
)
async def test_batch_content_is_raw(
    emulator: Emulator, client: httpx.AsyncClient, raw: bytes
) -> None:
    created = (await emulator.upload(client, raw, "in.jsonl", "batch")).json()
    response = await client.get(f"{emulator.files}/{created['id']}/content", headers=emulator.auth)
    assert response.status_code == 200
    assert response.content == raw
    emulator.assert_request_id(response)


@pytest.mark.parametrize(
    ("emulator", "text", "filename", "file_type"),
    [("moonshot", "héllo wörld", "notes.txt", "text/plain"), ("zai", "名,值\n1,2\n", "t.csv", "text/csv")],  # noqa: E501
    indirect=["emulator"],
)  # fmt: skip
async def test_extract_content_json(
    emulator: Emulator, client: httpx.AsyncClient, text: str, filename: str, file_type: str
) -> None:
    created = (await emulator.upload(client, text.encode(), filename)).json()
    response = await client.get(f"{emulator.files}/{created['id']}/content", headers=emulator.auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == emulator.json_type
    assert response.json() == {
        "content": text,
        "file_type": file_type,
        "filename": filename,
        "title": "",
        "type": "file",
    }


@pytest.mark.parametrize(
    ("emulator", "content", "kind", "message"),
    [
        ("moonshot", b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "invalid_request_error", "text extract error: 没有解析出内容"),  # noqa: E501
        ("moonshot", b"   \n\t ", "invalid_request_error", "text extract error: 没有解析出内容"),
        ("zai", b"\x89PNG\r\n\x1a\n\xff", "1214", "Failed to extract text from the file"),
    ],
    indirect=["emulator"],
)  # fmt: skip
async def test_extract_failure_is_400(
    emulator: Emulator, client: httpx.AsyncClient, content: bytes, kind: str, message: str
) -> None:
    created = (await emulator.upload(client, content, "scan.png")).json()
    response = await client.get(f"{emulator.files}/{created['id']}/content", headers=emulator.auth)
    emulator.assert_error(response, 400, kind, message)


@pytest.mark.parametrize(
    ("emulator", "content", "filename", "purpose", "message"),
    [
        ("moonshot", b"x", "a.png", "image", "Invalid request: content is not available for files with purpose image"),  # noqa: E501
        ("moonshot", b"x", "a.png", "video", "Invalid request: content is not available for files with purpose video"),  # noqa: E501
        ("zai", b"print(1)", "a.txt", "code-interpreter", "File content is not available for purpose code-interpreter"),  # noqa: E501
    ],
    indirect=["emulator"],
)  # fmt: skip
async def test_content_of_other_purposes_is_400(
    emulator: Emulator,
    client: httpx.AsyncClient,
    content: bytes,
    filename: str,
    purpose: str,
    message: str,
) -> None:
    created = (await emulator.upload(client, content, filename, purpose)).json()
    response = await client.get(f"{emulator.files}/{created['id']}/content", headers=emulator.auth)
    emulator.assert_error(response, 400, emulator.invalid, message)


async def test_delete(emulator: Emulator, client: httpx.AsyncClient) -> None:
    created = (await emulator.upload(client)).json()
    url = f"{emulator.files}/{created['id']}"
    response = await client.delete(url, headers=emulator.auth)
    assert response.status_code == 200
    assert response.json() == {"id": created["id"], "object": "file", "deleted": True}
    assert (await client.get(url, headers=emulator.auth)).status_code == 404
    assert (await client.get(emulator.files, headers=emulator.auth)).json()["data"] == []
    assert (await client.delete(url, headers=emulator.auth)).status_code == 404


@pytest.mark.parametrize(
    ("emulator", "path", "kind", "message"),
    [
        ("moonshot", "/moonshot/v1/nothing", "resource_not_found_error", "Not found"),
        ("zai", "/zai/api/paas/v4/batches", "1222", "The API does not exist."),
    ],
    indirect=["emulator"],
)
async def test_unknown_route_uses_the_provider_envelope(
    emulator: Emulator, client: httpx.AsyncClient, path: str, kind: str, message: str
) -> None:
    response = await client.get(path, headers=emulator.auth)
    emulator.assert_error(response, 404, kind, message)

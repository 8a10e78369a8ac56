"""Property-based conformance: generated requests never get a 5xx or an off-schema answer.

Schemathesis (v4) drives the app in-process through its ASGI transport. That transport runs
the app on its own event loop in a helper thread and starts the app's lifespan there itself
(once per app, kept until `shutdown_lifespans()`), so this module builds its own app on a
private SQLite database instead of the async `gateway` fixture (whose runtime lives on the
test loop). The operator key is minted in another helper thread before the app starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import load_all_checks
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from app.auth.keys import issue_key
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.main import create_app
from tests.conftest import TEST_SECRET, Gateway, _truncate

load_all_checks()
from schemathesis.checks import (  # noqa: E402 - registered by load_all_checks()
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 20


async def _mint_operator_key(url: str, hmac_key: bytes) -> str:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            issued = await issue_key(
                session=session,
                hmac_key=hmac_key,
                tenant_name="ops",
                name="schemathesis",
                scopes=["admin"],
            )
            await session.commit()
            return issued.token
    finally:
        await engine.dispose()


def _settings(base: Path, sandbox_url: str, database_url: str | None = None) -> Settings:
    return Settings(
        env="test",
        data_dir=base / "data",
        database_url=database_url or f"sqlite+aiosqlite:///{base / 'filegate.db'}",
        redis_url=None,
        secret_key=TEST_SECRET,
        sandbox=True,
        sandbox_url=f"{sandbox_url}/sandbox",
        workers_in_process=0,
        provider_timeout=20,
    )


# The document is the same for every configuration: load it at collection time, from an app
# that is never started, and aim each call at the started app of the `api` fixture.
OPENAPI = create_app(_settings(Path("unused"), "http://127.0.0.1:9")).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@dataclass
class Api:
    app: Any
    headers: dict[str, str]
    file_id: str = ""

    def call(self, case: Any, **kwargs: Any) -> Any:
        """Send a case to the app with the operator's key; the raw response."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return case.call(app=self.app, headers=headers, **kwargs)

    def reset_breakers(self) -> None:
        """Generated requests may have forced a circuit open: close both again."""
        for provider in ("moonshot", "zai"):
            case = _case(
                "/admin/providers/{provider}/breaker",
                "POST",
                path_parameters={"provider": provider},
                body={"action": "reset"},
            )
            resp = self.call(case)
            assert resp.status_code == 200, resp.text
            case.validate_response(resp, checks=CHECKS)

    def upload(self, content: bytes, filename: str, **kwargs: Any) -> tuple[Any, Any]:
        """A hand-made upload (schemathesis names file parts after the field, no extension)."""
        case = schema["/v1/files"]["POST"].Case(media_type="multipart/form-data")
        fields = {"purpose": "file-extract", **kwargs.pop("fields", {})}
        response = self.call(
            case, files={"file": (filename, content, "text/csv")}, data=fields, **kwargs
        )
        return case, response


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    sandbox_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """The app on a private SQLite copy or the test PostgreSQL database, running, with an
    operator (admin) key and one stored file."""
    base = tmp_path_factory.mktemp("schemathesis")
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("pg_url")
        _truncate(database_url)
    else:
        shutil.copy(sqlite_template, base / "filegate.db")
    conf = _settings(base, sandbox_server, database_url)
    with start_blocking_portal() as portal:
        token = portal.call(_mint_operator_key, conf.resolved_database_url, conf.hmac_key())
    app = create_app(conf)
    assert app.openapi() == OPENAPI
    api = Api(app=app, headers={"Authorization": f"Bearer {token}"})
    try:
        # The first call starts the lifespan in schemathesis' event-loop thread.
        _, created = api.upload(b"seeded,file\n1,2\n", "seed.csv")
        assert created.status_code == 200, created.text
        assert app.state.runtime is not None
        api.file_id = created.json()["id"]
        yield api
    finally:
        shutdown_lifespans()


# Generated requests: every operation but the upload, valid and invalid data alike. Schemathesis
# names a generated file part after its field ("file", no extension), so generated uploads
# could only ever be refused; uploads get their own generator below instead.
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
)


# Integer ids and cursors beyond the database's integer range are a known 500 (see
# test_out_of_range_integers_are_not_server_errors); keep generation inside the range that
# both backends hold, so the generated run keeps looking for other failures.
INT32 = 2**31 - 1


def _in_range(value: Any) -> bool:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return True  # not a number: the app must refuse it, let it through
    return abs(number) <= INT32


@schema.hook
def filter_query(ctx: Any, query: dict[str, Any] | None) -> bool:
    return not query or _in_range(query.get("cursor", 0))


@schema.hook
def filter_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> bool:
    return not path_parameters or _in_range(path_parameters.get("job_id", 0))


@schema.exclude(method="POST", path="/v1/files").parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_conform(case: Any, api: Api) -> None:
    case.call_and_validate(app=api.app, headers=api.headers, checks=CHECKS)


ASCII_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,40}", fullmatch=True)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(
    content=st.binary(max_size=256),
    stem=ASCII_NAME,
    extension=st.sampled_from(["csv", "txt", "pdf", "jsonl", "png", "", "exe"]),
    purpose=st.sampled_from(
        ["file-extract", "assistants", "batch", "vision", "fine-tune", "agent", "", "nope"]
    ),
    provider=st.sampled_from([None, "auto", "moonshot", "zai", "MOONSHOT", "other"]),
    expires=st.one_of(st.none(), st.integers(min_value=-5, max_value=40 * 24 * 3600)),
)
def test_generated_uploads_conform(
    api: Api,
    content: bytes,
    stem: str,
    extension: str,
    purpose: str,
    provider: str | None,
    expires: int | None,
) -> None:
    fields = {"purpose": purpose}
    if provider is not None:
        fields["provider"] = provider
    if expires is not None:
        fields |= {"expires_after[anchor]": "created_at", "expires_after[seconds]": str(expires)}
    filename = f"{stem}.{extension}" if extension else stem
    case, response = api.upload(content, filename, fields=fields)
    assert response.status_code < 500, response.text
    case.validate_response(response, checks=CHECKS)


def _case(path: str, method: str, **kwargs: Any) -> Any:
    if "body" in kwargs:
        kwargs.setdefault("media_type", "application/json")
    return schema[path][method].Case(**kwargs)


def test_hand_made_cases_conform(api: Api, subtests: pytest.Subtests) -> None:
    """Requests generation cannot make (real ids, real uploads) answer as documented."""
    api.reset_breakers()
    case, created = api.upload(b"name,qty\nbolts,12\n", "parts.csv")
    with subtests.test("upload"):
        assert created.status_code == 200, created.text
        case.validate_response(created, checks=CHECKS)
    file_id = created.json()["id"]
    with subtests.test("upload again (deduplicated)"):
        case, again = api.upload(b"name,qty\nbolts,12\n", "renamed.csv")
        assert again.status_code == 200 and again.json()["id"] == file_id
        case.validate_response(again, checks=CHECKS)
    with subtests.test("upload with expires_after"):
        fields = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
        case, expiring = api.upload(b"a,b\n", "exp.csv", fields=fields)
        assert expiring.status_code == 200 and expiring.json()["expires_at"]
        case.validate_response(expiring, checks=CHECKS)
    with subtests.test("upload without a file part"):
        case = schema["/v1/files"]["POST"].Case(media_type="multipart/form-data")
        resp = api.call(case, data={"purpose": "file-extract"}, files={"x": ("", b"")})
        assert resp.status_code == 400
        case.validate_response(resp, checks=CHECKS)
    with subtests.test("upload as JSON"):
        case = schema["/v1/files"]["POST"].Case(media_type="multipart/form-data")
        resp = api.call(case, json={"purpose": "file-extract"})
        assert resp.status_code == 415
        case.validate_response(resp, checks=CHECKS)

    key_id = ""
    calls: list[tuple[str, Any, dict[str, Any], int]] = [
        (
            "retrieve",
            _case("/v1/files/{file_id}", "GET", path_parameters={"file_id": file_id}),
            {},
            200,
        ),
        (
            "events",
            _case("/v1/files/{file_id}/events", "GET", path_parameters={"file_id": file_id}),
            {},
            200,
        ),
        (
            "extract",
            _case("/v1/files/{file_id}/extract", "GET", path_parameters={"file_id": file_id}),
            {},
            200,
        ),
        (
            "content, ranged",
            _case("/v1/files/{file_id}/content", "GET", path_parameters={"file_id": file_id}),
            {"headers": {"Range": "bytes=0-3"}},
            206,
        ),
        (
            "replicate",
            _case(
                "/v1/files/{file_id}/providers",
                "POST",
                path_parameters={"file_id": file_id},
                body={"provider": "zai"},
            ),
            {},
            200,
        ),
        ("list", _case("/v1/files", "GET", query={"limit": 2, "order": "asc"}), {}, 200),
        (
            "check",
            _case("/admin/files/{file_id}/check", "POST", path_parameters={"file_id": file_id}),
            {},
            200,
        ),
        ("audit", _case("/admin/audit", "GET", query={"limit": 3}), {}, 200),
        ("audit jsonl", _case("/admin/audit", "GET", query={"format": "jsonl"}), {}, 200),
        ("jobs", _case("/admin/jobs", "GET", query={"state": "queued", "limit": 2}), {}, 200),
        ("job summary", _case("/admin/jobs/summary", "GET"), {}, 200),
        ("find files", _case("/admin/files", "GET", query={"filename": "a"}), {}, 200),
        (
            "show file",
            _case("/admin/files/{file_id}", "GET", path_parameters={"file_id": file_id}),
            {},
            200,
        ),
        ("usage", _case("/v1/usage", "GET"), {}, 200),
        ("tenants", _case("/admin/tenants", "GET"), {}, 200),
        (
            "quota",
            _case(
                "/admin/tenants/{tenant}/quota",
                "PUT",
                path_parameters={"tenant": "ops"},
                body={"max_bytes": 10**9, "max_files": None},
            ),
            {},
            200,
        ),
        (
            "create key",
            _case("/admin/keys", "POST", body={"tenant": "ops", "name": "hand-made"}),
            {"headers": {"Idempotency-Key": "hand-made-key"}},
            201,
        ),
        (
            "create key, key reused",
            _case("/admin/keys", "POST", body={"tenant": "ops", "name": "other"}),
            {"headers": {"Idempotency-Key": "hand-made-key"}},
            422,
        ),
        ("list keys", _case("/admin/keys", "GET"), {}, 200),
        ("ready", _case("/health/ready", "GET"), {}, 200),
        ("live", _case("/health/live", "GET"), {}, 200),
    ]
    for label, case, kwargs, status in calls:
        with subtests.test(label):
            resp = api.call(case, **kwargs)
            assert resp.status_code == status, resp.text
            case.validate_response(resp, checks=CHECKS)
            if label == "create key":
                key_id = resp.json()["id"]
    for label, case, status in [
        (
            "rotate key",
            _case(
                "/admin/keys/{key_id}/rotate",
                "POST",
                path_parameters={"key_id": key_id},
                body={"overlap_seconds": 0},
            ),
            201,
        ),
        (
            "revoke key",
            _case("/admin/keys/{key_id}", "DELETE", path_parameters={"key_id": key_id}),
            200,
        ),
        (
            "delete file",
            _case("/v1/files/{file_id}", "DELETE", path_parameters={"file_id": file_id}),
            200,
        ),
        (
            "retrieve deleted",
            _case("/v1/files/{file_id}", "GET", path_parameters={"file_id": file_id}),
            404,
        ),
    ]:
        with subtests.test(label):
            resp = api.call(case)
            assert resp.status_code == status, resp.text
            case.validate_response(resp, checks=CHECKS)


# --------------------------------------------------------------------------- findings


@pytest.fixture
def closed_circuits(api: Api) -> None:
    """Generated requests may have opened a circuit; each finding starts with both closed."""
    api.reset_breakers()


def _content_case(api: Api) -> Any:
    return _case("/v1/files/{file_id}/content", "GET", path_parameters={"file_id": api.file_id})


def test_content_type_of_a_download_is_documented(api: Api, closed_circuits: None) -> None:
    case = _content_case(api)
    resp = api.call(case)
    assert resp.status_code == 200
    case.validate_response(resp, checks=CHECKS)


def test_not_modified_download_is_documented(api: Api, closed_circuits: None) -> None:
    case = _content_case(api)
    etag = api.call(case).headers["etag"][0]
    resp = api.call(case, headers={"If-None-Match": etag})
    assert resp.status_code == 304
    case.validate_response(resp, checks=CHECKS)


def test_unsatisfiable_range_is_documented(api: Api, closed_circuits: None) -> None:
    case = _content_case(api)
    resp = api.call(case, headers={"Range": "bytes=9000-9999"})
    assert resp.status_code == 416
    case.validate_response(resp, checks=CHECKS)


def test_reused_idempotency_key_on_upload_is_documented(api: Api, closed_circuits: None) -> None:
    api.upload(b"first,body\n", "first.csv", headers={"Idempotency-Key": "reuse-me"})
    case, resp = api.upload(b"second,body\n", "second.csv", headers={"Idempotency-Key": "reuse-me"})
    assert resp.status_code == 422
    case.validate_response(resp, checks=CHECKS)


def test_replayed_key_creation_matches_the_schema(api: Api, closed_circuits: None) -> None:
    case = _case("/admin/keys", "POST", body={"tenant": "ops", "name": "replayed"})
    first = api.call(case, headers={"Idempotency-Key": "replay-schema"})
    assert first.status_code == 201
    replay = api.call(case, headers={"Idempotency-Key": "replay-schema"})
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == ["true"]
    case.validate_response(replay, checks=CHECKS)


def test_upload_with_a_cjk_filename_is_not_a_server_error(api: Api, closed_circuits: None) -> None:
    _, resp = api.upload("季度报告".encode() + b",1\n", "季度报告.csv")
    assert resp.status_code == 200, resp.text
    assert resp.json()["filename"] == "季度报告.csv"


def test_upload_with_a_non_latin1_field_name_is_not_a_server_error(
    api: Api, closed_circuits: None
) -> None:
    _, resp = api.upload(b"k,v\n1,2\n", "field.csv", fields={"ключ": "значение"})
    assert resp.status_code == 200, resp.text


def test_upload_keeps_an_accented_filename(api: Api, closed_circuits: None) -> None:
    _, resp = api.upload(b"accent,1\n", "résumé.csv")
    assert resp.status_code == 200, resp.text
    assert resp.json()["filename"] == "résumé.csv"


async def test_out_of_range_integers_are_not_server_errors(gateway: Gateway) -> None:
    token = await gateway.key("ops", ("admin",))
    transport = httpx.ASGITransport(app=gateway.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers={"Authorization": f"Bearer {token}"}
    ) as c:
        statuses = {}
        for n in (2**31, 2**63):
            statuses[f"audit cursor {n}"] = (
                await c.get("/admin/audit", params={"cursor": n})
            ).status_code
            statuses[f"retry job {n}"] = (await c.post(f"/admin/jobs/{n}/retry")).status_code
    assert all(status < 500 for status in statuses.values()), statuses

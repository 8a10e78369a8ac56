"""Shared machinery of the security suite.

A seeded gateway (an operator key, a tenant key, a live file, a dead job), every /v1 and
/admin route as a concrete request against those real ids, snapshots of all state a request
could change, and JWT helpers for RS256 and HS256 gateways.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt
from sqlalchemy import text

from app.core.config import Settings
from app.models import Job
from tests.conftest import Gateway, settings_with, started_gateway

ISSUER = "https://issuer.example"
AUDIENCE = "filegate"
HS256_SECRET = "security-suite-hs256-secret-0123456789abcdef"
SEED_TEXT = b"seeded file: the numbers of the quarter\n"
EVIL_TEXT = b"bytes an unauthorized caller tries to store\n"
STATE_TABLES = (
    "tenants",
    "api_keys",
    "blobs",
    "files",
    "provider_copies",
    "lifecycle_events",
    "jobs",
    "idempotency_keys",
    "uploads",
    "upload_parts",
)
PROVIDERS = ("moonshot", "zai")


# --------------------------------------------------------------------------- app helpers


@pytest.fixture
def settings(settings: Settings) -> Iterator[Settings]:
    """The suite's settings, with circuit-breaker state private to the test.

    Breakers keep their state in Redis under `breaker_namespace`; a shared namespace would let
    another test (or another run on the same Redis) open a circuit under this one.
    """
    namespace = f"filegate:breaker:security:{uuid.uuid4().hex}"
    # Every forged credential here must leave its own audit row; the per-address throttle of
    # anonymous refusals is tested on its own (tests/services/test_audit.py).
    settings = settings_with(
        settings, breaker_namespace=namespace, audit_anonymous_refusals_per_minute=100_000
    )
    yield settings
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url)
        try:
            keys = list(client.scan_iter(f"{namespace}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def anonymous(gateway: Gateway, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app),
        base_url="http://gateway",
        headers=headers or {},
        timeout=60,
    )


async def upload(
    client: httpx.AsyncClient,
    content: bytes = SEED_TEXT,
    *,
    filename: str = "report.txt",
    purpose: str = "file-extract",
    extra: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    data = {"purpose": purpose, **(extra or {})}
    return await client.post(
        "/v1/files",
        data=data,
        files={"file": (filename, content, "text/plain")},
        headers=headers,
    )


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Call:
    """One concrete request to one route of the app."""

    method: str
    template: str
    path: str
    json: Any = None
    upload: bool = False
    part: bool = False  # an Uploads API part: multipart `data`

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    async def send(
        self, client: httpx.AsyncClient, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        if self.upload:
            return await client.post(
                self.path,
                data={"purpose": "file-extract"},
                files={"file": ("evil.txt", EVIL_TEXT, "text/plain")},
                headers=headers,
            )
        if self.part:
            return await client.post(self.path, files={"data": EVIL_TEXT}, headers=headers)
        kwargs: dict[str, Any] = {"headers": headers}
        if self.json is not None:
            kwargs["json"] = self.json
        return await client.request(self.method, self.path, **kwargs)


def every_route(
    *,
    file_id: str,
    key_id: str,
    job_id: int,
    tenant: str,
    upload_id: str = "upload_" + "A" * 24,
    part_id: str = "part_" + "A" * 24,
) -> list[Call]:
    """Every /v1 and /admin operation, aimed at real ids with bodies that would change things."""
    f = f"/v1/files/{file_id}"
    u = f"/v1/uploads/{upload_id}"
    return [
        Call("POST", "/v1/files", "/v1/files", upload=True),
        Call("GET", "/v1/files", "/v1/files"),
        Call("GET", "/v1/usage", "/v1/usage"),
        Call("GET", "/v1/files/{file_id}", f),
        Call("GET", "/v1/files/{file_id}/content", f"{f}/content"),
        Call("GET", "/v1/files/{file_id}/extract", f"{f}/extract"),
        Call("GET", "/v1/files/{file_id}/events", f"{f}/events"),
        Call("DELETE", "/v1/files/{file_id}", f),
        Call("POST", "/v1/files/{file_id}/providers", f"{f}/providers", json={"provider": "zai"}),
        Call("POST", "/v1/files/{file_id}/pin", f"{f}/pin"),
        Call("DELETE", "/v1/files/{file_id}/pin", f"{f}/pin"),
        Call(
            "POST",
            "/v1/uploads",
            "/v1/uploads",
            json={
                "filename": "evil.txt",
                "purpose": "file-extract",
                "bytes": len(EVIL_TEXT),
                "mime_type": "text/plain",
            },
        ),
        Call("POST", "/v1/uploads/{upload_id}/parts", f"{u}/parts", part=True),
        Call(
            "POST",
            "/v1/uploads/{upload_id}/complete",
            f"{u}/complete",
            json={"part_ids": [part_id]},
        ),
        Call("POST", "/v1/uploads/{upload_id}/cancel", f"{u}/cancel"),
        Call(
            "POST",
            "/admin/keys",
            "/admin/keys",
            json={"tenant": tenant, "name": "backdoor", "scopes": ["admin"]},
        ),
        Call("GET", "/admin/keys", "/admin/keys"),
        Call(
            "POST",
            "/admin/keys/{key_id}/rotate",
            f"/admin/keys/{key_id}/rotate",
            json={"overlap_seconds": 0},
        ),
        Call("DELETE", "/admin/keys/{key_id}", f"/admin/keys/{key_id}"),
        Call("GET", "/admin/jobs", "/admin/jobs"),
        Call("GET", "/admin/jobs/summary", "/admin/jobs/summary"),
        Call("GET", "/admin/files", "/admin/files"),
        Call("GET", "/admin/files/{file_id}", f"/admin/files/{file_id}"),
        Call("DELETE", "/admin/files/{file_id}", f"/admin/files/{file_id}"),
        Call(
            "POST",
            "/admin/files/{file_id}/providers",
            f"/admin/files/{file_id}/providers",
            json={"provider": "zai"},
        ),
        Call("POST", "/admin/jobs/{job_id}/retry", f"/admin/jobs/{job_id}/retry"),
        Call("POST", "/admin/files/{file_id}/check", f"/admin/files/{file_id}/check"),
        Call("GET", "/admin/tenants", "/admin/tenants"),
        Call(
            "PUT",
            "/admin/tenants/{tenant}/quota",
            f"/admin/tenants/{tenant}/quota",
            json={"max_bytes": 0, "max_files": 0},
        ),
        Call("GET", "/admin/audit", "/admin/audit"),
        Call("GET", "/admin/audit", "/admin/audit?format=jsonl"),
        Call("GET", "/admin/providers", "/admin/providers"),
        Call(
            "POST",
            "/admin/providers/{provider}/breaker",
            "/admin/providers/moonshot/breaker",
            json={"action": "open"},
        ),
    ]


def app_operations(app: Any) -> set[tuple[str, str]]:
    """(method, template) of every /v1 and /admin operation in the app's OpenAPI document."""
    return {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith(("/v1", "/admin"))
        for method in item
    }


# --------------------------------------------------------------------------- seeded world


@dataclass
class World:
    """A gateway with an operator, a tenant key, one live file and one dead job."""

    gateway: Gateway
    admin: str
    user: str
    file_id: str
    job_id: int
    upload_id: str
    part_id: str
    tenant: str = "acme"

    @property
    def user_key_id(self) -> str:
        return self.user.split("_")[1]

    def routes(self) -> list[Call]:
        return every_route(
            file_id=self.file_id,
            key_id=self.user_key_id,
            job_id=self.job_id,
            tenant=self.tenant,
            upload_id=self.upload_id,
            part_id=self.part_id,
        )


async def seed(gateway: Gateway, tenant: str = "acme") -> World:
    admin = await gateway.key("ops", ("admin",))
    user = await gateway.key(tenant)
    async with gateway.client(user) as c:
        resp = await upload(c)
        assert resp.status_code == 200, resp.text
        file_id = resp.json()["id"]
        # A pending upload holding one part: what a forged or unscoped call would complete.
        resp = await c.post(
            "/v1/uploads",
            json={
                "filename": "seed.txt",
                "purpose": "file-extract",
                "bytes": len(EVIL_TEXT),
                "mime_type": "text/plain",
            },
        )
        assert resp.status_code == 200, resp.text
        upload_id = resp.json()["id"]
        resp = await c.post(f"/v1/uploads/{upload_id}/parts", files={"data": EVIL_TEXT})
        assert resp.status_code == 200, resp.text
        part_id = resp.json()["id"]
    async with gateway.runtime.sessionmaker() as session:
        job = Job(
            kind="delete_copy",
            payload=json.dumps({"copy_id": 0}),
            state="dead",
            attempts=8,
            max_attempts=8,
            last_error="seeded dead letter",
        )
        session.add(job)
        await session.commit()
        job_id = job.id
    return World(
        gateway=gateway,
        admin=admin,
        user=user,
        file_id=file_id,
        job_id=job_id,
        upload_id=upload_id,
        part_id=part_id,
        tenant=tenant,
    )


# --------------------------------------------------------------------------- snapshots


@dataclass
class Snapshot:
    rows: dict[str, list[dict[str, Any]]]
    audit_max: int
    sandbox: dict[str, Any]
    stored: list[str]
    breakers: dict[str, tuple[Any, ...]]


async def sandbox_stats(gateway: Gateway) -> dict[str, Any]:
    """Call counters and stored files of both emulated providers."""
    # Plain HTTP on loopback: verify=False only skips loading a CA bundle per snapshot.
    async with httpx.AsyncClient(base_url=gateway.sandbox_url, verify=False) as c:  # noqa: S501
        return {p: (await c.get(f"/sandbox/{p}/_stats")).json() for p in PROVIDERS}


async def table_rows(gateway: Gateway, table: str) -> list[dict[str, Any]]:
    async with gateway.runtime.engine.connect() as conn:
        result = await conn.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed names
        return [dict(row) for row in result.mappings().all()]


async def snapshot(gateway: Gateway) -> Snapshot:
    rows: dict[str, list[dict[str, Any]]] = {}
    async with gateway.runtime.engine.connect() as conn:
        for table in STATE_TABLES:
            result = await conn.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
            rows[table] = sorted((dict(r) for r in result.mappings().all()), key=repr)
        audit_max = (
            await conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM audit_events"))
        ).scalar_one()
    sandbox = await sandbox_stats(gateway)
    data_dir = gateway.runtime.settings.data_dir
    stored = sorted(
        str(p.relative_to(data_dir))
        for sub in ("blobs", "tmp", "parts")
        if (data_dir / sub).exists()
        for p in (data_dir / sub).rglob("*")
        if p.is_file()
    )
    breakers: dict[str, tuple[Any, ...]] = {}
    board = gateway.runtime.breakers
    if board is not None:
        states = await board.snapshot()
        breakers = {name: (b.state, b.failures, b.opened_at) for name, b in states.items()}
    return Snapshot(
        rows=rows, audit_max=int(audit_max), sandbox=sandbox, stored=stored, breakers=breakers
    )


async def audit_since(gateway: Gateway, audit_max: int) -> list[dict[str, Any]]:
    async with gateway.runtime.engine.connect() as conn:
        result = await conn.execute(
            text("SELECT * FROM audit_events WHERE id > :m ORDER BY id"), {"m": audit_max}
        )
        return [dict(row) for row in result.mappings().all()]


def _untouched(rows: list[dict[str, Any]], key_id: str | None) -> list[dict[str, Any]]:
    """api_keys rows without the last_used_at of `key_id` (a real key may note its use)."""
    return [
        {k: v for k, v in row.items() if not (row["id"] == key_id and k == "last_used_at")}
        for row in rows
    ]


async def assert_unchanged(
    gateway: Gateway, before: Snapshot, *, status: int, used_key: str | None = None
) -> list[dict[str, Any]]:
    """Nothing but 'denied' audit rows of `status` appeared since `before`; returns those rows.

    `used_key` names a genuine key the requests were made with: only its last_used_at may move.
    """
    after = await snapshot(gateway)
    for table in STATE_TABLES:
        if table == "api_keys":
            assert _untouched(after.rows[table], used_key) == _untouched(
                before.rows[table], used_key
            ), "table api_keys changed"
            continue
        assert after.rows[table] == before.rows[table], f"table {table} changed"
    assert after.sandbox == before.sandbox, "the providers saw calls"
    assert after.stored == before.stored, "the blob store changed"
    assert after.breakers == before.breakers, "a circuit breaker changed"
    audit = await audit_since(gateway, before.audit_max)
    odd = [r for r in audit if r["outcome"] != "denied" or r["status_code"] != status]
    assert not odd, f"unexpected audit rows: {odd}"
    return audit


# --------------------------------------------------------------------------- error bodies


def assert_error(
    resp: httpx.Response, *, status: int, type_: str, code: str | None = None
) -> dict[str, Any]:
    """The gateway's one error shape: {"error": {message, type, code, param}}."""
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert list(body) == ["error"], body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"message", "type", "code", "param"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == type_, err
    if code is not None:
        assert err["code"] == code, err
    return err


def secret_parts(token: str) -> list[str]:
    """The token and those of its pieces long enough to identify it."""
    pieces = {token}
    for sep in (".", "_"):
        pieces |= {p for p in token.split(sep) if len(p) >= 16}
    return sorted(pieces)


def assert_absent(haystack: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in haystack, f"{where} contains a secret ({secret[:6]}...)"


# --------------------------------------------------------------------------- JWT


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hand_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWS computed by hand (jose refuses PEM and DER bytes as HMAC keys)."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{signature}"


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims the gateway accepts (admin included, so a bypass would be maximal)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "svc-forger",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 300,
        "tenant": "acme",
        "scope": "files:read files:write admin",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@dataclass(frozen=True)
class RsaKey:
    private_pem: str
    public_pem: str
    public_der: bytes
    public_jwk: dict[str, str] = field(default_factory=dict)


def _rsa_key() -> RsaKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    public_der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    numbers = public.public_numbers()
    jwk = {
        "kty": "RSA",
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }
    return RsaKey(private_pem, public_pem, public_der, jwk)


@pytest.fixture(scope="session")
def rsa_key() -> RsaKey:
    """The key pair the RS256 gateway trusts (it is given the public half only)."""
    return _rsa_key()


@pytest.fixture(scope="session")
def attacker_rsa_key() -> RsaKey:
    """A key pair the gateway has never heard of."""
    return _rsa_key()


@dataclass
class JwtGateway:
    """A gateway that accepts JWTs of one algorithm, and a signer of tokens it accepts."""

    gateway: Gateway
    algorithm: str
    sign: Callable[..., str]
    rsa: RsaKey


@asynccontextmanager
async def jwt_gateway_for(
    algorithm: str, settings: Settings, sandbox_url: str, rsa_pair: RsaKey
) -> AsyncIterator[JwtGateway]:
    signing_key = rsa_pair.private_pem if algorithm == "RS256" else HS256_SECRET
    settings = settings_with(
        settings,
        jwt_key=rsa_pair.public_pem if algorithm == "RS256" else HS256_SECRET,
        jwt_algorithm=algorithm,
        jwt_issuer=ISSUER,
        jwt_allow_admin=True,  # the control token is an admin of acme
    )

    def sign(token_claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return str(jwt.encode(token_claims, signing_key, algorithm=algorithm, headers=headers))

    async with started_gateway(settings, sandbox_url) as gw:
        yield JwtGateway(gateway=gw, algorithm=algorithm, sign=sign, rsa=rsa_pair)


@pytest.fixture(params=["RS256", "HS256"])
async def jwt_gateway(
    request: pytest.FixtureRequest, settings: Settings, sandbox_reset: str, rsa_key: RsaKey
) -> AsyncIterator[JwtGateway]:
    async with jwt_gateway_for(request.param, settings, sandbox_reset, rsa_key) as jg:
        yield jg

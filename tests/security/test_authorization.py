"""Scope escalation: a credential does only what its scopes allow, and a refusal changes nothing."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway
from tests.security.conftest import (
    Call,
    JwtGateway,
    World,
    anonymous,
    assert_error,
    assert_unchanged,
    claims,
    seed,
    snapshot,
)

WRITE_TEMPLATES = {
    ("POST", "/v1/files"),
    ("DELETE", "/v1/files/{file_id}"),
    ("POST", "/v1/files/{file_id}/providers"),
    ("POST", "/v1/uploads"),
    ("POST", "/v1/uploads/{upload_id}/parts"),
    ("POST", "/v1/uploads/{upload_id}/complete"),
    ("POST", "/v1/uploads/{upload_id}/cancel"),
    ("POST", "/v1/files/{file_id}/pin"),
    ("DELETE", "/v1/files/{file_id}/pin"),
}


def admin_calls(world: World) -> list[Call]:
    return [c for c in world.routes() if c.template.startswith("/admin")]


def write_calls(world: World) -> list[Call]:
    return [c for c in world.routes() if (c.method, c.template) in WRITE_TEMPLATES]


def read_calls(world: World) -> list[Call]:
    return [
        c
        for c in world.routes()
        if c.template.startswith("/v1") and (c.method, c.template) not in WRITE_TEMPLATES
    ]


async def assert_forbidden(
    world: World, headers: dict[str, str], calls: list[Call], *, actor: str
) -> None:
    """Each call answers 403 permission_denied; state is untouched; each refusal is audited."""
    gw = world.gateway
    before = await snapshot(gw)
    async with anonymous(gw, headers) as client:
        for call in calls:
            resp = await call.send(client)
            assert_error(resp, status=403, type_="permission_error", code="permission_denied")
    used = actor.removeprefix("key:") if actor.startswith("key:") else None
    audit = await assert_unchanged(gw, before, status=403, used_key=used)
    assert len(audit) == len(calls)
    assert {r["actor"] for r in audit} == {actor}
    assert sorted(r["action"] for r in audit) == sorted(f"{c.method} {c.template}" for c in calls)


async def assert_allowed(world: World, headers: dict[str, str], calls: list[Call]) -> None:
    """Control: the same credential is accepted where its scopes reach."""
    async with anonymous(world.gateway, headers) as client:
        for call in calls:
            resp = await call.send(client)
            assert resp.status_code == 200, (call.label, resp.text)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_write_only_key_cannot_read(gateway: Gateway) -> None:
    world = await seed(gateway)
    writer = await gateway.key("acme", ("files:write",))
    await assert_forbidden(
        world, bearer(writer), read_calls(world), actor=f"key:{writer.split('_')[1]}"
    )


# Scope claims that must grant files:read and nothing more.
READ_ONLY_SCOPES: list[object] = [
    "files:read",
    ["files:read"],
    "files:read files:read,admin",  # not whitespace-separated: one unknown scope
    "files:read Admin",
    "files:read ADMIN",
    "files:read admin:*",
    "files:read files:*",
    "files:read superuser",
    "files:read\tfiles:read",
]
# Claims beside the configured scope claim that must grant nothing.
FOREIGN_GRANTS: list[dict[str, object]] = [
    {"scopes": ["admin"]},
    {"scp": "admin files:write"},
    {"roles": ["admin"]},
    {"admin": True},
    {"permissions": ["files:write", "admin"]},
]


async def test_read_scoped_jwt_cannot_escalate(
    jwt_gateway: JwtGateway, subtests: pytest.Subtests
) -> None:
    world = await seed(jwt_gateway.gateway)
    for scope in READ_ONLY_SCOPES:
        with subtests.test(f"scope {scope!r}"):
            token = jwt_gateway.sign(claims(scope=scope, sub="svc-reader"))
            await assert_allowed(world, bearer(token), read_calls(world)[:2])
            await assert_forbidden(
                world,
                bearer(token),
                write_calls(world) + admin_calls(world),
                actor="jwt:svc-reader",
            )
    for extra in FOREIGN_GRANTS:
        with subtests.test(f"extra claims {extra!r}"):
            token = jwt_gateway.sign(claims(scope="files:read", sub="svc-reader", **extra))
            await assert_forbidden(
                world,
                bearer(token),
                write_calls(world) + admin_calls(world),
                actor="jwt:svc-reader",
            )


async def test_jwt_without_usable_scope_can_do_nothing(
    jwt_gateway: JwtGateway, subtests: pytest.Subtests
) -> None:
    world = await seed(jwt_gateway.gateway)
    scopes: list[object] = [None, "", "files:read,files:write,admin", "openid profile", []]
    for scope in scopes:
        with subtests.test(f"scope {scope!r}"):
            token = jwt_gateway.sign(claims(scope=scope, sub="svc-none"))
            await assert_forbidden(world, bearer(token), world.routes(), actor="jwt:svc-none")

"""Forged, stale and malformed credentials: refused on every route, and nothing changes.

Each forgery is sent to every /v1 and /admin operation (aimed at real ids, with bodies that
would change things) and must be answered 401 with WWW-Authenticate in the gateway's error
shape, without echoing the token; afterwards every table, the providers and the blob store
are exactly as before, and the only new rows are 'denied' audit events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from jose import jwt

from tests.conftest import Gateway
from tests.security.conftest import (
    ISSUER,
    Call,
    JwtGateway,
    RsaKey,
    World,
    anonymous,
    app_operations,
    assert_absent,
    assert_error,
    assert_unchanged,
    b64json,
    b64url,
    claims,
    every_route,
    hand_signed,
    secret_parts,
    seed,
    snapshot,
    unsigned,
)
from tests.support.clock import FakeClock


async def assert_refused_everywhere(world: World, token: str, reason: str | None = None) -> None:
    """`token` gets 401 on every route in either header, leaving only 'denied' audit rows."""
    gw = world.gateway
    secrets = secret_parts(token)
    before = await snapshot(gw)
    sent = 0
    attempts: list[tuple[Call, dict[str, str]]] = [
        (call, headers)
        for call in world.routes()
        for headers in ({"Authorization": f"Bearer {token}"}, {"X-API-Key": token})
    ]
    async with anonymous(gw) as client:
        for call, headers in attempts:
            resp = await call.send(client, headers=headers)
            sent += 1
            err = assert_error(resp, status=401, type_="authentication_error")
            assert resp.headers["www-authenticate"].startswith("Bearer"), call.label
            assert_absent(resp.text, secrets, f"the body of {call.label}")
            assert_absent(str(resp.headers), secrets, f"the headers of {call.label}")
            if reason is not None:
                assert reason in err["message"], (call.label, err["message"])
    audit = await assert_unchanged(gw, before, status=401)
    assert len(audit) == sent, f"{sent} refusals but {len(audit)} audit rows"
    assert {(r["actor"], r["tenant_id"]) for r in audit} == {("anonymous", None)}
    for row in audit:
        assert_absent(" ".join(str(v) for v in row.values()), secrets, "an audit row")


def test_every_route_is_covered(gateway: Gateway) -> None:
    """The route table above names every operation the app serves under /v1 and /admin."""
    calls = every_route(file_id="file-" + "A" * 24, key_id="a" * 12, job_id=1, tenant="t")
    assert {(c.method, c.template) for c in calls} == app_operations(gateway.app)


# --------------------------------------------------------------------------- JWTs


@dataclass(frozen=True)
class Forgery:
    name: str
    build: Callable[[JwtGateway, RsaKey], str]
    # Expected reason in the message, per configured algorithm (None: any 401).
    reasons: dict[str, str | None]


def _both(reason: str | None) -> dict[str, str | None]:
    return {"RS256": reason, "HS256": reason}


def _pem_hs256(jg: JwtGateway, _: RsaKey) -> str:
    return hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), jg.rsa.public_pem.encode())


def _pem_stripped_hs256(jg: JwtGateway, _: RsaKey) -> str:
    return hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), jg.rsa.public_pem.strip().encode())


def _der_hs256(jg: JwtGateway, _: RsaKey) -> str:
    return hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), jg.rsa.public_der)


def _tampered(jg: JwtGateway, _: RsaKey) -> str:
    """A genuine read-only token whose payload is swapped for an admin one."""
    header, _payload, signature = jg.sign(claims(scope="files:read")).split(".")
    return f"{header}.{b64json(claims())}.{signature}"


def _oversized(jg: JwtGateway, _: RsaKey) -> str:
    token = jg.sign(claims(padding="p" * 9000))
    assert len(token) > 8192
    return token


def _attacker_rs256(_: JwtGateway, attacker: RsaKey) -> str:
    return str(jwt.encode(claims(), attacker.private_pem, algorithm="RS256"))


def _embedded_jwk(_: JwtGateway, attacker: RsaKey) -> str:
    headers = {"jwk": attacker.public_jwk}
    return str(jwt.encode(claims(), attacker.private_pem, algorithm="RS256", headers=headers))


def _wrong_hs_secret(_: JwtGateway, __: RsaKey) -> str:
    return str(jwt.encode(claims(), "a-different-secret-of-enough-length-0123456789", "HS256"))


FORGERIES = [
    Forgery(
        "alg none, empty signature",
        lambda jg, a: unsigned({"alg": "none", "typ": "JWT"}, claims()),
        _both(None),
    ),
    Forgery(
        "alg none with a signature",
        lambda jg, a: unsigned({"alg": "none", "typ": "JWT"}, claims(), b64url(b"x" * 32)),
        _both("algorithm not allowed"),
    ),
    Forgery(
        "alg NONE",
        lambda jg, a: unsigned({"alg": "NONE"}, claims(), b64url(b"x" * 32)),
        _both("algorithm not allowed"),
    ),
    Forgery(
        "HS256 keyed with the RS256 public key (PEM)",
        _pem_hs256,
        {"RS256": "algorithm not allowed", "HS256": "invalid signature"},
    ),
    Forgery(
        "HS256 keyed with the RS256 public key (PEM, stripped)",
        _pem_stripped_hs256,
        {"RS256": "algorithm not allowed", "HS256": "invalid signature"},
    ),
    Forgery(
        "HS256 keyed with the RS256 public key (DER)",
        _der_hs256,
        {"RS256": "algorithm not allowed", "HS256": "invalid signature"},
    ),
    Forgery(
        "HS256 with another secret",
        _wrong_hs_secret,
        {"RS256": "algorithm not allowed", "HS256": "invalid signature"},
    ),
    Forgery(
        "RS256 by an unknown key",
        _attacker_rs256,
        {"RS256": "invalid signature", "HS256": "algorithm not allowed"},
    ),
    Forgery(
        "RS256 carrying its own jwk header",
        _embedded_jwk,
        {"RS256": "invalid signature", "HS256": "algorithm not allowed"},
    ),
    Forgery("payload swapped under a valid signature", _tampered, _both("invalid signature")),
    Forgery(
        "expired",
        lambda jg, a: jg.sign(claims(exp=int(time.time()) - 120)),
        _both("token expired"),
    ),
    Forgery(
        "not yet valid (nbf +10 min)",
        lambda jg, a: jg.sign(claims(nbf=int(time.time()) + 600)),
        _both("not yet valid"),
    ),
    Forgery("missing exp", lambda jg, a: jg.sign(claims(exp=None)), _both("missing exp claim")),
    Forgery(
        "wrong aud", lambda jg, a: jg.sign(claims(aud="someone-else")), _both("invalid audience")
    ),
    Forgery("missing aud", lambda jg, a: jg.sign(claims(aud=None)), _both("missing aud claim")),
    Forgery(
        "wrong iss",
        lambda jg, a: jg.sign(claims(iss="https://evil.example")),
        _both("invalid issuer"),
    ),
    Forgery("missing iss", lambda jg, a: jg.sign(claims(iss=None)), _both("missing iss claim")),
    Forgery("garbage", lambda jg, a: "garbage", _both(None)),
    Forgery("garbage in JWT shape", lambda jg, a: "eyJhbGci.eyJzdWIi.c2lnbmF0dXJl", _both(None)),
    Forgery("oversized (> 8 KiB)", _oversized, _both(None)),
    Forgery(
        "two parts (signature dropped)",
        lambda jg, a: jg.sign(claims()).rsplit(".", 1)[0],
        _both(None),
    ),
]


async def test_forged_jwts_change_nothing(
    jwt_gateway: JwtGateway, attacker_rsa_key: RsaKey, subtests: pytest.Subtests
) -> None:
    gw = jwt_gateway.gateway
    world = await seed(gw)
    # Control: a properly signed token is accepted (as an admin of acme), so the refusals
    # below are the forgeries' doing.
    async with gw.client(jwt_gateway.sign(claims())) as good:
        assert (await good.get("/v1/files")).status_code == 200
        assert (await good.get("/admin/keys")).status_code == 200
    for forgery in FORGERIES:
        with subtests.test(forgery.name):
            token = forgery.build(jwt_gateway, attacker_rsa_key)
            await assert_refused_everywhere(
                world, token, reason=forgery.reasons[jwt_gateway.algorithm]
            )
    # The gateway still serves the control token afterwards.
    async with gw.client(jwt_gateway.sign(claims())) as good:
        assert (await good.get(f"/v1/files/{world.file_id}")).status_code == 200


async def test_jwt_signed_for_another_issuer_config_is_refused(
    jwt_gateway: JwtGateway, subtests: pytest.Subtests
) -> None:
    """Right key, but claims naming the gateway's issuer as audience and vice versa."""
    world = await seed(jwt_gateway.gateway)
    swapped = jwt_gateway.sign(claims(aud=ISSUER, iss="filegate"))
    with subtests.test("aud and iss swapped"):
        await assert_refused_everywhere(world, swapped)
    listed = jwt_gateway.sign(claims(aud=["someone-else", "another"]))
    with subtests.test("aud list without the gateway"):
        await assert_refused_everywhere(world, listed, reason="invalid audience")


# --------------------------------------------------------------------------- API keys


async def test_forged_api_keys_change_nothing(
    gateway: Gateway, clock: FakeClock, subtests: pytest.Subtests
) -> None:
    world = await seed(gateway)
    # A key that expires in two seconds, made first: its life runs out once the cases are done.
    expires = clock.now() + timedelta(seconds=2)
    async with gateway.client(world.admin) as ops:
        created = await ops.post(
            "/admin/keys",
            json={"tenant": "acme", "name": "short-lived", "expires_at": expires.isoformat()},
        )
        assert created.status_code == 201, created.text
        short_lived = created.json()["key"]
        revoked = await gateway.key("acme", ("files:read", "files:write", "admin"))
        for token in (short_lived, revoked):
            async with gateway.client(token) as c:
                assert (await c.get("/v1/files")).status_code == 200  # control: works now
        resp = await ops.delete(f"/admin/keys/{revoked.split('_')[1]}")
        assert resp.status_code == 200 and resp.json()["revoked_at"]

    prefix = world.user[: world.user.rindex("_") + 1]
    user_secret = world.user.split("_", 2)[2]
    admin_secret = world.admin.split("_", 2)[2]
    cases = {
        "revoked": revoked,
        "wrong secret for a real key id": prefix + "A" * 43,
        "another key's secret under a real key id": prefix + admin_secret,
        "a real secret cut short": prefix + user_secret[:32],
        "a real secret with a character changed": prefix
        + user_secret[:-1]
        + ("B" if user_secret[-1] != "B" else "C"),
        "unknown key id": "fg_zzzzzzzzzzzz_" + user_secret,
        "unknown key id, well formed": "fg_abcdefabcdef_" + "x" * 43,
    }
    for name, token in cases.items():
        with subtests.test(name):
            await assert_refused_everywhere(world, token)

    clock.advance(2.3)
    gateway.runtime.identity.forget_keys()
    with subtests.test("expired"):
        await assert_refused_everywhere(world, short_lived)

    # The genuine keys still work: the refusals were about the forgeries.
    async with gateway.client(world.user) as c:
        assert (await c.get(f"/v1/files/{world.file_id}")).status_code == 200

"""JWT verification: pinned algorithms, key confusion, claims, shapes, scopes and configuration."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk
from jose import jwt as jose_jwt

from app.auth.jwt import (
    MAX_TOKEN_BYTES,
    JWTIdentity,
    JWTRejected,
    JWTVerifier,
    looks_like_jwt,
)
from app.auth.scopes import Scope

AUD = "filegate"
ISS = "https://idp.example.test/"
SECRET = "an-hs256-secret-that-is-long-enough-0123456789"
DROP = object()


@dataclass(frozen=True)
class RSAPair:
    private_pem: str
    public_pem: str
    public_der: bytes
    public_jwk: dict[str, Any]


def _pair(key: rsa.RSAPrivateKey) -> RSAPair:
    public = key.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return RSAPair(
        private_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        public_pem=public_pem,
        public_der=public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public_jwk=jwk.construct(public_pem, "RS256").to_dict(),
    )


@pytest.fixture(scope="module")
def rsa_a() -> RSAPair:
    return _pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def rsa_b() -> RSAPair:
    return _pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def claims(**changes: Any) -> dict[str, Any]:
    """A valid claim set; DROP removes a claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "user-1",
        "aud": AUD,
        "iss": ISS,
        "tenant": "acme",
        "scope": "files:read files:write",
        "exp": now + 300,
        "iat": now,
        "jti": "tok-1",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not DROP}


def hs256(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return str(jose_jwt.encode(payload, secret, algorithm="HS256", headers=headers or None))


def rs256(payload: dict[str, Any], pair: RSAPair, **headers: Any) -> str:
    return str(
        jose_jwt.encode(payload, pair.private_pem, algorithm="RS256", headers=headers or None)
    )


def hand_hmac(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """A token HMAC-SHA256-signed by hand (jose refuses some secrets an attacker would use)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def hs_verifier(**changes: Any) -> JWTVerifier:
    params: dict[str, Any] = {
        "algorithm": "HS256",
        "key": SECRET,
        "audience": AUD,
        "issuer": ISS,
    }
    params.update(changes)
    return JWTVerifier(**params)


def rs_verifier(key: str, **changes: Any) -> JWTVerifier:
    return hs_verifier(algorithm="RS256", key=key, **changes)


def reject(verifier: JWTVerifier, token: Any) -> str:
    """Assert `token` is refused with JWTRejected whose message never shows the token."""
    with pytest.raises(JWTRejected) as caught:
        verifier.verify(token)
    message = str(caught.value)
    assert message == caught.value.reason
    assert message and len(message) < 80
    if isinstance(token, str) and len(token) > 3:
        assert token not in message
        assert token not in repr(caught.value)
        for part in token.split("."):
            if len(part) > 8:
                assert part not in message
    return message


def write_jwks(path: Path, *keys: dict[str, Any]) -> str:
    path.write_text(json.dumps({"keys": list(keys)}))
    return str(path)


# --- valid tokens -------------------------------------------------------------------------------


def test_valid_hs256_token() -> None:
    payload = claims()
    identity = hs_verifier().verify(hs256(payload))
    assert identity == JWTIdentity(
        subject="user-1",
        tenant="acme",
        scopes=frozenset({"files:read", "files:write"}),
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        token_id="tok-1",
    )
    assert identity.expires_at.tzinfo is UTC


def test_valid_rs256_token_with_pem_text(rsa_a: RSAPair) -> None:
    identity = rs_verifier(rsa_a.public_pem).verify(rs256(claims(jti=DROP), rsa_a))
    assert identity.subject == "user-1"
    assert identity.tenant == "acme"
    assert identity.token_id is None


def test_valid_rs256_token_with_pem_path(rsa_a: RSAPair, tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    path.write_text(rsa_a.public_pem)
    assert rs_verifier(str(path)).verify(rs256(claims(), rsa_a)).subject == "user-1"


def test_valid_rs256_token_with_jwks_path_and_kid(
    rsa_a: RSAPair, rsa_b: RSAPair, tmp_path: Path
) -> None:
    key_file = write_jwks(
        tmp_path / "jwks.json",
        {**rsa_a.public_jwk, "kid": "a", "use": "sig"},
        {**rsa_b.public_jwk, "kid": "b"},
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AAAA", "y": "AAAA"},
    )
    verifier = rs_verifier(key_file)
    assert verifier.verify(rs256(claims(sub="by-a"), rsa_a, kid="a")).subject == "by-a"
    assert verifier.verify(rs256(claims(sub="by-b"), rsa_b, kid="b")).subject == "by-b"


def test_jwks_kid_rules(rsa_a: RSAPair, rsa_b: RSAPair, tmp_path: Path) -> None:
    verifier = rs_verifier(
        write_jwks(
            tmp_path / "jwks.json",
            {**rsa_a.public_jwk, "kid": "a"},
            {**rsa_b.public_jwk, "kid": "b"},
        )
    )
    assert reject(verifier, rs256(claims(), rsa_a)) == "missing key id"
    assert reject(verifier, rs256(claims(), rsa_a, kid="zzz")) == "unknown key id"
    assert reject(verifier, rs256(claims(), rsa_a, kid="b")) == "invalid signature"


def test_jwks_with_one_key_needs_no_kid(rsa_a: RSAPair, tmp_path: Path) -> None:
    named = rs_verifier(write_jwks(tmp_path / "named.json", {**rsa_a.public_jwk, "kid": "a"}))
    assert named.verify(rs256(claims(), rsa_a)).subject == "user-1"
    assert reject(named, rs256(claims(), rsa_a, kid="other")) == "unknown key id"
    unnamed = rs_verifier(write_jwks(tmp_path / "unnamed.json", rsa_a.public_jwk))
    assert unnamed.verify(rs256(claims(), rsa_a)).subject == "user-1"
    assert unnamed.verify(rs256(claims(), rsa_a, kid="any")).subject == "user-1"


def test_jwks_never_uses_symmetric_or_other_algorithm_keys(
    rsa_a: RSAPair, rsa_b: RSAPair, tmp_path: Path
) -> None:
    oct_secret = b"a-symmetric-secret-in-the-jwks-0123456789"
    verifier = rs_verifier(
        write_jwks(
            tmp_path / "jwks.json",
            {"kty": "oct", "kid": "sym", "k": b64(oct_secret), "alg": "HS256"},
            {**rsa_b.public_jwk, "kid": "rs512", "alg": "RS512"},
            {**rsa_b.public_jwk, "kid": "enc", "use": "enc"},
            {**rsa_a.public_jwk, "kid": "a"},
        )
    )
    payload = claims()
    forged_hs = hand_hmac({"alg": "HS256", "kid": "sym"}, payload, oct_secret)
    assert reject(verifier, forged_hs) == "algorithm not allowed"
    forged_rs = hand_hmac({"alg": "RS256", "kid": "sym"}, payload, oct_secret)
    assert reject(verifier, forged_rs) == "unknown key id"
    assert reject(verifier, rs256(payload, rsa_b, kid="rs512")) == "unknown key id"
    assert reject(verifier, rs256(payload, rsa_b, kid="enc")) == "unknown key id"
    assert verifier.verify(rs256(payload, rsa_a, kid="a")).subject == "user-1"


# --- algorithm pinning and key confusion ---------------------------------------------------------


def test_alg_none_is_refused(rsa_a: RSAPair) -> None:
    payload = claims()
    unsigned = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."
    garbage = f"{segment({'alg': 'none'})}.{segment(payload)}.{b64(b'garbage-signature')}"
    capital = f"{segment({'alg': 'None'})}.{segment(payload)}.{b64(b'x' * 32)}"
    no_alg = f"{segment({'typ': 'JWT'})}.{segment(payload)}.{b64(b'x' * 32)}"
    for verifier in (hs_verifier(), rs_verifier(rsa_a.public_pem)):
        assert reject(verifier, unsigned) == "malformed token"
        assert reject(verifier, garbage) == "algorithm not allowed"
        assert reject(verifier, capital) == "algorithm not allowed"
        assert reject(verifier, no_alg) == "algorithm not allowed"


def test_hs256_signed_with_the_rs256_public_key_is_refused(rsa_a: RSAPair, tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    path.write_text(rsa_a.public_pem)
    jwks = write_jwks(tmp_path / "jwks.json", {**rsa_a.public_jwk, "kid": "a"})
    payload = claims()
    secrets = (
        rsa_a.public_pem.encode(),
        rsa_a.public_pem.strip().encode(),
        rsa_a.public_der,
        b64(rsa_a.public_der).encode(),
    )
    for key in (rsa_a.public_pem, str(path), jwks):
        verifier = rs_verifier(key)
        for secret in secrets:
            as_hs = hand_hmac({"alg": "HS256", "typ": "JWT", "kid": "a"}, payload, secret)
            assert reject(verifier, as_hs) == "algorithm not allowed"
            # The same MAC under a header that lies about the algorithm fails as a signature.
            as_rs = hand_hmac({"alg": "RS256", "typ": "JWT", "kid": "a"}, payload, secret)
            assert reject(verifier, as_rs) == "invalid signature"


def test_rs256_token_is_refused_when_hs256_is_configured(rsa_a: RSAPair) -> None:
    assert reject(hs_verifier(), rs256(claims(), rsa_a)) == "algorithm not allowed"


def test_other_hmac_algorithms_and_wrong_secret_are_refused() -> None:
    payload = claims()
    hs512 = str(jose_jwt.encode(payload, SECRET, algorithm="HS512"))
    assert reject(hs_verifier(), hs512) == "algorithm not allowed"
    assert reject(hs_verifier(), hs256(payload, secret=SECRET + "x")) == "invalid signature"


def test_decode_is_always_given_the_configured_algorithm_only(
    rsa_a: RSAPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    real_decode: Callable[..., Any] = jose_jwt.decode

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("algorithms"))
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jose_jwt, "decode", spy)
    hs_verifier().verify(hs256(claims()))
    rs_verifier(rsa_a.public_pem).verify(rs256(claims(), rsa_a))
    assert seen == [["HS256"], ["RS256"]]


def test_critical_header_is_refused() -> None:
    token = hs256(claims(), crit=["b64"], b64=False)
    assert reject(hs_verifier(), token) == "unsupported critical header"


# --- time claims ---------------------------------------------------------------------------------


def test_expired_token() -> None:
    now = int(time.time())
    assert reject(hs_verifier(), hs256(claims(exp=now - 3600))) == "token expired"


def test_expiry_leeway() -> None:
    now = int(time.time())
    recently = hs256(claims(exp=now - 10, iat=now - 100))
    assert hs_verifier(leeway=30).verify(recently).subject == "user-1"
    assert reject(hs_verifier(leeway=0), recently) == "token expired"
    beyond = hs256(claims(exp=now - 60, iat=now - 100))
    assert reject(hs_verifier(leeway=30), beyond) == "token expired"


def test_not_before() -> None:
    now = int(time.time())
    assert reject(hs_verifier(), hs256(claims(nbf=now + 120))) == "token not yet valid"
    assert hs_verifier(leeway=30).verify(hs256(claims(nbf=now + 10))).subject == "user-1"
    assert reject(hs_verifier(leeway=0), hs256(claims(nbf=now + 10))) == "token not yet valid"
    assert hs_verifier().verify(hs256(claims(nbf=now - 10))).subject == "user-1"


def test_issued_in_the_future() -> None:
    now = int(time.time())
    assert reject(hs_verifier(), hs256(claims(iat=now + 120))) == "token issued in the future"
    assert hs_verifier(leeway=30).verify(hs256(claims(iat=now + 10))).subject == "user-1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", str(int(time.time()) + 300)),
        ("exp", True),
        ("exp", [1]),
        ("exp", None),
        ("exp", 1e300),
        ("exp", float("inf")),
        ("nbf", "soon"),
        ("iat", {"at": 1}),
    ],
)
def test_malformed_time_claims(name: str, value: Any) -> None:
    reject(hs_verifier(), hs256(claims(**{name: value})))


# --- required and application claims ------------------------------------------------------------


@pytest.mark.parametrize("name", ["exp", "sub", "aud", "iss"])
def test_missing_registered_claim(name: str) -> None:
    assert reject(hs_verifier(), hs256(claims(**{name: DROP}))) == f"missing {name} claim"


def test_wrong_audience_and_issuer() -> None:
    verifier = hs_verifier()
    assert reject(verifier, hs256(claims(aud="someone-else"))) == "invalid audience"
    assert reject(verifier, hs256(claims(aud=["a", "b"]))) == "invalid audience"
    assert reject(verifier, hs256(claims(aud=[]))) == "invalid audience"
    assert reject(verifier, hs256(claims(aud=7))) == "invalid audience"
    assert verifier.verify(hs256(claims(aud=["other", AUD]))).subject == "user-1"
    assert reject(verifier, hs256(claims(iss="https://evil.example/"))) == "invalid issuer"
    assert reject(verifier, hs256(claims(iss=ISS.rstrip("/")))) == "invalid issuer"


@pytest.mark.parametrize("value", ["", "   ", 5, ["user"]])
def test_invalid_subject(value: Any) -> None:
    assert reject(hs_verifier(), hs256(claims(sub=value))) == "invalid subject"


def test_tenant_claim() -> None:
    verifier = hs_verifier()
    assert reject(verifier, hs256(claims(tenant=DROP))) == "missing tenant claim"
    assert reject(verifier, hs256(claims(tenant=None))) == "missing tenant claim"
    for value in ("", "  ", 42, ["acme"], {"id": "acme"}):
        assert reject(verifier, hs256(claims(tenant=value))) == "invalid tenant claim"


def test_payload_that_is_not_an_object() -> None:
    token = str(jose_jwt.encode({"a": 1}, SECRET, algorithm="HS256"))
    head, _, _ = token.split(".")
    for body in ([1, 2], "text", 12):
        signing_input = f"{head}.{segment(body)}"
        signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        assert reject(hs_verifier(), f"{signing_input}.{b64(signature)}") == "malformed token"


def test_unrequested_at_hash_is_refused() -> None:
    assert reject(hs_verifier(), hs256(claims(at_hash="abc"))) == "invalid claims"


# --- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "not a jwt at all",
        "fg_abcdefghijkl_" + "s" * 40,
        "aaaa.bbbb",
        "aaaa.bbbb.cccc.dddd",
        "aaaa..cccc",
        ".bbbb.cccc",
        "aaaa.bbbb.",
        "aaaa.bb+b.cccc",
        "aaaa.bb/b.cccc",
        "aaaa.bbbb.cc=c",
        "aaaa.bbbb.cccc ",
        " aaaa.bbbb.cccc",
        "aaaa.bbbb.cccc\n",
        "aaaa.bébé.cccc",
        "a.bbbb.cccc",
        "aaaa.bbbb.cccc",
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert reject(hs_verifier(), token) == "malformed token"


def test_right_shape_with_a_bogus_signature() -> None:
    assert reject(hs_verifier(), "eyJhbGciOiJIUzI1NiJ9.e30.abcd") == "invalid signature"


def test_bad_json_headers() -> None:
    verifier = hs_verifier()
    body, sig = segment(claims()), b64(b"s" * 32)
    for header in (b"not json", b"[1, 2]", b'"HS256"', b"[" * 2000 + b"]" * 2000):
        token = f"{b64(header)}.{body}.{sig}"
        assert len(token) <= MAX_TOKEN_BYTES
        assert reject(verifier, token) == "malformed token"
    assert reject(verifier, f"{segment({'alg': 'HS256', 'kid': 7})}.{body}.{sig}") == (
        "malformed token"
    )


def test_non_string_tokens() -> None:
    for value in (None, b"aaaa.bbbb.cccc", 12, ["a"]):
        assert reject(hs_verifier(), value) == "malformed token"


def test_oversized_tokens() -> None:
    verifier = hs_verifier()
    big = hs256(claims(padding="x" * MAX_TOKEN_BYTES))
    assert len(big) > MAX_TOKEN_BYTES
    assert reject(verifier, big) == "token too large"
    assert reject(verifier, "a" * 10_000 + ".b.c") == "token too large"
    # Just under the limit is still parsed (and verified normally).
    fits = hs256(claims(padding="x" * 5000))
    assert len(fits) <= MAX_TOKEN_BYTES
    assert verifier.verify(fits).subject == "user-1"


def test_looks_like_jwt(rsa_a: RSAPair) -> None:
    assert looks_like_jwt(hs256(claims()))
    assert looks_like_jwt(rs256(claims(), rsa_a))
    assert looks_like_jwt("aaaa.bbbb.cccc")
    assert not looks_like_jwt("fg_abcdefghijkl_" + "A" * 43)
    assert not looks_like_jwt("fg_abc.def.ghi_x")
    assert not looks_like_jwt("aaaa.bbbb")
    assert not looks_like_jwt("aaaa.bbbb.cccc.dddd")
    assert not looks_like_jwt("aaaa.bbbb.")
    assert not looks_like_jwt("")
    assert not looks_like_jwt("aaaa.bb b.cccc")
    assert not looks_like_jwt("a" * MAX_TOKEN_BYTES + ".b.c")
    assert not looks_like_jwt(None)  # type: ignore[arg-type]


# --- scopes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("files:read", {"files:read"}),
        ("files:read  files:write\tadmin", {"files:read", "files:write", "admin"}),
        ("openid profile files:read email", {"files:read"}),
        (["files:write", "admin"], {"files:write", "admin"}),
        (["files:read", "unknown", "files:read files:write"], {"files:read"}),
        ("", set()),
        ([], set()),
        (DROP, set()),
        ("FILES:READ Admin", set()),
    ],
)
def test_scope_parsing(raw: Any, expected: set[str]) -> None:
    identity = hs_verifier(allow_admin=True).verify(hs256(claims(scope=raw)))
    assert identity.scopes == frozenset(expected)
    assert isinstance(identity.scopes, frozenset)


@pytest.mark.parametrize("raw", [42, {"files:read": True}, ["files:read", 3], True])
def test_invalid_scope_claim(raw: Any) -> None:
    assert reject(hs_verifier(), hs256(claims(scope=raw))) == "invalid scope claim"


def test_custom_claim_names() -> None:
    verifier = hs_verifier(tenant_claim="org_id", scope_claim="scp")
    payload = claims(tenant=DROP, scope="admin", org_id="org-9", scp=["files:read", "x"])
    identity = verifier.verify(hs256(payload))
    assert identity.tenant == "org-9"
    assert identity.scopes == frozenset({"files:read"})
    assert reject(verifier, hs256(claims(scp="admin"))) == "missing org_id claim"
    bad_scope = claims(org_id="org-9", scp=7)
    assert reject(verifier, hs256(bad_scope)) == "invalid scp claim"


def test_every_scope_a_key_can_hold_is_accepted_from_a_jwt() -> None:
    verifier = hs_verifier(allow_admin=True)
    identity = verifier.verify(hs256(claims(scope=" ".join(Scope))))
    assert identity.scopes == frozenset(Scope)


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["none", "HS512", "RS512", "ES256", "hs256", ""])
def test_unknown_algorithm(algorithm: str) -> None:
    with pytest.raises(ValueError, match="jwt_algorithm"):
        hs_verifier(algorithm=algorithm)


def test_short_hs256_secret() -> None:
    short = "s" * 31
    with pytest.raises(ValueError, match="at least 32 bytes") as caught:
        hs_verifier(key=short)
    assert short not in str(caught.value)
    assert hs_verifier(key="é" * 16).algorithm == "HS256"  # 32 bytes in UTF-8


def test_hs256_secret_that_is_a_pem_key(rsa_a: RSAPair) -> None:
    with pytest.raises(ValueError, match="must not be a PEM") as caught:
        hs_verifier(key=rsa_a.public_pem)
    assert "BEGIN" not in str(caught.value)


@pytest.mark.parametrize("leeway", [31, 3600, -1, 1.5, True])
def test_leeway_bounds(leeway: Any) -> None:
    with pytest.raises(ValueError, match="jwt_leeway_seconds"):
        hs_verifier(leeway=leeway)


def test_leeway_edges() -> None:
    assert hs_verifier(leeway=0).algorithm == "HS256"
    assert hs_verifier(leeway=30).algorithm == "HS256"


@pytest.mark.parametrize(
    ("field", "setting"),
    [
        ("audience", "jwt_audience"),
        ("issuer", "jwt_issuer"),
        ("tenant_claim", "jwt_tenant_claim"),
        ("scope_claim", "jwt_scope_claim"),
        ("key", "jwt_key"),
    ],
)
def test_empty_settings(field: str, setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        hs_verifier(**{field: ""})


def test_unreadable_rs256_keys(tmp_path: Path) -> None:
    junk_pem = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ValueError, match="unreadable RS256 PEM"):
        rs_verifier(junk_pem)
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ValueError, match="not a readable file") as caught:
        rs_verifier(missing)
    assert missing not in str(caught.value)
    with pytest.raises(ValueError, match="not a readable file"):
        rs_verifier(str(tmp_path))  # a directory
    (tmp_path / "junk.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a PEM key nor a JWKS"):
        rs_verifier(str(tmp_path / "junk.txt"))
    (tmp_path / "junk.pem").write_text(junk_pem)
    with pytest.raises(ValueError, match="unreadable RS256 PEM"):
        rs_verifier(str(tmp_path / "junk.pem"))
    (tmp_path / "binary.der").write_bytes(b"\x30\x82\xff\xfe")
    with pytest.raises(ValueError, match="not PEM or JWKS text"):
        rs_verifier(str(tmp_path / "binary.der"))


def test_rs256_key_must_be_a_public_rsa_key(rsa_a: RSAPair, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be a public key"):
        rs_verifier(rsa_a.private_pem)
    (tmp_path / "private.pem").write_text(rsa_a.private_pem)
    with pytest.raises(ValueError, match="must be a public key"):
        rs_verifier(str(tmp_path / "private.pem"))
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="not an RSA public key"):
        rs_verifier(ec_pem)
    small = _pair(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    with pytest.raises(ValueError, match="at least 2048 bits"):
        rs_verifier(small.public_pem)


def test_invalid_jwks_files(rsa_a: RSAPair, rsa_b: RSAPair, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    cases: list[tuple[str, str]] = [
        ("{not json", "not valid JSON"),
        (json.dumps({"keys": "nope"}), "'keys' list"),
        (json.dumps({"keys": []}), "no RSA public key"),
        (json.dumps({"keys": [{"kty": "oct", "k": b64(b"k" * 40)}]}), "no RSA public key"),
        (json.dumps({"keys": ["x"]}), "not an object"),
        (json.dumps({"keys": [{"kty": "RSA", "n": 5, "e": "AQAB"}]}), "'n' and 'e'"),
        (json.dumps({"keys": [{"kty": "RSA", "n": "!!!", "e": "AQAB"}]}), "not a readable"),
        (json.dumps({"keys": [{**rsa_a.public_jwk, "d": "AQAB"}]}), "private key material"),
        (json.dumps({"keys": [{**rsa_a.public_jwk, "kid": 3}]}), "kid"),
        (
            json.dumps(
                {"keys": [{**rsa_a.public_jwk, "kid": "x"}, {**rsa_b.public_jwk, "kid": "x"}]}
            ),
            "two keys with kid",
        ),
        (
            json.dumps({"keys": [{**rsa_a.public_jwk, "kid": "a"}, rsa_b.public_jwk]}),
            "needs a kid",
        ),
    ]
    for text, problem in cases:
        path.write_text(text)
        with pytest.raises(ValueError, match=problem):
            rs_verifier(str(path))


def test_repr_hides_the_secret() -> None:
    assert SECRET not in repr(hs_verifier())


# --- what a token may claim ----------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["admin", "files:read admin", ["admin"]])
def test_admin_scope_is_refused_unless_allowed(scope: Any) -> None:
    token = hs256(claims(scope=scope))
    assert reject(hs_verifier(), token) == "the admin scope is not accepted in JWTs"
    assert "admin" in hs_verifier(allow_admin=True).verify(token).scopes


def test_maximum_lifetime() -> None:
    verifier = hs_verifier(max_lifetime=3600)
    now = int(time.time())
    assert verifier.verify(hs256(claims(iat=now, exp=now + 3600))).subject == "user-1"
    far = claims(iat=now, exp=253402300799)  # the year 9999
    assert reject(verifier, hs256(far)) == "token lifetime exceeds 3600 seconds"
    assert reject(verifier, hs256(claims(iat=DROP))).startswith("missing iat claim")
    assert hs_verifier().verify(hs256(far)).subject == "user-1"


@pytest.mark.parametrize(
    ("tenant", "expected"),
    [
        ("a" * 100, "a" * 100),
        ("caf\u0065\u0301", "caf\u00e9"),  # one normal form: NFC
        ("team-1_ops.eu@corp:x+y", "team-1_ops.eu@corp:x+y"),
    ],
)
def test_tenant_claim_is_kept_exactly_in_nfc(tenant: str, expected: str) -> None:
    assert hs_verifier().verify(hs256(claims(tenant=tenant))).tenant == expected


@pytest.mark.parametrize(
    "tenant",
    [
        "a" * 101,  # would have been cut to the column before
        "alpha\u200b",  # zero width space
        "\u202ealpha",  # bidi override
        "\uff41\uff4c\uff50\uff48\uff41",  # full-width letters
        " alpha",
        "alpha ",
        "al pha",
        "evil\x00",
        "tab\there",
        "\ue000x",  # private use
    ],
)
def test_look_alike_or_overlong_tenant_is_refused(tenant: str) -> None:
    assert reject(hs_verifier(), hs256(claims(tenant=tenant))).startswith("invalid tenant claim:")


@pytest.mark.parametrize("sub", ["s" * 59, "user\x00", "user\u200b", " user"])
def test_overlong_or_hidden_subject_is_refused(sub: str) -> None:
    assert reject(hs_verifier(), hs256(claims(sub=sub))) != ""
    with pytest.raises(JWTRejected):
        hs_verifier().verify(hs256(claims(sub=sub)))

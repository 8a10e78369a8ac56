"""JWT bearer-token verification through python-jose, with the algorithm pinned by configuration."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

from app.auth.scopes import Scope
from app.core.config import ConfigError
from app.core.names import NameRefused
from app.core.names import subject as valid_subject
from app.core.names import tenant_name as valid_tenant_name

if TYPE_CHECKING:
    from app.core.config import Settings

ALGORITHMS: Final = ("HS256", "RS256")
MAX_TOKEN_BYTES: Final = 8192
MAX_LEEWAY_SECONDS: Final = 30
MIN_HS256_SECRET_BYTES: Final = 32
MIN_RSA_KEY_BITS: Final = 2048
MAX_KEY_FILE_BYTES: Final = 1024 * 1024

_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MISSING_CLAIM: Final = re.compile(r'missing required key "(exp|aud|iss|sub)"')
_PRIVATE_JWK_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth")
# Errors jose (or json/base64 beneath it) lets escape on malformed input.
_MALFORMED_INPUT: Final = (ValueError, TypeError, KeyError, ArithmeticError, RecursionError)
_OPTIONS: Final[Mapping[str, bool]] = {
    "verify_signature": True,
    "verify_aud": True,
    "verify_iat": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "verify_at_hash": True,
    "require_exp": True,
    "require_aud": True,
    "require_iss": True,
    "require_sub": True,
}


class JWTRejected(Exception):
    """A token failed verification; `reason` is short, fixed text that never includes the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class JWTIdentity:
    """The verified caller behind a JWT."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    expires_at: datetime
    token_id: str | None


def looks_like_jwt(token: str) -> bool:
    """Whether `token` has the shape of a compact JWS (an API key `fg_..._...` has no dots)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        return False
    if _COMPACT_JWS.fullmatch(token) is None:
        return False
    # A base64url segment can never be 1 mod 4 characters long.
    return all(len(part) % 4 != 1 for part in token.split("."))


class JWTVerifier:
    """Verifies HS256 or RS256 JWTs against one configured algorithm, key, audience and issuer."""

    def __init__(
        self,
        *,
        algorithm: str,
        key: str,
        audience: str,
        issuer: str,
        tenant_claim: str = "tenant",
        scope_claim: str = "scope",
        leeway: int = 30,
        allow_admin: bool = False,
        max_lifetime: int | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"jwt_algorithm must be one of {', '.join(ALGORITHMS)}")
        if isinstance(leeway, bool) or not isinstance(leeway, int):
            raise ValueError("jwt_leeway_seconds must be an integer")
        if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
            raise ValueError(f"jwt_leeway_seconds must be between 0 and {MAX_LEEWAY_SECONDS}")
        for name, value in (
            ("jwt_audience", audience),
            ("jwt_issuer", issuer),
            ("jwt_tenant_claim", tenant_claim),
            ("jwt_scope_claim", scope_claim),
        ):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string")
        if not isinstance(key, str) or not key.strip():
            raise ValueError("jwt_key must be a non-empty string")

        self._algorithm = algorithm
        self._audience = audience
        self._issuer = issuer
        self._tenant_claim = tenant_claim
        self._scope_claim = scope_claim
        self._leeway = leeway
        self._allow_admin = allow_admin
        self._max_lifetime = max_lifetime
        self._options: dict[str, Any] = {**_OPTIONS, "leeway": leeway}
        # Keys are prepared jose Key objects, so jose never re-parses key text per token.
        self._by_kid: dict[str, Any] | None = None
        self._default_key: Any = None
        if algorithm == "HS256":
            self._default_key = _hs256_key(key)
        else:
            self._default_key, self._by_kid = _rs256_keys(key)

    @property
    def algorithm(self) -> str:
        """The one algorithm tokens must be signed with."""
        return self._algorithm

    def __repr__(self) -> str:
        keys = "single" if self._by_kid is None else "jwks"
        return (
            f"JWTVerifier(algorithm={self._algorithm!r}, keys={keys!r}, "
            f"audience={self._audience!r}, issuer={self._issuer!r})"
        )

    def verify(self, token: str) -> JWTIdentity:
        """The identity in `token`, or JWTRejected with a reason safe to show the caller."""
        if not isinstance(token, str):
            raise JWTRejected("malformed token")
        if len(token) > MAX_TOKEN_BYTES:
            raise JWTRejected("token too large")
        if not looks_like_jwt(token):
            raise JWTRejected("malformed token")
        try:
            header = jwt.get_unverified_header(token)
            key = self._key_for(header)
            claims = jwt.decode(
                token,
                key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options=dict(self._options),
            )
        except ExpiredSignatureError:
            raise JWTRejected("token expired") from None
        except JWTClaimsError as exc:
            raise JWTRejected(_claims_reason(str(exc))) from None
        except JOSEError as exc:
            raise JWTRejected(_jose_reason(str(exc))) from None
        except _MALFORMED_INPUT:
            raise JWTRejected("malformed token") from None
        if not isinstance(claims, Mapping):
            raise JWTRejected("malformed token")
        return self._identity(claims)

    def _key_for(self, header: Any) -> Any:
        """The configured key for a token header, after pinning its alg to the configured one."""
        if not isinstance(header, Mapping):
            raise JWTRejected("malformed token")
        if header.get("alg") != self._algorithm:
            raise JWTRejected("algorithm not allowed")
        if "crit" in header:
            raise JWTRejected("unsupported critical header")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JWTRejected("malformed token")
        if self._by_kid is None:
            return self._default_key
        if kid is None:
            if self._default_key is None:
                raise JWTRejected("missing key id")
            return self._default_key
        key = self._by_kid.get(kid)
        if key is None and not self._by_kid:
            key = self._default_key  # the JWKS holds one key, and it names no kid
        if key is None:
            raise JWTRejected("unknown key id")
        return key

    def _identity(self, claims: Mapping[str, Any]) -> JWTIdentity:
        """Check the claims jose leaves loose and build the identity."""
        exp = _numeric_date(claims, "exp")
        _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        if iat is not None and iat > time.time() + self._leeway:
            raise JWTRejected("token issued in the future")
        if exp is None:
            raise JWTRejected("missing exp claim")
        try:
            expires_at = datetime.fromtimestamp(exp, UTC)
        except (ValueError, OverflowError, OSError):
            raise JWTRejected("invalid exp claim") from None

        try:
            subject = valid_subject(claims.get("sub"))
        except NameRefused as exc:
            raise JWTRejected(str(exc)) from None

        raw_tenant = claims.get(self._tenant_claim)
        if raw_tenant is None:
            raise JWTRejected(f"missing {self._tenant_claim} claim")
        if not isinstance(raw_tenant, str) or not raw_tenant.strip():
            raise JWTRejected(f"invalid {self._tenant_claim} claim")
        try:
            tenant = valid_tenant_name(raw_tenant)
        except NameRefused as exc:
            raise JWTRejected(f"invalid {self._tenant_claim} claim: {exc}") from None

        if self._max_lifetime is not None:
            if iat is None:
                raise JWTRejected("missing iat claim (a maximum token lifetime is configured)")
            if exp - iat > self._max_lifetime:
                raise JWTRejected(f"token lifetime exceeds {self._max_lifetime} seconds")
        scopes = self._scopes(claims.get(self._scope_claim))
        if Scope.ADMIN in scopes and not self._allow_admin:
            raise JWTRejected("the admin scope is not accepted in JWTs")

        jti = claims.get("jti")
        return JWTIdentity(
            subject=subject,
            tenant=tenant,
            scopes=scopes,
            expires_at=expires_at,
            token_id=jti if isinstance(jti, str) and jti else None,
        )

    def _scopes(self, raw: Any) -> frozenset[str]:
        """Known scopes from a space-separated string or a list of strings; others are dropped."""
        if raw is None:
            return frozenset()
        if isinstance(raw, str):
            names = raw.split()
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            names = raw
        else:
            raise JWTRejected(f"invalid {self._scope_claim} claim")
        return frozenset(names) & frozenset(Scope)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as a finite number, None when absent."""
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JWTRejected(f"invalid {name} claim")
    return float(value)


def _claims_reason(message: str) -> str:
    """A short reason for a jose JWTClaimsError."""
    if message in ("Invalid audience", "Invalid claim format in token"):
        return "invalid audience"
    if message == "Invalid issuer":
        return "invalid issuer"
    if "not yet valid" in message:
        return "token not yet valid"
    for name in ("exp", "nbf", "iat"):
        if f"({name})" in message:
            return f"invalid {name} claim"
    if message.startswith("Subject"):
        return "invalid subject"
    return "invalid claims"


def _jose_reason(message: str) -> str:
    """A short reason for any other jose error."""
    missing = _MISSING_CLAIM.search(message)
    if missing is not None:
        return f"missing {missing.group(1)} claim"
    if "Signature verification failed" in message:
        return "invalid signature"
    if "alg value is not allowed" in message or "unsupported algorithm" in message:
        return "algorithm not allowed"
    return "malformed token"


def _hs256_key(secret: str) -> Any:
    """A jose HMAC key for an HS256 secret of at least 32 bytes (never echoed in errors)."""
    if len(secret.encode("utf-8")) < MIN_HS256_SECRET_BYTES:
        raise ValueError(
            f"jwt_key: an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
        )
    try:
        return jwk.construct(secret, "HS256")
    except JOSEError:
        raise ValueError("jwt_key: an HS256 secret must not be a PEM or SSH key") from None


def _rs256_keys(key: str) -> tuple[Any, dict[str, Any] | None]:
    """The RS256 default key and, for a JWKS, keys by kid: from PEM text, a PEM file or a JWKS."""
    text = key.strip()
    if text.startswith("-----BEGIN"):
        return _pem_key(text), None
    content = _read_key_file(text)
    if content.lstrip().startswith("{"):
        return _jwks_keys(content)
    if "-----BEGIN" in content:
        return _pem_key(content.strip()), None
    raise ValueError("jwt_key: the RS256 key file holds neither a PEM key nor a JWKS")


def _read_key_file(path_text: str) -> str:
    """The text of an RS256 key file (the path is not echoed: it may be a misplaced secret)."""
    if "\n" in path_text or "\x00" in path_text:
        raise ValueError("jwt_key: an RS256 key must be PEM text or the path of a PEM or JWKS file")
    try:
        with Path(path_text).expanduser().open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"jwt_key: RS256 key is not PEM text and not a readable file ({reason})"
        ) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError("jwt_key: the RS256 key file is larger than 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("jwt_key: the RS256 key file is not PEM or JWKS text") from None


def _pem_key(pem: str) -> Any:
    """A jose RSA key for PEM text that must hold an RSA public key (or certificate)."""
    if "PRIVATE KEY" in pem:
        raise ValueError("jwt_key: the RS256 key must be a public key, not a private key")
    try:
        key = jwk.construct(pem, "RS256")
    except (JOSEError, *_MALFORMED_INPUT):
        raise ValueError("jwt_key: unreadable RS256 PEM key") from None
    _check_rsa_public(key, "jwt_key")
    return key


def _jwks_keys(content: str) -> tuple[Any, dict[str, Any]]:
    """RS256 keys from JWKS text: RSA public signing keys only; oct, EC and others are ignored."""
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        raise ValueError("jwt_key: the JWKS file is not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("jwt_key: the JWKS file must be an object with a 'keys' list")
    by_kid: dict[str, Any] = {}
    unnamed: list[Any] = []
    for index, entry in enumerate(document["keys"]):
        where = f"jwt_key: JWKS key #{index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        if entry.get("kty") != "RSA":
            continue  # never a symmetric (oct) key, nor EC/OKP keys, for RS256
        if entry.get("alg", "RS256") != "RS256" or entry.get("use", "sig") != "sig":
            continue
        ops = entry.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        if any(member in entry for member in _PRIVATE_JWK_MEMBERS):
            raise ValueError(f"{where} holds private key material; publish public keys only")
        n, e = entry.get("n"), entry.get("e")
        if not isinstance(n, str) or not isinstance(e, str):
            raise ValueError(f"{where} lacks the RSA members 'n' and 'e'")
        try:
            key = jwk.construct({"kty": "RSA", "n": n, "e": e}, "RS256")
        except (JOSEError, *_MALFORMED_INPUT):
            raise ValueError(f"{where} is not a readable RSA public key") from None
        _check_rsa_public(key, where)
        kid = entry.get("kid")
        if kid is None:
            unnamed.append(key)
        elif not isinstance(kid, str) or not kid:
            raise ValueError(f"{where} has a kid that is not a non-empty string")
        elif kid in by_kid:
            raise ValueError(f"jwt_key: the JWKS has two keys with kid {kid!r}")
        else:
            by_kid[kid] = key
    usable = [*by_kid.values(), *unnamed]
    if not usable:
        raise ValueError("jwt_key: the JWKS has no RSA public key usable with RS256")
    if len(usable) > 1 and unnamed:
        raise ValueError("jwt_key: every key of a JWKS with several keys needs a kid")
    return (usable[0] if len(usable) == 1 else None), by_kid


def _check_rsa_public(key: Any, where: str) -> None:
    """Refuse private, non-RSA and short RSA keys."""
    prepared = getattr(key, "prepared_key", None)
    if isinstance(prepared, RSAPrivateKey):
        raise ValueError(f"{where}: the RS256 key must be a public key, not a private key")
    if not isinstance(prepared, RSAPublicKey):
        raise ValueError(f"{where}: the RS256 key is not an RSA public key")
    if prepared.key_size < MIN_RSA_KEY_BITS:
        raise ValueError(f"{where}: the RSA key must be at least {MIN_RSA_KEY_BITS} bits")


def verifier_from_settings(settings: Settings) -> JWTVerifier | None:
    """The JWT verifier when FILEGATE_JWT_KEY is set; a bad key fails start-up with its name."""
    if settings.jwt_key is None:
        return None
    try:
        return JWTVerifier(
            algorithm=settings.jwt_algorithm,
            key=settings.jwt_key.get_secret_value(),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer or "",
            tenant_claim=settings.jwt_tenant_claim,
            scope_claim=settings.jwt_scope_claim,
            leeway=settings.jwt_leeway_seconds,
            allow_admin=settings.jwt_allow_admin,
            max_lifetime=settings.jwt_max_lifetime_seconds,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid configuration:\n  FILEGATE_JWT_KEY: {exc}") from None

"""API-key format, generation and verification (only an HMAC-SHA256 of the secret is stored)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "fg"
_KEY_RE = re.compile(r"^fg_([a-z0-9]{12})_([A-Za-z0-9_-]{32,64})$")


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str


@dataclass(frozen=True)
class NewKey:
    key_id: str
    token: str
    secret_hash: str


def hash_secret(secret: str, *, hmac_key: bytes) -> str:
    return hmac.new(hmac_key, secret.encode(), hashlib.sha256).hexdigest()


def generate_key(*, hmac_key: bytes) -> NewKey:
    """A new key `fg_<id>_<secret>`; the caller stores key_id and secret_hash only."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    key_id = "".join(secrets.choice(alphabet) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return NewKey(
        key_id=key_id,
        token=f"{KEY_PREFIX}_{key_id}_{secret}",
        secret_hash=hash_secret(secret, hmac_key=hmac_key),
    )


def parse_key(token: str) -> ParsedKey | None:
    match = _KEY_RE.match(token)
    if match is None:
        return None
    return ParsedKey(key_id=match.group(1), secret=match.group(2))


def verify_secret(secret: str, stored_hash: str, *, hmac_key: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret, hmac_key=hmac_key), stored_hash)

"""Console sessions: an admin key exchanged for a signed, expiring token kept in a cookie.

The token is `<key id>.<expires unix>.<nonce>.<signature>`, signed with a key derived from the
API-key HMAC secret, so every gateway process can check it. It names the key, never carries
its secret, and is honoured only while that key is live and holds `admin`: revoking the key
ends its sessions, and signing out ends one (SignOuts). Each session has a CSRF token derived
from its nonce, which the console sends back in `X-CSRF-Token` on every state-changing request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("filegate.console")

COOKIE = "filegate_console"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOKEN_RE = re.compile(r"^([a-z0-9]{12})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ConsoleSession:
    key_id: str
    expires_at: int  # unix seconds
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signing_key(hmac_key: bytes) -> bytes:
    # Derived, so a session signature can never double as an API-key hash or anything else.
    return hmac.new(hmac_key, b"filegate console session v1", hashlib.sha256).digest()


def _mac(hmac_key: bytes, message: str) -> str:
    return _b64(hmac.new(_signing_key(hmac_key), message.encode(), hashlib.sha256).digest())


def issue_session(*, hmac_key: bytes, key_id: str, now: float, lifetime: int) -> str:
    """A new session token for `key_id`, valid for `lifetime` seconds from `now`."""
    body = f"{key_id}.{int(now) + lifetime}.{_b64(secrets.token_bytes(16))}"
    return f"{body}.{_mac(hmac_key, body)}"


def read_session(token: str, *, hmac_key: bytes, now: float) -> ConsoleSession | None:
    """The session a token proves at `now`, or None (malformed, forged or expired)."""
    match = _TOKEN_RE.match(token)
    if match is None:
        return None
    key_id, expires, nonce, signature = match.groups()
    if not hmac.compare_digest(_mac(hmac_key, f"{key_id}.{expires}.{nonce}"), signature):
        return None
    if int(expires) <= now:
        return None
    return ConsoleSession(key_id=key_id, expires_at=int(expires), nonce=nonce)


def csrf_token(session: ConsoleSession, *, hmac_key: bytes) -> str:
    return _mac(hmac_key, f"csrf:{session.nonce}")


def csrf_matches(session: ConsoleSession, presented: str | None, *, hmac_key: bytes) -> bool:
    return presented is not None and hmac.compare_digest(
        csrf_token(session, hmac_key=hmac_key).encode(), presented.encode()
    )


class SignOuts:
    """Sessions ended by sign-out, remembered until they would have expired anyway.

    Kept in Redis when configured (so every process refuses the ended session) and always in
    this process too, which is all there is without Redis, or while Redis does not answer."""

    PREFIX = "filegate:console:signed-out:"

    def __init__(self, redis: Redis | None, *, clock: Callable[[], float]) -> None:
        self._redis, self._clock = redis, clock
        self._local: dict[str, int] = {}

    async def end(self, session: ConsoleSession) -> None:
        now = self._clock()
        self._local = {n: at for n, at in self._local.items() if at > now}
        self._local[session.nonce] = session.expires_at
        if self._redis is not None:
            try:
                await self._redis.set(
                    self.PREFIX + session.nonce, b"1", exat=session.expires_at, nx=True
                )
            except RedisError as exc:
                log.warning("sign-out kept in this process only: Redis %s", type(exc).__name__)

    async def ended(self, session: ConsoleSession) -> bool:
        if session.nonce in self._local:
            return True
        if self._redis is None:
            return False
        try:
            return bool(await self._redis.exists(self.PREFIX + session.nonce))
        except RedisError as exc:
            log.warning("sign-outs of other processes unknown: Redis %s", type(exc).__name__)
            return False

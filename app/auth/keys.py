"""Tenants and API keys: issue, list, revoke, and resolve a presented key."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.auth.scopes import Scope
from app.auth.tokens import generate_key, parse_key, verify_secret
from app.core.db import utcnow
from app.core.errors import InvalidRequest, NotFound
from app.core.names import NameRefused, tenant_name
from app.models import ApiKey, Tenant
from app.repositories.keys import KeyRepository

KEY_NAME_MAX = 100  # the column's width: a longer name is refused, never cut


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    token: str
    tenant_name: str


def checked_tenant_name(name: str) -> str:
    """The tenant name in its one stored form (NFC), or a 400 that says why."""
    try:
        return tenant_name(name)
    except NameRefused as exc:
        raise InvalidRequest(f"Invalid tenant name: {exc}.", param="tenant") from None


async def ensure_tenant(*, session: AsyncSession, name: str) -> Tenant:
    name = checked_tenant_name(name)
    repo = KeyRepository(session)
    tenant = await repo.tenant_by_name(name)
    if tenant is None:
        tenant = Tenant(id=f"ten_{secrets.token_hex(8)}", name=name)
        repo.add(tenant)
        await session.flush()
    return tenant


async def issue_key(
    *,
    session: AsyncSession,
    hmac_key: bytes,
    tenant_name: str,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
    rotated_from: str | None = None,
) -> IssuedKey:
    """Create a key for a tenant (creating the tenant on first use); the token is shown once."""
    known = {scope.value for scope in Scope}
    unknown = set(scopes) - known
    if unknown or not scopes:
        raise InvalidRequest(
            f"Unknown scopes {sorted(unknown)}; choose from {sorted(known)}.", param="scopes"
        )
    if not name.strip() or len(name) > KEY_NAME_MAX or not name.isprintable():
        raise InvalidRequest(
            f"The key name must be 1 to {KEY_NAME_MAX} printable characters.", param="name"
        )
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidRequest("expires_at needs a time zone (e.g. 'Z').", param="expires_at")
        if expires_at <= utcnow():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")
    tenant = await ensure_tenant(session=session, name=tenant_name)
    new = generate_key(hmac_key=hmac_key)
    row = ApiKey(
        id=new.key_id,
        tenant_id=tenant.id,
        name=name.strip(),
        secret_hash=new.secret_hash,
        scopes=" ".join(sorted(set(scopes))),
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
        rotated_from=rotated_from,
    )
    KeyRepository(session).add(row)
    await session.flush()
    return IssuedKey(key=row, token=new.token, tenant_name=tenant.name)


async def revoke_key(*, session: AsyncSession, key_id: str) -> ApiKey:
    row = await KeyRepository(session).get_key(key_id)
    if row is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    await session.flush()
    return row


async def rotate_key(
    *, session: AsyncSession, hmac_key: bytes, key_id: str, overlap_seconds: int
) -> IssuedKey:
    """Issue a successor with the same tenant, name and scopes; the old one ends after overlap."""
    repo = KeyRepository(session)
    old = await repo.get_key(key_id)
    # An expired key is as dead as a revoked one: rotation never brings it back.
    if old is None or old.revoked_at is not None or (old.expires_at and old.expires_at <= utcnow()):
        raise NotFound(f"No active API key with id '{key_id}'.", param="key_id")
    tenant = await repo.tenant(old.tenant_id)
    assert tenant is not None
    issued = await issue_key(
        session=session,
        hmac_key=hmac_key,
        tenant_name=tenant.name,
        name=old.name,
        scopes=old.scopes.split(),
        expires_at=old.expires_at,
        rate_limit_per_minute=old.rate_limit_per_minute,
        rotated_from=old.id,
    )
    ends = utcnow() + timedelta(seconds=overlap_seconds)
    if old.expires_at is None or old.expires_at > ends:
        old.expires_at = ends
    if overlap_seconds == 0:
        old.revoked_at = utcnow()
    await session.flush()
    return issued


async def touch_key(*, session: AsyncSession, key_id: str) -> None:
    """Record use of a key (callers throttle how often)."""
    await KeyRepository(session).touch(key_id, utcnow())


async def list_keys(
    *, session: AsyncSession, tenant_id: str | None = None, tenant: str | None = None
) -> Sequence[ApiKey]:
    """Keys of every tenant, or of one named by id (`tenant_id`) or by name (`tenant`)."""
    repo = KeyRepository(session)
    if tenant is not None:
        row = await repo.tenant_by_name(checked_tenant_name(tenant))
        if row is None or (tenant_id is not None and row.id != tenant_id):
            return []
        tenant_id = row.id
    return await repo.list_keys(tenant_id=tenant_id)


@dataclass(frozen=True)
class KeyRecord:
    """What identification needs of a key row; cached briefly by the middleware."""

    key_id: str
    tenant_id: str
    secret_hash: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool
    rate_limit_per_minute: int | None = None
    last_used_at: datetime | None = None


async def load_key_record(*, session: AsyncSession, key_id: str) -> KeyRecord | None:
    row = await KeyRepository(session).get_key(key_id)
    if row is None:
        return None
    return KeyRecord(
        key_id=row.id,
        tenant_id=row.tenant_id,
        secret_hash=row.secret_hash,
        scopes=frozenset(row.scopes.split()),
        expires_at=row.expires_at,
        revoked=row.revoked_at is not None,
        rate_limit_per_minute=row.rate_limit_per_minute,
        last_used_at=row.last_used_at,
    )


def principal_for(
    token: str, record: KeyRecord | None, *, hmac_key: bytes, now: datetime
) -> Principal | None:
    """The caller a presented token proves at `now`, or None (unknown, wrong secret, revoked,
    expired)."""
    parsed = parse_key(token)
    if parsed is None or record is None or record.key_id != parsed.key_id:
        return None
    if not verify_secret(parsed.secret, record.secret_hash, hmac_key=hmac_key):
        return None
    return live_principal(record, now=now)


def live_principal(record: KeyRecord, *, now: datetime, kind: str = "key") -> Principal | None:
    """The key's caller at `now`, or None once it is revoked or expired."""
    if record.revoked or (record.expires_at is not None and record.expires_at <= now):
        return None
    return Principal(
        key_id=record.key_id,
        tenant_id=record.tenant_id,
        scopes=record.scopes,
        kind=kind,
        rate_limit_per_minute=record.rate_limit_per_minute,
    )

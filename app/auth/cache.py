"""What identification remembers between requests, per process and for a bounded time.

Key lookups are kept for KEY_CACHE_SECONDS, so a key revoked on another process stops working
there within that bound (on the revoking process at once, via `invalidate`). Tenant ids by
name never change and are kept while there is room. Each cache holds at most `maxsize`
entries and drops the oldest when full (cachetools' TTL and LRU caches), never all at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from cachetools import LRUCache, TTLCache

from app.auth.keys import KeyRecord

KEY_CACHE_SECONDS = 2.0
CACHE_MAX = 10_000
LAST_USED_EVERY_SECONDS = 60.0


class _Missing:
    pass


MISSING: Final = _Missing()


class IdentityCache:
    def __init__(
        self,
        *,
        key_seconds: float = KEY_CACHE_SECONDS,
        maxsize: int = CACHE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys: TTLCache[str, KeyRecord | None] = TTLCache(maxsize, key_seconds, timer=clock)
        self._touched: TTLCache[str, bool] = TTLCache(maxsize, LAST_USED_EVERY_SECONDS, timer=clock)
        self._tenants: LRUCache[str, str] = LRUCache(maxsize)

    def key(self, key_id: str) -> KeyRecord | _Missing | None:
        """The key's remembered record (None: no such key), or MISSING to look it up."""
        return self._keys.get(key_id, MISSING)

    def remember_key(self, key_id: str, record: KeyRecord | None) -> None:
        self._keys[key_id] = record

    def invalidate(self, key_id: str) -> None:
        """Forget a key changed by this process; call it once the change is committed."""
        self._keys.pop(key_id, None)

    def forget_keys(self) -> None:
        """Forget every key lookup (what another process sees after KEY_CACHE_SECONDS)."""
        self._keys.clear()

    def due_for_touch(self, key_id: str) -> bool:
        """True at most once per LAST_USED_EVERY_SECONDS per key: time to write last_used_at."""
        if key_id in self._touched:
            return False
        self._touched[key_id] = True
        return True

    def tenant_id(self, name: str) -> str | None:
        return self._tenants.get(name)

    def remember_tenant(self, name: str, tenant_id: str) -> None:
        self._tenants[name] = tenant_id

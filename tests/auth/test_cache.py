"""The identity cache: bounded in time and size, one key forgotten without the others."""

from __future__ import annotations

from app.auth.cache import KEY_CACHE_SECONDS, LAST_USED_EVERY_SECONDS, MISSING, IdentityCache
from tests.support.clock import FakeClock


def test_a_key_lookup_is_kept_for_the_bound_then_looked_up_again() -> None:
    clock = FakeClock()
    cache = IdentityCache(clock=clock)
    assert cache.key("k1") is MISSING
    cache.remember_key("k1", None)  # no such key: remembered too, so floods stay cheap
    clock.advance(KEY_CACHE_SECONDS - 0.01)
    assert cache.key("k1") is None
    clock.advance(0.02)
    assert cache.key("k1") is MISSING


def test_invalidate_forgets_one_key_only() -> None:
    cache = IdentityCache(clock=FakeClock())
    cache.remember_key("k1", None)
    cache.remember_key("k2", None)
    cache.invalidate("k1")
    cache.invalidate("never-seen")
    assert cache.key("k1") is MISSING
    assert cache.key("k2") is None


def test_a_full_cache_drops_its_oldest_entry_not_everything() -> None:
    cache = IdentityCache(maxsize=3, clock=FakeClock())
    for key_id in ("a", "b", "c", "d"):
        cache.remember_key(key_id, None)
        cache.remember_tenant(key_id, f"ten_{key_id}")
    assert [cache.key(k) is MISSING for k in ("a", "b", "c", "d")] == [True, False, False, False]
    assert [cache.tenant_id(k) for k in ("a", "b", "c", "d")] == [None, "ten_b", "ten_c", "ten_d"]


def test_last_use_is_due_once_per_interval_per_key() -> None:
    clock = FakeClock()
    cache = IdentityCache(clock=clock)
    assert cache.due_for_touch("k1") is True
    assert cache.due_for_touch("k1") is False
    assert cache.due_for_touch("k2") is True
    clock.advance(LAST_USED_EVERY_SECONDS + 0.01)
    assert cache.due_for_touch("k1") is True

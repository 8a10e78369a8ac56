"""Registry invariants checked after resilience tests: nothing accepted is lost or doubled."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import select

from app.models import Blob, File, ProviderCopy
from tests.conftest import Gateway
from tests.support.blobs import read_blob


async def assert_registry_sound(
    gateway: Gateway, *, reconciled: bool = False, sharing: Sequence[Gateway] = ()
) -> None:
    """Every live file has a blob that re-hashes right and at most one live copy per provider;
    a processed one has a live copy or an evicted one its blob rebuilds.

    `sharing`: other deployments on the same provider accounts, whose copies count there too.
    """
    rt = gateway.runtime
    async with rt.sessionmaker() as session:
        files = (await session.execute(select(File))).scalars().all()
        blobs = {b.sha256: b for b in (await session.execute(select(Blob))).scalars()}
        copies = (await session.execute(select(ProviderCopy))).scalars().all()
    others = [await _live_copies(peer) for peer in sharing]
    for file in files:
        if file.deleted_at is not None:
            continue
        assert file.status in ("processed", "pending", "uploaded"), (file.id, file.status)
        blob = blobs.get(file.sha256)
        assert blob is not None, f"{file.id} lost its blob row"
        data = await read_blob(rt.blob_store, blob.storage_key)
        assert hashlib.sha256(data).hexdigest() == file.sha256, f"{file.id} blob corrupt"
        live = Counter(c.provider for c in copies if c.file_id == file.id and c.status == "active")
        assert all(n == 1 for n in live.values()), (file.id, live)
        if file.status == "processed":
            # Evicted copies were removed to make room; the blob above re-places them.
            evicted = [c for c in copies if c.file_id == file.id and c.status == "evicted"]
            assert live or evicted, f"{file.id} is processed but has no active or evicted copy"
    for copy in copies:
        if copy.status == "evicted":
            assert copy.provider_file_id is None, f"{copy.file_id} evicted yet names a file"
    # The provider holds exactly the active copies the registry knows (plus nothing of ours).
    for provider in ("moonshot", "zai"):
        stats = await gateway.sandbox_stats(provider)
        active = [
            c
            for c in copies
            if c.provider == provider
            and c.status == "active"
            and any(f.id == c.file_id and f.deleted_at is None for f in files)
        ] + [c for peer in others for c in peer if c.provider == provider]
        if reconciled:
            assert stats["files"] == len(active), (provider, stats["files"], len(active))
        else:
            assert stats["files"] >= len(active), (provider, stats["files"], len(active))


async def _live_copies(gateway: Gateway) -> list[ProviderCopy]:
    """The active copies of live files in one deployment's registry."""
    async with gateway.runtime.sessionmaker() as session:
        stmt = (
            select(ProviderCopy)
            .join(File, File.id == ProviderCopy.file_id)
            .where(ProviderCopy.status == "active", File.deleted_at.is_(None))
        )
        return list((await session.execute(stmt)).scalars())

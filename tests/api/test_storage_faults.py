"""The blob store under faults, seen through the API: a corrupt shared blob is healed by the
next upload of the correct bytes, and a full disk answers 507 and keeps nothing half-written."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from tests.conftest import Gateway, settings_with, started_gateway
from tests.support.blobs import overwrite_blob

MiB = 1024 * 1024
CONTENT = b"the one true content\n" * 50


async def _upload(client: httpx.AsyncClient, data: bytes, name: str = "a.txt") -> httpx.Response:
    return await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": (name, data, "text/plain")},
    )


async def test_another_tenants_correct_bytes_heal_a_corrupt_shared_blob(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with (
        gateway.client(await gateway.key("acme")) as acme,
        gateway.client(await gateway.key("globex")) as globex,
        gateway.client(admin) as ops,
    ):
        first = await _upload(acme, CONTENT)
        assert first.status_code == 200, first.text
        sha = first.json()["sha256"]
        store = gateway.runtime.blob_store
        await overwrite_blob(store, store.key_for(sha), b"bit rot" + CONTENT[7:])
        check = await ops.post(f"/admin/files/{first.json()['id']}/check")
        assert check.json()["blob"] == "corrupt", check.text
        withheld = await acme.get(f"/v1/files/{first.json()['id']}/content")
        assert withheld.status_code == 500 and withheld.json()["error"]["code"] == "blob_corrupt"

        healed = await _upload(globex, CONTENT, name="b.txt")
        # Not a 500, not a hint that someone holds these bytes: an ordinary upload.
        assert healed.status_code == 200, healed.text
        assert healed.json()["status"] == "processed"
        for client, file_id in ((acme, first.json()["id"]), (globex, healed.json()["id"])):
            got = await client.get(f"/v1/files/{file_id}/content")
            assert got.status_code == 200 and got.content == CONTENT
        again = await ops.post(f"/admin/files/{first.json()['id']}/check")
        assert again.json()["blob"] == "ok", again.text


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_answers_507_keeps_nothing_and_says_so_in_readiness(
    settings: Settings, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "small", "4m") as disk:
        settings = settings_with(settings, data_dir=disk / "data")
        if settings.is_sqlite:  # the registry lives elsewhere; only blobs fill this disk
            registry = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
            settings = settings_with(settings, database_url=registry)
            from app.core.migrations import upgrade

            upgrade(registry)
        async with started_gateway(settings, str(settings.sandbox_url)) as gateway:
            async with gateway.client(await gateway.key()) as client:
                too_big = await _upload(client, uuid.uuid4().bytes * (6 * MiB // 16))
                assert too_big.status_code == 507, too_big.text
                assert too_big.json()["error"]["code"] == "insufficient_storage"
                assert list((settings.data_dir / "tmp").iterdir()) == []
                assert (await client.get("/v1/files")).json()["data"] == []

                filler = settings.data_dir / "filler"
                with open(filler, "wb") as fh, contextlib.suppress(OSError):
                    while True:
                        fh.write(b"\0" * 65536)
                ready = await client.get("/health/ready")
                assert ready.status_code == 503
                assert ready.json()["checks"]["blob_store"]["status"] == "down"
                small = await _upload(client, b"even a small file\n")
                assert small.status_code == 507, small.text

                filler.unlink()
                assert (await client.get("/health/ready")).status_code == 200
                fits = await _upload(client, b"it fits again\n")
                assert fits.status_code == 200, fits.text

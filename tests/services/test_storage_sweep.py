"""A gateway killed mid-upload leaves only what the storage sweeper removes: the sweep runs
when a worker starts (and periodically), by age, keeping every blob a row references."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET
from tests.support.processes import (
    create_key,
    gateway_env,
    run_cli,
    start_gateway,
    start_sandbox,
)
from tests.support.waiting import wait_until_blocking

MiB = 1024 * 1024


def _leftovers(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "tmp").glob("*.part"))


def test_a_killed_upload_is_swept_when_a_worker_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_sandbox() as sandbox:
        env = gateway_env(
            data_dir=data_dir,
            secret_key=TEST_SECRET,
            sandbox_url=f"{sandbox.url}/sandbox",
            workers_in_process="0",
        )
        token = create_key(env, tenant="acme", name="t")
        with start_gateway(env) as gateway:
            kept = httpx.post(
                f"{gateway.url}/v1/files",
                headers={"authorization": f"Bearer {token}"},
                data={"purpose": "file-extract"},
                files={"file": ("kept.txt", b"kept bytes\n", "text/plain")},
            )
            assert kept.status_code == 200, kept.text
            kept_sha = kept.json()["sha256"]
            port = int(gateway.url.rsplit(":", 1)[1])
            head = (
                b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfile-extract\r\n'
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(
                    b"POST /v1/files HTTP/1.1\r\nHost: x\r\n"
                    + f"Authorization: Bearer {token}\r\n".encode()
                    + b"Content-Type: multipart/form-data; boundary=b\r\n"
                    + f"Content-Length: {20 * MiB}\r\n\r\n".encode()
                    + head
                )
                for _ in range(8):
                    sock.sendall(b"z" * (MiB // 2))
                wait_until_blocking(
                    lambda: any(p.stat().st_size > 0 for p in _leftovers(data_dir)),
                    timeout=10,
                    message="the spool never appeared",
                )
                gateway.kill()  # SIGKILL mid-upload: no cleanup runs
                gateway.wait(10)
    left = _leftovers(data_dir)
    assert left, "the killed upload left no spool"
    # A crash between placing a blob file and committing its row leaves an orphan blob.
    orphan_bytes = b"never committed"
    orphan_sha = hashlib.sha256(orphan_bytes).hexdigest()
    orphan = data_dir / "blobs" / orphan_sha[:2] / orphan_sha[2:4] / orphan_sha
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(orphan_bytes)
    kept_path = data_dir / "blobs" / kept_sha[:2] / kept_sha[2:4] / kept_sha
    young = data_dir / "tmp" / "upload-young.part"
    young.write_bytes(b"an upload still arriving in another process")

    ran = run_cli(["worker", "--once"], env)
    assert ran.returncode == 0, ran.stderr
    assert all(p.exists() for p in left) and orphan.exists()  # young enough: kept

    past = time.time() - 7 * 3600
    for path in [*left, orphan, kept_path]:
        os.utime(path, (past, past))
    ran = run_cli(["worker", "--once"], env)
    assert ran.returncode == 0, ran.stderr
    assert _leftovers(data_dir) == [young]
    assert not orphan.exists()
    assert hashlib.sha256(kept_path.read_bytes()).hexdigest() == kept_sha

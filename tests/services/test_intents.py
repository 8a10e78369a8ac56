"""Every placement a request starts is a job under the request's lease: a gateway killed
mid-placement hands it to a worker within the lease, and no twin upload waits minutes for it.
An upload racing a delete of the same bytes ends as a live file or an error, never as a
success naming the deleted file."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_SECRET, Gateway
from tests.support.processes import create_key, gateway_env, start_gateway, start_sandbox
from tests.support.waiting import wait_until, wait_until_blocking

BYTES = b"placed by whoever holds the lease\n"


def _post(base: str, token: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/files",
        headers={"authorization": f"Bearer {token}"},
        data={"purpose": "file-extract"},
        files={"file": ("lease.txt", BYTES, "text/plain")},
        timeout=timeout,
    )


def test_a_placement_whose_gateway_died_is_taken_over_within_the_lease(tmp_path: Path) -> None:
    with start_sandbox() as sandbox:
        env = gateway_env(
            data_dir=tmp_path / "data",
            secret_key=TEST_SECRET,
            sandbox_url=f"{sandbox.url}/sandbox",
            job_lease_seconds="2",
            job_poll_seconds="0.2",
            provider_order="moonshot",
            zai_api_key="",
        )
        token = create_key(env, tenant="acme", name="t")
        faults = f"{sandbox.url}/sandbox/moonshot/_faults"
        httpx.post(faults, json={"hang": True, "rate": 1.0, "operations": ["upload"]})
        with start_gateway({**env, "FILEGATE_WORKERS_IN_PROCESS": "0"}) as first:
            threading.Thread(target=_swallow, args=(first.url, token), daemon=True).start()
            stats = f"{sandbox.url}/sandbox/moonshot/_stats"
            wait_until_blocking(
                lambda: httpx.get(stats, timeout=30).json()["calls"]["upload"] >= 1,
                timeout=15,
                message="the upload never reached the provider",
            )
            first.kill()  # SIGKILL mid-placement: the file stays `uploaded`, its job leased
            first.wait(10)
            # Wait for the provider to see the hang-up (it polls), so the hung call stores nothing.
            wait_until_blocking(lambda: httpx.get(stats, timeout=30).json()["hanging"] == 0)
        httpx.delete(faults).raise_for_status()
        with start_gateway(env) as second:
            started = time.monotonic()
            twin = _post(second.url, token)
            # The twin is answered promptly, not after the old 120 s wait for a dead owner.
            assert twin.status_code in (200, 202), twin.text
            assert time.monotonic() - started < 10
            file_id = twin.json()["id"]
            while True:
                got = httpx.get(
                    f"{second.url}/v1/files/{file_id}",
                    headers={"authorization": f"Bearer {token}"},
                ).json()
                if got["status"] == "processed":
                    break
                assert time.monotonic() - started < 20, f"never re-driven: {got}"
                time.sleep(0.2)
            assert [p["provider"] for p in got["providers"] if p["status"] == "active"] == [
                "moonshot"
            ]
            listed = httpx.get(
                f"{sandbox.url}/sandbox/moonshot/v1/files",
                headers={"authorization": "Bearer sk-sandbox"},
            ).json()["data"]
            assert len(listed) == 1  # the dead owner's hung call stored nothing


def _swallow(base: str, token: str) -> None:
    try:
        _post(base, token, timeout=90)
    except httpx.HTTPError:
        pass  # the gateway is killed under it


async def test_an_upload_during_a_delete_never_names_the_deleted_file(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # A slow provider delete keeps each delete under way while the same bytes are uploaded.
    await gateway.sandbox_fault(
        "moonshot", status=None, latency_ms=300, rate=1.0, operations=["delete"]
    )
    for round_ in range(6):
        content = f"raced bytes {round_}\n".encode()

        async def upload(content: bytes = content) -> httpx.Response:
            return await client.post(
                "/v1/files",
                data={"purpose": "file-extract"},
                files={"file": ("r.txt", content, "text/plain")},
            )

        first = await upload()
        assert first.status_code == 200, first.text
        calls = (await gateway.sandbox_stats("moonshot"))["calls"]["delete"]
        deleting = asyncio.ensure_future(client.delete(f"/v1/files/{first.json()['id']}"))

        async def deleting_at_provider(calls: int = calls) -> bool:
            return bool((await gateway.sandbox_stats("moonshot"))["calls"]["delete"] > calls)

        await wait_until(deleting_at_provider, every=0.005)  # the provider delete is under way
        again = await upload()
        deleted = await deleting
        assert deleted.status_code == 200, deleted.text
        assert again.status_code in (200, 202), again.text
        assert again.json()["id"] != first.json()["id"]
        got = await client.get(f"/v1/files/{again.json()['id']}")
        assert got.status_code == 200, (round_, again.json(), got.text)
        assert (await client.get(f"/v1/files/{again.json()['id']}/content")).content == content

"""Sandbox control routes: stats, reset, faults and lost files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.sandbox import create_sandbox_app, create_standalone_app
from app.sandbox.core import ConnectionDropped
from tests.support.waiting import wait_until

MOON = "/moonshot/v1/files"
ZAI = "/zai/api/paas/v4/files"
AUTH = {"Authorization": "Bearer sk-test"}


def client_for(**options: Any) -> httpx.AsyncClient:
    """An in-process client for a fresh sandbox."""
    transport = httpx.ASGITransport(app=create_sandbox_app(**options))
    return httpx.AsyncClient(transport=transport, base_url="http://sandbox")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for() as c:
        yield c


@pytest.fixture
async def live(sandbox_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the real loopback sandbox, with moonshot/zai state reset around the test."""
    async with httpx.AsyncClient(base_url=f"{sandbox_server}/sandbox") as c:
        for provider in ("moonshot", "zai"):
            await c.post(f"/{provider}/_reset")
        yield c
        for provider in ("moonshot", "zai"):
            await c.delete(f"/{provider}/_faults")


async def moon_upload(client: httpx.AsyncClient, content: bytes = b"hi") -> httpx.Response:
    files = {"file": ("a.txt", content)}
    return await client.post(MOON, headers=AUTH, data={"purpose": "file-extract"}, files=files)


async def zai_upload(client: httpx.AsyncClient, content: bytes = b"{}") -> httpx.Response:
    files = {"file": ("in.jsonl", content)}
    return await client.post(ZAI, headers=AUTH, data={"purpose": "batch"}, files=files)


async def hanging(client: httpx.AsyncClient, provider: str) -> bool:
    """A hang fault holds a call to `provider` right now."""
    return bool((await client.get(f"/{provider}/_stats")).json()["hanging"])


async def set_fault(client: httpx.AsyncClient, provider: str, **fault: Any) -> dict[str, Any]:
    response = await client.post(f"/{provider}/_faults", json=fault)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stats_count_every_call(client: httpx.AsyncClient) -> None:
    created = (await moon_upload(client, b"12345")).json()
    await moon_upload(client, b"")  # rejected, still counted
    await client.get(MOON)  # 401, still counted
    await client.get(MOON, headers=AUTH)
    await client.get(f"{MOON}/{created['id']}", headers=AUTH)
    await client.get(f"{MOON}/{created['id']}/content", headers=AUTH)
    await client.delete(f"{MOON}/missing", headers=AUTH)
    stats = (await client.get("/moonshot/_stats")).json()
    assert stats == {
        "provider": "moonshot",
        "calls": {"upload": 2, "list": 2, "retrieve": 1, "content": 1, "delete": 1},
        "files": 1,
        "bytes": 5,
        "hanging": 0,
        "receiving": 0,
    }
    zai_stats = (await client.get("/zai/_stats")).json()
    assert zai_stats["calls"] == dict.fromkeys(
        ("upload", "list", "retrieve", "content", "delete"), 0
    )


async def test_faulted_calls_are_counted(client: httpx.AsyncClient) -> None:
    await set_fault(client, "zai", status=500)
    assert (await client.get(ZAI, headers=AUTH)).status_code == 500
    assert (await client.get("/zai/_stats")).json()["calls"]["list"] == 1


async def test_reset_forgets_everything(client: httpx.AsyncClient) -> None:
    await moon_upload(client)
    await set_fault(client, "moonshot", status=503, operations=["delete"])
    response = await client.post("/moonshot/_reset")
    assert response.status_code == 200
    stats = (await client.get("/moonshot/_stats")).json()
    assert stats["files"] == 0
    assert stats["bytes"] == 0
    assert sum(stats["calls"].values()) == 0
    assert (await client.get("/moonshot/_faults")).json() == {"provider": "moonshot", "fault": None}


async def test_reset_is_per_provider(client: httpx.AsyncClient) -> None:
    await moon_upload(client)
    await zai_upload(client)
    await client.post("/zai/_reset")
    assert (await client.get("/moonshot/_stats")).json()["files"] == 1
    assert (await client.get("/zai/_stats")).json()["files"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/openai/_stats"),
        ("POST", "/openai/_reset"),
        ("GET", "/openai/_faults"),
        ("POST", "/openai/_faults"),
        ("DELETE", "/openai/_faults"),
        ("POST", "/openai/_lose/x"),
    ],
)
async def test_unknown_provider_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown provider: openai"}


async def test_lose_drops_file(client: httpx.AsyncClient) -> None:
    created = (await zai_upload(client)).json()
    response = await client.post(f"/zai/_lose/{created['id']}")
    assert response.status_code == 200
    assert response.json()["lost"] is True
    assert (await client.get(f"{ZAI}/{created['id']}", headers=AUTH)).status_code == 404
    stats = (await client.get("/zai/_stats")).json()
    assert stats["files"] == 0
    assert stats["calls"]["delete"] == 0


async def test_lose_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/moonshot/_lose/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown file id: nope"}


async def test_fault_defaults_to_503(client: httpx.AsyncClient) -> None:
    body = await set_fault(client, "moonshot")
    assert body["fault"]["status"] == 503
    assert body["fault"]["rate"] == 1.0
    response = await client.get(MOON, headers=AUTH)
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "message": "The engine is currently overloaded, please try again later",
            "type": "engine_overloaded_error",
        }
    }
    assert response.headers["msh-request-id"]


async def test_fault_applies_before_auth(client: httpx.AsyncClient) -> None:
    await set_fault(client, "zai", status=503)
    response = await client.get(ZAI)
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "1305",
        "message": "The service may be temporarily overloaded, please try again later",
    }


async def test_moonshot_429_fault_headers(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", status=429, retry_after=7)
    response = await client.get(MOON, headers=AUTH)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["type"] == "rate_limit_reached_error"
    assert error["message"].endswith("please try again after 7 seconds")


async def test_zai_429_fault(client: httpx.AsyncClient) -> None:
    await set_fault(client, "zai", status=429)
    response = await client.get(ZAI, headers=AUTH)
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "1302"
    assert "request_id" in response.json()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 502, 504])
async def test_status_faults_keep_envelopes(client: httpx.AsyncClient, status: int) -> None:
    await set_fault(client, "moonshot", status=status)
    await set_fault(client, "zai", status=status)
    moon = await client.get(MOON, headers=AUTH)
    zai = await client.get(ZAI, headers=AUTH)
    assert moon.status_code == zai.status_code == status
    assert set(moon.json()["error"]) == {"message", "type"}
    assert set(zai.json()["error"]) == {"code", "message"}
    assert isinstance(zai.json()["error"]["code"], str)


async def test_zai_435_fault(client: httpx.AsyncClient) -> None:
    await set_fault(client, "zai", status=435)
    response = await zai_upload(client)
    assert response.status_code == 435
    assert response.json()["error"]["message"] == "File size exceeds 100MB"


async def test_quota_full_moonshot(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", quota_full=True)
    upload = await moon_upload(client)
    listing = await client.get(MOON, headers=AUTH)
    assert upload.status_code == 400
    assert upload.json()["error"]["message"].startswith(
        "The number of files you have uploaded exceeded the max file count 1000"
    )
    assert listing.status_code == 429
    assert listing.json()["error"]["type"] == "exceeded_current_quota_error"
    assert listing.headers["x-should-retry"] == "false"


async def test_quota_full_zai(client: httpx.AsyncClient) -> None:
    await set_fault(client, "zai", quota_full=True)
    for response in (await zai_upload(client), await client.get(ZAI, headers=AUTH)):
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "1113"


async def test_latency_only_delays_then_succeeds(client: httpx.AsyncClient) -> None:
    body = await set_fault(client, "moonshot", latency_ms=150)
    assert body["fault"]["status"] is None
    start = time.monotonic()
    response = await client.get(MOON, headers=AUTH)
    assert response.status_code == 200
    assert time.monotonic() - start >= 0.15


async def test_latency_with_status(client: httpx.AsyncClient) -> None:
    await set_fault(client, "zai", latency_ms=100, status=502)
    start = time.monotonic()
    response = await client.get(ZAI, headers=AUTH)
    assert response.status_code == 502
    assert time.monotonic() - start >= 0.1


async def test_count_limits_fault_then_clears(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", status=500, count=2)
    codes = [(await client.get(MOON, headers=AUTH)).status_code for _ in range(4)]
    assert codes == [500, 500, 200, 200]
    assert (await client.get("/moonshot/_faults")).json()["fault"] is None


async def test_get_faults_shows_remaining_count(client: httpx.AsyncClient) -> None:
    await set_fault(client, "zai", status=500, count=3)
    await client.get(ZAI, headers=AUTH)
    fault = (await client.get("/zai/_faults")).json()["fault"]
    assert fault["count"] == 2
    assert fault["status"] == 500


async def test_operations_restrict_fault(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", status=503, operations=["upload"], count=1)
    assert (await client.get(MOON, headers=AUTH)).status_code == 200
    assert (await moon_upload(client)).status_code == 503
    assert (await moon_upload(client)).status_code == 200


async def test_rate_zero_never_fires(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", status=500, rate=0.0)
    codes = {(await client.get(MOON, headers=AUTH)).status_code for _ in range(20)}
    assert codes == {200}


async def test_partial_rate_is_seeded() -> None:
    async def run() -> list[int]:
        async with client_for(seed=7) as c:
            await set_fault(c, "moonshot", status=500, rate=0.5)
            return [(await c.get(MOON, headers=AUTH)).status_code for _ in range(40)]

    first, second = await run(), await run()
    assert first == second
    assert 5 < first.count(500) < 35


async def test_faults_are_per_provider(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", status=500)
    assert (await client.get(ZAI, headers=AUTH)).status_code == 200


async def test_control_routes_ignore_faults(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", status=500)
    assert (await client.get("/moonshot/_stats")).status_code == 200


async def test_delete_faults_clears(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", status=500)
    response = await client.delete("/moonshot/_faults")
    assert response.json() == {"provider": "moonshot", "fault": None}
    assert (await client.get(MOON, headers=AUTH)).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"status": 200}', "status"),
        (b'{"status": "503"}', "status"),
        (b'{"rate": 1.5}', "rate"),
        (b'{"latency_ms": -1}', "latency_ms"),
        (b'{"hang": 1}', "hang"),
        (b'{"count": 0}', "count"),
        (b'{"operations": ["upload", "nuke"]}', "operations"),
        (b'{"operations": []}', "operations"),
        (b'{"bogus": true}', "bogus"),
    ],
)
async def test_fault_validation(client: httpx.AsyncClient, body: bytes, field: str) -> None:
    response = await client.post(
        "/moonshot/_faults", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert field in response.json()["detail"][0]["loc"]
    assert (await client.get("/moonshot/_faults")).json()["fault"] is None


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b'{"hang": true, "reset": true}', b'{"quota_full": true, "hang": true}']
)
async def test_fault_validation_whole_body(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/moonshot/_faults", content=body)
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_standalone_app_mounts_under_sandbox() -> None:
    transport = httpx.ASGITransport(app=create_standalone_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
        moon = await c.get(f"/sandbox{MOON}", headers=AUTH)
        zai = await c.get(f"/sandbox{ZAI}", headers=AUTH)
        unmounted = await c.get(MOON, headers=AUTH)
    assert moon.json() == {"object": "list", "data": []}
    assert zai.json() == {"object": "list", "data": [], "has_more": False}
    assert unmounted.status_code == 404


async def test_reset_fault_in_process_raises(client: httpx.AsyncClient) -> None:
    await set_fault(client, "moonshot", reset=True)
    with pytest.raises(ConnectionDropped):
        await client.get(MOON, headers=AUTH)


async def test_reset_fault_drops_connection(live: httpx.AsyncClient) -> None:
    await set_fault(live, "moonshot", reset=True, count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await live.get(MOON, headers=AUTH)
    assert (await live.get(MOON, headers=AUTH)).status_code == 200
    assert (await live.get("/moonshot/_stats")).json()["calls"]["list"] == 2


async def test_reset_fault_on_upload_is_transport_error(live: httpx.AsyncClient) -> None:
    await set_fault(live, "zai", reset=True, operations=["upload"])
    with pytest.raises(httpx.TransportError):
        await zai_upload(live, b"{}" * 100_000)
    assert (await live.get(ZAI, headers=AUTH)).status_code == 200
    assert (await live.get("/zai/_stats")).json()["files"] == 0


async def test_hang_until_client_gives_up(live: httpx.AsyncClient) -> None:
    await set_fault(live, "moonshot", hang=True)
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await live.get(MOON, headers=AUTH, timeout=0.3)
    assert time.monotonic() - start >= 0.3
    await live.delete("/moonshot/_faults")
    assert (await live.get(MOON, headers=AUTH, timeout=5)).status_code == 200


async def test_hang_released_by_clearing_faults(live: httpx.AsyncClient) -> None:
    await set_fault(live, "zai", hang=True, count=1)
    pending = asyncio.create_task(live.get(ZAI, headers=AUTH, timeout=10))
    await wait_until(lambda: hanging(live, "zai"))
    held, _ = await asyncio.wait({pending}, timeout=0.3)  # and it stays hung
    assert not held and not pending.done()
    await live.delete("/zai/_faults")
    response = await asyncio.wait_for(pending, timeout=5)
    assert response.status_code == 200
    assert response.json()["has_more"] is False


async def test_hang_released_by_reset(live: httpx.AsyncClient) -> None:
    await set_fault(live, "moonshot", hang=True, operations=["list"])
    pending = asyncio.create_task(live.get(MOON, headers=AUTH, timeout=10))
    await wait_until(lambda: hanging(live, "moonshot"))
    await live.post("/moonshot/_reset")
    response = await asyncio.wait_for(pending, timeout=5)
    assert response.status_code == 200


CONTROL_ROUTES = [
    ("GET", "/moonshot/_stats"),
    ("POST", "/zai/_reset"),
    ("GET", "/moonshot/_faults"),
    ("POST", "/moonshot/_faults"),
    ("DELETE", "/zai/_faults"),
    ("POST", "/moonshot/_lose/{file_id}"),
]


def client_from(host: str, app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://sandbox")


@pytest.mark.parametrize("peer", ["10.0.0.5", "192.168.1.20", "::ffff:10.0.0.5", "2001:db8::1"])
async def test_control_routes_refuse_a_peer_off_this_host(peer: str) -> None:
    app = create_sandbox_app()
    async with client_from("127.0.0.1", app) as local, client_from(peer, app) as remote:
        file_id = (await moon_upload(local)).json()["id"]
        before = (await local.get("/moonshot/_stats")).json()
        for method, path in CONTROL_ROUTES:
            resp = await remote.request(
                method, path.format(file_id=file_id), json={"status": 503, "rate": 1.0}
            )
            assert resp.status_code == 403, (method, path, resp.text)
            assert resp.json() == {"detail": "sandbox control routes answer loopback clients only"}
        # Nothing was reset, faulted or lost.
        after = (await local.get("/moonshot/_stats")).json()
        assert after["files"] == before["files"] == 1
        assert (await local.get("/moonshot/_faults")).json()["fault"] is None
        assert (await local.get(f"{MOON}/{file_id}", headers=AUTH)).status_code == 200


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_control_routes_answer_a_loopback_peer(peer: str) -> None:
    async with client_from(peer, create_sandbox_app()) as c:
        assert (await c.get("/moonshot/_stats")).status_code == 200
        assert (await c.post("/zai/_reset")).status_code == 200
        assert (await set_fault(c, "moonshot", status=503))["fault"] is not None


async def test_instance_id_is_stable_for_a_sandbox_and_new_for_the_next() -> None:
    first, second = create_sandbox_app(), create_sandbox_app()
    async with client_from("10.0.0.5", first) as a, client_from("127.0.0.1", second) as b:
        one = (await a.get("/_instance")).json()["instance"]
        assert (await a.get("/_instance")).json()["instance"] == one
        other = (await b.get("/_instance")).json()["instance"]
    assert len(one) == 32 and len(other) == 32 and one != other

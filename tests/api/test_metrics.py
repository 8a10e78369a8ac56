"""/metrics of one process: the series a fleet dashboard reads, with bounded labels only."""

from __future__ import annotations

from datetime import timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from app.core.db import utcnow
from app.models import File
from tests.api.test_files import upload
from tests.conftest import Gateway
from tests.support.blobs import overwrite_blob


async def scrape(gateway: Gateway) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample values by name and sorted labels."""
    async with gateway.client() as c:
        resp = await c.get("/metrics")
    assert resp.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


async def test_requests_are_labelled_by_route_template_never_by_raw_path(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    token = client.headers["Authorization"].removeprefix("Bearer ")
    file_id = (await upload(client)).json()["id"]
    assert (await client.get(f"/v1/files/{file_id}")).status_code == 200
    assert (await client.get("/v1/nothing-here/file-0123456789abcdef")).status_code == 404
    samples = await scrape(gateway)
    handlers = {dict(labels)["handler"] for labels in samples["http_requests_total"]}
    assert "/v1/files/{file_id}" in handlers and "none" in handlers
    assert not [h for h in handlers if "{" not in h and h not in ("/v1/files", "none")]
    async with gateway.runtime.sessionmaker() as session:
        tenant_id = await session.scalar(select(File.tenant_id).where(File.id == file_id))
    async with gateway.client() as c:
        text = (await c.get("/metrics")).text
    assert gateway.runtime.settings.secret_key is not None
    secret = gateway.runtime.settings.secret_key.get_secret_value()
    for value in (file_id, tenant_id, "acme", token, secret, "file-0123456789abcdef"):
        assert value and value not in text


async def test_refused_authentications_are_counted_by_reason(gateway: Gateway) -> None:
    async with (
        gateway.client() as anonymous,
        gateway.client("fg_not-a-key-at-all") as wrong,
    ):
        for _ in range(2):
            assert (await anonymous.get("/v1/files")).status_code == 401
        assert (await wrong.get("/v1/files")).status_code == 401
    refusals = (await scrape(gateway))["filegate_auth_refusals_total"]
    assert refusals[(("reason", "missing"),)] == 2
    assert refusals[(("reason", "invalid"),)] == 1


async def test_a_corrupt_blob_answered_to_a_client_counts_as_a_blob_store_error(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    created = (await upload(client)).json()
    store = gateway.runtime.blob_store
    await overwrite_blob(store, store.key_for(created["sha256"]), b"bit rot")
    async with gateway.client(await gateway.key("ops", ("admin",))) as ops:
        assert (await ops.post(f"/admin/files/{created['id']}/check")).json()["blob"] == "corrupt"
    assert (await client.get(f"/v1/files/{created['id']}/content")).status_code == 500
    samples = await scrape(gateway)
    assert samples["filegate_blob_store_errors_total"] == {(("code", "blob_corrupt"),): 1}
    assert samples["filegate_health_checks_total"][(("outcome", "blob_corrupt"),)] == 1


async def test_the_oldest_pending_file_age_is_read_at_each_scrape(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    assert (await scrape(gateway))["filegate_oldest_pending_file_age_seconds"] == {(): 0}
    await gateway.sandbox_fault("zai", status=500, rate=1.0)
    pending = await upload(client, b"a,b\n", filename="t.csv", provider="zai")
    assert pending.json()["status"] == "pending", pending.text
    async with gateway.runtime.sessionmaker() as session:
        await session.execute(
            update(File)
            .where(File.id == pending.json()["id"])
            .values(created_at=utcnow() - timedelta(hours=2))
        )
        await session.commit()
    (age,) = (await scrape(gateway))["filegate_oldest_pending_file_age_seconds"].values()
    assert age >= 2 * 3600

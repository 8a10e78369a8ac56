"""Tenant isolation: another tenant's file is, to a caller, exactly a file that does not exist."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.security.conftest import PROVIDERS, anonymous, table_rows, upload

ACME_TEXT = b"party,terms\nacme,merger\n"
GLOBEX_TEXT = b"product,launch\nglobex,2027\n"
MISSING = "file-" + "Q" * 24  # well formed, never issued
BIG_LIMIT = 10_000


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    suffix: str
    json: Any = None
    headers: tuple[tuple[str, str], ...] = ()

    async def send(self, client: Any, file_id: str, request_id: str, slot: str) -> Any:
        """`slot` fills "{slot}" in header values (an Idempotency-Key per target)."""
        headers = {"X-Request-ID": request_id}
        headers |= {k: v.replace("{slot}", slot) for k, v in self.headers}
        kwargs: dict[str, Any] = {"headers": headers}
        if self.json is not None:
            kwargs["json"] = self.json
        return await client.request(self.method, f"/v1/files/{file_id}{self.suffix}", **kwargs)


def probes(globex_sha: str) -> list[Probe]:
    return [
        Probe("retrieve", "GET", ""),
        Probe("content", "GET", "/content"),
        Probe("content, ranged", "GET", "/content", headers=(("Range", "bytes=0-3"),)),
        # Would answer 304 for the owner: the ETag must not confirm the file exists.
        Probe(
            "content, If-None-Match its sha256",
            "GET",
            "/content",
            headers=(("If-None-Match", f'"{globex_sha}"'),),
        ),
        Probe("extract", "GET", "/extract"),
        Probe("events", "GET", "/events"),
        Probe("delete", "DELETE", ""),
        Probe("replicate to zai", "POST", "/providers", json={"provider": "zai"}),
        Probe("replicate to moonshot", "POST", "/providers", json={"provider": "moonshot"}),
        Probe(
            "replicate with an Idempotency-Key",
            "POST",
            "/providers",
            json={"provider": "zai"},
            headers=(("Idempotency-Key", "probe-key-{slot}"),),
        ),
    ]


@dataclass
class Tenants:
    acme: str
    globex: str
    operator: str
    acme_file: str
    globex_file: dict[str, Any]


async def two_tenants(gateway: Gateway) -> Tenants:
    acme = await gateway.key("acme")
    globex = await gateway.key("globex")
    operator = await gateway.key("ops", ("admin",))
    async with gateway.client(acme) as a, gateway.client(globex) as g:
        acme_file = (await upload(a, ACME_TEXT, filename="a.csv")).json()["id"]
        created = await upload(g, GLOBEX_TEXT, filename="g.csv")
        assert created.status_code == 200, created.text
        replicated = await g.post(
            f"/v1/files/{created.json()['id']}/providers", json={"provider": "zai"}
        )
        assert replicated.status_code == 200, replicated.text
    return Tenants(acme, globex, operator, acme_file, replicated.json())


async def owner_view(gateway: Gateway, token: str, file_id: str) -> dict[str, Any]:
    async with gateway.client(token) as c:
        meta = await c.get(f"/v1/files/{file_id}")
        content = await c.get(f"/v1/files/{file_id}/content")
        events = await c.get(f"/v1/files/{file_id}/events")
    assert meta.status_code == content.status_code == events.status_code == 200
    rows = {
        table: [
            r
            for r in await table_rows(gateway, table)
            if file_id in (r.get("id"), r.get("file_id"))
        ]
        for table in ("files", "provider_copies", "lifecycle_events")
    }
    return {
        "meta": meta.json(),
        "content": content.content,
        "events": events.json(),
        "rows": rows,
        "sandbox": [(await gateway.sandbox_stats(p))["files"] for p in PROVIDERS],
    }


@pytest.mark.parametrize("caller", ["acme", "operator"])
async def test_foreign_file_answers_like_a_missing_one(
    gateway: Gateway, caller: str, subtests: pytest.Subtests
) -> None:
    t = await two_tenants(gateway)
    foreign = t.globex_file["id"]
    token = t.acme if caller == "acme" else t.operator
    before = await owner_view(gateway, t.globex, foreign)
    assert before["content"] == GLOBEX_TEXT
    assert sorted(p["provider"] for p in before["meta"]["providers"]) == ["moonshot", "zai"]

    async with anonymous(gateway, {"Authorization": f"Bearer {token}"}) as c:
        for n, probe in enumerate(probes(hashlib.sha256(GLOBEX_TEXT).hexdigest())):
            with subtests.test(probe.name):
                theirs = await probe.send(c, foreign, f"probe-{n}", "a")
                nothing = await probe.send(c, MISSING, f"probe-{n}", "b")
                assert theirs.status_code == 404, theirs.text
                assert nothing.status_code == 404, nothing.text
                assert theirs.content == nothing.content
                assert theirs.headers.multi_items() == nothing.headers.multi_items()
                assert foreign not in theirs.text
                assert theirs.json()["error"]["code"] == "not_found"

        with subtests.test("list never shows it"):
            seen: set[str] = set()
            for query in (
                {"order": "desc"},
                {"order": "asc"},
                {"purpose": "file-extract"},
            ):
                resp = await c.get("/v1/files", params={**query, "limit": BIG_LIMIT})
                assert resp.status_code == 200
                seen |= {f["id"] for f in resp.json()["data"]}
            assert foreign not in seen
            if caller == "acme":
                assert seen == {t.acme_file}

        with subtests.test("list cursor 'after' the foreign id"):
            theirs = await c.get("/v1/files", params={"after": foreign})
            nothing = await c.get("/v1/files", params={"after": MISSING})
            assert theirs.status_code == nothing.status_code == 400
            assert theirs.content.replace(foreign.encode(), b"<id>") == nothing.content.replace(
                MISSING.encode(), b"<id>"
            )

        # Globex's file, its copies, events and provider objects are exactly as they were.
        assert await owner_view(gateway, t.globex, foreign) == before

        with subtests.test("the same bytes make the caller's own file"):
            resp = await upload(c, GLOBEX_TEXT)
            assert resp.status_code == 200
            assert resp.json()["id"] != foreign
            assert (await c.get(f"/v1/files/{foreign}")).status_code == 404

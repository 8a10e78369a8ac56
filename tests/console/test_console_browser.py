"""The console in a real browser: sign in, watch a breaker open, retry a dead letter, revoke a
key, find a file by sha256, and a hostile filename that stays text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from app.jobs.worker import Worker
from tests.conftest import PG_URL, ServedGateway
from tests.support.browser import Browser
from tests.support.waiting import wait_until

# One backend is enough in the browser: PostgreSQL when configured.
pytestmark = pytest.mark.parametrize(
    "database_url", ["postgresql" if PG_URL else "sqlite"], indirect=True
)
HOSTILE = "<img src=x onerror=alert(1)>.pdf"


async def sign_in(page: Page, served: ServedGateway, key: str) -> None:
    await page.goto(f"{served.base_url}/console")
    await page.locator("#sign-in-key").fill(key)
    await page.locator("#sign-in-form button[type=submit]").click()
    await expect(page.locator("#operator-name")).to_contain_text(f"console:{key[3:15]}")


async def upload(
    served: ServedGateway, key: str, content: bytes, filename: str, **fields: str
) -> httpx.Response:
    async with served.http(key) as http:
        return await http.post(
            "/v1/files",
            files={"file": (filename, content, "application/octet-stream")},
            data={"purpose": "file-extract", **fields},
        )


async def test_sign_in_keeps_the_key_out_of_the_page_and_sign_out_ends_it(
    served: ServedGateway, browser: Browser
) -> None:
    admin = await served.key("ops", scopes=("admin",))
    page = await browser.page()
    await sign_in(page, served, admin)
    await expect(page.locator("#view h2").first).to_have_text("Providers")
    await browser.shot(page, "overview")
    stored = await page.evaluate(
        "() => [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage),"
        " location.href, document.documentElement.outerHTML]"
    )
    assert not [where for where in stored if admin in where or admin[16:] in where]
    assert "filegate_console" not in stored[0]  # HttpOnly: no script can read the session
    await page.reload()  # the session survives a reload, through the cookie alone
    await expect(page.locator("#operator-name")).to_contain_text("console:")
    await page.locator("#sign-out").click()
    await expect(page.locator("#sign-in")).to_be_visible()
    async with served.http() as http:
        cookies = {c["name"]: c["value"] for c in await browser.context.cookies()}
        http.cookies.update(cookies)
        assert (await http.get("/admin/providers")).status_code == 401
    assert browser.outside == []


@pytest.mark.settings(breaker_fail_max=2, retry_max_attempts=1)
async def test_a_breaker_opens_on_screen_after_a_sandbox_fault(
    served: ServedGateway, browser: Browser
) -> None:
    admin = await served.key("ops", scopes=("admin",))
    tenant = await served.key("acme")
    page = await browser.page()
    await sign_in(page, served, admin)
    await page.locator('#nav a[data-view="breakers"]').click()
    state = page.locator('#view [data-breaker="moonshot"]')
    await expect(state).to_have_text("closed")

    await served.sandbox_fault("moonshot", status=503, rate=1.0, operations=["upload"])
    for number in range(3):
        answer = await upload(
            served, tenant, f"try {number}\n".encode(), "t.txt", provider="moonshot"
        )
        assert answer.status_code in (202, 503)
    await expect(state).to_have_text("open", timeout=10_000)  # the view refreshes itself
    await browser.shot(page, "breaker-open")
    await page.locator('#nav a[data-view="overview"]').click()
    await expect(page.locator('#view tr[data-transition="moonshot:open"]')).to_have_count(1)
    await page.locator('#nav a[data-view="breakers"]').click()

    await page.locator('#view tr[data-provider="moonshot"] button', has_text="reset").click()
    await expect(state).to_have_text("closed")
    async with served.http(admin) as http:
        actions = (await http.get("/admin/audit?action=breaker.reset")).json()["data"]
    assert [a["actor"] for a in actions] == [f"console:{admin[3:15]}"]


@pytest.mark.settings(job_max_attempts=2)
async def test_a_dead_letter_is_retried_from_the_jobs_view(
    served: ServedGateway, browser: Browser
) -> None:
    admin = await served.key("ops", scopes=("admin",))
    tenant = await served.key("acme")
    await served.sandbox_fault("zai", status=503, rate=1.0)
    assert (await upload(served, tenant, b"a,b\n", "t.csv", provider="zai")).status_code == 202

    async def dead() -> list[dict[str, object]]:
        await Worker(served.runtime, concurrency=1).drain()
        async with served.http(admin) as http:
            jobs: list[dict[str, object]] = (await http.get("/admin/jobs?state=dead")).json()[
                "data"
            ]
        return jobs

    async def any_dead() -> bool:
        return bool(await dead())

    await wait_until(any_dead, what="a dead letter")
    [letter] = await dead()
    page = await browser.page()
    await sign_in(page, served, admin)
    await page.locator('#nav a[data-view="jobs"]').click()
    row = page.locator(f'#view tr[data-job="{letter["id"]}"]')
    await expect(row).to_contain_text("503")  # the last error is shown
    await browser.shot(page, "dead-letter")
    await row.get_by_role("button", name="Retry").click()
    await expect(page.locator("#notice")).to_have_text(f"Retry job {letter['id']}: done")
    await expect(row).to_have_count(0)  # no longer among the dead letters
    async with served.http(admin) as http:
        queued = (await http.get("/admin/jobs?state=queued")).json()["data"]
    assert [job["id"] for job in queued] == [letter["id"]]


async def test_a_revoked_key_is_refused(served: ServedGateway, browser: Browser) -> None:
    admin = await served.key("ops", scopes=("admin",))
    tenant = await served.key("acme")
    async with served.http(tenant) as http:
        assert (await http.get("/v1/files")).status_code == 200
    page = await browser.page()
    await sign_in(page, served, admin)
    await page.locator('#nav a[data-view="tenants"]').click()
    row = page.locator(f'#view tr[data-key="{tenant[3:15]}"]')
    await row.get_by_role("button", name="Revoke").click()
    await expect(row).to_contain_text("revoked")
    await browser.shot(page, "key-revoked")
    async with served.http(tenant) as http:
        assert (await http.get("/v1/files")).status_code == 401


async def test_a_file_is_found_by_sha256_and_checked(
    served: ServedGateway, browser: Browser
) -> None:
    admin = await served.key("ops", scopes=("admin",))
    tenant = await served.key("acme")
    wanted = (await upload(served, tenant, b"find me\n", "wanted.txt")).json()
    await upload(served, tenant, b"not me\n", "other.txt")
    page = await browser.page()
    await sign_in(page, served, admin)
    await page.locator('#nav a[data-view="files"]').click()
    await page.locator("#files-sha256").fill(wanted["sha256"])
    await page.locator("#files-search button[type=submit]").click()
    rows = page.locator("#view tr[data-file]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-file", wanted["id"])
    await rows.first.get_by_role("link").click()
    detail = page.locator("#file-detail")
    await expect(detail).to_contain_text("moonshot")
    await detail.get_by_role("button", name="Check now").click()
    await expect(page.locator("#notice")).to_have_text(f"Check {wanted['id']}: done")
    await browser.shot(page, "file-found")


async def test_a_hostile_filename_is_shown_as_text(served: ServedGateway, browser: Browser) -> None:
    admin = await served.key("ops", scopes=("admin",))
    tenant = await served.key("acme")
    placed = await upload(served, tenant, b"%PDF-1.4\n%%EOF\n", HOSTILE)
    assert placed.status_code == 200, placed.text
    page = await browser.page()
    await sign_in(page, served, admin)
    await page.locator('#nav a[data-view="files"]').click()
    await page.locator("#files-filename").fill(HOSTILE)
    await page.locator("#files-search button[type=submit]").click()
    name = page.locator("#view tr[data-file] .filename")
    await expect(name).to_have_text(HOSTILE)
    await page.locator("#view tr[data-file] a").click()
    await expect(page.locator("#file-detail .filename")).to_have_text(HOSTILE)
    await browser.shot(page, "hostile-filename")
    assert await page.locator("#view img").count() == 0
    assert browser.dialogs == []


async def test_keys_are_created_and_quotas_set_and_the_audit_exported(
    served: ServedGateway, browser: Browser
) -> None:
    admin = await served.key("ops", scopes=("admin",))
    page = await browser.page()
    await sign_in(page, served, admin)
    await page.locator('#nav a[data-view="tenants"]').click()
    await page.locator("#key-tenant").fill("media-team")
    await page.locator("#key-name").fill("ingest")
    await page.locator("#key-create button[type=submit]").click()
    secret = page.locator("#new-secret code")
    await expect(secret).to_have_text(re.compile(r"^fg_[a-z0-9]{12}_"))
    created = await secret.inner_text()
    async with served.http(created) as http:
        assert (await http.get("/v1/files")).status_code == 200
    row = page.locator("#view tr", has_text="media-team")
    await expect(row.locator(".tenant")).to_have_text("media-team")
    await row.locator('input[name="max_files"]').fill("7")
    await row.get_by_role("button", name="Save").click()
    await expect(page.locator("#notice")).to_have_text("Quota of media-team: done")
    async with served.http(created) as http:
        assert (await http.get("/v1/usage")).json()["max_files"] == 7
    await browser.shot(page, "tenants-and-keys")

    await page.locator('#nav a[data-view="audit"]').click()
    await expect(page.locator("#view")).to_contain_text("key.create")
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Export JSON Lines").click()
    exported = Path(await (await download.value).path()).read_text().splitlines()
    actions = {json.loads(line)["action"] for line in exported}
    assert {"console.sign_in", "key.create", "tenant.quota"} <= actions, actions


async def test_a_file_is_copied_to_another_provider_then_deleted(
    served: ServedGateway, browser: Browser
) -> None:
    admin = await served.key("ops", scopes=("admin",))
    tenant = await served.key("acme")
    placed = (await upload(served, tenant, b"region,n\nnorth,1\n", "sales.csv")).json()
    assert [c["provider"] for c in placed["providers"]] == ["moonshot"]
    page = await browser.page()
    await sign_in(page, served, admin)
    await page.locator('#nav a[data-view="files"]').click()
    await page.locator("#files-id").fill(placed["id"])
    await page.locator("#files-search button[type=submit]").click()
    await page.locator(f'#view tr[data-file="{placed["id"]}"] a').click()
    detail = page.locator("#file-detail")
    await detail.locator('select[name="provider"]').select_option("zai")
    await detail.get_by_role("button", name="Copy").click()
    await expect(page.locator("#notice")).to_have_text(f"Copy {placed['id']} to zai: done")
    async with served.http(tenant) as http:
        copies = (await http.get(f"/v1/files/{placed['id']}")).json()["providers"]
    assert sorted(c["provider"] for c in copies) == ["moonshot", "zai"]

    remove = page.locator("#file-detail").get_by_role("button", name="Delete")
    await remove.click()  # the first click only arms it
    await page.locator("#file-detail").get_by_role("button", name="Confirm delete").click()
    await expect(page.locator("#notice")).to_have_text(f"Delete {placed['id']}: done")
    await expect(page.locator("#file-detail")).to_have_count(0)
    async with served.http(tenant) as http:
        assert (await http.get(f"/v1/files/{placed['id']}")).status_code == 404
    async with served.http(admin) as http:
        [row] = (await http.get("/admin/audit?action=file.delete")).json()["data"]
    assert row["actor"] == f"console:{admin[3:15]}"

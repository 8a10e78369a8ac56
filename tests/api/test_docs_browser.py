"""The Swagger UI in a real browser: it renders offline, Authorize works, Try it out uploads."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.conftest import ServedGateway
from tests.support.browser import Browser

# One backend is enough in the browser.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_swagger_ui_offline_authorize_and_try_it_out_upload(
    served: ServedGateway, browser: Browser, tmp_path: Path
) -> None:
    key = await served.key(tenant="docs")
    page = await browser.page()
    await page.goto(f"{served.base_url}/docs")
    upload = page.locator("#operations-files-upload_file_v1_files_post")
    await expect(upload).to_be_visible()
    await browser.shot(page, "docs-rendered")

    await page.get_by_role("button", name="Authorize").first.click()
    bearer = page.locator(".auth-container").filter(has_text="(http, Bearer)")
    await bearer.get_by_label("auth-bearer-value").fill(key)
    await bearer.get_by_role("button", name="Apply credentials").click()
    await expect(bearer.get_by_role("button", name="Remove authorization")).to_be_visible()
    await page.locator(".btn-done").first.click()

    await upload.locator(".opblock-summary").click()
    await upload.get_by_role("button", name="Try it out").click()
    sample = tmp_path / "from-docs.txt"
    sample.write_text("uploaded through the docs page\n")
    await upload.locator('input[type="file"]').set_input_files(str(sample))
    # The form field, not the query parameter of the same name (for declared digests).
    body = upload.locator(".opblock-section-request-body")
    await body.locator('input[placeholder="purpose"]').fill("file-extract")
    await upload.get_by_role("button", name="Execute").click()
    answer = upload.locator(".live-responses-table tbody .response-col_status").first
    await expect(answer).to_have_text("200")
    await browser.shot(page, "docs-uploaded")

    async with served.http(key) as http:
        listed = (await http.get("/v1/files")).json()["data"]
    assert [f["filename"] for f in listed] == ["from-docs.txt"]
    assert browser.outside == []


async def test_redoc_renders_offline(served: ServedGateway, browser: Browser) -> None:
    page = await browser.page()
    await page.goto(f"{served.base_url}/redoc")
    await expect(page.get_by_role("heading", name="Upload a file").first).to_be_visible()
    await browser.shot(page, "redoc")
    assert browser.outside == []
